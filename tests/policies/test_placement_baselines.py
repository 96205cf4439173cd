"""Each interference-blind baseline's choice on a hand-checked 4-node GPU-sharing cluster.

Cluster (every node: 32,000 milli-CPU, 64,000 MiB, 2 GPUs; no models, FGD-trace-like pods):

======  =================  ==============  ===============================================
node    GPU used (milli)   CPU used        pods there
======  =================  ==============  ===============================================
n0      [600, 0]           4,000           one 600-milli share pod
n1      [0, 0]             0               none
n2      [1000, 300]        16,000          one whole-GPU pod (12,000 CPU), one 300-milli pod
n3      [800, 800]         20,000          two 800-milli share pods (10,000 CPU each)
======  =================  ==============  ===============================================

Pod placed: 200 milli-GPU, 4,000 milli-CPU, no memory request. Every node fits it.
"""

from __future__ import annotations

import numpy as np
import pytest

from qosched.policies.placement.base import make_policy, scheduler_scores
from qosched.policies.placement.fgd.mix import WorkloadMix
from qosched.policies.placement.testing import ProfileTable, gpu_node, plain_gpu_pod, state_with

TABLE = ProfileTable(params={}, device_memory_mib={"nvidia-t4": 16_000.0})
POD = plain_gpu_pod("new", gpu_milli=200, cpu_milli=4000)


def cluster():
    nodes = [gpu_node(f"n{i}", gpus=2) for i in range(4)]
    running = [
        (plain_gpu_pod("a", gpu_milli=600, cpu_milli=4000), "n0", (0,)),
        (plain_gpu_pod("b", gpu_milli=1000, cpu_milli=12000), "n2", (0,)),
        (plain_gpu_pod("c", gpu_milli=300, cpu_milli=4000), "n2", (1,)),
        (plain_gpu_pod("d", gpu_milli=800, cpu_milli=10000), "n3", (0,)),
        (plain_gpu_pod("e", gpu_milli=800, cpu_milli=10000), "n3", (1,)),
    ]
    return state_with(nodes, TABLE, running)


# Hand computations (score per node n0..n3; the best one wins, ties → the earlier node):
#  default   LeastAllocated(cpu, mem): cpu left after (24000, 28000, 12000, 8000)/32000,
#            memory fraction 1 everywhere → (0.875, 0.9375, 0.6875, 0.625) → n1, device 0.
#  binpack   MostAllocated(cpu, mem, gpu)/3: cpu (0.25, 0.125, 0.625, 0.75), mem 0,
#            gpu (800, 200, 1500, 1800)/2000 → (0.2167, 0.075, 0.4583, 0.55) → n3, best-fit dev 0.
#  knapsack-first-fit  first node with a fitting device → n0, device 0.
#  knapsack-best-fit   milli left per device: n0 (200, 800), n1 (800, 800), n2 (-, 500),
#            n3 (0, 0) → least left 0 → n3, device 0.
#  knapsack-worst-fit  most left 800: n0 device 1 and n1 device 0 tie → the earlier, n0 device 1.
#  The FGD paper's baselines score as its simulator does, in integers (truncated, issue 18):
#  dot-product  ⌊100·(1 − ½(c/C·q/C + F/G·g/G))⌋, C = 32000, G = 2000: dots (0.1794, 0.225,
#            0.0975, 0.0669) → (91, 88, 95, 96) → n3, best-fit device 0.
#  gpu-clustering  share tag: n0, n3 only share pods (band 75), n2 mixed (50), n1 empty (25);
#            + ⌊25·(2000 − free)/2000⌋ (free 1400, 2000, 700, 400): 82, 25, 66, 95 → n3.
#  gpu-packing  n1 all free: max(33 − 2, 2) = 31; n0 shares device 0 (400 free): 100 − 40//10 = 96;
#            n2 device 1 (700): 93; n3 device 0 (200): 98 → n3.
#  best-fit  ⌊100·(1 − ½(c − q)/C − ½(F − g)/G)⌋: (0.325, 0.1125, 0.6875, 0.825) → (32, 11, 68,
#            82) → n3.
CHOICES = [
    ("default", 1, 0, [0.875, 0.9375, 0.6875, 0.625]),
    ("binpack", 3, 0, [0.65 / 3, 0.225 / 3, 1.375 / 3, 1.65 / 3]),
    ("knapsack-first-fit", 0, 0, [0.0, -1.0, -2.0, -3.0]),
    ("knapsack-best-fit", 3, 0, [-200.0, -800.0, -500.0, 0.0]),
    ("knapsack-worst-fit", 0, 1, [800.0, 800.0, 500.0, 0.0]),
    ("dot-product", 3, 0, [91.0, 88.0, 95.0, 96.0]),
    ("gpu-clustering", 3, 0, [82.0, 25.0, 66.0, 95.0]),
    ("gpu-packing", 3, 0, [96.0, 31.0, 93.0, 98.0]),
    ("best-fit", 3, 0, [32.0, 11.0, 68.0, 82.0]),
]


@pytest.mark.parametrize(("policy", "node", "device", "raw"), CHOICES, ids=[c[0] for c in CHOICES])
def test_baseline_choice(policy: str, node: int, device: int, raw: list[float]) -> None:
    state = cluster()
    ev = make_policy(policy).evaluate(state, POD, np.arange(4))
    assert ev.feasible.all()
    np.testing.assert_allclose(ev.raw_score, raw, rtol=1e-9, atol=1e-9)
    best = int(np.argmax(ev.raw_score))
    assert (best, int(ev.devices[best, 0])) == (node, device)
    assert ev.policy == policy


def test_fgd_choice_with_a_given_mix() -> None:
    # Mix: half 500-milli pods, half whole-GPU pods (1000 CPU each). F_t = Σ_{f < m_t} f when the
    # shape fits the node, else Σ f. Per node, ΔF of the best device for the 200-milli pod:
    #  n0 [400, 1000]: F = ½·400 + ½·400 = 400; on dev 0 → [200, 1000]: F = 200 → ΔF = −200
    #                  (on dev 1 → [400, 800]: ½·400 + ½·1200 = 800, +400).
    #  n1 [1000, 1000]: F = 0; → [800, 1000]: ½·0 + ½·800 = 400 → +400.
    #  n2 [0, 700]: F = ½·0 + ½·700 = 350; → [0, 500]: 250 → −100.
    #  n3 [200, 200]: nothing fits, F = 400; → [0, 200]: 200 → −200.
    # n0 and n3 tie at −200: the earlier, n0, device 0.
    mix = WorkloadMix.of([(1000, 500, 1), (1000, 1000, 1)], [1, 1])
    ev = make_policy("fgd", mix=mix).evaluate(cluster(), POD, np.arange(4))
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], [-200.0, 400.0, -100.0, -200.0], atol=1e-9)
    best = int(np.argmax(ev.raw_score))
    assert (best, int(ev.devices[best, 0])) == (0, 0)


def test_random_is_reproducible_per_pod_and_seed() -> None:
    state = cluster()
    first = make_policy("random", seed=7).evaluate(state, POD, np.arange(4))
    again = make_policy("random", seed=7).evaluate(state, POD, np.arange(4))
    np.testing.assert_array_equal(first.raw_score, again.raw_score)
    np.testing.assert_array_equal(first.devices, again.devices)
    # A node's score does not depend on which other nodes are candidates.
    subset = make_policy("random", seed=7).evaluate(state, POD, np.array([2, 0]))
    np.testing.assert_array_equal(subset.raw_score, first.raw_score[[2, 0]])
    other_seed = make_policy("random", seed=8).evaluate(state, POD, np.arange(4))
    other_pod = make_policy("random", seed=7).evaluate(
        state, plain_gpu_pod("another", gpu_milli=200, cpu_milli=4000), np.arange(4)
    )
    assert not np.array_equal(first.raw_score, other_seed.raw_score)
    assert not np.array_equal(first.raw_score, other_pod.raw_score)
    assert np.all((first.raw_score >= 0) & (first.raw_score < 1))


@pytest.mark.parametrize("seed", [True, 1.5, "1"], ids=["bool", "float", "str"])
def test_random_rejects_a_bad_seed(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        make_policy("random", seed=seed)


WHOLE = [
    # 2 whole GPUs: only n1 has two fully free GPUs.
    ("default", 1, (0, 1)),
    ("binpack", 1, (0, 1)),
    ("gpu-packing", 1, (0, 1)),
    ("fgd", 1, (0, 1)),
]


@pytest.mark.parametrize(("policy", "node", "devices"), WHOLE, ids=[w[0] for w in WHOLE])
def test_whole_gpu_pod_needs_fully_free_devices(policy: str, node: int, devices: tuple[int, int]) -> None:
    pod = plain_gpu_pod("whole", gpu_milli=2000, cpu_milli=1000)
    ev = make_policy(policy).evaluate(cluster(), pod, np.arange(4))
    assert ev.feasible.tolist() == [False, True, False, False]
    assert tuple(ev.devices[node]) == devices
    assert scheduler_scores(ev).tolist() == [0, 10, 0, 0]


def test_plain_pod_is_placed_by_cpu_and_memory_only() -> None:
    pod = plain_gpu_pod("cpu-only", cpu_milli=20_000)
    ev = make_policy("default").evaluate(cluster(), pod, np.arange(4))
    # CPU left after: n0 8000, n1 12000, n2 −4000 (does not fit), n3 −8000 (does not fit).
    assert ev.feasible.tolist() == [True, True, False, False]
    assert ev.devices.shape == (4, 1)
    assert (ev.devices == -1).all()
    assert int(np.argmax(ev.raw_score)) == 1
