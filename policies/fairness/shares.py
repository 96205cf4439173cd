r"""Fair shares of one device between services, with cvxpy; and the placement-time fairness term.

**Model.** Services :math:`i = 1..n` share one device of capacity :math:`C` (a GPU's time or SM
fraction, or CPU cores; any unit, the same for every quantity). Service :math:`i` gets a share
:math:`x_i \in [l_i, h_i]`, :math:`\sum_i x_i \le C`. Its *demand* :math:`d_i` is the smallest
share at which its predicted latency meets its SLO (:func:`min_share_meeting_slo` finds it from a
latency model). Below that share the service keeps up with a fraction :math:`x_i / d_i` of the
work its target needs, so its delivered QoS (SLO attainment) is

.. math:: q_i(x_i) = \min(1,\; x_i / d_i),

concave in :math:`x_i` (``d = 0``: always 1; ``d = inf``: the SLO cannot be met, always 0). The
normalised QoS is :math:`n_i = q_i / T_i`, with :math:`T_i` the class target.

Any share above :math:`d_i` is wasted (:math:`q_i` is capped), so without loss of optimality
:math:`x_i \le h'_i = \min(h_i, \max(l_i, d_i))`. On :math:`[l_i, h'_i]` the QoS is affine,
:math:`n_i = a_i x_i + c_i` with :math:`a_i = 1/(d_i T_i)`, :math:`c_i = 0`, or, when the minimum
share already meets the demand, :math:`a_i = 0`, :math:`c_i = 1/T_i`, :math:`h'_i = l_i`. Both stages
below are then linear programs. A service with :math:`h'_i = l_i` is *fixed*: no allocation
changes its QoS.

**Stage 1 (max-min).** Over the services that are not fixed,

.. math:: t^* = \max_{x, t}\; t \quad\text{s.t.}\quad a_i x_i + c_i \ge t,\;
          l \le x \le h',\; \textstyle\sum_i x_i \le C.

**Stage 2 (within-class fairness).** Keeping the stage-1 optimum within a tolerance
:math:`\tau = \max(\tau_{abs}, \tau_{rel} |t^*|)`,

.. math:: \min_x \sum_{i<j,\ \text{class}(i)=\text{class}(j)} w_{ij} |n_i - n_j|
          \;-\; \frac{\eta}{n} \sum_i n_i
          \quad\text{s.t.}\quad n_i \ge t^* - \tau,\; l \le x \le h',\;
          \textstyle\sum_i x_i = \min(C, \sum_i h'_i).

The pairwise sum is the Gini numerator of each class for a fixed mean: the convex surrogate of
within-class Gini. :math:`w_{ij} = 0` when :math:`i` or :math:`j` is fixed: the allocation cannot
change such a service, and counting it would reward pulling its class-mates down to it. The
equality on :math:`\sum x` makes the split work-conserving (all useful capacity is handed out, so
inequality is never reduced by leaving capacity idle), and the small :math:`\eta` term breaks
ties toward more QoS. Capacity beyond :math:`\sum h'_i` stays free (it helps nobody here and can
host new pods).

**Uncontended fast path.** When :math:`\sum_i h'_i \le C` every service gets :math:`h'_i`, which
is optimal for both stages; no solver runs.

**Compile once.** :class:`FairShareSolver` builds both problems with cvxpy ``Parameter`` objects
(:math:`a, c, l, h', C`, the stage-1 floor, pair weights) for a given number of services and
class structure; they are DPP, so cvxpy compiles each once and later solves only substitute
values. :class:`FairShareSolverCache` keeps solvers by class structure.

**Fallback.** When a stage does not finish ``optimal`` (or the solver raises), the result comes
from :func:`proportional_shares` (stage 1 failed; each service gets the same fraction of its
remaining need :math:`h'_i - l_i`) or from the stage-1 solution (stage 2 failed), with a warning
logged and the status saying which.

**Not on the request path.** Solving takes milliseconds (see ``docs/fairness.md``). The
controller, the simulator or a background loop solve; a scheduling verb must only read cached
results. For placement scoring, :func:`fairness_term` gives the change of min normalised QoS
and of within-class Gini if a pod lands on a node, in closed form from a
:class:`FairnessSnapshot` built off the request path (:math:`O(k \log n)` for :math:`k`
services on the node, no cvxpy).

No clock is read here: ``SharesResult.solve_ms`` is the time the solver itself reports
(cvxpy ``solver_stats.solve_time``); callers time the whole call themselves.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.fairness._validate import FloatArray, as_float_array, check_fraction
from qosched.policies.fairness.gini import GiniSummary

if TYPE_CHECKING:
    # cvxpy (about 1 s to import) is imported where a solver is built or run, not here:
    # importing ``qosched.policies.fairness`` (the extender does, for the closed-form
    # placement-time term) must not pay for it.
    import cvxpy as cp

log = logging.getLogger(__name__)


_EMPTY_SUMMARY = GiniSummary.from_values(())

ShareStatus = Literal["optimal", "uncontended", "stage1-only", "fallback", "infeasible", "empty"]
"""``optimal``: both stages solved; ``uncontended``: everyone got its useful maximum (no solve);
``stage1-only``: stage 2 failed, the max-min solution is used; ``fallback``: stage 1 failed, the
proportional heuristic is used; ``infeasible``: the minimum shares exceed capacity (they are
scaled down to fit); ``empty``: no services."""


@dataclass(frozen=True, slots=True)
class ShareSettings:
    """Knobs of the share optimiser.

    Attributes
    ----------
    solver : str
        cvxpy solver name. CLARABEL (interior point; a default dependency of cvxpy >= 1.4)
        solved both LPs fastest among the installed solvers in ``benchmarks/bench_shares.py``.
    stage1_rel_tol, stage1_abs_tol : float
        Stage 2 keeps :math:`n_i \\ge t^* - \\max(abs, rel |t^*|)`: room for the solver's own
        accuracy (CLARABEL's default is 1e-8) so stage 2 is never infeasible by rounding.
    efficiency_weight : float
        :math:`\\eta`, tie-break toward more total normalised QoS; small so it never outweighs
        a real inequality.
    """

    solver: str = "CLARABEL"
    stage1_rel_tol: float = 1e-6
    stage1_abs_tol: float = 1e-7
    efficiency_weight: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("stage1_rel_tol", "stage1_abs_tol", "efficiency_weight"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ShareSettings.{name}: {value!r} must be finite and >= 0")


@dataclass(frozen=True, slots=True)
class SharesResult:
    """Outcome of one share problem.

    Attributes
    ----------
    shares : numpy.ndarray
        Share of each service, in the capacity's unit.
    qos : numpy.ndarray
        Modelled QoS :math:`\\min(1, x/d)` at that share.
    normalised_qos : numpy.ndarray
        ``qos / target``.
    status : ShareStatus
        How the shares were found (see :data:`ShareStatus`).
    min_normalised_qos : float
        Minimum of ``normalised_qos`` (``inf`` when empty).
    within_class_spread : float
        :math:`\\sum_{i<j \\text{ same class}} |n_i - n_j|`, the stage-2 surrogate (all pairs).
    unallocated : float
        Capacity left free, ``capacity - sum(shares)``.
    solve_ms : float or None
        Time reported by the solver for the stages that ran [ms]; None if none ran or it
        reported nothing. Excludes cvxpy's own work: time the call yourself for wall time.
    solver_status : tuple of str
        cvxpy status of each stage that ran.
    """

    shares: FloatArray
    qos: FloatArray
    normalised_qos: FloatArray
    status: ShareStatus
    min_normalised_qos: float
    within_class_spread: float
    unallocated: float
    solve_ms: float | None = None
    solver_status: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------- model
def qos_at_share(share: ArrayLike, demand: ArrayLike) -> FloatArray:
    """Modelled QoS :math:`\\min(1, x/d)`; 1 where ``demand == 0``, 0 where ``demand == inf``."""
    x = as_float_array("share", share)
    d = as_float_array("demand", demand, allow_inf=True)
    x, d = np.broadcast_arrays(x, d)
    out = np.ones(x.shape, dtype=np.float64)
    np.divide(x, d, out=out, where=d > 0)
    return np.minimum(out, 1.0)


def min_share_meeting_slo(
    latency_ms_at_share: Callable[[float], float],
    slo_ms: float,
    lo: float = 0.0,
    hi: float = 1.0,
    rel_tol: float = 1e-4,
) -> float:
    """Demand: the smallest share in ``[lo, hi]`` whose predicted latency is ``<= slo_ms``.

    Bisection on a latency model that does not increase with the share (more of the device is
    never slower); ``inf`` latencies (utilisation >= 1) count as misses.

    Parameters
    ----------
    latency_ms_at_share : callable
        Predicted latency [ms] at a share.
    slo_ms : float
        Latency target [ms], > 0.
    lo, hi : float
        Share bounds, ``0 <= lo <= hi``.
    rel_tol : float
        Stop when the bracket is narrower than ``rel_tol * hi``; the upper end is returned, so
        the result always meets the SLO.

    Returns
    -------
    float
        The demand; ``lo`` if even ``lo`` meets the SLO, ``inf`` if ``hi`` does not.
    """
    if not (np.isfinite(slo_ms) and slo_ms > 0):
        raise ValueError(f"slo_ms: must be finite and > 0, got {slo_ms!r}")
    if not (0.0 <= lo <= hi and np.isfinite(hi)):
        raise ValueError(f"lo, hi: need 0 <= lo <= hi < inf, got {lo!r}, {hi!r}")

    def meets(x: float) -> bool:
        lat = float(latency_ms_at_share(x))
        if np.isnan(lat):
            raise ValueError(f"latency_ms_at_share({x!r}) returned NaN")
        return lat <= slo_ms

    if meets(lo):
        return float(lo)
    if not meets(hi):
        return float("inf")
    a, b = lo, hi
    while b - a > rel_tol * hi:
        mid = 0.5 * (a + b)
        a, b = (a, mid) if meets(mid) else (mid, b)
    return float(b)


@dataclass(frozen=True, slots=True)
class _AffineModel:
    """Per-service affine QoS on the useful share range (see the module docstring)."""

    a: FloatArray
    c: FloatArray
    hi_eff: FloatArray
    fixed: np.ndarray


def _affine_model(demand: FloatArray, target: FloatArray, lo: FloatArray, hi: FloatArray) -> _AffineModel:
    inv_t = 1.0 / target
    finite = np.isfinite(demand)
    satisfied = finite & (lo >= demand)  # includes demand == 0
    active = finite & ~satisfied
    a = np.zeros_like(demand)
    np.divide(inv_t, demand, out=a, where=active)
    c = np.where(satisfied, inv_t, 0.0)
    hi_eff = _hi_eff(demand, lo, hi)
    fixed = hi_eff <= lo
    return _AffineModel(a, c, hi_eff, fixed)


def proportional_shares(demand: ArrayLike, lo: ArrayLike, hi: ArrayLike, capacity: float) -> FloatArray:
    r"""The heuristic baseline and fallback: every service gets the same fraction of its need.

    .. math:: x_i = l_i + \frac{\min(C, \sum_j h'_j) - \sum_j l_j}{\sum_j (h'_j - l_j)}\,(h'_i - l_i)

    With zero minimum shares and ample maxima this is the split proportional to demand,
    :math:`x_i = C d_i / \sum_j d_j`. When :math:`\sum_j l_j > C` the minimum shares are scaled by
    :math:`C / \sum_j l_j` (they cannot all be honoured).
    """
    d = as_float_array("demand", demand, allow_inf=True)
    lo_a = as_float_array("lo", lo)
    hi_a = as_float_array("hi", hi)
    cap = float(as_float_array("capacity", capacity))
    d, lo_a, hi_a = (np.array(v, dtype=np.float64) for v in np.broadcast_arrays(d, lo_a, hi_a))
    if (lo_a > hi_a).any():
        raise ValueError(f"lo, hi: lo > hi for service {int(np.flatnonzero(lo_a > hi_a)[0])}")
    hi_eff = _hi_eff(d, lo_a, hi_a)
    return _proportional(lo_a, hi_eff, cap)


def _hi_eff(demand: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Useful maximum share :math:`h' = \\min(h, \\max(l, d))`; :math:`l` when ``d = inf``."""
    finite_d = np.where(np.isfinite(demand), demand, 0.0)
    return np.where(np.isfinite(demand), np.minimum(hi, np.maximum(lo, finite_d)), lo)


def _proportional(lo: FloatArray, hi_eff: FloatArray, cap: float) -> FloatArray:
    lo_sum = float(lo.sum())
    if lo_sum > cap:
        return lo * (cap / lo_sum) if lo_sum > 0 else lo.copy()
    room = hi_eff - lo
    room_sum = float(room.sum())
    give = min(cap, float(hi_eff.sum())) - lo_sum
    if room_sum <= 0.0:
        return lo.copy()
    return lo + room * (give / room_sum)


def within_class_spread(normalised_qos: ArrayLike, class_ids: Sequence[Hashable]) -> float:
    """:math:`\\sum_{i<j,\\ same\\ class} |n_i - n_j|`, the stage-2 surrogate, in :math:`O(n \\log n)`."""
    nq = as_float_array("normalised_qos", normalised_qos).ravel()
    if len(class_ids) != nq.size:
        raise ValueError(f"class_ids: {len(class_ids)} labels for {nq.size} services")
    groups = _canonical_groups(class_ids)
    total = 0.0
    for g in set(groups):
        members = np.sort(nq[np.asarray(groups) == g])
        k = members.size
        total += float((2.0 * np.arange(1, k + 1) - k - 1.0) @ members)
    return total


def _canonical_groups(class_ids: Sequence[Hashable]) -> tuple[int, ...]:
    """Class labels as group numbers in order of first appearance: the problem's structure key."""
    seen: dict[Hashable, int] = {}
    return tuple(seen.setdefault(c, len(seen)) for c in class_ids)


# --------------------------------------------------------------------------------------- solver
class FairShareSolver:
    """The two-stage fair-share LP for ``n_services`` services with a fixed class structure.

    Both cvxpy problems are built once here, from Parameters; :meth:`solve` only assigns values,
    so cvxpy compiles each problem once (on its first solve) and re-solves reuse the compiled
    form. Not thread-safe: Parameter values are shared state; use one solver per thread.

    Parameters
    ----------
    n_services : int
        Number of services sharing the device (>= 1).
    class_ids : sequence of hashable
        Class label of each service (e.g. ``"prod"``); only the partition matters.
    settings : ShareSettings, optional
        Solver name, tolerances, tie-break weight.

    Attributes
    ----------
    problems_built : int
        cvxpy ``Problem`` objects built by this solver (2, whatever the number of solves).
    """

    def __init__(
        self, n_services: int, class_ids: Sequence[Hashable], settings: ShareSettings | None = None
    ) -> None:
        if n_services < 1:
            raise ValueError(f"n_services: must be >= 1, got {n_services}")
        if len(class_ids) != n_services:
            raise ValueError(f"class_ids: {len(class_ids)} labels for {n_services} services")
        self.n_services = n_services
        self.class_ids: tuple[Hashable, ...] = tuple(class_ids)
        self.groups = _canonical_groups(self.class_ids)
        self.settings = settings or ShareSettings()
        n = n_services

        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        pairs: list[tuple[int, int]] = []
        for i in range(n):
            for j in range(i + 1, n):
                if self.groups[i] == self.groups[j]:
                    rows += [len(pairs), len(pairs)]
                    cols += [i, j]
                    vals += [1.0, -1.0]
                    pairs.append((i, j))
        self._pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        import cvxpy as cp  # a solve was asked for (see the import at the top)
        import scipy.sparse as sp  # with cvxpy: 0.2 s to import, for the solver only

        self._x = cp.Variable(n, name="share")
        self._t = cp.Variable(name="t")
        self._a = cp.Parameter(n, nonneg=True, name="a")
        self._c = cp.Parameter(n, nonneg=True, name="c")
        self._relax = cp.Parameter(n, nonneg=True, name="relax")
        self._lo = cp.Parameter(n, nonneg=True, name="lo")
        self._hi = cp.Parameter(n, nonneg=True, name="hi_eff")
        self._cap = cp.Parameter(nonneg=True, name="capacity")
        self._floor = cp.Parameter(name="t_floor")
        self._used = cp.Parameter(nonneg=True, name="used")

        nq = cp.multiply(self._a, self._x) + self._c
        bounds = [self._x >= self._lo, self._x <= self._hi]
        self._stage1 = cp.Problem(
            cp.Maximize(self._t),
            [nq + self._relax >= self._t, *bounds, cp.sum(self._x) <= self._cap],
        )
        # Stage 2 names the normalised QoS as a variable so the pair weights (a Parameter)
        # multiply a parameter-free expression: that keeps the problem DPP (compiled once).
        nq_var = cp.Variable(n, name="normalised_qos")
        t2 = cp.Variable(name="t2")
        self._relax2 = cp.Parameter(n, nonneg=True, name="relax_unsaturated")
        eta = self.settings.efficiency_weight
        objective: Any = -eta * t2 - (eta / n) * cp.sum(cp.minimum(nq_var, 1.0))
        # Pair terms, e = n_i - n_j, as w⁺·pos(e) + w⁻·pos(-e): both weights 1 give |e| between
        # two services the allocation can move; when one end is pinned only the side where the
        # movable one is below counts, so a pinned service can pull a class-mate up, never down.
        self._pair_w: tuple[cp.Parameter, cp.Parameter] | None = None
        if pairs:
            diff = sp.csr_matrix((vals, (rows, cols)), shape=(len(pairs), n))
            e = diff @ nq_var
            w_plus = cp.Parameter(len(pairs), nonneg=True, name="pair_weight_i_above")
            w_minus = cp.Parameter(len(pairs), nonneg=True, name="pair_weight_i_below")
            self._pair_w = (w_plus, w_minus)
            objective = cp.sum(cp.multiply(w_plus, cp.pos(e)) + cp.multiply(w_minus, cp.pos(-e))) + objective
        self._stage2 = cp.Problem(
            cp.Minimize(objective),
            [
                nq_var == nq,
                nq_var + self._relax >= self._floor,
                nq_var + self._relax2 >= t2,
                *bounds,
                cp.sum(self._x) == self._used,
            ],
        )
        self.problems_built = 2

    @property
    def problems(self) -> tuple[cp.Problem, cp.Problem]:
        """The stage-1 and stage-2 cvxpy problems (for inspection and tests)."""
        return self._stage1, self._stage2

    def solve(
        self,
        demand: ArrayLike,
        target: ArrayLike,
        lo: ArrayLike,
        hi: ArrayLike,
        capacity: float,
    ) -> SharesResult:
        """Fair shares for one set of values.

        Parameters
        ----------
        demand : array_like
            Share each service needs to meet its SLO, ``>= 0``; ``inf`` if no share does.
        target : array_like
            QoS target of each service (its class target), in (0, 1].
        lo, hi : array_like
            Minimum and maximum share of each service, ``0 <= lo <= hi``, finite.
        capacity : float
            Capacity of the device, ``>= 0``, same unit as the shares.

        Returns
        -------
        SharesResult
        """
        n = self.n_services
        d = _vector("demand", demand, n, allow_inf=True)
        tgt = check_fraction("target", _vector("target", target, n))
        lo_a = _vector("lo", lo, n)
        hi_a = _vector("hi", hi, n)
        bad = lo_a > hi_a
        if bad.any():
            raise ValueError(f"lo, hi: lo > hi for service {int(np.flatnonzero(bad)[0])}")
        cap = float(as_float_array("capacity", capacity))
        model = _affine_model(d, tgt, lo_a, hi_a)

        if float(lo_a.sum()) > cap:
            log.warning(
                "fair shares: minimum shares %.6g exceed capacity %.6g; scaling them down", lo_a.sum(), cap
            )
            return self._result(_proportional(lo_a, model.hi_eff, cap), d, tgt, cap, "infeasible")
        if float(model.hi_eff.sum()) <= cap:
            return self._result(model.hi_eff.copy(), d, tgt, cap, "uncontended")

        max_nq = float((model.a * model.hi_eff + model.c).max())
        self._a.value = model.a
        self._c.value = model.c
        self._relax.value = np.where(model.fixed, max_nq + 1.0, 0.0)
        self._lo.value = lo_a
        self._hi.value = model.hi_eff
        self._cap.value = cap
        statuses: list[str] = []
        solve_s: list[float] = []

        ok1 = self._run(self._stage1, statuses, solve_s)
        t_val = self._t.value
        if not ok1 or t_val is None or self._x.value is None:
            log.warning("fair shares: stage 1 ended %s; using the proportional split", statuses[-1])
            x = _proportional(lo_a, model.hi_eff, cap)
            return self._result(x, d, tgt, cap, "fallback", statuses, solve_s)
        x1 = _project(np.asarray(self._x.value, dtype=np.float64), lo_a, model.hi_eff, cap)
        t_star = float(t_val)
        s = self.settings
        self._floor.value = t_star - max(s.stage1_abs_tol, s.stage1_rel_tol * abs(t_star))
        self._used.value = min(cap, float(model.hi_eff.sum()))
        # Saturated: at the stage-1 optimum the service is already at its own ceiling (it is the
        # bottleneck because of its bound, not for lack of capacity). Like a fixed service it
        # leaves the pairwise objective and the second-level max-min.
        ceiling = model.a * model.hi_eff + model.c
        pinned = model.fixed | (ceiling <= t_star + max(s.stage1_abs_tol, s.stage1_rel_tol * abs(t_star)))
        self._relax2.value = np.where(pinned, max_nq + 1.0, 0.0)
        if self._pair_w is not None:
            pin_i, pin_j = pinned[self._pairs[:, 0]], pinned[self._pairs[:, 1]]
            w_plus, w_minus = self._pair_w
            w_plus.value = (~pin_j).astype(np.float64)  # n_i > n_j counts unless j is pinned
            w_minus.value = (~pin_i).astype(np.float64)  # n_i < n_j counts unless i is pinned

        ok2 = self._run(self._stage2, statuses, solve_s)
        if not ok2 or self._x.value is None:
            log.warning("fair shares: stage 2 ended %s; using the stage-1 (max-min) solution", statuses[-1])
            return self._result(x1, d, tgt, cap, "stage1-only", statuses, solve_s)
        x2 = _project(np.asarray(self._x.value, dtype=np.float64), lo_a, model.hi_eff, cap)
        return self._result(x2, d, tgt, cap, "optimal", statuses, solve_s)

    # ----------------------------------------------------------------------------- internals
    def _run(self, problem: cp.Problem, statuses: list[str], solve_s: list[float]) -> bool:
        import cvxpy as cp  # a solve was asked for (see the import at the top)

        try:
            problem.solve(solver=self.settings.solver)
        except (cp.error.SolverError, ArithmeticError, ValueError) as exc:
            # ValueError: cvxpy refuses parameter data it cannot use ("contains NaN or Inf"), e.g.
            # the slope 1/(target·demand) of a subnormal demand overflows; the caller's fallback
            # (the proportional split) handles it as any other failed stage.
            statuses.append(f"error: {exc}")
            return False
        statuses.append(str(problem.status))
        stats = problem.solver_stats
        if stats is not None and stats.solve_time is not None:
            solve_s.append(float(stats.solve_time))
        return problem.status == cp.OPTIMAL

    def _result(
        self,
        x: FloatArray,
        demand: FloatArray,
        target: FloatArray,
        cap: float,
        status: ShareStatus,
        statuses: Sequence[str] = (),
        solve_s: Sequence[float] = (),
    ) -> SharesResult:
        q = qos_at_share(x, demand)
        nq = q / target
        return SharesResult(
            shares=x,
            qos=q,
            normalised_qos=nq,
            status=status,
            min_normalised_qos=float(nq.min()),
            within_class_spread=within_class_spread(nq, self.class_ids),
            unallocated=cap - float(x.sum()),
            solve_ms=1000.0 * sum(solve_s) if solve_s else None,
            solver_status=tuple(statuses),
        )


def _vector(name: str, values: ArrayLike, n: int, *, allow_inf: bool = False) -> FloatArray:
    arr = as_float_array(name, values, allow_inf=allow_inf)
    arr = np.broadcast_to(arr, (n,)).astype(np.float64) if arr.ndim == 0 else arr
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got shape {arr.shape}")
    return arr


def _project(x: FloatArray, lo: FloatArray, hi: FloatArray, cap: float) -> FloatArray:
    """Clip solver output into the bounds and, if rounding overfilled, under the capacity."""
    x = np.clip(x, lo, hi)
    excess = float(x.sum()) - cap
    if excess > 0:
        room = x - lo
        x = lo + room * max(0.0, 1.0 - excess / float(room.sum()))
    return x


class FairShareSolverCache:
    """Least-recently-used cache of :class:`FairShareSolver` by class structure.

    Two services lists with the same partition into classes (in order) share one compiled
    solver. Owned by one thread (the controller's loop); not thread-safe.
    """

    def __init__(self, maxsize: int = 64, settings: ShareSettings | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize: must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.settings = settings or ShareSettings()
        self._solvers: OrderedDict[tuple[int, ...], FairShareSolver] = OrderedDict()

    def get(self, class_ids: Sequence[Hashable]) -> FairShareSolver:
        """A solver for ``class_ids``, built on first use."""
        key = _canonical_groups(class_ids)
        solver = self._solvers.get(key)
        if solver is None:
            solver = FairShareSolver(len(class_ids), class_ids, self.settings)
            self._solvers[key] = solver
            if len(self._solvers) > self.maxsize:
                self._solvers.popitem(last=False)
        else:
            self._solvers.move_to_end(key)
        return solver

    def __len__(self) -> int:
        return len(self._solvers)

    def solve(
        self,
        class_ids: Sequence[Hashable],
        demand: ArrayLike,
        target: ArrayLike,
        lo: ArrayLike,
        hi: ArrayLike,
        capacity: float,
    ) -> SharesResult:
        """Solve with the cached solver for ``class_ids`` (an empty list gives status ``empty``)."""
        if len(class_ids) == 0:
            empty = np.zeros(0)
            return SharesResult(empty, empty, empty, "empty", float("inf"), 0.0, float(capacity))
        return self.get(class_ids).solve(demand, target, lo, hi, capacity)


# ------------------------------------------------------------------------- placement-time term
@dataclass(frozen=True, slots=True)
class FairnessSnapshot:
    """Cluster-wide normalised QoS, summarised per class, built off the request path.

    Attributes
    ----------
    by_class : mapping of str to GiniSummary
        Normalised QoS of each class's services.
    overall : GiniSummary
        Normalised QoS of all services (for the minimum).
    """

    by_class: Mapping[str, GiniSummary]
    overall: GiniSummary

    @classmethod
    def from_values(cls, normalised_qos: ArrayLike, classes: Sequence[str]) -> FairnessSnapshot:
        """Summarise the current normalised QoS (QoS / class target) of every placed service."""
        nq = as_float_array("normalised_qos", normalised_qos).ravel()
        labels = np.asarray(classes, dtype=str).ravel()
        if labels.size != nq.size:
            raise ValueError(f"classes: {labels.size} labels for {nq.size} values")
        by_class = {str(c): GiniSummary.from_values(nq[labels == c]) for c in np.unique(labels)}
        return cls(MappingProxyType(by_class), GiniSummary.from_values(nq))


@dataclass(frozen=True, slots=True)
class FairnessWeights:
    """Weights of :attr:`FairnessDelta.value`: ``min_qos * Δmin - gini * Σ_class ΔGini``."""

    min_qos: float = 1.0
    gini: float = 1.0


@dataclass(frozen=True, slots=True)
class FairnessDelta:
    """Effect of a candidate placement on fairness (higher ``value`` = fairer).

    Attributes
    ----------
    min_normalised_qos_after : float
        Minimum normalised QoS over all services after the placement.
    delta_min_normalised_qos : float
        Its change (0 when the snapshot was empty).
    delta_gini_by_class : mapping of str to float
        Change of within-class Gini for each class the placement touches.
    value : float
        ``weights.min_qos * delta_min - weights.gini * sum(delta_gini)``.
    """

    min_normalised_qos_after: float
    delta_min_normalised_qos: float
    delta_gini_by_class: Mapping[str, float] = field(default_factory=dict)
    value: float = 0.0


def fairness_term(
    snapshot: FairnessSnapshot,
    candidate_class: str,
    candidate_nq: float,
    node_classes: Sequence[str] = (),
    node_nq_before: ArrayLike = (),
    node_nq_after: ArrayLike = (),
    weights: FairnessWeights | None = None,
) -> FairnessDelta:
    """Change of min normalised QoS and within-class Gini if the candidate lands on a node.

    Closed form from the snapshot's sorted values and prefix sums (:meth:`GiniSummary.gini_after`),
    no solver: safe on the request path.

    Parameters
    ----------
    snapshot : FairnessSnapshot
        Current normalised QoS of all placed services.
    candidate_class : str
        Class of the pod being placed.
    candidate_nq : float
        Its predicted normalised QoS on this node.
    node_classes : sequence of str
        Classes of the services already on the node.
    node_nq_before : array_like
        Their normalised QoS now: the very values in the snapshot.
    node_nq_after : array_like
        Their predicted normalised QoS with the candidate co-located (interference).
    weights : FairnessWeights, optional
        Weights of ``value``.
    """
    weights = weights or FairnessWeights()
    before = as_float_array("node_nq_before", node_nq_before).ravel()
    after = as_float_array("node_nq_after", node_nq_after).ravel()
    cand = float(as_float_array("candidate_nq", candidate_nq))
    labels = np.asarray(node_classes, dtype=str).ravel()
    if not (before.size == after.size == labels.size):
        raise ValueError(
            "node_classes, node_nq_before, node_nq_after: lengths differ "
            f"({labels.size}, {before.size}, {after.size})"
        )
    added_all = np.append(after, cand)
    min_after = snapshot.overall.min_after(removed=before, added=added_all)
    delta_min = min_after - snapshot.overall.min() if snapshot.overall.n else 0.0

    deltas: dict[str, float] = {}
    for cls_name in sorted(set(labels.tolist()) | {candidate_class}):
        summary = snapshot.by_class.get(cls_name, _EMPTY_SUMMARY)
        mask = labels == cls_name
        added = after[mask] if cls_name != candidate_class else np.append(after[mask], cand)
        deltas[cls_name] = summary.gini_after(removed=before[mask], added=added) - summary.gini()
    value = weights.min_qos * delta_min - weights.gini * sum(deltas.values())
    return FairnessDelta(min_after, delta_min, MappingProxyType(deltas), value)
