r"""Request-by-request simulation of an end–edge–cloud scenario under a routing policy (pure).

Every request of the REQUESTS trace, in arrival order:

1. the context is built (:class:`~qosched.policies.requests.routing.RequestContext`): per allowed
   (tier, variant), the tier's current link, transfer time, load and the latency predicted by
   qosched's interference models (:func:`qosched.policies.latency.sharing.predict`) from the
   dispatch rates of the last ``rate_window_s`` (an exponentially weighted rate per device and
   model, refreshed every ``estimate_interval_s``: what a live system scrapes);
2. the policy chooses an action (or None: dropped, counted as not served);
3. the engine dispatches the request to the device of the action's tier (or pinned node) whose
   reply would come back first given its current queue (join the shortest queue, the load
   balancer of a tier), and serves it there:

   .. math:: \text{response} = \text{transfer} + W + S + O,\qquad
             W = \max(0, F_d - (t + \text{transfer}))

   with :math:`F_d` the time the device frees (the Lindley recursion of
   :func:`qosched.policies.simulator.requests.lindley_waits`, :math:`D_n = \max(A_n, D_{n-1}) +
   S_n`, run one request at a time because the next decision depends on it), :math:`S` a draw of
   the variant's solo service time on that accelerator (:class:`~qosched.policies.simulator.
   requests.ServiceTime` from the profile's two moments, as the request simulator draws them),
   and :math:`O` the edge TPU's swap when the device last ran another model. A GPU or edge TPU
   serves every variant's replica from one FCFS queue (time-slicing; the edge TPU with swaps),
   so load on a tier shows up as queueing. A CPU node runs its own discipline, the one the
   placement model and the request simulator use (:class:`~qosched.policies.latency.cpu_node.
   CpuNode`): one FCFS single-threaded server per variant, the busy servers sharing the node's
   c cores at min(1, c/B) each, simulated exactly by :class:`~qosched.policies.simulator.
   requests.SharedCoresQueue`; there a request's completion depends on the requests that come
   after it, so W and the stretched S are known, and the outcome delivered, only when it leaves. Transfer is :func:`~qosched.policies.requests.scenario.transfer_ms`
   over the link in force at the arrival (NETWORK.csv or the node's annotations);
4. at its completion time the outcome goes to ``policy.observe`` (delayed feedback).

All randomness (service-time draws) comes from the passed generator; equal seeds give equal
runs, and all policies of one what-if see the same arrivals.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qosched.policies.latency.sharing import DeviceServices, predict
from qosched.policies.requests.inputs import NetworkTrace, Requests
from qosched.policies.requests.routing import ActionView, Objective, Outcome, RequestContext, RoutingPolicy
from qosched.policies.requests.scenario import Action, Link, Scenario
from qosched.policies.simulator.requests import ServiceTime, SharedCoresQueue

__all__ = ["EngineConfig", "RunRecords", "simulate_requests"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Estimation knobs of the context (what a live system measures, and how often)."""

    estimate_interval_s: float = 1.0
    rate_window_s: float = 10.0
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        if not (self.estimate_interval_s > 0 and self.rate_window_s > 0):
            raise ValueError("estimate_interval_s and rate_window_s must be > 0")


@dataclass(frozen=True)
class RunRecords:
    """One row per request, arrays in arrival order (``tier``/``variant`` '' and NaN when not served)."""

    policy: str
    time_s: np.ndarray
    service: tuple[str, ...]
    tier: tuple[str, ...]
    variant: tuple[str, ...]
    node: tuple[str, ...]
    served: np.ndarray
    transfer_ms: np.ndarray
    wait_ms: np.ndarray
    service_ms: np.ndarray
    response_ms: np.ndarray
    predicted_ms: np.ndarray
    slo_ms: np.ndarray
    accuracy: np.ndarray
    accuracy_loss_pts: np.ndarray
    reward: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # policy.extra(), e.g. INFIDA's allocation object

    def __len__(self) -> int:
        return len(self.service)


@dataclass(slots=True)
class _Server:
    node: str
    tier: str
    accelerator: str
    edgetpu: bool
    base_link: Link
    free_ms: float = 0.0
    last_model: str | None = None
    cores: int = 1
    cpu: SharedCoresQueue | None = None  # a CPU node: its servers (one per model) sharing the cores


class _Estimator:
    """Exponentially weighted dispatch rates per (device, model) and the model's predictions."""

    def __init__(self, scenario: Scenario, servers: list[_Server], models: list[str], config: EngineConfig):
        self.models = models
        self.model_index = {m: i for i, m in enumerate(models)}
        n, k = len(servers), len(models)
        self.counts = np.zeros((n, k))
        self.rate_rps = np.zeros((n, k))
        self.config = config
        self.servers = servers
        service = np.ones((n, k))
        second = np.ones((n, k))
        swap = np.zeros((n, k))
        mask = np.zeros((n, k), dtype=bool)
        for i, s in enumerate(servers):
            for j, m in enumerate(models):
                p = scenario.catalog.params(s.accelerator, m)
                if p is not None:
                    service[i, j], second[i, j], swap[i, j], mask[i, j] = (
                        p.service_ms,
                        max(p.second_moment_ms2, p.service_ms**2),
                        p.swap_ms if s.edgetpu else 0.0,
                        True,
                    )
        self.service_ms, self.second_ms2, self.swap_ms, self.mask = service, second, swap, mask
        self.edgetpu = np.array([s.edgetpu for s in servers], dtype=bool)
        self.cpu = np.array([s.cpu is not None for s in servers], dtype=bool)
        self.cores = np.array([s.cores for s in servers], dtype=np.int64)
        self.device_ms = np.where(mask, service + swap, np.inf)
        self.utilization = np.zeros(n)

    def refresh(self, elapsed_s: float) -> None:
        """Fold the counts of the last ``elapsed_s`` into the rates, then predict every device."""
        decay = math.exp(-elapsed_s / self.config.rate_window_s)
        self.rate_rps = decay * self.rate_rps + (1.0 - decay) * self.counts / elapsed_s
        self.counts[:] = 0.0
        latency = np.full(self.mask.shape, np.inf)
        util = np.zeros(len(self.servers))
        gpu = ~(self.edgetpu | self.cpu)
        for mode, rows in (("edgetpu", self.edgetpu), ("cpu", self.cpu), ("time-slicing", gpu)):
            if not rows.any():
                continue
            sv = DeviceServices.build(
                self.rate_rps[rows],
                self.service_ms[rows],
                second_moment_ms2=self.second_ms2[rows],
                swap_ms=self.swap_ms[rows],
                mask=self.mask[rows],
                cores=self.cores[rows],
            )
            pred = predict(mode, sv)
            latency[rows] = np.where(self.mask[rows], pred.latency_ms, np.inf)
            util[rows] = pred.utilization
        self.device_ms = latency
        self.utilization = util


class _Engine:
    def __init__(
        self,
        scenario: Scenario,
        network: NetworkTrace,
        config: EngineConfig,
        rng: np.random.Generator,
    ):
        self.scenario = scenario
        self.network = network
        self.config = config
        self.rng = rng
        models = sorted({v for s in scenario.services for a in scenario.actions(s) for v in [a.variant]})
        self.servers = [
            _Server(n.name, n.tier, n.accelerator, n.mode == "edgetpu", n.link)
            if n.mode != "cpu"
            else _Server(
                n.name,
                n.tier,
                n.accelerator,
                False,
                n.link,
                cores=n.cores,
                cpu=SharedCoresQueue(n.cores, len(models)),
            )
            for n in scenario.nodes
            for _ in range(n.devices)
        ]
        self.cpu_queues = [s.cpu for s in self.servers if s.cpu is not None]
        self.est = _Estimator(scenario, self.servers, models, config)
        self.times: dict[tuple[str, str], ServiceTime] = {}
        self.by_tier = {t: [i for i, s in enumerate(self.servers) if s.tier == t] for t in scenario.tiers}
        self.epoch = 0
        self._ctx_cache: dict[tuple[str, float], tuple[ActionView, ...]] = {}

    def link(self, server: _Server, time_s: float) -> Link:
        return self.network.at(server.tier, time_s) or server.base_link

    def service_time(self, accelerator: str, variant: str) -> ServiceTime:
        key = (accelerator, variant)
        st = self.times.get(key)
        if st is None:
            p = self.scenario.catalog.params(accelerator, variant)
            assert p is not None
            st = ServiceTime.from_moments(p.service_ms, max(p.second_moment_ms2, p.service_ms**2))
            self.times[key] = st
        return st

    def options(self, service: str, input_kb: float, time_s: float) -> tuple[ActionView, ...]:
        key = (service, input_kb)
        cached = self._ctx_cache.get(key)
        if cached is not None:
            return cached
        best_acc = self.scenario.best_accuracy(service)
        views = []
        for action in self.scenario.actions(service):
            j = self.est.model_index[action.variant]
            rows = self.by_tier[action.tier]
            best_i, best_total, best_transfer = rows[0], math.inf, math.inf
            for i in rows:
                tr = self.link(self.servers[i], time_s).transfer_ms(input_kb)
                total = tr + float(self.est.device_ms[i, j])
                if total < best_total or (best_total == math.inf and tr < best_transfer):
                    best_i, best_total, best_transfer = i, total, tr
            link = self.link(self.servers[best_i], time_s)
            acc = self.scenario.catalog.accuracy(action.variant, self.servers[best_i].accelerator)
            loss = 0.0 if best_acc is None or acc is None else max(best_acc - acc, 0.0) * 100.0
            util = float(np.mean(self.est.utilization[rows]))
            views.append(
                ActionView(
                    action,
                    acc,
                    loss,
                    link.rtt_ms,
                    link.bandwidth_mbps,
                    best_transfer,
                    float(self.est.device_ms[best_i, j]),
                    util,
                )
            )
        out = tuple(views)
        self._ctx_cache[key] = out
        return out

    def tick(self, time_s: float, last_refresh_s: float) -> float:
        """Refresh the estimates when an interval has passed; returns the last refresh time."""
        interval = self.config.estimate_interval_s
        if time_s - last_refresh_s < interval:
            return last_refresh_s
        steps = math.floor((time_s - last_refresh_s) / interval)
        now = last_refresh_s + steps * interval
        self.est.refresh(now - last_refresh_s)
        self._ctx_cache.clear()
        return now

    def dispatch(
        self, action: Action, variant: str, input_kb: float, time_s: float
    ) -> tuple[int, float, float]:
        """Pick the device whose reply returns first; returns (server, transfer_ms, start_ms).

        A CPU node's reply is estimated from its server's backlog; its ``start_ms`` is the arrival.
        """
        rows = self.by_tier.get(action.tier, [])
        best = (-1, math.inf, math.inf, math.inf)
        t_ms = time_s * 1000.0
        for i in rows:
            s = self.servers[i]
            if action.node is not None and s.node != action.node:
                continue
            if not self.est.mask[i, self.est.model_index[variant]]:
                continue
            tr = self.link(s, time_s).transfer_ms(input_kb)
            own = float(self.est.service_ms[i, self.est.model_index[variant]])
            if s.cpu is not None:  # its server's backlog and this one, at the speed with one more busy
                start = t_ms + tr
                speed = s.cpu.speeds[min(s.cpu.busy + 1, len(s.cpu.speeds) - 1)]
                done = start + (s.cpu.backlog_ms(self.est.model_index[variant]) + own) / speed
                if done < best[1]:
                    best = (i, done, tr, start)
                continue
            start = max(s.free_ms, t_ms + tr)
            swap = (
                float(self.est.swap_ms[i, self.est.model_index[variant]]) if s.last_model != variant else 0.0
            )
            done = start + own + swap
            if done < best[1]:
                best = (i, done, tr, start)
        return best[0], best[2], best[3]


def _empty(n: int, value: float = math.nan) -> np.ndarray:
    return np.full(n, value)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A request on a CPU node, until it leaves (what its row and outcome need)."""

    ctx: RequestContext
    action: Action
    view: ActionView
    server: int
    transfer_ms: float
    arrival_ms: float  # at the node: dispatch + transfer


class _Book:
    """The per-request columns and the outcomes waiting for their completion time."""

    def __init__(self, n: int, scenario: Scenario, config: EngineConfig):
        self.scenario, self.config = scenario, config
        self.cols = {
            k: _empty(n)
            for k in ("transfer", "wait", "service", "response", "predicted", "slo", "acc", "loss", "reward")
        }
        self.served = np.zeros(n, dtype=bool)
        self.tiers, self.variants, self.nodes = [""] * n, [""] * n, [""] * n
        self.pending: list[tuple[float, int, Outcome]] = []
        self.in_flight: dict[int, _InFlight] = {}

    def record(
        self,
        ctx: RequestContext,
        action: Action,
        view: ActionView,
        server: _Server,
        transfer: float,
        wait: float,
        own: float,
    ) -> None:
        """Request ``ctx.index`` served: its row, and its outcome due at its completion."""
        idx, svc, t = ctx.index, ctx.service, ctx.time_s
        response = transfer + wait + own
        acc = self.scenario.catalog.accuracy(action.variant, server.accelerator)
        best_acc = self.scenario.best_accuracy(svc.name)
        loss = 0.0 if acc is None or best_acc is None else max(best_acc - acc, 0.0) * 100.0
        reward = self.config.objective.reward(response, svc.slo_ms, loss)
        self.served[idx] = True
        self.tiers[idx], self.variants[idx], self.nodes[idx] = action.tier, action.variant, server.node
        for key, value in (
            ("transfer", transfer),
            ("wait", wait),
            ("service", own),
            ("response", response),
            ("predicted", view.predicted_ms),
            ("acc", math.nan if acc is None else acc),
            ("loss", loss),
            ("reward", reward),
        ):
            self.cols[key][idx] = value
        out = Outcome(ctx, action, server.node, response, transfer, wait, own, acc, loss, reward)
        heapq.heappush(self.pending, (t + response / 1000.0, idx, out))

    def settle(self, eng: _Engine, until_ms: float) -> None:
        """Run every CPU node to ``until_ms`` and record the requests that left (W: queued at their
        server; service: start to departure, stretched by the servers sharing the cores)."""
        for queue in eng.cpu_queues:
            for key, start_ms, left_ms in queue.advance(until_ms):
                f = self.in_flight.pop(key)
                wait, own = start_ms - f.arrival_ms, left_ms - start_ms
                self.record(f.ctx, f.action, f.view, eng.servers[f.server], f.transfer_ms, wait, own)


def _serve(
    eng: _Engine, book: _Book, ctx: RequestContext, action: Action, view: ActionView, rng: np.random.Generator
) -> bool:
    """Dispatch and serve one request (a CPU node's later, when it leaves); False when no device can."""
    t = ctx.time_s
    i, transfer, start_ms = eng.dispatch(action, action.variant, ctx.input_kb, t)
    if i < 0:
        return False
    server = eng.servers[i]
    own = float(eng.service_time(server.accelerator, action.variant).sample(rng, 1)[0])
    j = eng.est.model_index[action.variant]
    eng.est.counts[i, j] += 1.0
    if server.cpu is not None:
        arrival_ms = t * 1000.0 + transfer
        server.cpu.arrive(ctx.index, arrival_ms, own, j)
        book.in_flight[ctx.index] = _InFlight(ctx, action, view, i, transfer, arrival_ms)
        return True
    if server.last_model != action.variant:
        own += float(eng.est.swap_ms[i, j])
    server.last_model = action.variant
    server.free_ms = start_ms + own
    wait = start_ms - (t * 1000.0 + transfer)
    book.record(ctx, action, view, server, transfer, wait, own)
    return True


def simulate_requests(
    scenario: Scenario,
    requests: Requests,
    policy: RoutingPolicy,
    rng: np.random.Generator,
    network: NetworkTrace | None = None,
    config: EngineConfig | None = None,
) -> RunRecords:
    """Serve every request under ``policy`` (see the module docstring); returns the per-request rows.

    Raises
    ------
    ValueError
        A request names a service the scenario does not define, or the policy answers an action
        that is not one of the request's options.
    """
    config = config or EngineConfig()
    network = network or NetworkTrace()
    unknown = sorted(set(requests.services) - set(scenario.services))
    if unknown:
        raise ValueError(f"requests name service(s) the cluster does not define: {', '.join(unknown)}")
    eng = _Engine(scenario, network, config, rng)
    n = len(requests)
    book = _Book(n, scenario, config)
    cols, pending = book.cols, book.pending
    last_refresh = float(requests.time_s[0]) if n else 0.0
    for idx in range(n):
        t = float(requests.time_s[idx])
        book.settle(eng, t * 1000.0)
        while pending and pending[0][0] <= t:
            policy.observe(heapq.heappop(pending)[2])
        last_refresh = eng.tick(t, last_refresh)
        svc = scenario.services[requests.service[idx]]
        kb = float(requests.input_kb[idx])
        kb = svc.input_kb if math.isnan(kb) else kb
        ctx = RequestContext(idx, t, svc, kb, eng.options(svc.name, kb, t))
        cols["slo"][idx] = svc.slo_ms
        action = policy.choose(ctx)
        if action is None:
            cols["reward"][idx] = config.objective.unserved_reward
            continue
        view = ctx.view(action)
        if view is None:
            raise ValueError(
                f"policy {policy.name} chose {action.key} for service {svc.name}, not one of its options"
            )
        if not _serve(eng, book, ctx, action, view, rng):
            cols["reward"][idx] = config.objective.unserved_reward
    book.settle(eng, math.inf)
    while pending:
        policy.observe(heapq.heappop(pending)[2])
    stats_fn = getattr(policy, "stats", None)
    extra_fn = getattr(policy, "extra", None)
    return RunRecords(
        policy=policy.name,
        time_s=requests.time_s.copy(),
        service=requests.service,
        tier=tuple(book.tiers),
        variant=tuple(book.variants),
        node=tuple(book.nodes),
        served=book.served,
        transfer_ms=cols["transfer"],
        wait_ms=cols["wait"],
        service_ms=cols["service"],
        response_ms=cols["response"],
        predicted_ms=cols["predicted"],
        slo_ms=cols["slo"],
        accuracy=cols["acc"],
        accuracy_loss_pts=cols["loss"],
        reward=cols["reward"],
        stats=dict(stats_fn()) if callable(stats_fn) else {},
        extra=dict(extra_fn()) if callable(extra_fn) else {},
    )
