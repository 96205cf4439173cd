"""CPU and wall time of one bind call: ``KubeBinder`` vs a bare keep-alive POST vs the stock client.

Four ways to send the same ``v1.Binding`` (target node, three qosched result annotations, UID
precondition) to ``POST /api/v1/namespaces/{ns}/pods/{name}/binding``, each binding its own fresh
pending pods, in the same run:

* ``kubebinder``      ``qosched.extender.kube.kube_binder.KubeBinder.bind`` (orjson body, the
                      ApiClient's urllib3 pool, auth from its Configuration, status mapped).
* ``minimal``         the floor: ``http.client.HTTPConnection`` kept alive, orjson body, read the
                      answer, check the status. No auth refresh, no pool, no error mapping.
* ``stock-raw``       ``CoreV1Api.create_namespaced_pod_binding(..., _preload_content=False)``
                      with a ``V1Binding`` model (the documented workaround of the client bug).
* ``stock``           the same with default deserialisation: the pod IS bound, then the client
                      fails to read the ``Status`` answer as a ``V1Binding`` and raises pydantic's
                      ValidationError (caught here); what a naive caller pays.

The fake kube-apiserver (``tests/kubefake``) runs in a separate process on loopback, so
``time.process_time`` of this process is the client's CPU only. Every bind runs in this one
thread; each method binds ``--pods`` pods per round, rounds alternate the methods, and the
median round is reported. ``ratio`` columns divide a method's CPU per bind by kubebinder's.

Run: ``.venv/bin/python benchmarks/bench_bind.py [--pods 400] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``tests.kubefake`` lives in the repository, not in the package
    sys.path.insert(0, str(ROOT))

ANNOTATIONS = {
    "qosched.io/device": "0",
    "qosched.io/predicted-latency-ms": "12.345",
    "qosched.io/policy": "qosched",
}
METHODS = ("kubebinder", "minimal", "stock-raw", "stock")


def _serve(conn: Any) -> None:
    """Child process: run the fake API server until told to stop."""
    from tests.kubefake import FakeKubeAPI, server

    # Go's net package (kube-apiserver) sets TCP_NODELAY on every connection; the stdlib server
    # does not, and its two-write responses (headers, then body) would stall 40 ms per request
    # on delayed ACKs, hiding the client's cost under the fake's.
    server._Handler.disable_nagle_algorithm = True
    with FakeKubeAPI() as api:
        api.add_node("gpu-0", accelerator="nvidia-t4", gpus=8)
        conn.send(api.url)
        conn.recv()


def _create_pods(v1: Any, prefix: str, n: int) -> list[tuple[str, str]]:
    """Pending pods through the API (outside the timed region): (name, uid) pairs."""
    out = []
    for i in range(n):
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{prefix}-{i:05d}", "annotations": {"qosched.io/model": "resnet50"}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]},
        }
        resp = v1.create_namespaced_pod("default", body, _preload_content=False)
        meta = orjson.loads(resp.data)["metadata"]
        out.append((meta["name"], meta["uid"]))
    return out


def _binders(api_client: Any, url: str) -> dict[str, Callable[[str, str], None]]:
    import pydantic
    from kubernetes import client

    from qosched.extender.kube.kube_binder import KubeBinder

    kube = KubeBinder(api_client, timeout_s=10)
    v1 = client.CoreV1Api(api_client)
    split = urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port, timeout=10)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def minimal(name: str, uid: str) -> None:
        body = orjson.dumps(
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": "default", "uid": uid, "annotations": ANNOTATIONS},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "gpu-0"},
            }
        )
        conn.request("POST", f"/api/v1/namespaces/default/pods/{name}/binding", body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise RuntimeError(f"minimal bind of {name}: HTTP {resp.status}")

    def binding(name: str, uid: str) -> Any:
        return client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, namespace="default", uid=uid, annotations=ANNOTATIONS),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name="gpu-0"),
        )

    def stock_raw(name: str, uid: str) -> None:
        resp = v1.create_namespaced_pod_binding(name, "default", binding(name, uid), _preload_content=False)
        if resp.status != 201:
            raise RuntimeError(f"stock bind of {name}: HTTP {resp.status}")

    def stock(name: str, uid: str) -> None:
        # Bound; then the answer (a Status) does not parse as V1Binding.
        with contextlib.suppress(pydantic.ValidationError):
            v1.create_namespaced_pod_binding(name, "default", binding(name, uid))

    return {
        "kubebinder": lambda name, uid: kube.bind("default", name, uid, "gpu-0", ANNOTATIONS),
        "minimal": minimal,
        "stock-raw": stock_raw,
        "stock": stock,
    }


def _time(bind: Callable[[str, str], None], pods: list[tuple[str, str]]) -> tuple[float, float]:
    """(CPU ms per bind, wall ms per bind) of binding ``pods`` in this thread."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for name, uid in pods:
        bind(name, uid)
    n = len(pods)
    return (time.process_time() - cpu0) * 1e3 / n, (time.perf_counter() - wall0) * 1e3 / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=400, help="pods bound per method per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)

    from kubernetes import client

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        url = parent.recv()
        api_client = client.ApiClient(client.Configuration(host=url))
        v1 = client.CoreV1Api(api_client)
        binders = _binders(api_client, url)
        for method, bind in binders.items():  # warm connections, caches, pydantic validators
            for name, uid in _create_pods(v1, f"warm-{method}", args.warmup):
                bind(name, uid)
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
        for r in range(args.rounds):
            order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
            for method in order:
                pods = _create_pods(v1, f"r{r}-{method}", args.pods)
                results[method].append(_time(binders[method], pods))
        bound = sum(1 for p in v1.list_namespaced_pod("default").items if p.spec.node_name == "gpu-0")
        expected = len(METHODS) * (args.warmup + args.rounds * args.pods)
        if bound != expected:
            raise SystemExit(f"only {bound} of {expected} pods ended bound: a method failed silently")
        api_client.close()
    finally:
        parent.send("stop")
        server.join(10)

    cpu = {m: statistics.median(c for c, _ in results[m]) for m in METHODS}
    wall = {m: statistics.median(w for _, w in results[m]) for m in METHODS}
    print(f"bind calls on loopback, {args.rounds} rounds × {args.pods} pods per method, median round")
    print(f"{'method':<12} {'cpu_ms/bind':>12} {'wall_ms/bind':>13} {'cpu/kubebinder':>15}")
    for m in METHODS:
        print(f"{m:<12} {cpu[m]:>12.3f} {wall[m]:>13.3f} {cpu[m] / cpu['kubebinder']:>15.2f}")
    print(
        f"stock-raw costs {cpu['stock-raw'] / cpu['kubebinder']:.1f}x the CPU of kubebinder; "
        f"kubebinder costs {cpu['kubebinder'] / cpu['minimal']:.1f}x the bare-POST floor"
    )


if __name__ == "__main__":
    main()
