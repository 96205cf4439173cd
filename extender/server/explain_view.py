"""``GET /explain?namespace=NS&pod=NAME[&node=N ...][&limit=K]``: why a pod fits where it does.

For people (the filter's ``FailedNodes`` carry one text per reason code, for kube-scheduler's
event): the pod in the extender's cache is judged by the extender's policy on every node (or the
``node`` ones), and each rejected node gets its own explanation with numbers
(:func:`qosched.policies.placement.explain.explain`), at most ``limit`` of them (default
:data:`DEFAULT_LIMIT`, max :data:`MAX_LIMIT`: each costs a few hundred µs under the cache lock,
which the scheduler verbs wait on); ``by_code`` summarises every code over all the judged nodes
with its closest node, as the filter does.

Answer (JSON): ``pod``, ``policy``, ``fits`` (node names), ``nodes`` (name → ``{"code",
"message", "detail"}``, ``code`` a lower-case ``Reason`` name), ``by_code`` (code → ``{"nodes",
"text"}``), ``truncated`` (rejected nodes left out of ``nodes``). Read-only, like
``/placements``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qosched.extender.kube.objects import is_managed
from qosched.extender.server.runtime import Runtime, rows_of
from qosched.policies.placement.base import Reason
from qosched.policies.placement.explain import explain, summarise
from qosched.policies.types import DemandError

#: Rejected nodes explained one by one per request, by default and at most.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class ExplainError(Exception):
    """A request ``/explain`` cannot answer: the HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def explain_pod(
    runtime: Runtime, namespace: str, pod_name: str, nodes: Sequence[str] = (), limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """The answer of ``/explain`` (see the module docstring); ``ExplainError`` when there is none."""
    if not runtime.cache.synced:
        raise ExplainError(503, "cluster cache not synced yet; retry")
    pod = runtime.cache.pod_by_name(namespace, pod_name)
    if pod is None:
        raise ExplainError(404, f"pod {namespace}/{pod_name} is not in the extender's cache")
    if not is_managed(pod):
        raise ExplainError(
            422, f"pod {namespace}/{pod_name} is not managed by qosched (no qosched.io/ annotation)"
        )
    try:
        demand = runtime.demand_of(pod)
    except DemandError as err:
        raise ExplainError(422, f"pod {namespace}/{pod_name}: {err}") from None
    policy = runtime.policy
    with runtime.cache.reading() as state:
        names = list(nodes) or list(state.node_names)
        rows = rows_of(state, names)
        known = rows >= 0
        codes = np.full(len(names), int(Reason.UNKNOWN_NODE), dtype=np.int64)
        codes[known] = policy.evaluate(state, demand, rows[known]).reason
        per_node: dict[str, dict[str, str]] = {}
        for i in np.flatnonzero(codes != int(Reason.OK))[:limit].tolist():
            why = explain(policy, state, demand, int(rows[i]), Reason(int(codes[i])), name=names[i])
            per_node[names[i]] = {
                "code": why.code.name.lower(),
                "message": why.code.message,
                "detail": why.detail,
            }
        by_code = _by_code(policy, state, demand, names, rows, codes)
    rejected = int((codes != int(Reason.OK)).sum())
    return {
        "pod": f"{namespace}/{pod_name}",
        "policy": policy.name,
        "fits": [n for n, c in zip(names, codes.tolist(), strict=True) if c == int(Reason.OK)],
        "nodes": per_node,
        "by_code": by_code,
        "truncated": rejected - len(per_node),
    }


def _by_code(
    policy: Any, state: Any, demand: Any, names: list[str], rows: np.ndarray, codes: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per reason code: the node count and the closest node's explanation, most nodes first."""
    return {
        s.code.name.lower(): {"nodes": s.nodes, "text": s.why}
        for s in summarise(policy, state, demand, rows, codes, names)
    }


def parse_limit(raw: str | None) -> int:
    """``limit`` query value: an integer in 0..MAX_LIMIT (``ExplainError`` 400 otherwise)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise ExplainError(400, f"limit must be an integer 0..{MAX_LIMIT}, got {raw!r}") from None
    if not 0 <= value <= MAX_LIMIT:
        raise ExplainError(400, f"limit must be an integer 0..{MAX_LIMIT}, got {value}")
    return value


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ExplainError", "explain_pod", "parse_limit"]
