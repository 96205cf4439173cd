"""A stand-in kube-scheduler for the fault tests: filter → prioritize → bind over HTTP.

It does what kube-scheduler does with an extender, and no more: for each pending pod it sends
``/filter`` with every node name, ``/prioritize`` with the survivors, binds the best-scored node
with ``/bind``, and treats any ``Error``, non-200 answer or timeout as a failed attempt (the pod
stays pending and is retried on a later pass). Every call is timed in a
:class:`~tests.faults.invariants.VerbTimer` with kube-scheduler's ``httpTimeout`` as the client
timeout, so a test can assert the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from qosched.extender.kube.objects import pod_key, pod_node
from tests.faults.invariants import SCHEDULER_HTTP_TIMEOUT_S, VerbTimer
from tests.kubefake import FakeKubeAPI


@dataclass
class StandInScheduler:
    """Schedules the API's pending pods through the extender at ``url``."""

    api: FakeKubeAPI
    url: str
    timeout_s: float = SCHEDULER_HTTP_TIMEOUT_S
    timer: VerbTimer = field(default_factory=VerbTimer)
    session: requests.Session = field(default_factory=requests.Session)
    errors: list[str] = field(default_factory=list)

    def call(self, verb: str, body: Mapping[str, Any]) -> Any | None:
        """POST one verb; the decoded answer, or None on a failure the scheduler would see."""
        with self.timer.timing(verb):
            try:
                resp = self.session.post(f"{self.url}/{verb}", json=body, timeout=self.timeout_s)
            except requests.RequestException as err:
                self.errors.append(f"{verb}: {type(err).__name__}")
                return None
        if resp.status_code != 200:
            self.errors.append(f"{verb}: HTTP {resp.status_code}")
            return None
        return resp.json()

    def schedule_one(self, pod: Mapping[str, Any], node_names: list[str]) -> str | None:
        """One scheduling attempt; the node the pod was bound to, or None (retry later)."""
        args = {"Pod": pod, "Nodes": None, "NodeNames": node_names}
        filtered = self.call("filter", args)
        if not filtered or filtered.get("Error") or not filtered.get("NodeNames"):
            return None
        feasible = list(filtered["NodeNames"])
        scores = self.call("prioritize", {**args, "NodeNames": feasible})
        if scores is None:
            return None
        best = (
            max(scores, key=lambda s: (s["Score"], -feasible.index(s["Host"])))["Host"]
            if scores
            else feasible[0]
        )
        meta = pod["metadata"]
        bind = {
            "PodName": meta["name"],
            "PodNamespace": meta["namespace"],
            "PodUID": meta["uid"],
            "Node": best,
        }
        answer = self.call("bind", bind)
        if answer is None or answer.get("Error"):
            return None
        return str(best)

    def pending(self) -> list[dict[str, Any]]:
        return [p for p in self.api.list_objects("pods") if pod_node(p) is None]

    def run_pass(self, stop: Callable[[], bool] = lambda: False) -> dict[str, str]:
        """Try every pending pod once; ``{pod key: node}`` of the binds that succeeded."""
        nodes = [n["metadata"]["name"] for n in self.api.list_objects("nodes")]
        bound: dict[str, str] = {}
        for pod in self.pending():
            if stop():
                break
            node = self.schedule_one(pod, nodes)
            if node is not None:
                bound[pod_key(pod)] = node
        return bound


__all__ = ["StandInScheduler"]
