r"""SLA credits owed when a pod's delivered QoS falls below its class target.

da Silva et al. (JISA 2020; ``models.md`` §B) charge the provider a penalty shaped like the
credits public clouds refund: proportional to the violated time × the price of the pod's
resources, at a percentage that grows with the size of the violation. Here, per pod:

.. math::

    \text{credit} = \underbrace{(T - Q)^+ \, t}_{\text{violated time [s]}} / 3600
                    \times p \times f\!\left(Q / T\right)

with :math:`Q` the delivered QoS (:func:`qosched.policies.fairness.qos.delivered_qos`),
:math:`T` the class target, :math:`t` the time since submission, :math:`p` the price of the pod's
resources per hour, and :math:`f` the credit percentage of the tier the ratio :math:`Q/T` falls in.
:math:`(T - Q)^+ t` is the running time the target promised and the pod did not get (with
attainment 1 it is :math:`T t - r`). The credit is 0 when the target is met, never negative, and
never increases when :math:`Q` increases (both factors shrink).

Tiers: modelled on the Amazon Compute SLA, Region-Level (https://aws.amazon.com/compute/sla/,
versions since 2022; prior versions at https://aws.amazon.com/compute/sla/historical/): against a
99.99 % monthly uptime commitment, the credit is 10 % below 99.99 %, 30 % below 99.0 % and 100 %
below 95.0 %. Google Compute Engine's SLA (https://cloud.google.com/compute/sla) has the same
shape (a 99.99 % commitment for instances in several zones, larger credits as uptime falls).
A class target plays the commitment's role, so each threshold becomes a fraction of the target,
its ratio to the commitment: 99.0/99.99 ≈ 0.99 and 95.0/99.99 ≈ 0.95. Hence

=====================  ==============
:math:`Q / T`          credit :math:`f`
=====================  ==============
:math:`\ge 1`          0 %
:math:`[0.99, 1)`      10 %
:math:`[0.95, 0.99)`   30 %
:math:`< 0.95`         100 %
=====================  ==============

For prod (T = 1.0) this is the EC2 table itself; for free (T = 0.5) the 30 % tier starts below
0.495. A ratio of the *delivered* to the *promised* QoS keeps the tiers meaningful for every
target, which a ratio of downtimes would not (prod's allowed downtime 1 − T is 0).

Prices: list prices of Google Compute Engine, on demand, us-central1 (N1 vCPU $0.031611/h,
memory $0.004237/GiB·h, NVIDIA T4 $0.35/GPU·h; cloud.google.com/compute/vm-instance-pricing and
cloud.google.com/compute/gpus-pricing). Only ratios between policies are reported, so the exact
figures matter less than their proportions; override them with :class:`ResourcePrices`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.fairness._validate import FloatArray, as_float_array, check_fraction

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class CreditTier:
    """Credit ``credit_frac`` applies when delivered/target is below ``below_ratio``."""

    below_ratio: float
    credit_frac: float


EC2_REGION_TIERS: tuple[CreditTier, ...] = (
    CreditTier(1.0, 0.10),
    CreditTier(0.99, 0.30),
    CreditTier(0.95, 1.00),
)
"""The Amazon Compute Region-Level SLA tiers, thresholds relative to the commitment (see module)."""


@dataclass(frozen=True, slots=True)
class SlaTiers:
    """A credit table: ``tiers`` with thresholds strictly decreasing in (0, 1] and credits in
    [0, 1] non-decreasing down the table (a worse violation never earns a smaller percentage)."""

    tiers: tuple[CreditTier, ...] = EC2_REGION_TIERS

    def __post_init__(self) -> None:
        tiers = tuple(self.tiers)
        object.__setattr__(self, "tiers", tiers)
        for i, tier in enumerate(tiers):
            if not (0.0 < tier.below_ratio <= 1.0):
                raise ValueError(f"SlaTiers.tiers[{i}].below_ratio: {tier.below_ratio!r} not in (0, 1]")
            if not (0.0 <= tier.credit_frac <= 1.0):
                raise ValueError(f"SlaTiers.tiers[{i}].credit_frac: {tier.credit_frac!r} not in [0, 1]")
            if i and tier.below_ratio >= tiers[i - 1].below_ratio:
                raise ValueError(f"SlaTiers.tiers[{i}].below_ratio: thresholds must strictly decrease")
            if i and tier.credit_frac < tiers[i - 1].credit_frac:
                raise ValueError(f"SlaTiers.tiers[{i}].credit_frac: credits must not decrease down the table")

    def credit_fraction(self, ratio: ArrayLike) -> FloatArray:
        """Credit percentage (as a fraction) for each ``delivered / target`` ratio (>= 0)."""
        r = as_float_array("ratio", ratio, allow_inf=True)
        if not self.tiers:
            return np.zeros_like(r)
        # Thresholds ascending: ratio < thr[k] for the last k tiers; the deepest one applies.
        thresholds = np.array([t.below_ratio for t in reversed(self.tiers)])
        fracs = np.array([0.0] + [t.credit_frac for t in self.tiers])
        n_below = len(self.tiers) - np.searchsorted(thresholds, r, side="right")
        return fracs[n_below]


@dataclass(frozen=True, slots=True)
class ResourcePrices:
    """On-demand prices [USD per hour] of one unit of each resource (defaults: GCE us-central1)."""

    cpu_core_hour_usd: float = 0.031611
    memory_gib_hour_usd: float = 0.004237
    gpu_hour_usd: float = 0.35

    def __post_init__(self) -> None:
        for name in ("cpu_core_hour_usd", "memory_gib_hour_usd", "gpu_hour_usd"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ResourcePrices.{name}: {value!r} must be finite and >= 0")


def price_per_hour_usd(
    cpu_milli: ArrayLike,
    memory_mib: ArrayLike,
    gpu_milli: ArrayLike,
    prices: ResourcePrices | None = None,
    price_factor: ArrayLike = 1.0,
) -> FloatArray:
    r"""Hourly price of each pod's requested resources.

    .. math:: p = f_{class}\,\left(\frac{cpu_{milli}}{1000} p_{cpu} + \frac{mem_{MiB}}{1024} p_{GiB}
              + \frac{gpu_{milli}}{1000} p_{gpu}\right)

    Parameters
    ----------
    cpu_milli : array_like
        CPU request [millicores].
    memory_mib : array_like
        Memory request [MiB].
    gpu_milli : array_like
        GPU request [milli-GPU, total over devices: 2000 for two whole GPUs].
    prices : ResourcePrices, optional
        Unit prices; defaults to :class:`ResourcePrices`.
    price_factor : array_like
        Per-pod multiplier, usually :attr:`ServiceClass.price_factor` of the pod's class.
    """
    prices = prices or ResourcePrices()
    cpu = as_float_array("cpu_milli", cpu_milli)
    mem = as_float_array("memory_mib", memory_mib)
    gpu = as_float_array("gpu_milli", gpu_milli)
    factor = as_float_array("price_factor", price_factor)
    hourly = (
        cpu / 1000.0 * prices.cpu_core_hour_usd
        + mem / 1024.0 * prices.memory_gib_hour_usd
        + gpu / 1000.0 * prices.gpu_hour_usd
    )
    return np.asarray(factor * hourly, dtype=np.float64)


def violated_time_s(delivered: ArrayLike, elapsed_s: ArrayLike, target: ArrayLike) -> FloatArray:
    """Running time owed but not delivered, ``max(0, target - delivered) * elapsed_s`` [s]."""
    q = as_float_array("delivered", delivered)
    t = as_float_array("elapsed_s", elapsed_s)
    tgt = check_fraction("target", as_float_array("target", target))
    return np.maximum(tgt - q, 0.0) * t


def sla_credit_usd(
    delivered: ArrayLike,
    elapsed_s: ArrayLike,
    target: ArrayLike,
    price_hour_usd: ArrayLike,
    tiers: SlaTiers | None = None,
) -> FloatArray:
    """SLA credit of each pod [USD], the formula of the module docstring.

    Parameters
    ----------
    delivered : array_like
        Delivered QoS in [0, 1].
    elapsed_s : array_like
        Time since submission [s].
    target : array_like
        Class QoS target in (0, 1].
    price_hour_usd : array_like
        Price of the pod's resources [USD/h] (:func:`price_per_hour_usd`).
    tiers : SlaTiers, optional
        Credit table; defaults to the EC2-shaped :data:`EC2_REGION_TIERS`.

    Returns
    -------
    numpy.ndarray
        Credit [USD], ``>= 0``.

    Examples
    --------
    >>> # prod pod ran 97 % of 10 h at $1/h: 0.3 h violated, ratio 0.97 -> 30 % tier
    >>> round(float(sla_credit_usd(0.97, 36000.0, 1.0, 1.0)), 6)
    0.09
    """
    tiers = tiers or SlaTiers()
    q = as_float_array("delivered", delivered)
    if (q > 1.0).any():
        raise ValueError("delivered: QoS above 1")
    tgt = check_fraction("target", as_float_array("target", target))
    price = as_float_array("price_hour_usd", price_hour_usd)
    hours = violated_time_s(q, elapsed_s, tgt) / SECONDS_PER_HOUR
    return hours * price * tiers.credit_fraction(q / tgt)
