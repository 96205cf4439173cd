"""Pods per second behind a scheduler: qosched vs the thinnest Flask extender, end to end (issue 19).

Three kinds of process, as on a cluster, all on loopback:

* **API server**: the project's fake kube-apiserver (``tests/kubefake``: real REST, list/watch,
  ``pods/binding``), run in its own process (``--serve-api``), loaded with ``--nodes`` nodes of 4
  ``nvidia-t4`` GPUs and ``--pods`` pending pods whose bodies are the captured kube-scheduler v1.36
  request's pod (``shared/fixtures/kube-scheduler/filter-low-nodecache.json``: 250 milli-GPU,
  class batch, resnet50) with their own name and UID.
* **extender**: either qosched as ``manifests/deployment.yaml`` runs it (``gunicorn
  -c python:qosched.extender.server.gunicorn_conf 'qosched.extender.server.app:create_app()'``,
  one worker, the manifest's ``QOSCHED_THREADS``, policy, timeouts and ConfigMap settings,
  watch-fed from the API server), or the null extender (:func:`null_app`: every node passes,
  score 0, one keep-alive ``Binding`` POST per bind) under the same gunicorn settings file.
* **scheduler** (``--schedule``): plays kube-scheduler's loop with an extender configured as in
  ``manifests/scheduler-config.yaml`` (``nodeCacheCapable``; filter + bind, plus prioritize when
  the config has a ``prioritizeVerb``: :func:`manifest_setup`): one pod at a time, ``/filter``
  with the full pod and ``NodeNames`` (a sample, below), ``/prioritize`` with the kept names
  (without ``prioritizeVerb`` kube-scheduler's own scores pick among the kept nodes: none here,
  so a random one), the highest score wins (ties broken at random, as ``selectHost``), and the
  ``/bind`` runs asynchronously in a pool (kube-scheduler's binding cycle is a goroutine: it
  overlaps the next pods' scheduling cycles). A bind ``Error`` or a failed verb puts the pod back
  in the queue. Bodies are encoded with orjson and sent over keep-alive ``http.client``
  connections, so the stand-in itself costs little CPU.

Node sampling: kube-scheduler's filter stops after ``numFeasibleNodesToFind`` feasible nodes,
starting where the previous cycle stopped (``nextStartNodeIndex``). With the default
``percentageOfNodesToScore`` (0: adaptive), upstream ``pkg/scheduler/schedule_one.go``::

    if numAllNodes < 100 (minFeasibleNodesToFind) or percentage >= 100: all nodes
    percentage = 50 - numAllNodes / 125            (integer division; at least 5)
    numNodes   = max(numAllNodes * percentage / 100, 100)

500 nodes → 46 % → 230 names per ``/filter`` (``--sample adaptive``, the default); ``--sample
all`` sends every node, ``--sample N`` a fixed count.

Each run starts a fresh API server and extender; qosched and null runs alternate in pairs (the
order swaps every pair) and the report gives medians over the pairs of: pods/s (all pods bound:
first ``/filter`` sent → last successful ``/bind`` answered), qosched/null ratio per pair,
per-verb p50/p99 as the scheduler saw them, the extender's CPU per pod (gunicorn master + worker,
``/proc``), and the extender's start-up (process start → ``/readyz`` 200).

Run: ``.venv/bin/python benchmarks/bench_scheduler_loop.py [--pairs 3] [--nodes 500] [--pods 1500]``
(about 20 s per run on 2 cores). ``--only qosched`` runs one side (profiling);
``--extender-env K=V`` adds a ``QOSCHED_*`` setting to qosched's environment; ``--protocol
full|best-only`` overrides the manifests' choice of verbs for qosched.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "kube-scheduler" / "filter-low-nodecache.json"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
GPUS_PER_NODE = 4
#: Variables of the extender container the benchmark replaces: the in-cluster config (by its
#: kubeconfig), file paths (a temporary directory; no upload token), the read-only root's caches.
NOT_FROM_MANIFEST = frozenset(
    {"QOSCHED_IN_CLUSTER", "QOSCHED_PROFILES_DIR", "QOSCHED_UPLOAD_TOKEN_FILE", "MPLCONFIGDIR", "HOME"}
)


@dataclass(frozen=True)
class ManifestSetup:
    """How the manifests run qosched: the extender container's environment and whether the
    scheduler config has a ``prioritizeVerb``."""

    env: dict[str, str]
    prioritize: bool


def manifest_setup(rev: str | None = None) -> ManifestSetup:
    """``manifests/deployment.yaml``'s extender env (less :data:`NOT_FROM_MANIFEST`) and
    ``manifests/scheduler-config.yaml``'s verbs, of this checkout or of git revision ``rev``."""
    import yaml

    def read(path: str) -> str:
        if rev is None:
            return (ROOT / path).read_text()
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    (deployment,) = [
        d
        for d in yaml.safe_load_all(read("manifests/deployment.yaml"))
        if d and d.get("kind") == "Deployment" and d["metadata"]["name"] == "qosched"
    ]
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "extender"
    ]
    env = {
        e["name"]: str(e["value"])
        for e in container.get("env") or []
        if "value" in e and e["name"] not in NOT_FROM_MANIFEST
    }
    (config_map,) = [d for d in yaml.safe_load_all(read("manifests/scheduler-config.yaml")) if d]
    (extender,) = yaml.safe_load(config_map["data"]["scheduler-config.yaml"])["extenders"]
    return ManifestSetup(env=env, prioritize=bool(extender.get("prioritizeVerb")))


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """kube-scheduler's ``numFeasibleNodesToFind`` (module docstring), percentage 0 = adaptive."""
    min_nodes, min_percentage = 100, 5
    if num_all_nodes < min_nodes or percentage >= 100:
        return num_all_nodes
    if percentage <= 0:
        percentage = max(50 - num_all_nodes // 125, min_percentage)
    return max(num_all_nodes * percentage // 100, min_nodes)


def node_name(i: int) -> str:
    return f"gpu-node-{i:04d}"


def fixture_pod() -> dict[str, Any]:
    """The pod kube-scheduler v1.36 sent in the captured ``/filter`` request."""
    return dict(json.loads(FIXTURE.read_text())["request"]["Pod"])


def pod_from_fixture(template: dict[str, Any], i: int) -> dict[str, Any]:
    pod = copy.deepcopy(template)
    meta = pod["metadata"]
    meta["name"] = f"low-{i:05d}"
    meta["uid"] = f"00000000-0000-4000-8000-{i:012d}"
    for key in ("resourceVersion", "creationTimestamp", "generation"):
        meta.pop(key, None)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    return pod


# ----------------------------------------------------------------------------- API server process


def _fast_json(server: Any, store: Any) -> None:
    """The fake's JSON work through orjson (same values): its stdlib ``json`` encoding and
    ``copy.deepcopy`` per object made a 50,000-pod list take minutes (each 500-item page copies
    every pod), which measured the fake, not the extender. kube-apiserver serves such lists from
    its watch cache in well under a second."""
    import json
    import types

    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    server.json = types.SimpleNamespace(dumps=dumps, loads=json.loads, JSONDecodeError=json.JSONDecodeError)
    store.copy = types.SimpleNamespace(deepcopy=lambda obj: orjson.loads(orjson.dumps(obj)))

    def list_objects(self: Any, resource: Any, namespace: str | None = None, at_rv: int | None = None) -> Any:
        # A list only serialises its items: no copy of every object per page (the fake's list
        # copies them all for each 500-item page, quadratic in the pods).
        with self.lock:
            state = dict(self._objects[resource]) if at_rv is None else self._state_at(resource, at_rv)
            rv = self._rv if at_rv is None else at_rv
            return [state[k] for k in sorted(state) if namespace is None or k[0] == namespace], rv

    store.ObjectStore.list_objects = list_objects


def serve_api(nodes: int, pods: int, port_file: Path) -> None:
    """The fake API server with the cluster, in this process, until SIGTERM."""
    sys.path.insert(0, str(ROOT))
    from tests.kubefake import FakeKubeAPI, server, store

    # Go's net/http (kube-apiserver) sets TCP_NODELAY; http.server does not, and a response
    # written as headers + body then waits for the client's delayed ACK (~40 ms per binding).
    server._Handler.disable_nagle_algorithm = True
    _fast_json(server, store)
    api = FakeKubeAPI(bookmark_interval_s=30.0).start()
    for i in range(nodes):
        api.add_node(node_name(i), accelerator="nvidia-t4", gpus=GPUS_PER_NODE)
    template = fixture_pod()
    for i in range(pods):
        api.add_pod(pod_from_fixture(template, i))
    port_file.write_text(api.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    api.stop()


# ----------------------------------------------------------------------------- the null extender


def null_app() -> Any:
    """The thinnest Flask extender (``null_extender.null_app``) with one Binding POST per bind.

    The bind is one keep-alive POST of a ``v1.Binding`` through a urllib3 pool to the API server
    named by ``NULL_API_URL`` (what a minimal Python extender with a bind verb must do).
    """
    import null_extender
    import urllib3

    api_url = os.environ["NULL_API_URL"].rstrip("/")
    pool = urllib3.PoolManager(maxsize=8)

    def bind(doc: dict[str, Any]) -> str:
        ns, name = doc["PodNamespace"], doc["PodName"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": doc["PodUID"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": doc["Node"]},
        }
        resp = pool.request(
            "POST",
            f"{api_url}/api/v1/namespaces/{ns}/pods/{name}/binding",
            body=orjson.dumps(body),
            headers=JSON_HEADERS,
            timeout=5.0,
        )
        return "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"

    return null_extender.null_app(bind)


# ----------------------------------------------------------------------------- the scheduler


@dataclass
class Verbs:
    """Latencies per verb [s] as the scheduler saw them (thread-safe appends)."""

    times: dict[str, list[float]] = field(
        default_factory=lambda: {"filter": [], "prioritize": [], "bind": []}
    )

    def add(self, verb: str, seconds: float) -> None:
        self.times[verb].append(seconds)


class Connection(threading.local):
    """One keep-alive HTTP/1.1 connection per thread (kube-scheduler's transport keeps them)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def post(self, path: str, body: bytes) -> Any:
        try:
            self.conn.request("POST", path, body, JSON_HEADERS)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return None
        return orjson.loads(data) if resp.status == 200 else None


def schedule(
    extender_url: str, api_url: str, sample: str, out: Path, seed: int, prioritize: bool = True
) -> None:
    """kube-scheduler's loop over every pending pod (module docstring); figures written to ``out``."""
    # The bind threads must get the GIL promptly when their answer arrives (Go's goroutines would
    # run on another core); the default 5 ms switch interval would add up to 5 ms to each bind.
    sys.setswitchinterval(0.0002)
    host, port = extender_url.removeprefix("http://").split(":")
    api_host, api_port = api_url.removeprefix("http://").split(":")
    api = http.client.HTTPConnection(api_host, int(api_port), timeout=30)
    api.request("GET", "/api/v1/nodes")
    nodes = [n["metadata"]["name"] for n in orjson.loads(api.getresponse().read())["items"]]
    api.request("GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D")
    pods = orjson.loads(api.getresponse().read())["items"]
    api.close()
    count = (
        len(nodes)
        if sample == "all"
        else num_feasible_nodes_to_find(len(nodes))
        if sample == "adaptive"
        else int(sample)
    )
    rng = random.Random(seed)
    verbs = Verbs()
    queue: deque[dict[str, Any]] = deque(pods)
    retry: list[tuple[float, dict[str, Any]]] = []  # (when the backoff ends, pod)
    failures: dict[str, int] = {}
    retry_lock = threading.Lock()
    cycle = Connection(host, int(port))
    binder = Connection(host, int(port))
    bound = 0
    bound_lock = threading.Lock()
    attempts = 0
    start = 0
    errors: dict[str, int] = {}

    def back_off(pod: dict[str, Any]) -> None:
        """kube-scheduler's pod backoff: 1 s doubling per failed attempt up to 10 s (the
        defaults of ``podInitialBackoffSeconds`` / ``podMaxBackoffSeconds``)."""
        uid = pod["metadata"]["uid"]
        with retry_lock:
            failures[uid] = n = failures.get(uid, 0) + 1
            retry.append((time.perf_counter() + min(2.0 ** (n - 1), 10.0), pod))

    def bind(pod: dict[str, Any], node: str) -> None:
        nonlocal bound
        meta = pod["metadata"]
        body = orjson.dumps(
            {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": node}
        )
        t0 = time.perf_counter()
        answer = binder.post("/bind", body)
        verbs.add("bind", time.perf_counter() - t0)
        if answer is None or answer.get("Error"):
            why = "bind: " + ("no answer" if answer is None else str(answer["Error"])[:40])
            with retry_lock:
                errors[why] = errors.get(why, 0) + 1
            back_off(pod)
            return
        with bound_lock:
            bound += 1

    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="bind") as pool:
        while bound < len(pods):
            if not queue:
                now = time.perf_counter()
                with retry_lock:
                    queue.extend(p for t, p in retry if t <= now)
                    retry[:] = [(t, p) for t, p in retry if t > now]
                if not queue:  # every pod bound, being bound or backing off: wait
                    time.sleep(0.0005)
                    continue
            pod = queue.popleft()
            attempts += 1
            names = [nodes[(start + k) % len(nodes)] for k in range(count)]
            start = (start + count) % len(nodes)
            args = {"Pod": pod, "Nodes": None, "NodeNames": names}
            t0 = time.perf_counter()
            kept = cycle.post("/filter", orjson.dumps(args))
            verbs.add("filter", time.perf_counter() - t0)
            if not kept or kept.get("Error") or not kept.get("NodeNames"):
                why = "filter: " + ("no answer" if not kept else str(kept.get("Error") or "no node")[:60])
                errors[why] = errors.get(why, 0) + 1
                back_off(pod)
                continue
            feasible = kept["NodeNames"]
            if not prioritize:  # no prioritizeVerb: kube-scheduler's own scores pick (none here)
                pool.submit(bind, pod, rng.choice(feasible))
                continue
            t0 = time.perf_counter()
            scores = cycle.post(
                "/prioritize", orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": feasible})
            )
            verbs.add("prioritize", time.perf_counter() - t0)
            if scores is None:
                errors["prioritize: no answer"] = errors.get("prioritize: no answer", 0) + 1
                back_off(pod)
                continue
            best = max(s["Score"] for s in scores) if scores else 0
            chosen = rng.choice([s["Host"] for s in scores if s["Score"] == best] or feasible)
            pool.submit(bind, pod, chosen)
    elapsed = time.perf_counter() - t_start
    out.write_bytes(
        orjson.dumps(
            {
                "pods": len(pods),
                "bound": bound,
                "attempts": attempts,
                "elapsed_s": elapsed,
                "sample": count,
                "errors": errors,
                **verbs.times,
            }
        )
    )


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_kubeconfig(url: str, path: Path) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "qosched", "user": {"token": "bench"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "qosched"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(cfg))
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU of a process [s] (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 120.0) -> float:
    """Seconds from now until ``GET /readyz`` answers 200 (polled every 10 ms)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"extender exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"extender not ready within {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM and wait; seconds until it exited."""
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.perf_counter() - t0


def start_api(tmp: Path, nodes: int, pods: int) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / f"api-{time.monotonic_ns()}.url"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-api", str(port_file), "--nodes", str(nodes), "--pods", str(pods)]
    )
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None:
            raise RuntimeError("API server exited")
        time.sleep(0.05)
    return proc, port_file.read_text()


def start_extender(
    kind: str, api_url: str, tmp: Path, extra_env: dict[str, str], manifest_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        **(manifest_env or {}),
        "QOSCHED_LOG_LEVEL": "warning",
        "QOSCHED_BIND": f"127.0.0.1:{port}",
    }
    gunicorn = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--config=python:qosched.extender.server.gunicorn_conf",
    ]
    if kind.startswith("qosched"):
        if "@" in kind:  # an older qosched: its tree first on the path (see --baseline)
            env["PYTHONPATH"] = str(tmp / "baseline")
        env["QOSCHED_KUBECONFIG"] = str(write_kubeconfig(api_url, tmp / "kubeconfig.json"))
        env["QOSCHED_PROFILES_DIR"] = str(tmp / "profiles")
        env.update(extra_env)
        cmd = [*gunicorn, "qosched.extender.server.app:create_app()"]
    else:
        env["NULL_API_URL"] = api_url
        cmd = [*gunicorn, "--pythonpath", str(Path(__file__).parent), "bench_scheduler_loop:null_app()"]
    return subprocess.Popen(cmd, env=env, cwd=tmp, start_new_session=True), port


def unpack_baseline(rev: str, into: Path) -> None:
    """The extender as of ``REV`` with this checkout's committed policies and profiles, as a
    ``qosched`` package at ``into`` (``git archive``): put first on ``PYTHONPATH``, it wins over the
    editable install (whose finder comes last). Only the extender differs, so policy changes made
    meanwhile do not count as the extender's."""
    into.mkdir(parents=True)
    for tree, paths in ((rev, ["extender"]), ("HEAD", ["policies", "profiles"])):
        archive = subprocess.run(
            ["git", "archive", tree, *paths], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def startup_runs(kinds: list[str], args: argparse.Namespace, tmp: Path) -> None:
    """``--startup-only``: one API server, each extender started ``--pairs`` times in turns;
    process start → ``/readyz`` 200 and SIGTERM → exit (with no connection open)."""
    api, api_url = start_api(tmp, args.nodes, args.pods)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}  # the extender's own CPU [s] at ready
    try:
        for _ in range(args.pairs):
            for kind in kinds:
                t0 = time.perf_counter()
                ext, port = start_extender(
                    kind,
                    api_url,
                    tmp,
                    dict(kv.split("=", 1) for kv in args.extender_env),
                    setup_for(kind, args.protocol).env,
                )
                try:
                    wait_ready(ext, port, timeout_s=600)
                    times[kind].append(time.perf_counter() - t0)
                    cpus[kind].append(sum(cpu_s(p) for p in [ext.pid, *children(ext.pid)]))
                finally:
                    stop(ext)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(60)
    for kind, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{kind:18} start-up to /readyz: median {median(values):.2f} s ({runs}), extender CPU by then"
            f" {median(cpus[kind]):.2f} s; {args.nodes} nodes, {args.pods} pods"
        )


def setup_for(kind: str, protocol: str) -> ManifestSetup:
    """How ``kind`` runs: qosched as its own revision's manifests run it (``qosched@REV``: REV's
    manifests), unless ``protocol`` names one; the null extender always with filter + prioritize
    + bind, under this checkout's gunicorn settings (threads)."""
    here = manifest_setup()
    if kind == "null":
        return ManifestSetup(env=here.env, prioritize=True)
    setup = manifest_setup(kind.split("@", 1)[1] if "@" in kind else None)
    if protocol == "manifests":
        return setup
    best_only = protocol == "best-only"
    env = {**setup.env, "QOSCHED_FILTER_KEEPS_BEST_ONLY": "true" if best_only else "false"}
    return ManifestSetup(env=env, prioritize=not best_only)


def one_run(kind: str, args: argparse.Namespace, tmp: Path, seed: int) -> dict[str, Any]:
    api, api_url = start_api(tmp, args.nodes, args.pods)
    extra = dict(kv.split("=", 1) for kv in args.extender_env)
    setup = setup_for(kind, args.protocol)
    try:
        t0 = time.perf_counter()
        ext, port = start_extender(kind, api_url, tmp, extra, setup.env)
        try:
            wait_ready(ext, port)
            startup_s = time.perf_counter() - t0
            pids = [ext.pid, *children(ext.pid)]
            cpu0 = sum(cpu_s(p) for p in pids)
            out = tmp / f"sched-{kind}-{seed}.json"
            cmd = [
                sys.executable,
                __file__,
                "--schedule",
                f"http://127.0.0.1:{port}",
                api_url,
                args.sample,
                str(out),
                str(seed),
                "prioritize" if setup.prioritize else "noprioritize",
            ]
            subprocess.run(cmd, check=True)
            cpu = sum(cpu_s(p) for p in pids) - cpu0
            result: dict[str, Any] = orjson.loads(out.read_bytes())
        finally:
            result_stop = stop(ext)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)
    result.update(
        kind=kind, startup_s=startup_s, stop_s=result_stop, cpu_s=cpu, prioritize_verb=setup.prioritize
    )
    result["pods_per_s"] = result["bound"] / result["elapsed_s"]
    result["cpu_ms_per_pod"] = 1000 * cpu / result["bound"]
    return result


def refusals(run: dict[str, Any]) -> str:
    """The failed attempts of a run by cause (each cost its pod a backoff of 1 s or more)."""
    return ", ".join(f"{n} {why}" for why, n in sorted(run["errors"].items())) or "none failed"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:  # a verb not called (no prioritizeVerb)
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pods_per_s": median(r["pods_per_s"] for r in runs),
        "cpu_ms_per_pod": median(r["cpu_ms_per_pod"] for r in runs),
        "startup_s": median(r["startup_s"] for r in runs),
        "stop_s": median(r["stop_s"] for r in runs),
        "attempts": median(r["attempts"] for r in runs),
        **{
            f"{verb}_p{q}_ms": median(pct(r[verb], q) for r in runs)
            for verb in ("filter", "prioritize", "bind")
            for q in (50, 99)
        },
    }


def report(runs: list[dict[str, Any]], kinds: list[str], args: argparse.Namespace) -> None:
    """The medians per extender and the ratio to the null extender per pair."""
    by_kind = {k: summary([r for r in runs if r["kind"] == k]) for k in kinds}
    sample = runs[0]["sample"]
    print(
        f"\n{args.nodes} nodes x {GPUS_PER_NODE} GPUs, {args.pods} pods, {sample} names per /filter, {args.pairs} pairs (medians)"
    )
    header = f"{'':18}{'pods/s':>8}{'CPU/pod ms':>11}{'start s':>8}{'stop s':>7}"
    header += "".join(
        f"{v[:4] + ' p' + q:>11}" for v in ("filter", "prioritize", "bind") for q in ("50", "99")
    )
    print(header)
    for kind, s in by_kind.items():
        line = f"{kind:18}{s['pods_per_s']:8.1f}{s['cpu_ms_per_pod']:11.2f}{s['startup_s']:8.2f}{s['stop_s']:7.2f}"
        line += "".join(
            f"{s[f'{v}_p{q}_ms']:11.2f}" for v in ("filter", "prioritize", "bind") for q in ("50", "99")
        )
        print(line)
    for kind in (k for k in kinds if k != "null" and "null" in kinds):
        ratios = [
            q["pods_per_s"] / n["pods_per_s"]
            for q, n in zip(
                [r for r in runs if r["kind"] == kind], [r for r in runs if r["kind"] == "null"], strict=True
            )
        ]
        print(
            f"{kind}/null pods/s per pair: {', '.join(f'{x:.2f}' for x in ratios)}; median {median(ratios):.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=1500)
    parser.add_argument(
        "--sample",
        default="adaptive",
        help="names per /filter: adaptive (kube-scheduler's default), all, or N",
    )
    parser.add_argument("--only", choices=("qosched", "null"))
    parser.add_argument("--extender-env", action="append", default=[], metavar="QOSCHED_KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write every run's figures as JSON")
    parser.add_argument("--serve-api", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--protocol",
        choices=("manifests", "full", "best-only"),
        default="manifests",
        help="qosched's verbs: as its manifests configure them (default; qosched@REV: REV's), filter +"
        " prioritize + bind (full), or FILTER_KEEPS_BEST_ONLY without prioritizeVerb; the null extender"
        " always filter + prioritize + bind",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run qosched's extender as of this git revision (same run, interleaved)",
    )
    parser.add_argument(
        "--startup-only", action="store_true", help="measure start-up to /readyz only (--pairs times each)"
    )
    parser.add_argument("--schedule", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_api:
        serve_api(args.nodes, args.pods, args.serve_api)
        return 0
    if args.schedule:
        ext, api, sample, out, seed, verbs = args.schedule
        schedule(ext, api, sample, Path(out), int(seed), prioritize=verbs == "prioritize")
        return 0
    kinds = [args.only] if args.only else ["qosched", "null"]
    if args.baseline:
        kinds.insert(1, f"qosched@{args.baseline}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        if args.baseline:
            unpack_baseline(args.baseline, Path(tmp) / "baseline" / "qosched")
        if args.startup_only:
            startup_runs(kinds, args, Path(tmp))
            return 0
        for pair in range(args.pairs):
            order = kinds if pair % 2 == 0 else kinds[::-1]
            for kind in order:
                r = one_run(kind, args, Path(tmp), seed=pair)
                runs.append(r)
                print(
                    f"pair {pair} {kind:16} {r['pods_per_s']:6.1f} pods/s  {r['cpu_ms_per_pod']:5.2f} ms CPU/pod"
                    f"  filter p50 {pct(r['filter'], 50):5.2f} ms  start {r['startup_s']:4.2f} s  stop {r['stop_s']:4.2f} s"
                    f"  attempts {r['attempts']} ({refusals(r)})  verbs {'f+p+b' if r['prioritize_verb'] else 'f+b'}"
                    f"  load {Path('/proc/loadavg').read_text().split()[0]}",
                    flush=True,
                )
    report(runs, kinds, args)
    if args.out:
        args.out.write_bytes(orjson.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
