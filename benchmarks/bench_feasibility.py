"""Time the latency models + feasibility rule, next to baselines measured in the same run.

Two sizes:

1. one placement on one node: one device with 8 co-located services (the shape a single
   ``filter`` call judges per device);
2. a cluster: 5,000 nodes × 4 devices × 8 service slots, in one vectorised call.

Baselines, timed in this run on the same data:

- ``scalar loop``: the same time-slicing model and feasibility rule written as a plain Python
  loop over devices and services (what the vectorised code replaces), checked to give the same
  verdicts;
- ``numpy floor``: one numpy reduction of the same shape, ``(rate * service).sum(-1)`` — the
  least any vectorised model of these arrays could cost.

Usage: ``.venv/bin/python benchmarks/bench_feasibility.py [--nodes 5000] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import numpy as np

from qosched.policies.latency.colocation_rule import Thresholds, feasible
from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict


def _best_of(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """Best mean time of ``number`` calls over ``repeat`` rounds [s]."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _workload(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = shape[-1]
    mask = rng.random(shape) < 0.75
    service = rng.uniform(2.0, 40.0, shape)
    # rates sized so that device utilisation is mostly 0.2..1.2 (both feasible and not)
    rate = rng.uniform(0.2, 1.6, shape) * 1000.0 / (service * k)
    return {
        "rate": rate,
        "service": service,
        "swap": rng.uniform(5.0, 25.0, shape),
        "share": np.full(shape, 1.0 / k),
        "mask": mask,
        "slo": rng.uniform(40.0, 400.0, shape),
        "mem_used": rng.uniform(0.0, 12_000.0, shape[:-1]),
        "fe": rng.uniform(0.0, 1.0, shape[:-1]),
    }


def vectorised(
    w: dict[str, np.ndarray], mode: str, cores: np.ndarray | int = 1
) -> tuple[np.ndarray, np.ndarray]:
    services = DeviceServices.build(
        w["rate"], w["service"], swap_ms=w["swap"], share_frac=w["share"], mask=w["mask"], cores=cores
    )
    pred = predict(mode, services, ModelParams())
    return feasible(pred, w["slo"], w["mem_used"], 16_384.0, w["fe"], Thresholds())


def scalar_time_slicing(w: dict[str, np.ndarray]) -> np.ndarray:
    """The §A time-slicing model (M/D/1 when alone) and the feasibility rule, one device at a time."""
    rate, service, mask, slo = (
        w[k].reshape(-1, w[k].shape[-1]).tolist() for k in ("rate", "service", "mask", "slo")
    )
    mem_used, fe = w["mem_used"].ravel().tolist(), w["fe"].ravel().tolist()
    ok = []
    for d in range(len(rate)):
        lam = [rate[d][i] / 1000.0 if mask[d][i] else 0.0 for i in range(len(rate[d]))]
        rho = sum(lam[i] * service[d][i] for i in range(len(lam)))
        lam_total = sum(lam)
        active = sum(1 for x in lam if x > 0)
        if rho >= 1.0:
            wait = math.inf
        elif active <= 1:
            wait = sum(lam[i] * service[d][i] ** 2 for i in range(len(lam))) / (2 * (1 - rho))
        else:
            wait = (rho / lam_total) * rho / (1 - rho)
        good = mem_used[d] <= 0.8 * 16_384.0 and rho <= 0.8 and fe[d] <= 0.8
        if good:
            good = all(service[d][i] + wait <= slo[d][i] for i in range(len(lam)) if mask[d][i])
        ok.append(good)
    return np.array(ok).reshape(w["mem_used"].shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--services", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        f"# bench_feasibility  python {platform.python_version()}  numpy {np.__version__}  {platform.machine()}"
    )

    # ---- 1. one node, one device, 8 services
    one = _workload((1, args.services), seed=1)
    n_one = 2000
    print(
        f"\n## one placement: 1 device x {args.services} services (mean of {n_one} calls, best of {args.repeat})"
    )
    t_loop = _best_of(lambda: scalar_time_slicing(one), args.repeat, n_one)
    print(f"{'scalar loop (time-slicing)':32s} {t_loop * 1e6:9.1f} us   1.00x")
    for mode in ("time-slicing", "edgetpu", "mps"):
        t = _best_of(lambda m=mode: vectorised(one, m), args.repeat, n_one)
        print(f"{'vectorised ' + mode:32s} {t * 1e6:9.1f} us   {t / t_loop:5.2f}x the loop")

    # ---- 2. a cluster in one call
    shape = (args.nodes, args.devices, args.services)
    big = _workload(shape, seed=2)
    n_dev = args.nodes * args.devices
    ok_vec, _ = vectorised(big, "time-slicing")
    ok_loop = scalar_time_slicing(big)
    assert (ok_vec == ok_loop).all(), "vectorised and scalar verdicts differ"
    print(
        f"\n## cluster: {args.nodes} nodes x {args.devices} devices x {args.services} slots "
        f"= {n_dev} devices in one call (best of {args.repeat}); {ok_vec.mean():.0%} feasible"
    )
    t_floor = _best_of(lambda: (big["rate"] * big["service"]).sum(axis=-1), args.repeat)
    t_loop = _best_of(lambda: scalar_time_slicing(big), max(1, args.repeat // 3))
    print(f"{'numpy floor (rate*service).sum':32s} {t_floor * 1e3:9.2f} ms   1.0x floor")
    print(f"{'scalar loop (time-slicing)':32s} {t_loop * 1e3:9.2f} ms   {t_loop / t_floor:6.1f}x floor")
    for mode in ("time-slicing", "edgetpu", "mps", "cpu"):
        t = _best_of(lambda m=mode: vectorised(big, m), args.repeat)
        print(
            f"{'vectorised ' + mode:32s} {t * 1e3:9.2f} ms   {t / t_floor:6.1f}x floor   "
            f"{t_loop / t:5.1f}x faster than the loop   {t / n_dev * 1e9:7.0f} ns/device"
        )
    # the cpu mode on multi-core nodes (the rows above have one core): 1-4 cores per device, so
    # most devices are crowded (more active services than cores) and take the mean field
    cores = np.random.default_rng(3).integers(1, 5, shape[:-1])
    t = _best_of(lambda: vectorised(big, "cpu", cores), args.repeat)
    print(
        f"{'vectorised cpu (1-4 cores)':32s} {t * 1e3:9.2f} ms   {t / t_floor:6.1f}x floor   "
        f"{t_loop / t:5.1f}x faster than the loop   {t / n_dev * 1e9:7.0f} ns/device"
    )
    # where the time goes (time-slicing)
    services = DeviceServices.build(
        big["rate"], big["service"], swap_ms=big["swap"], share_frac=big["share"], mask=big["mask"]
    )
    pred = predict("time-slicing", services)
    t_build = _best_of(
        lambda: DeviceServices.build(
            big["rate"], big["service"], swap_ms=big["swap"], share_frac=big["share"], mask=big["mask"]
        ),
        args.repeat,
    )
    t_pred = _best_of(lambda: predict("time-slicing", services), args.repeat)
    t_feas = _best_of(lambda: feasible(pred, big["slo"], big["mem_used"], 16_384.0, big["fe"]), args.repeat)
    print(
        f"\nbreakdown (time-slicing): build+validate {t_build * 1e3:.2f} ms, predict {t_pred * 1e3:.2f} ms, "
        f"feasible {t_feas * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
