"""A CPU node of the request what-if's cluster: its cores come from its allocatable CPU (issue 18)."""

from __future__ import annotations

import pytest

from qosched.extender.kube.request_scenario import tier_node


def _node(accelerator: str, cpu: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": "n-0",
            "labels": {"qosched.io/accelerator": accelerator, "qosched.io/tier": "edge"},
        },
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi"}},
    }


@pytest.mark.parametrize(
    ("accelerator", "cpu", "mode", "cores"),
    [
        ("cpu", "8", "cpu", 8),
        ("cpu", "2500m", "cpu", 2),
        ("cpu", "500m", "cpu", 1),
        ("jetson-nano", "8", "time-slicing", 1),
    ],
    ids=["cpu-8", "cpu-2.5", "cpu-half", "gpu-ignores-cores"],
)
def test_tier_node_cores(accelerator: str, cpu: str, mode: str, cores: int) -> None:
    node = tier_node(_node(accelerator, cpu))
    assert node is not None
    assert (node.mode, node.cores) == (mode, cores)
