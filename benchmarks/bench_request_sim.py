"""Benchmark of the request-level latency simulator (and the openb loader / inflation).

Prints, for one device and N requests (default 100,000):

* the vectorised Lindley recursion (``lindley_waits``: cumsum + maximum.accumulate) against the
  plain Python loop (``lindley_waits_loop``) on the same arrays, and their ratio;
* a whole ``simulate_device`` call per sharing mode (arrivals, service draws, queue, statistics);
* the exact processor-sharing event loop (``ps_sojourn_times``);
* a batch of devices through ``simulate_devices``;
* accuracy: the mean latency over 10 seeded replications against the closed forms (M/M/1, M/D/1,
  P-K, CPU nodes of one or several cores, M/M/c limited processor sharing) and against models.md
  §A's edge TPU and time-slicing formulas and the CPU node's mean field;
* loading the default openb pod list and inflating it to 130 % (if ../shared is present).

Usage: ``.venv/bin/python benchmarks/bench_request_sim.py [--requests 100000] [--repeat 5]``.
Times are the best of ``--repeat`` runs, measured in the same process.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qosched.extender.cli.trace_files import read_nodes, read_pods
from qosched.policies.latency.cpu_node import cpu_node_queue
from qosched.policies.latency.queueing import processor_sharing_latency_ms
from qosched.policies.simulator.requests import (
    DeviceSpec,
    ServiceSpec,
    ServiceTime,
    SimConfig,
    lindley_waits,
    lindley_waits_loop,
    ps_sojourn_times,
    shared_cores_sojourn_times,
    simulate_device,
    simulate_devices,
)
from qosched.policies.traces import cluster_capacity, inflate_workload, tune_workload

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alibaba-gpu-v2023"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Smallest wall time of ``repeat`` calls [s]."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def device(mode: str) -> DeviceSpec:
    """Two edge-TPU-like models at ρ ≈ 0.5 (mobilenet_v2 and efficientnet_s profiles of models.md)."""
    swap = mode == "edgetpu"
    share = 0.5 if mode in ("mps", "mig") else 1.0
    services = (
        ServiceSpec("mobilenet_v2", 20, ServiceTime.from_moments(4.91, 1.2 * 4.91**2), 10.43 * swap, share),
        ServiceSpec("efficientnet_s", 15, ServiceTime.from_moments(9.83, 1.2 * 9.83**2), 17.33 * swap, share),
    )
    return DeviceSpec(mode, services[:1] if mode == "exclusive" else services)  # type: ignore[arg-type]


def cpu_node_rows() -> list[tuple[str, DeviceSpec, int, list[float], str]]:
    """Multi-core CPU nodes (policies/latency/cpu_node.py): one FCFS server per service, the busy
    servers sharing c cores; exact closed forms where there are any, else the model's mean field."""
    exp, det = ServiceTime.exponential, ServiceTime.deterministic

    def node(cores: int, *services: tuple[float, ServiceTime]) -> DeviceSpec:
        specs = tuple(ServiceSpec(f"s{i}", r, t) for i, (r, t) in enumerate(services))
        return DeviceSpec("cpu", specs, cores=cores)

    def model(dev: DeviceSpec) -> list[float]:
        return cpu_node_queue(
            [s.rate_rps for s in dev.services],
            [s.service.mean_ms for s in dev.services],
            [s.service.second_moment_ms2 for s in dev.services],
            cores=dev.cores,
        ).latency_ms.tolist()

    mixed = node(8, *[(4.0, det(111.5)), (8.0, det(47.3)), (20.0, det(22.2))] * 4)
    four = node(2, *[(19.0, det(15.8))] * 4)
    return [
        (
            "cpu, 3 exp. servers on 1 core ρ=0.6: M/M/1",
            node(1, *[(20.0, exp(10.0))] * 3),
            30_000,
            [25.0] * 3,
            "exact",
        ),
        (
            "cpu, 2 servers on 2 cores ρ=0.6/0.5: own M/D/1",
            node(2, (60.0, det(10.0)), (50.0, det(10.0))),
            30_000,
            [17.5, 15.0],
            "exact",
        ),
        ("cpu, 4 servers on 2 cores, 1.2 cores of work", four, 30_000, model(four), "cpu_node mean field"),
        (
            "cpu, 12 servers on 8 cores, node at 0.55 (S 111/47/22 ms)",
            mixed,
            30_000,
            model(mixed),
            "cpu_node mean field",
        ),
    ]


def accuracy_rows() -> list[tuple[str, DeviceSpec, int, list[float], str]]:
    """(case, device, requests per replication, closed-form mean latency per service [ms], source)."""
    exp, det, gamma = ServiceTime.exponential, ServiceTime.deterministic, ServiceTime.from_moments

    def one(mode: str, rate_rps: float, service: ServiceTime) -> DeviceSpec:
        return DeviceSpec(mode, (ServiceSpec("a", rate_rps, service),))  # type: ignore[arg-type]

    two_ts = DeviceSpec("time-slicing", (ServiceSpec("a", 40, det(5.0)), ServiceSpec("b", 20, det(20.0))))
    s_ms, o_ms, lam = np.array([4.91, 9.83]), np.array([10.43, 17.33]), np.array([20.0, 15.0]) / 1000
    s_eff = s_ms + (1 - lam / lam.sum()) * o_ms
    w_tpu = lam.sum() * float((lam / lam.sum()) @ s_eff**2) / (2 * (1 - float(lam @ s_eff)))
    tpu = DeviceSpec(
        "edgetpu",
        tuple(ServiceSpec(f"m{i}", lam[i] * 1000, det(s_ms[i]), swap_ms=o_ms[i]) for i in range(2)),
    )
    return [
        ("M/M/1 ρ=0.5, 1/(μ-λ)", one("exclusive", 50, exp(10.0)), 50_000, [20.0], "exact"),
        ("M/M/1 ρ=0.8", one("exclusive", 80, exp(10.0)), 50_000, [50.0], "exact"),
        ("M/D/1 ρ=0.5, S+ρS/(2(1-ρ))", one("exclusive", 50, det(10.0)), 50_000, [15.0], "exact"),
        ("M/D/1 ρ=0.8", one("exclusive", 80, det(10.0)), 50_000, [30.0], "exact"),
        ("M/G/1 gamma c²=0.5 ρ=0.6, P-K", one("exclusive", 60, gamma(10.0, 150.0)), 50_000, [21.25], "exact"),
        ("cpu, one server: M/M/1 ρ=0.5", one("cpu", 50, exp(10.0)), 30_000, [20.0], "exact"),
        ("cpu, one server: M/D/1 ρ=0.7", one("cpu", 70, det(10.0)), 30_000, [10 + 7 / 0.6], "exact"),
        *cpu_node_rows(),
        ("time-slicing 5/20 ms, P-K", two_ts, 50_000, [16.25, 31.25], "exact"),
        ("time-slicing 5/20 ms, models.md M/M/1", two_ts, 50_000, [20.0, 35.0], "models.md §A"),
        ("edge TPU ρ=0.48, models.md P-K", tpu, 50_000, list(s_eff + w_tpu), "models.md §A"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, repeat = args.requests, args.repeat
    rng = np.random.default_rng(args.seed)

    arrival = np.cumsum(rng.exponential(10.0, n))  # ρ = 0.7 with 7 ms deterministic service
    service = np.full(n, 7.0)
    assert np.allclose(lindley_waits(arrival, service), lindley_waits_loop(arrival, service))
    t_vec = best_of(repeat, lambda: lindley_waits(arrival, service))
    t_loop = best_of(repeat, lambda: lindley_waits_loop(arrival, service))
    print(f"# request simulator, {n:,} requests, best of {repeat}")
    print()
    print("| what | time [ms] | requests/s |")
    print("|---|---:|---:|")
    print(f"| Lindley, vectorised (cumsum + maximum.accumulate) | {t_vec * 1e3:.2f} | {n / t_vec:,.0f} |")
    print(f"| Lindley, plain Python loop | {t_loop * 1e3:.2f} | {n / t_loop:,.0f} |")
    t_ps = best_of(repeat, lambda: ps_sojourn_times(arrival, service))
    print(f"| processor sharing, exact event loop (ρ = 0.7) | {t_ps * 1e3:.2f} | {n / t_ps:,.0f} |")
    config = SimConfig(n_requests=n)
    for mode in ("exclusive", "time-slicing", "edgetpu", "mps", "mig", "cpu"):
        dev = device(mode)
        t = best_of(repeat, lambda dev=dev: simulate_device(dev, np.random.default_rng(1), config))  # type: ignore[misc]
        print(f"| simulate_device, {mode} | {t * 1e3:.2f} | {n / t:,.0f} |")
    per_device = 20_000
    devices = [device(("time-slicing", "edgetpu", "mps", "cpu")[d % 4]) for d in range(args.devices)]
    t_batch = best_of(
        1, lambda: simulate_devices(devices, np.random.default_rng(2), SimConfig(n_requests=per_device))
    )
    total = args.devices * per_device
    print(
        f"| simulate_devices, {args.devices} devices x {per_device:,} requests (mixed modes) "
        f"| {t_batch * 1e3:.0f} | {total / t_batch:,.0f} |"
    )
    print()
    print(f"Lindley vectorised / loop speed-up: {t_loop / t_vec:.0f}x")
    print()
    print("| mean latency, 10 seeds, 10 % warm-up | formula [ms] | simulated [ms] | sim / formula - 1 |")
    print("|---|---|---|---|")
    for case, dev, requests, want, source in accuracy_rows():
        cfg = SimConfig(n_requests=requests)
        runs = [
            [r.mean_latency_ms for r in simulate_device(dev, np.random.default_rng(s), cfg).services]
            for s in range(10)
        ]
        got = np.mean(runs, axis=0)
        formula = ", ".join(f"{w:.2f}" for w in want)
        simulated = ", ".join(f"{g:.2f}" for g in got)
        error = ", ".join(f"{g / w - 1:+.1%}" for g, w in zip(got, want, strict=True))
        print(f"| {case} ({source}) | {formula} | {simulated} | {error} |")
    # Limited processor sharing (every request its own server) on 2 cores: M/M/2, the model
    # qosched used for CPUs before issue 18, S(1 + C(c, a)/(c - a)); the kernel's special case.
    got_mmc = []
    for s in range(10):
        r = np.random.default_rng(s)
        arr = np.cumsum(r.exponential(1 / 0.14, 30_000))
        got_mmc.append(
            shared_cores_sojourn_times(arr, r.exponential(10.0, 30_000), np.arange(30_000), 2)[3_000:].mean()
        )
    want_mmc = float(processor_sharing_latency_ms([140.0], [10.0], cores=2)[0])
    print(
        f"| limited PS (a server per request) on 2 cores, a=1.4: M/M/2 (exact) | {want_mmc:.2f} | "
        f"{np.mean(got_mmc):.2f} | {np.mean(got_mmc) / want_mmc - 1:+.1%} |"
    )

    if DATA.is_dir():
        pods_file, nodes_file = DATA / "openb_pod_list_default.csv", DATA / "openb_node_list_gpu_node.csv"
        t_load = best_of(repeat, lambda: read_pods(pods_file))
        pods, capacity = read_pods(pods_file), cluster_capacity(read_nodes(nodes_file))
        t_inflate = best_of(repeat, lambda: inflate_workload(pods, capacity, 1.3, np.random.default_rng(0)))
        t_tune = best_of(
            repeat, lambda: tune_workload(pods, capacity, 1.3, np.random.default_rng(0), shuffle=True)
        )
        inflated = inflate_workload(pods, capacity, 1.3, np.random.default_rng(0))
        tuned = tune_workload(pods, capacity, 1.3, np.random.default_rng(0), shuffle=True)
        print()
        print("| openb default trace | time [ms] | result |")
        print("|---|---:|---|")
        print(f"| read_pods (8,152 rows) | {t_load * 1e3:.1f} | {len(pods):,} pods |")
        print(
            f"| inflate_workload x1.3 | {t_inflate * 1e3:.1f} | {inflated.n_clones} of "
            f"{inflated.n_clones_target} clones, stopped at capacity: {inflated.stopped_at_capacity}, "
            f"arrived {inflated.total_gpu_milli / capacity.gpu_milli:.2%} |"
        )
        print(
            f"| tune_workload x1.3 | {t_tune * 1e3:.1f} | {tuned.n_clones} clones, "
            f"arrived {tuned.total_gpu_milli / capacity.gpu_milli:.2%} |"
        )


if __name__ == "__main__":
    main()
