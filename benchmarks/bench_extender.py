"""Latency of the extender's verbs through gunicorn on loopback, next to a null extender.

What one "call" is: a keep-alive ``requests.Session`` (as kube-scheduler's HTTP client keeps its
connection) POSTs one request to ``qosched serve --cluster SNAPSHOT`` (the real command: gunicorn,
one worker process, gthread) and reads the whole answer. The cluster is generated: ``N`` nodes
labelled ``nvidia-t4`` with 4 GPUs each and 3 inference services per GPU (250 milli-GPU each, so
12 running pods per node), plus pending pods to bind. kube-scheduler is played with
``nodeCacheCapable: true``: ``/filter`` gets every node name (the worst case; with the default
``percentageOfNodesToScore`` a 5,000-node scheduler stops at ~10 % feasible nodes), and
``/prioritize`` gets the names the filter kept, as kube-scheduler sends them. Each call is a new
pod (own UID), so nothing is cached across pods; ``prioritize`` reuses its pod's ``filter``
evaluation, as it does inside one scheduling cycle.

The baseline, measured in the same run under the same gunicorn settings
(``qosched.extender.cli.serve.ExtenderServer`` + ``gunicorn_conf``), is the thinnest Flask
extender: parse the body with orjson, let every node pass / score 0 / bind nothing. The
difference is what qosched's validation, policy and bookkeeping cost per call.

Reported separately:

* ``policy``: time inside the placement policy, in process, for the same pod and candidates
  (``PlacementPolicy.evaluate`` on the loaded ``StaticCluster``), and the server's own
  ``qosched_extender_policy_decision_duration_seconds`` mean for the calls just made.
* ``bind``: the whole ``/bind`` request (static mode: reserve, ``SnapshotBinder`` applies the
  binding in memory, confirm), latency and the worker process's CPU per call (``/proc``), vs the
  null extender's ``/bind``. The API call of a live bind is measured by ``benchmarks/bench_bind.py``.

Run: ``.venv/bin/python benchmarks/bench_extender.py [--nodes 1000,5000] [--calls 300]``
(about a minute on 2 cores, most of it loading the 5,000-node snapshot twice).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests

MODELS = ("resnet50", "resnet18", "mobilenet_v2")
GPUS_PER_NODE = 4
SERVICES_PER_GPU = 3
JSON = {"Content-Type": "application/json"}
#: SLO of the measured pods [ms] (``--slo-ms``): 50 fits most nodes; 3 (resnet50 on a T4 takes
#: 3.0 ms) fits none, so every node fails with a reason (the rejection path's cost).
POD_SLO_MS = 50


# ----------------------------------------------------------------------------- the cluster


def node_name(i: int) -> str:
    return f"gpu-node-{i:05d}.rack-{i % 40:02d}.example.internal"


def _pod(uid: str, model: str, *, rate_rps: int, slo_ms: int, node: str | None, device: int | None) -> dict:
    annotations = {
        "qosched.io/model": model,
        "qosched.io/slo-ms": str(slo_ms),
        "qosched.io/rate-rps": str(rate_rps),
        "qosched.io/gpu-milli": "250",
        "qosched.io/class": "batch",
    }
    if device is not None:
        annotations["qosched.io/device"] = str(device)
    spec: dict[str, Any] = {
        "containers": [{"name": "server", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": uid, "namespace": "default", "uid": uid, "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


def make_snapshot(n_nodes: int, pending: int, seed: int = 0) -> dict[str, Any]:
    """A v1 List: ``n_nodes`` T4 nodes with 4 GPUs, 3 services per GPU, and ``pending`` pods."""
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    for i in range(n_nodes):
        name = node_name(i)
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "uid": f"node-uid-{i}",
                    "labels": {"qosched.io/accelerator": "nvidia-t4", "qosched.io/sharing": "time-slicing"},
                },
                "status": {
                    "allocatable": {
                        "cpu": "64",
                        "memory": "256Gi",
                        "nvidia.com/gpu": str(GPUS_PER_NODE),
                        "pods": "110",
                    }
                },
            }
        )
        for d in range(GPUS_PER_NODE):
            for k in range(SERVICES_PER_GPU):
                model = MODELS[int(rng.integers(len(MODELS)))]
                rate = int(rng.choice([5, 10, 20]))
                items.append(_pod(f"run-{i}-{d}-{k}", model, rate_rps=rate, slo_ms=100, node=name, device=d))
    for j in range(pending):
        items.append(_pod(f"pending-{j}", "resnet50", rate_rps=10, slo_ms=50, node=None, device=None))
    return {"apiVersion": "v1", "kind": "List", "items": items}


def new_pod(i: int) -> dict[str, Any]:
    """The pod of call ``i`` (a fresh UID: no evaluation carried over from another pod)."""
    return _pod(f"bench-{i}", "resnet50", rate_rps=10, slo_ms=POD_SLO_MS, node=None, device=None)


# ----------------------------------------------------------------------------- the null extender


def null_app() -> Any:
    """The thinnest Flask extender (``null_extender.null_app``): every node passes / scores 0 /
    binds nothing."""
    import null_extender

    return null_extender.null_app()


def serve_null(port: int) -> None:
    from qosched.extender.cli.serve import ExtenderServer

    ExtenderServer(null_app, {"bind": f"127.0.0.1:{port}"}).run()


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: Sequence[str], base: str, timeout_s: float = 300.0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QOSCHED_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        try:
            if requests.get(base + "/readyz", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd)} not ready within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU of a process [s] (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- measuring


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed_posts(
    session: requests.Session, url: str, bodies: Sequence[bytes]
) -> tuple[list[float], list[Any]]:
    times, answers = [], []
    for body in bodies:
        t0 = time.perf_counter()
        r = session.post(url, data=body, headers=JSON, timeout=30)
        answer = orjson.loads(r.content)
        times.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
        answers.append(answer)
    return times, answers


def cycles(
    bases: dict[str, str], workers: dict[str, int], names: list[str], calls: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """filter (all names) then prioritize (the kept names) for ``calls`` new pods, on every server.

    The servers take turns pod by pod (qosched, null, qosched, ...), each over its own keep-alive
    session, so a burst of load from elsewhere on the machine hits both sides alike. Besides the
    latency, the worker's CPU time is read around every call (``/proc``, 10 ms ticks: the sum
    over hundreds of calls is exact on average); CPU per call does not grow when other processes
    take the cores, latency does.
    """
    out = {label: {"filter": [], "prioritize": [], "filter_cpu": [], "prioritize_cpu": []} for label in bases}
    sessions = {label: requests.Session() for label in bases}
    try:
        for i in range(warmup + calls):
            pod = new_pod(i)
            filter_body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
            for label, base in bases.items():
                session, worker = sessions[label], workers[label]
                c0 = cpu_s(worker)
                t_f, (kept,) = timed_posts(session, base + "/filter", [filter_body])
                c1 = cpu_s(worker)
                survivors = kept["NodeNames"] or []
                t_p, _ = timed_posts(
                    session,
                    base + "/prioritize",
                    [orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": survivors})],
                )
                c2 = cpu_s(worker)
                if i >= warmup:
                    out[label]["filter"] += t_f
                    out[label]["prioritize"] += t_p
                    out[label]["filter_cpu"].append(c1 - c0)
                    out[label]["prioritize_cpu"].append(c2 - c1)
    finally:
        for session in sessions.values():
            session.close()
    return out


def binds(base: str, master: int, names: list[str], count: int) -> tuple[list[float], float, int]:
    """``count`` binds of pending pods, back to back; latency per bind and worker CPU per bind.

    No filter in between (its CPU would swamp the bind's in the worker's CPU count, which
    ``/proc`` gives in 10 ms ticks): the extender evaluates the chosen node from the pod in its
    cache, the path of a bind whose filter evaluation went stale. Nodes are taken round-robin.
    """
    worker = children(master)[0]
    bodies = [
        orjson.dumps(
            {
                "PodName": f"pending-{j}",
                "PodNamespace": "default",
                "PodUID": f"pending-{j}",
                "Node": names[j % len(names)],
            }
        )
        for j in range(count)
    ]
    with requests.Session() as session:
        c0 = cpu_s(worker)
        times, answers = timed_posts(session, base + "/bind", bodies)
        cpu = cpu_s(worker) - c0
    return times, cpu / count, sum(bool(a.get("Error")) for a in answers)


def mean_metric(base: str, family: str) -> dict[str, float]:
    """Mean of a per-verb histogram of the server [ms]: ``family`` without ``_sum``/``_count``."""
    text = requests.get(base + "/metrics", timeout=10).text
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            if line.startswith(family + suffix + "{"):
                verb = line.split('verb="')[1].split('"')[0]
                into[verb] = float(line.rsplit(" ", 1)[1])
    return {v: 1000 * sums[v] / counts[v] for v in sums if counts.get(v)}


def in_process_policy(path: Path, names: list[str], calls: int) -> list[float]:
    """``policy.evaluate`` alone on the same cluster and candidates [s per call]."""
    from qosched.extender.kube.cache import StaticCluster
    from qosched.extender.kube.objects import pod_demand
    from qosched.extender.server.runtime import rows_of
    from qosched.policies.placement.base import make_policy
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.store import bundled_profiles

    cache = StaticCluster.from_file(path, *lookup_from_profiles(bundled_profiles()))
    policy = make_policy("qosched")
    times = []
    with cache.reading() as state:
        rows = rows_of(state, names)
        for i in range(calls):
            demand = pod_demand(new_pod(i))
            t0 = time.perf_counter()
            policy.evaluate(state, demand, rows)
            times.append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------- in process


def use_extender_from(directory: Path) -> None:
    """Import ``qosched.extender`` from ``directory`` (e.g. an older version from ``git archive``),
    with this checkout's ``policies`` and ``profiles``: a ``qosched`` package of symlinks put first
    on ``sys.path``, ahead of the editable install."""
    root = Path(tempfile.mkdtemp(prefix="bench-extender-pkg-"))
    pkg = root / "qosched"
    pkg.mkdir()
    here = Path(__file__).resolve().parents[1]
    (pkg / "extender").symlink_to(directory.resolve())
    (pkg / "policies").symlink_to(here / "policies")
    (pkg / "profiles").symlink_to(here / "profiles")
    sys.path.insert(0, str(root))
    import yaml

    # Old loaders parse snapshots with pure-Python PyYAML (minutes at 5,000 nodes); our files are
    # JSON, so hand them to orjson to keep the comparison about the request path.
    yaml.safe_load_all = lambda text: [orjson.loads(text)]  # type: ignore[assignment]


def in_process(n_nodes: int, calls: int, workdir: Path) -> dict[str, list[float]]:
    """CPU time per call [s] of filter and prioritize through the Flask test client (no HTTP)."""
    from prometheus_client import CollectorRegistry

    from qosched.extender.server.app import create_app

    path = workdir / f"cluster-{n_nodes}.json"
    path.write_bytes(orjson.dumps(make_snapshot(n_nodes, pending=0)))
    app = create_app({"CLUSTER_FILE": str(path)}, registry=CollectorRegistry())
    client = app.test_client()
    names = [node_name(i) for i in range(n_nodes)]
    out: dict[str, list[float]] = {"filter": [], "prioritize": []}
    warmup = max(10, calls // 10)
    for i in range(warmup + calls):
        body = orjson.dumps({"Pod": new_pod(i), "Nodes": None, "NodeNames": names})
        for verb in ("filter", "prioritize"):
            t0 = time.thread_time()
            response = client.post("/" + verb, data=body, content_type="application/json")
            spent = time.thread_time() - t0
            if response.status_code != 200:
                raise RuntimeError(f"/{verb}: HTTP {response.status_code}")
            if i >= warmup:
                out[verb].append(spent)
    return out


# ----------------------------------------------------------------------------- main


def row(label: str, ours: Sequence[float], null: Sequence[float] | None) -> str:
    p50, p99 = 1000 * pct(ours, 50), 1000 * pct(ours, 99)
    if null is None:
        return f"  {label:<22} {p50:8.2f} {p99:8.2f}"
    n50, n99 = 1000 * pct(null, 50), 1000 * pct(null, 99)
    return f"  {label:<22} {p50:8.2f} {p99:8.2f}   {n50:8.2f} {n99:8.2f}   {p50 - n50:+8.2f}"


def run(n_nodes: int, calls: int, bind_count: int, workdir: Path, python: str) -> dict[str, Any]:
    path = workdir / f"cluster-{n_nodes}.json"
    path.write_bytes(orjson.dumps(make_snapshot(n_nodes, pending=bind_count)))
    names = [node_name(i) for i in range(n_nodes)]
    warmup = max(10, calls // 10)
    result: dict[str, Any] = {"nodes": n_nodes}

    ours, null = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    proc = start(
        [
            python,
            "-m",
            "qosched.extender.cli.main",
            "serve",
            "--cluster",
            str(path),
            "--port",
            ours.rsplit(":", 1)[1],
        ],
        ours,
    )
    result["startup_s"] = time.perf_counter() - t0
    null_proc = start([python, __file__, "--serve-null", null.rsplit(":", 1)[1]], null)
    try:
        result["load_before"] = Path("/proc/loadavg").read_text().split()[0]
        workers = {"qosched": children(proc.pid)[0], "null": children(null_proc.pid)[0]}
        timings = cycles({"qosched": ours, "null": null}, workers, names, calls, warmup)
        result["qosched"], result["null"] = timings["qosched"], timings["null"]
        result["policy_metric_ms"] = mean_metric(ours, "qosched_extender_policy_decision_duration_seconds")
        result["server_metric_ms"] = mean_metric(ours, "qosched_extender_request_duration_seconds")
        result["bind"], result["bind_cpu_s"], result["bind_errors"] = binds(ours, proc.pid, names, bind_count)
        result["null_bind"], result["null_bind_cpu_s"], _ = binds(null, null_proc.pid, names, bind_count)
        result["load_after"] = Path("/proc/loadavg").read_text().split()[0]
    finally:
        stop(proc)
        stop(null_proc)

    result["policy_in_process"] = in_process_policy(path, names, calls)
    return result


def report(r: dict[str, Any]) -> None:
    print(
        f"\n{r['nodes']:,} nodes ({GPUS_PER_NODE} GPUs, {SERVICES_PER_GPU} services/GPU); startup {r['startup_s']:.1f} s;"
        f" 1-min load average {r['load_before']} -> {r['load_after']} on {os.cpu_count()} CPUs"
    )
    print(f"  {'[ms]':<22} {'p50':>8} {'p99':>8}   {'null p50':>8} {'null p99':>8}   {'Δp50':>8}")
    print(row("filter (all nodes)", r["qosched"]["filter"], r["null"]["filter"]))
    print(row("prioritize (kept)", r["qosched"]["prioritize"], r["null"]["prioritize"]))
    for verb in ("filter", "prioritize"):
        ours = 1000 * float(np.mean(r["qosched"][f"{verb}_cpu"]))
        null = 1000 * float(np.mean(r["null"][f"{verb}_cpu"]))
        print(f"  {verb} worker CPU per call [ms]: {ours:.2f} (null {null:.2f}, +{ours - null:.2f})")
    print(row("policy, in process", r["policy_in_process"], None))
    for key, what in (("server_metric_ms", "server-side request"), ("policy_metric_ms", "policy")):
        means = ", ".join(
            f"{v} {ms:.2f}" for v, ms in sorted(r[key].items()) if v in ("filter", "prioritize")
        )
        print(f"  {what} mean from /metrics [ms]: {means}")
    print(row("bind (whole request)", r["bind"], r["null_bind"]))
    print(
        f"  bind worker CPU per call: {1000 * r['bind_cpu_s']:.2f} ms (null {1000 * r['null_bind_cpu_s']:.2f} ms);"
        f" bind errors {r['bind_errors']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", default="1000,5000", help="comma-separated node counts")
    parser.add_argument("--calls", type=int, default=300, help="measured calls per verb")
    parser.add_argument("--binds", type=int, default=300, help="binds measured")
    parser.add_argument("--out", type=Path, help="also write the raw figures as JSON here")
    parser.add_argument(
        "--in-process", action="store_true", help="CPU per call through the Flask test client only (no HTTP)"
    )
    parser.add_argument(
        "--extender-dir",
        type=Path,
        help="with --in-process: take qosched.extender from this directory (e.g. `git archive REV extender`)",
    )
    parser.add_argument(
        "--slo-ms",
        type=int,
        default=POD_SLO_MS,
        help="SLO of the measured pods [ms]; 3 makes every node fail (rejection messages' cost)",
    )
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    globals()["POD_SLO_MS"] = args.slo_ms  # read by new_pod
    if args.serve_null:
        serve_null(args.serve_null)
        return 0
    if args.in_process:
        if args.extender_dir:
            use_extender_from(args.extender_dir)
        with tempfile.TemporaryDirectory(prefix="bench-extender-") as tmp:
            for n in (int(x) for x in args.nodes.split(",") if x.strip()):
                cpu = in_process(n, args.calls, Path(tmp))
                for verb, values in cpu.items():
                    print(
                        f"{n:,} nodes, {verb}: CPU per call median {1000 * float(np.median(values)):.2f} ms,"
                        f" mean {1000 * float(np.mean(values)):.2f} ms ({args.extender_dir or 'this checkout'})"
                    )
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-extender-") as tmp:
        for n in (int(x) for x in args.nodes.split(",") if x.strip()):
            results.append(run(n, args.calls, args.binds, Path(tmp), sys.executable))
            report(results[-1])
    if args.out:
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
