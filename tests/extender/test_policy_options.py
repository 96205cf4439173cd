"""A policy's own options reach the extender (``POLICY_OPTIONS``) and the what-if (``--policy-option``).

Exercised with ``qosched``'s pack-or-spread knob (``gpu_consolidation``, docs/placement.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main
from qosched.extender.server.app import runtime_of
from qosched.extender.server.settings import ConfigError, load_settings
from tests.extender.extender_support import make_app, node, pod, write_snapshot


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param({"environ": {}}, "pack", id="default"),
        pytest.param(
            {"environ": {"QOSCHED_POLICY_OPTIONS": '{"gpu_consolidation": "spread"}'}},
            "spread",
            id="environment",
        ),
        pytest.param(
            {"file": "policy_options:\n  gpu_consolidation: pack-gpu\n"}, "pack-gpu", id="config-file"
        ),
        pytest.param(
            {"overrides": {"POLICY_OPTIONS": {"gpu_consolidation": "spread"}}}, "spread", id="override"
        ),
    ],
)
def test_the_setting_reaches_the_policy(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    path = None
    if "file" in source:
        path = tmp_path / "config.yaml"
        path.write_text(source["file"])
    settings = load_settings(path, environ=source.get("environ", {}), overrides=source.get("overrides"))
    cluster = write_snapshot(tmp_path / "c.json", [node("n1")])
    app = make_app(cluster, POLICY_OPTIONS=settings.policy_options)
    assert runtime_of(app).policy.gpu_consolidation == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"QOSCHED_POLICY_OPTIONS": '{"gpu_consolidation": "tight"}'},
            "POLICY_OPTIONS: policy 'qosched': QoschedOptions.gpu_consolidation must be one of "
            "spread, pack-gpu, pack (got 'tight')",
            id="unknown-value",
        ),
        pytest.param(
            {"QOSCHED_POLICY_OPTIONS": '{"gpu_consolidaton": "pack"}'},
            "POLICY_OPTIONS: policy 'qosched': unknown option 'gpu_consolidaton' of QoschedOptions",
            id="misspelt-option",
        ),
        pytest.param(
            {"QOSCHED_POLICY": "fgd", "QOSCHED_POLICY_OPTIONS": '{"gpu_consolidation": "pack"}'},
            "POLICY_OPTIONS: policy 'fgd': unknown option 'gpu_consolidation' of FgdOptions",
            id="option-of-another-policy",
        ),
        pytest.param(
            {"QOSCHED_POLICY_OPTIONS": "pack"},
            "environment variable QOSCHED_POLICY_OPTIONS: POLICY_OPTIONS must be Mapping",
            id="not-a-mapping",
        ),
    ],
)
def test_bad_options_stop_the_start_up_with_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=environ)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def _scenario(tmp_path: Path) -> Path:
    """One node with two GPUs and four light services: spread and pack place them differently."""
    services = [pod(f"s{i}", slo_ms=200, rate_rps=2, gpu_milli=100) for i in range(4)]
    return write_snapshot(tmp_path / "cluster.json", [node("n1", gpus=2), node("n2", gpus=2), *services])


def _whatif(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main,
        ["whatif", "--cluster", str(_scenario(tmp_path)), "--out", str(tmp_path / "out"), "--quiet", *args],
        catch_exceptions=False,
    )


def _nodes_used(tmp_path: Path) -> set[str]:
    lines = (tmp_path / "out" / "qosched.csv").read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("node")
    return {line.split(",")[col] for line in lines[1:]}


@pytest.mark.slow  # a full what-if run with its plots and report: 5-10 s on the shared machine
@pytest.mark.parametrize(
    ("setting", "nodes"),
    [pytest.param("spread", 2, id="spread"), pytest.param("pack", 1, id="pack")],
)
def test_whatif_policy_option(tmp_path: Path, setting: str, nodes: int) -> None:
    option = f"gpu_consolidation={setting}"
    result = _whatif(tmp_path, "--policies", "qosched,fgd", "--policy-option", option, "--no-latency")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # Only the policy that declares the option gets it.
    assert summary["workload"]["policy_options"] == {"qosched": {"gpu_consolidation": setting}}
    assert len(_nodes_used(tmp_path)) == nodes


@pytest.mark.parametrize(
    ("option", "message"),
    [
        pytest.param(
            "gpu_consolidation=tight",
            "QoschedOptions.gpu_consolidation must be one of spread, pack-gpu, pack (got 'tight')",
            id="unknown-value",
        ),
        pytest.param("consolidation_slack_frac=2", "must be a number in [0, 1) (got 2)", id="bad-margin"),
        pytest.param("gpu_consolidaton=pack", "no policy of this run (qosched) takes option", id="misspelt"),
        pytest.param("pack", "expected KEY=VALUE, got 'pack'", id="no-equals"),
    ],
)
def test_whatif_bad_policy_option(tmp_path: Path, option: str, message: str) -> None:
    result = _whatif(tmp_path, "--policies", "qosched", "--policy-option", option)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert message in errors[0]
