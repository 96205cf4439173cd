r"""The QoE control law: move device shares from services beating their latency target to those
missing it (DQoES, Mao et al., arXiv 2010.12728; ``models.md`` §C).

The paper's exact law is not published in a form we have; this is the law qosched uses. It is
pure: numbers in, numbers out, no clock and no I/O. The controller
(:mod:`qosched.extender.controller.loop`) feeds it the shares read from the API server and the
latencies read from Prometheus, and applies what it returns. The law keeps no state between
steps: the current shares *are* the state, so a restarted or newly elected controller continues
where the last one stopped.

**Notation.** Services :math:`i = 1..n` share one pool of capacity :math:`C` (CPU millicores of a
node, or the time of one GPU in milli-GPU). Service :math:`i` holds share :math:`x_i \in [l_i, h_i]`,
has latency target :math:`T_i` (``qosched.io/slo-ms``; the mean, or the :math:`p`-th percentile
with ``qosched.io/slo-percentile``), observed latency :math:`L_i` and arrival rate :math:`\lambda_i`.

**One step.**

1. *Set point and dead band.* The law aims at :math:`T^*_i = \sigma T_i` (``setpoint_frac``
   :math:`\sigma`, default 0.9: a margin for measurement noise). With :math:`e_i = L_i / T^*_i`,
   a service with :math:`|e_i - 1| \le \delta` (``deadband_frac``, default 0.05) *holds*: its
   share is pinned (:math:`l_i = h_i = x_i` for this step). So does a service with no observation
   (``None``/NaN, or a non-positive latency): the law never acts on missing data.

2. *Demand by inversion* — the share at which the service would sit exactly at its set point.

   - **M/M/1 inversion** (when the rate is known). For an M/M/1 service with per-unit-share
     service rate :math:`\mu`, response time is exponential with rate :math:`x\mu - \lambda`, so
     :math:`L = k/(x\mu - \lambda)` with :math:`k = 1` for the mean and
     :math:`k = -\ln(1 - p/100)` for the :math:`p`-th percentile. The observation calibrates
     :math:`\hat\mu = (k/L + \lambda)/x` and the target is inverted exactly:

     .. math:: d_i = x_i \,\frac{k/T^*_i + \lambda_i}{k/L_i + \lambda_i}.

   - **Multiplicative rule** (no rate): :math:`d_i = x_i\, e_i^{\alpha}`, :math:`\alpha \in (0, 1]`
     (``exponent``, default 0.5).

   An unbounded observation (:math:`L = \infty`, the queue is unstable) says only that
   :math:`x_i` was too small: it asks for :math:`\min(h_i, \max(d_i, g x_i, 0.01 C))`
   (``unbounded_growth`` :math:`g`, default 2).

3. *Fair allocation under capacity.* :class:`~qosched.policies.fairness.shares.FairShareSolver`
   with demand :math:`d`, the class QoS targets and bounds :math:`[l, h]` gives :math:`x^*`. When
   :math:`\sum_i \min(h_i, \max(l_i, d_i)) \le C` (enough capacity) this is simply
   :math:`x^*_i = \min(h_i, \max(l_i, d_i))`: services beating their target shrink to their
   demand and the freed capacity goes to those missing theirs. Otherwise the two-stage LP
   maximises the minimum normalised QoS :math:`\min(1, x_i/d_i)/\text{target}_{class}` and then
   equalises it within each class: the shortfall is shared fairly instead of starving someone.
   ``slack="proportional"`` hands capacity left over in the uncontended case to the acting
   services in proportion to :math:`x^*` (work-conserving); the default ``"keep"`` leaves it
   unrequested, so the scheduler can place new pods there.

4. *Damping, step limit, bounds, capacity.*

   .. math:: x_i \leftarrow \operatorname{clip}_{[l_i, h_i]}\Big(x_i +
             \operatorname{clip}_{[-s, s]}\big(\beta (x^*_i - x_i)\big)\Big),
             \qquad s = \text{max\_step\_frac}\cdot C,

   :math:`\beta \in (0, 1]` (``damping``, default 0.5). If this overfills the pool (only possible
   when the step limit cut a decrease more than an increase, or the shares were already
   overcommitted) the increases are scaled down first, then everything toward :math:`l`, so
   :math:`\sum_i x_i \le C` always holds after a step.

**Why it converges** (linearised at the fixed point; the tests and ``docs/controller.md`` show it
measured). With enough capacity every acting service's update is
:math:`x_{k+1} = x_k + \beta(d(x_k) - x_k)`, a fixed point being :math:`L(x) = T^*`. Its slope
there is :math:`g' = 1 - \beta(1 - d'(x^*))`.

- Every fixed point is on target whatever the plant: :math:`d(x) = x \iff L = T^*` for both
  rules, so model error (bursty arrivals, a non-exponential service, a wrong rate) changes the
  speed of convergence, never its destination.
- M/M/1 inversion on an M/M/1 plant with the true rate: :math:`d` does not depend on :math:`x`
  (the calibration is exact), :math:`g' = 1 - \beta`: the error shrinks geometrically by
  :math:`(1-\beta)` per step and monotonically (no overshoot for :math:`\beta \le 1`).
- With a wrong rate estimate :math:`\hat\lambda` the fixed point is still the true one
  (:math:`x^*\mu = k/T^* + \lambda`: the :math:`\hat\lambda` terms cancel) and
  :math:`d'(x^*) = (\hat\lambda - \lambda)/(k/T^* + \hat\lambda)`, so
  :math:`g' = 1 - \beta\,(k/T^* + \lambda)/(k/T^* + \hat\lambda)`: overestimating the rate only
  slows convergence; underestimating it stays monotone while
  :math:`\beta (k/T^* + \lambda) \le k/T^* + \hat\lambda`.
- Multiplicative rule: :math:`g' = 1 - \alpha\beta\varepsilon` with
  :math:`\varepsilon = -\partial\ln L/\partial\ln x` the elasticity of latency to share; for
  M/M/1 :math:`\varepsilon = 1/(1-\rho)` with :math:`\rho` the utilisation at the set point.
  Monotone while :math:`\alpha\beta\varepsilon \le 1`, convergent (damped oscillation) while
  :math:`\alpha\beta\varepsilon < 2`; the defaults :math:`\alpha\beta = 1/4` converge up to
  :math:`\rho < 7/8` (that is why the M/M/1 inversion is preferred when a rate is known).
- The dead band stops a service in finitely many steps once its error is inside
  :math:`[1-\delta, 1+\delta]`; a service never leaves the band on its own.
- Contended: with exact demands :math:`x^*` is a fixed function of :math:`d`, so the same
  geometric argument applies to :math:`x_k \to x^*`.
- The step limit only delays convergence (at most :math:`\lceil |x_0 - x^*| / s \rceil` capped
  steps), and capacity and bounds are invariants of every step.

References
----------
Mao, Y., et al. "Differentiate Quality of Experience Scheduling for Deep Learning Inferences with
Docker Containers in the Cloud." arXiv:2010.12728 (DQoES).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.fairness._validate import FloatArray
from qosched.policies.fairness.shares import FairShareSolverCache, ShareStatus

Action = Literal["grow", "shrink", "hold", "hold-deadband", "hold-no-data"]
"""What the step did to one service: ``grow``/``shrink`` (its share moved), ``hold`` (it acted
but its share did not move, e.g. already at a bound), ``hold-deadband`` (within the band around
its set point), ``hold-no-data`` (no usable observation)."""

Inversion = Literal["mm1", "power", "none"]
"""How a service's demand was estimated: M/M/1 inversion (rate known), multiplicative rule, or
not at all (held)."""

SlackPolicy = Literal["keep", "proportional"]


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Knobs of the control law; every default is argued in the module docstring.

    Attributes
    ----------
    setpoint_frac : float
        :math:`\\sigma \\in (0, 1]`: aim at ``setpoint_frac * slo_ms``. 0.9 keeps a 10 % margin
        so that noise in a windowed latency estimate does not flip a service across its SLO.
    deadband_frac : float
        :math:`\\delta \\in [0, 1)`: no change while ``|observed / setpoint - 1| <= deadband_frac``.
        With the defaults a held service is at most at 0.9 * 1.05 = 0.945 of its SLO.
    damping : float
        :math:`\\beta \\in (0, 1]`: fraction of the way to the target share taken per step.
        0.5 halves the error per step on an exact model and tolerates a 2x underestimate of the
        latency's sensitivity to share before it oscillates.
    exponent : float
        :math:`\\alpha \\in (0, 1]` of the multiplicative rule (services without a rate).
    max_step_frac : float
        Largest share change of one service in one step, as a fraction of the pool's capacity
        (0, 1]. Bounds the harm of one bad measurement.
    slack : {"keep", "proportional"}
        What to do with capacity nobody needs: leave it unrequested (default; the scheduler can
        use it) or give it to the acting services in proportion to their target share.
    unbounded_growth : float
        :math:`g > 1`: a service whose latency is unbounded (unstable queue) asks for at least
        ``g`` times its share. With damping :math:`\\beta` its share grows by
        :math:`1 + \\beta(g - 1)` per step (1.5 with the defaults), so an unstable service is
        stable after :math:`\\lceil\\log_{1.5}(\\text{need}/x)\\rceil` steps.
    """

    setpoint_frac: float = 0.9
    deadband_frac: float = 0.05
    damping: float = 0.5
    exponent: float = 0.5
    max_step_frac: float = 0.25
    slack: SlackPolicy = "keep"
    unbounded_growth: float = 2.0

    def __post_init__(self) -> None:
        checks = {
            "setpoint_frac": 0.0 < self.setpoint_frac <= 1.0,
            "deadband_frac": 0.0 <= self.deadband_frac < 1.0,
            "damping": 0.0 < self.damping <= 1.0,
            "exponent": 0.0 < self.exponent <= 1.0,
            "max_step_frac": 0.0 < self.max_step_frac <= 1.0,
            "unbounded_growth": 1.0 < self.unbounded_growth <= 100.0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and ok):
                raise ValueError(f"ControlSettings.{name}: {value!r} is out of range (see its docstring)")
        if self.slack not in ("keep", "proportional"):
            raise ValueError(f"ControlSettings.slack: {self.slack!r} must be 'keep' or 'proportional'")


@dataclass(frozen=True, slots=True)
class ServiceInput:
    """One service as the law sees it (all shares in the pool's unit, e.g. millicores).

    Attributes
    ----------
    share : float
        Current share :math:`x`, ``>= 0``.
    slo_ms : float
        Latency target :math:`T` [ms], ``> 0``.
    observed_ms : float or None
        Observed latency :math:`L` [ms] (mean, or the percentile below); None or NaN = no
        observation (the service holds); ``inf`` = unbounded (it asks for ``hi``).
    lo, hi : float
        Share bounds, ``0 <= lo <= hi < inf``.
    qos_target : float
        QoS target of the service's class in (0, 1] (prod 1.0, batch 0.9, free 0.5), used by the
        fair allocation when capacity is short.
    class_name : str
        The class, for within-class fairness.
    rate_rps : float or None
        Arrival rate :math:`\\lambda` [requests/s]; when given, the M/M/1 inversion is used.
    percentile : float or None
        The percentile (50..99.9) that ``slo_ms`` and ``observed_ms`` refer to; None = mean.
    """

    share: float
    slo_ms: float
    observed_ms: float | None
    lo: float
    hi: float
    qos_target: float = 1.0
    class_name: str = "batch"
    rate_rps: float | None = None
    percentile: float | None = None

    def __post_init__(self) -> None:
        def finite_nonneg(name: str, value: float) -> None:
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ValueError(f"ServiceInput.{name}: {value!r} must be a finite number >= 0")

        finite_nonneg("share", self.share)
        finite_nonneg("lo", self.lo)
        finite_nonneg("hi", self.hi)
        if self.lo > self.hi:
            raise ValueError(f"ServiceInput.lo, hi: lo {self.lo!r} > hi {self.hi!r}")
        if not (isinstance(self.slo_ms, int | float) and np.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ValueError(f"ServiceInput.slo_ms: {self.slo_ms!r} must be finite and > 0")
        if self.observed_ms is not None and not isinstance(self.observed_ms, int | float):
            raise ValueError(f"ServiceInput.observed_ms: {self.observed_ms!r} is not a number")
        if not (0.0 < self.qos_target <= 1.0):
            raise ValueError(f"ServiceInput.qos_target: {self.qos_target!r} not in (0, 1]")
        if self.rate_rps is not None:
            finite_nonneg("rate_rps", self.rate_rps)
        if self.percentile is not None and not (50.0 <= self.percentile <= 99.9):
            raise ValueError(f"ServiceInput.percentile: {self.percentile!r} not in 50..99.9")


@dataclass(frozen=True, slots=True)
class ControlStep:
    """Result of one step for one pool.

    Attributes
    ----------
    shares : numpy.ndarray
        New share of each service (what to apply).
    target_shares : numpy.ndarray
        :math:`x^*`, the fair allocation before damping and the step limit.
    demand : numpy.ndarray
        :math:`d`, the share each service needs to sit at its set point (``share`` for held
        services; at least ``unbounded_growth * share`` for unbounded observations; may exceed
        ``hi``).
    error : numpy.ndarray
        :math:`e = L / T^*` (NaN where there was no observation).
    actions : tuple of Action
        What happened to each service.
    inversions : tuple of Inversion
        How each demand was estimated.
    status : ShareStatus
        Status of the fair allocation (``uncontended``, ``optimal``, ...).
    capacity : float
        The pool's capacity :math:`C`.
    """

    shares: FloatArray
    target_shares: FloatArray
    demand: FloatArray
    error: FloatArray
    actions: tuple[Action, ...]
    inversions: tuple[Inversion, ...]
    status: ShareStatus
    capacity: float

    @property
    def moved(self) -> int:
        """Number of services whose share changed."""
        return sum(a in ("grow", "shrink") for a in self.actions)


# ----------------------------------------------------------------------------------- demand


def percentile_factor(percentile: ArrayLike) -> FloatArray:
    r""":math:`k = -\ln(1 - p/100)`: the :math:`p`-th percentile of an exponential over its mean.

    An M/M/1 FCFS response time is exponential with rate :math:`x\mu - \lambda`, so its
    percentile is :math:`k` times its mean. NaN (no percentile) gives 1 (the mean).

    >>> float(percentile_factor(95.0).round(4))
    2.9957
    """
    p = np.asarray(percentile, dtype=np.float64)
    out = np.ones_like(p)
    has = ~np.isnan(p)
    out[has] = -np.log1p(-p[has] / 100.0)
    return out


def demand_mm1(
    share: ArrayLike,
    observed_ms: ArrayLike,
    setpoint_ms: ArrayLike,
    rate_rps: ArrayLike,
    percentile: ArrayLike = np.nan,
) -> FloatArray:
    r"""Share at which an M/M/1 service would sit at its set point, calibrated by one observation.

    .. math:: d = x \,\frac{k/T^* + \lambda}{k/L + \lambda}

    (rates per ms, :math:`k` from :func:`percentile_factor`). Exact for an M/M/1 plant whatever
    its service rate; :math:`L = \infty` gives :math:`x (k/T^* + \lambda)/\lambda` (``inf`` if
    :math:`\lambda = 0`).

    >>> float(demand_mm1(100.0, 20.0, 10.0, 0.0))   # no load: latency ∝ 1/share
    200.0
    """
    x = np.asarray(share, dtype=np.float64)
    lat = np.asarray(observed_ms, dtype=np.float64)
    sp = np.asarray(setpoint_ms, dtype=np.float64)
    lam = np.asarray(rate_rps, dtype=np.float64) / 1000.0
    k = percentile_factor(percentile)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = k / lat + lam
        out = x * (k / sp + lam) / den
    return np.where(den > 0, out, np.inf)


def demand_power(
    share: ArrayLike, observed_ms: ArrayLike, setpoint_ms: ArrayLike, exponent: float
) -> FloatArray:
    r"""Multiplicative rule :math:`d = x\,(L/T^*)^\alpha` (no model; latency assumed to fall with share).

    >>> float(demand_power(100.0, 40.0, 10.0, 0.5))
    200.0
    """
    x = np.asarray(share, dtype=np.float64)
    ratio = np.asarray(observed_ms, dtype=np.float64) / np.asarray(setpoint_ms, dtype=np.float64)
    return x * ratio**exponent


# ----------------------------------------------------------------------------------- the step


def control_step(
    services: Sequence[ServiceInput],
    capacity: float,
    settings: ControlSettings | None = None,
    solvers: FairShareSolverCache | None = None,
) -> ControlStep:
    """One step of the law for the services of one pool (see the module docstring).

    Parameters
    ----------
    services : sequence of ServiceInput
        The services sharing the pool.
    capacity : float
        The pool's capacity :math:`C` (same unit as the shares), finite and ``>= 0``.
    settings : ControlSettings, optional
    solvers : FairShareSolverCache, optional
        Compiled share problems to reuse between steps (the controller keeps one); a fresh cache
        otherwise (correct, but recompiles cvxpy problems when capacity is short).

    Returns
    -------
    ControlStep
        New shares with ``sum(shares) <= capacity`` and ``lo <= shares <= hi`` (except when the
        minimum shares alone exceed the capacity: then they are scaled down to fit).
    """
    s = settings or ControlSettings()
    if not (isinstance(capacity, int | float) and np.isfinite(capacity) and capacity >= 0):
        raise ValueError(f"capacity: {capacity!r} must be a finite number >= 0")
    cap = float(capacity)
    n = len(services)
    if n == 0:
        empty = np.zeros(0)
        return ControlStep(empty, empty, empty, empty, (), (), "empty", cap)

    x = np.array([sv.share for sv in services], dtype=np.float64)
    lo = np.array([sv.lo for sv in services], dtype=np.float64)
    hi = np.array([sv.hi for sv in services], dtype=np.float64)
    slo = np.array([sv.slo_ms for sv in services], dtype=np.float64)
    obs = np.array(
        [np.nan if sv.observed_ms is None else sv.observed_ms for sv in services], dtype=np.float64
    )
    rate = np.array([np.nan if sv.rate_rps is None else sv.rate_rps for sv in services], dtype=np.float64)
    pct = np.array([np.nan if sv.percentile is None else sv.percentile for sv in services], dtype=np.float64)
    setpoint = s.setpoint_frac * slo

    usable = ~np.isnan(obs) & (obs > 0)  # a 0 ms latency is an artefact of an empty histogram
    with np.errstate(invalid="ignore"):
        error = np.where(usable, obs / setpoint, np.nan)
        in_band = usable & (np.abs(error - 1.0) <= s.deadband_frac)
    acting = usable & ~in_band

    use_mm1 = acting & ~np.isnan(rate)
    use_power = acting & np.isnan(rate)
    demand = x.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if use_mm1.any():
            demand[use_mm1] = demand_mm1(
                x[use_mm1], obs[use_mm1], setpoint[use_mm1], rate[use_mm1], pct[use_mm1]
            )
        if use_power.any():
            demand[use_power] = demand_power(x[use_power], obs[use_power], setpoint[use_power], s.exponent)
    # An unstable queue (L = inf) says only that x was too small: ask for at least g·x (and a
    # foothold of 1 % of C for a zero share, which no multiplicative rule can scale), never
    # more than hi. The M/M/1 formula would stall here (it reads L = inf as mu = lambda/x).
    unbounded = acting & np.isinf(obs)
    floor = np.minimum(hi, np.maximum(s.unbounded_growth * x, 0.01 * cap))
    demand[unbounded] = np.maximum(np.nan_to_num(demand[unbounded], posinf=0.0), floor[unbounded])
    stuck = acting & (x <= 0) & (obs > setpoint)
    demand[stuck] = np.maximum(demand[stuck], floor[stuck])
    demand = np.where(acting & (demand < 1e-12 * max(cap, 1.0)), 0.0, demand)  # no subnormal demands

    # Held services are pinned for this step: the allocation cannot move them, unless the pinned
    # shares alone overfill the pool (then every share must be able to move).
    pinned = ~acting & (float(np.where(acting, lo, np.clip(x, lo, hi)).sum()) <= cap)
    lo_eff = np.where(pinned, np.clip(x, lo, hi), lo)
    hi_eff = np.where(pinned, np.clip(x, lo, hi), hi)
    demand_eff = np.where(acting, demand, np.clip(x, lo, hi))
    cache = solvers if solvers is not None else FairShareSolverCache(maxsize=4)
    result = cache.solve(
        [sv.class_name for sv in services],
        demand_eff,
        np.array([sv.qos_target for sv in services], dtype=np.float64),
        lo_eff,
        hi_eff,
        cap,
    )
    target = np.asarray(result.shares, dtype=np.float64).copy()
    if s.slack == "proportional" and result.status == "uncontended":
        target = _hand_out_slack(target, hi_eff, acting, cap)

    new = _damped(x, target, lo_eff, hi_eff, s.damping, s.max_step_frac * cap)
    new = _fit_capacity(x, new, lo_eff, cap)

    inversions: tuple[Inversion, ...] = tuple(
        "mm1" if use_mm1[i] else "power" if use_power[i] else "none" for i in range(n)
    )
    return ControlStep(
        shares=new,
        target_shares=target,
        demand=demand,
        error=error,
        actions=_actions(usable, in_band, x, new),
        inversions=inversions,
        status=result.status,
        capacity=cap,
    )


def _actions(usable: np.ndarray, in_band: np.ndarray, x: FloatArray, new: FloatArray) -> tuple[Action, ...]:
    """What the step did to each service: held (no data, or within the deadband), grew, shrank."""
    actions: list[Action] = []
    for i in range(len(x)):
        if not usable[i]:
            actions.append("hold-no-data")
        elif in_band[i]:
            actions.append("hold-deadband")
        elif new[i] > x[i]:
            actions.append("grow")
        elif new[i] < x[i]:
            actions.append("shrink")
        else:
            actions.append("hold")
    return tuple(actions)


def _hand_out_slack(target: FloatArray, hi: FloatArray, acting: np.ndarray, cap: float) -> FloatArray:
    """Water-fill ``cap - sum(target)`` over the acting services in proportion to ``target``, capped at ``hi``."""
    out = target.copy()
    for _ in range(len(out)):
        slack = cap - float(out.sum())
        open_ = acting & (out < hi) & (out > 0)
        weight = float(out[open_].sum())
        if slack <= 1e-12 * max(cap, 1.0) or weight <= 0:
            break
        add = np.zeros_like(out)
        add[open_] = slack * out[open_] / weight
        out = np.minimum(out + add, hi)
    return out


def _damped(
    x: FloatArray, target: FloatArray, lo: FloatArray, hi: FloatArray, beta: float, max_step: float
) -> FloatArray:
    """:math:`\\operatorname{clip}_{[l,h]}(x + \\operatorname{clip}_{[-s,s]}(\\beta(x^* - x)))`."""
    step = np.clip(beta * (target - x), -max_step, max_step)
    return np.clip(x + step, lo, hi)


def _fit_capacity(x: FloatArray, new: FloatArray, lo: FloatArray, cap: float) -> FloatArray:
    """Make ``sum(new) <= cap``: cut the increases first, then pull every share toward ``lo``.

    The part of an increase that only lifts a share up to its ``lo`` is not cut: bounds win over
    the step, and ``sum(lo) <= cap`` leaves room for them.
    """
    total = float(new.sum())
    if total <= cap:
        return new
    excess = total - cap
    inc = np.maximum(new - np.maximum(x, lo), 0.0)
    inc_sum = float(inc.sum())
    if inc_sum >= excess and inc_sum > 0:
        return new - inc * (excess / inc_sum)
    out = new - inc
    room = out - lo
    room_sum = float(room.sum())
    over = float(out.sum()) - cap
    if over <= 0:
        return out
    if room_sum >= over and room_sum > 0:
        return out - room * (over / room_sum)
    lo_sum = float(lo.sum())
    return lo * (cap / lo_sum) if lo_sum > 0 else np.zeros_like(lo)
