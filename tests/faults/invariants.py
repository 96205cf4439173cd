"""The invariants every fault test asserts, read from the fake API server (the source of truth).

Issue 12 asks each fault test to check, whatever the fault:

* **no pod bound twice** — :func:`check_no_double_bind`: at most one successful ``pods/binding``
  per pod (name and UID), and no pod whose binding was answered 201 ended on another node;
* **no device above 1,000 milli** — :func:`device_usage_milli` / :func:`check_no_overallocation`:
  over every bound pod of the API, ``Σ milli_per_device`` per (node, device) ``≤ 1000``
  (``GPU_MILLI_PER_DEVICE``), using the project's own parsing (``pod_demand``, ``bound_devices``);
* **every verb answered within the scheduler's budget** — :class:`VerbTimer` records the wall
  time of each call and :func:`check_budget` compares the worst with kube-scheduler's extender
  ``httpTimeout`` (5 s by default) less a margin;
* **/readyz truthful** — :func:`check_readyz` (the probe agrees with what the test knows);
* **nothing lost** — :func:`check_cache_matches_api`: every pod the API holds bound is accounted
  on the same node in the cache, nothing the API no longer holds is accounted, and every pod the
  test created still exists (bound or pending; never silently dropped).

Each ``check_*`` returns a list of violations (strings, empty when the invariant holds) so a test
can assert several at once; :func:`assert_invariants` runs the API-side ones and fails naming all.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from qosched.extender.kube.objects import bound_devices, pod_demand, pod_key, pod_node
from qosched.policies.types import GPU_MILLI_PER_DEVICE, DemandError
from tests.kubefake import FakeKubeAPI

#: kube-scheduler's default extender ``httpTimeout`` [s] (``KubeSchedulerConfiguration``).
SCHEDULER_HTTP_TIMEOUT_S = 5.0
#: Margin kept under the timeout [s]: an answer must reach the scheduler before it gives up.
BUDGET_MARGIN_S = 0.5


class Readable(Protocol):
    """What :func:`check_cache_matches_api` reads from a cache (a ``ClusterCache``)."""

    lock: Any
    state: Any


def bound_pods(api: FakeKubeAPI) -> list[dict[str, Any]]:
    """Every pod the API server holds bound to a node (not finished)."""
    return [p for p in api.list_objects("pods") if pod_node(p) is not None]


def device_usage_milli(api: FakeKubeAPI) -> dict[tuple[str, int], int]:
    """Milli-GPU per (node, device) given every bound pod's ``qosched.io/device`` and demand.

    A bound pod that requests GPU share but names no device (bound by a scheduler that does not
    write the annotation) is counted on device 0 ... ``gpu_count − 1``: the conservative reading.
    """
    used: dict[tuple[str, int], int] = defaultdict(int)
    for pod in bound_pods(api):
        try:
            demand = pod_demand(pod)
        except DemandError:
            continue
        if demand.gpu_milli <= 0:
            continue
        node = pod_node(pod)
        assert node is not None
        devices = bound_devices(pod) or tuple(range(demand.gpu_count))
        for device in devices:
            used[(node, device)] += demand.milli_per_device
    return dict(used)


def check_no_overallocation(api: FakeKubeAPI, limit_milli: int = GPU_MILLI_PER_DEVICE) -> list[str]:
    """Every (node, device) at most ``limit_milli`` over the API's bound pods."""
    return [
        f"device {node}/{device} holds {milli} milli > {limit_milli}"
        for (node, device), milli in sorted(device_usage_milli(api).items())
        if milli > limit_milli
    ]


def check_no_double_bind(api: FakeKubeAPI) -> list[str]:
    """At most one successful binding per pod, and each bound pod is on the node it was bound to."""
    ok = api.calls(verb="create", subresource="binding", status=201)
    per_pod = Counter(f"{r.namespace}/{r.name}" for r in ok)
    out = [f"pod {key} bound {n} times" for key, n in sorted(per_pod.items()) if n > 1]
    target = {f"{r.namespace}/{r.name}": ((r.body or {}).get("target") or {}).get("name") for r in ok}
    for pod in bound_pods(api):
        key = pod_key(pod)
        if key in target and target[key] and target[key] != pod_node(pod):
            out.append(f"pod {key} bound to {target[key]} but the API holds it on {pod_node(pod)}")
    return out


def check_nothing_lost(api: FakeKubeAPI, created: Iterable[str]) -> list[str]:
    """Every pod the test created (``namespace/name``) still exists in the API."""
    present = {pod_key(p) for p in api.list_objects("pods")}
    return [f"pod {key} was lost" for key in sorted(set(created) - present)]


def check_cache_matches_api(api: FakeKubeAPI, cache: Readable) -> list[str]:
    """The cache accounts exactly the API's bound pods, each on the API's node.

    Assumed pods (bound by us, not yet confirmed) are allowed in the cache before the API shows
    them only when ``cache.is_assumed_locked`` says so.
    """
    want = {str(p["metadata"]["uid"]): (pod_key(p), pod_node(p)) for p in bound_pods(api)}
    with cache.lock:
        have = {a.uid: a.node for a in cache.state.allocations()}
        assumed = {uid for uid in have if getattr(cache, "is_assumed_locked", lambda _u: False)(uid)}
    out = []
    for uid, (key, node) in sorted(want.items()):
        if have.get(uid) != node:
            out.append(f"pod {key}: API has it on {node}, the cache on {have.get(uid)}")
    for uid in sorted(set(have) - set(want) - assumed):
        out.append(f"pod uid {uid}: accounted on {have[uid]} by the cache, not bound in the API")
    return out


@dataclass
class VerbTimer:
    """Wall time of each call per verb; thread-safe (several stand-in schedulers may share one)."""

    samples_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def timing(self, verb: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            with self._lock:
                self.samples_s[verb].append(elapsed)

    def worst_s(self, verb: str) -> float:
        with self._lock:
            return max(self.samples_s.get(verb) or [0.0])

    def quantile_s(self, verb: str, q: float) -> float:
        with self._lock:
            xs = sorted(self.samples_s.get(verb) or [0.0])
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def check_budget(timer: VerbTimer, budget_s: float = SCHEDULER_HTTP_TIMEOUT_S - BUDGET_MARGIN_S) -> list[str]:
    """Every recorded call answered within ``budget_s`` (the scheduler's ``httpTimeout`` less margin)."""
    with timer._lock:
        items = {verb: max(xs) for verb, xs in timer.samples_s.items() if xs}
    return [
        f"{verb}: slowest answer {worst:.2f} s > budget {budget_s:.2f} s"
        for verb, worst in sorted(items.items())
        if worst > budget_s
    ]


def check_readyz(get_status: Callable[[], int], *, ready: bool) -> list[str]:
    """``/readyz`` answers 200 when ``ready`` and 503 otherwise (``get_status`` makes the request)."""
    status = get_status()
    want = 200 if ready else 503
    return [] if status == want else [f"/readyz answered {status}, expected {want} (ready={ready})"]


def assert_invariants(
    api: FakeKubeAPI,
    *,
    cache: Readable | None = None,
    created: Iterable[str] = (),
    timer: VerbTimer | None = None,
    budget_s: float = SCHEDULER_HTTP_TIMEOUT_S - BUDGET_MARGIN_S,
) -> None:
    """Assert the API-side invariants (plus the cache's view and the budget when given)."""
    problems = check_no_double_bind(api) + check_no_overallocation(api) + check_nothing_lost(api, created)
    if cache is not None:
        problems += check_cache_matches_api(api, cache)
    if timer is not None:
        problems += check_budget(timer, budget_s)
    assert not problems, "invariants violated:\n  " + "\n  ".join(problems)


__all__ = [
    "BUDGET_MARGIN_S",
    "SCHEDULER_HTTP_TIMEOUT_S",
    "VerbTimer",
    "assert_invariants",
    "bound_pods",
    "check_budget",
    "check_cache_matches_api",
    "check_no_double_bind",
    "check_no_overallocation",
    "check_nothing_lost",
    "check_readyz",
    "device_usage_milli",
]
