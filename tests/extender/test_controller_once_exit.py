"""``qosched controller --once`` against an API server that cannot be reached exits non-zero (issue 16)."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from qosched.extender.cli.main import main
from tests.kubefake import write_kubeconfig


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_once_with_unreachable_api_server_exits_1(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(f"http://127.0.0.1:{_closed_port()}", tmp_path / "kubeconfig")
    args = ["controller", "--kubeconfig", str(kubeconfig), "--once"]
    args += ["--prometheus-url", f"http://127.0.0.1:{_closed_port()}", "--prometheus-timeout-s", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "could not read the cluster: kubernetes:" in result.output
