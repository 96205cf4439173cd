"""``qosched serve`` says what it serves, and warns about a token file that is not there (issue 16)."""

from __future__ import annotations

import yaml

from tests.extender.extender_support import CLUSTER_YAML, serving


def test_startup_log_names_cluster_policy_and_nodes_and_missing_token_file_warns() -> None:
    nodes = sum(1 for d in yaml.safe_load(CLUSTER_YAML.read_text())["items"] if d["kind"] == "Node")
    with serving("--cluster", str(CLUSTER_YAML), "--token-file", "/missing/token") as (_, proc):
        log = proc.log_tail()  # type: ignore[attr-defined]
    assert "--token-file /missing/token: no such file" in log
    assert f"extender ready: cluster {CLUSTER_YAML}, policy qosched, {nodes} nodes" in log
