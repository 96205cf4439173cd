"""REQUESTS and NETWORK rows of the request-level what-if, parsed and checked (pure).

The shell reads the CSV files (``csv.DictReader``) and passes the rows here as mappings of column
name to text, with the line number each came from, so the errors can name the line::

    REQUESTS.csv  time_s,service[,input_kb]          one row per request, any order (sorted here)
    NETWORK.csv   time_s,tier,rtt_ms,bandwidth_mbps   piecewise constant per tier

A NETWORK row holds from its ``time_s`` until the next row of the same tier; before a tier's
first row (or with no NETWORK file) each node keeps the link of its own annotations
(``qosched.io/rtt-ms``, ``qosched.io/bandwidth-mbps``). A row sets the link of every node of the
tier (the client's link to the tier, which is what changes when an uplink drops).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from qosched.policies.requests.scenario import Link
from qosched.policies.types import TIERS

__all__ = ["InputError", "NetworkTrace", "Requests", "parse_network", "parse_requests"]

REQUEST_COLUMNS = ("time_s", "service")
NETWORK_COLUMNS = ("time_s", "tier", "rtt_ms", "bandwidth_mbps")

Row = Mapping[str, str | None]


class InputError(ValueError):
    """A bad REQUESTS / NETWORK row; the message names the source, the line and the column."""


def _number(source: str, line: int, row: Row, column: str, *, lo: float, strict: bool = False) -> float:
    raw = row.get(column)
    try:
        value = float(str(raw).strip())
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < lo or (strict and value <= lo):
        rule = f"> {lo:g}" if strict else f">= {lo:g}"
        raise InputError(f"{source}:{line}: column {column}: expected a number {rule}, got {raw!r}")
    return value


def _check_header(source: str, columns: Iterable[str] | None, needed: tuple[str, ...]) -> None:
    have = set(columns or ())
    missing = [c for c in needed if c not in have]
    if missing:
        shown = ",".join(columns or ()) or "(empty)"
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}; the header is {shown}")


@dataclass(frozen=True)
class Requests:
    """Requests sorted by arrival: ``time_s`` (float64), ``service`` (str), ``input_kb`` (NaN = default)."""

    time_s: np.ndarray
    service: tuple[str, ...]
    input_kb: np.ndarray

    def __len__(self) -> int:
        return len(self.service)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.service)))


def parse_requests(
    rows: Iterable[tuple[int, Row]], columns: Iterable[str] | None, source: str = "REQUESTS.csv"
) -> Requests:
    """Parse ``(line, row)`` pairs; raises :class:`InputError` on the first bad row.

    >>> r = parse_requests([(2, {"time_s": "1.5", "service": "a"}), (3, {"time_s": "0", "service": "b"})],
    ...                    ["time_s", "service"])
    >>> r.time_s.tolist(), r.service
    ([0.0, 1.5], ('b', 'a'))
    """
    cols = list(columns or ())
    _check_header(source, cols, REQUEST_COLUMNS)
    has_kb = "input_kb" in cols
    times: list[float] = []
    services: list[str] = []
    kbs: list[float] = []
    for line, row in rows:
        times.append(_number(source, line, row, "time_s", lo=0.0))
        name = str(row.get("service") or "").strip()
        if not name:
            raise InputError(f"{source}:{line}: column service: empty")
        services.append(name)
        raw_kb = row.get("input_kb") if has_kb else None
        kbs.append(
            math.nan
            if raw_kb is None or not str(raw_kb).strip()
            else _number(source, line, row, "input_kb", lo=0.0)
        )
    if not times:
        raise InputError(f"{source}: no request rows")
    order = np.argsort(np.asarray(times), kind="stable")
    return Requests(
        np.asarray(times, dtype=np.float64)[order],
        tuple(services[i] for i in order),
        np.asarray(kbs, dtype=np.float64)[order],
    )


@dataclass(frozen=True)
class NetworkTrace:
    """Piecewise-constant link of each tier over time (see the module docstring)."""

    times_s: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    links: Mapping[str, tuple[Link, ...]] = field(default_factory=dict)

    def at(self, tier: str, time_s: float) -> Link | None:
        """The tier's link at ``time_s``; None before its first row (nodes keep their own)."""
        times = self.times_s.get(tier)
        if not times:
            return None
        i = bisect.bisect_right(times, time_s) - 1
        return self.links[tier][i] if i >= 0 else None

    def change_times_s(self) -> tuple[float, ...]:
        """Every instant a link changes (all tiers), sorted."""
        return tuple(sorted({t for ts in self.times_s.values() for t in ts}))


def parse_network(
    rows: Iterable[tuple[int, Row]], columns: Iterable[str] | None, source: str = "NETWORK.csv"
) -> NetworkTrace:
    """Parse ``(line, row)`` pairs into a :class:`NetworkTrace`; two rows for one tier and instant are an error.

    >>> t = parse_network([(2, {"time_s": "0", "tier": "cloud", "rtt_ms": "40", "bandwidth_mbps": "50"}),
    ...                    (3, {"time_s": "60", "tier": "cloud", "rtt_ms": "40", "bandwidth_mbps": "5"})],
    ...                   ["time_s", "tier", "rtt_ms", "bandwidth_mbps"])
    >>> t.at("cloud", 59.9).bandwidth_mbps, t.at("cloud", 60).bandwidth_mbps, t.at("edge", 0)
    (50.0, 5.0, None)
    """
    _check_header(source, columns, NETWORK_COLUMNS)
    per_tier: dict[str, dict[float, Link]] = {}
    for line, row in rows:
        t = _number(source, line, row, "time_s", lo=0.0)
        tier = str(row.get("tier") or "").strip()
        if tier not in TIERS:
            raise InputError(f"{source}:{line}: column tier: {tier!r} is not one of {', '.join(TIERS)}")
        rtt = _number(source, line, row, "rtt_ms", lo=0.0)
        bw = _number(source, line, row, "bandwidth_mbps", lo=0.0, strict=True)
        if t in per_tier.setdefault(tier, {}):
            raise InputError(f"{source}:{line}: tier {tier} has two rows at time_s={t:g}")
        per_tier[tier][t] = Link(rtt, bw)
    times = {tier: tuple(sorted(d)) for tier, d in per_tier.items()}
    links = {tier: tuple(per_tier[tier][t] for t in times[tier]) for tier in per_tier}
    return NetworkTrace(times, links)
