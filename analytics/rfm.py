"""RFM: recency, frequency and monetary value, each scored 1-5 by quintile of the purchasing customers.

The breakpoints are the 20th, 40th, 60th and 80th percentiles (linear interpolation between order statistics,
numpy's default) of the population, computed at each refresh. A value's score is one plus the number of
breakpoints it is strictly above, so ties fall into the lower quintile and equal values always score the same.

Recency is scored on the *time of the last purchase* (later is better), which orders customers exactly as the
days since their last purchase do, but does not drift between two refreshes: a customer's R score changes when
someone buys, not because the clock moved on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DAY_MS = 86_400_000.0
QUINTILES = (0.2, 0.4, 0.6, 0.8)

Cuts = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class RawRfm:
    """The raw RFM values of one purchasing customer."""

    last_purchase_ms: int
    orders: int
    revenue: float


@dataclass(frozen=True, slots=True)
class Breakpoints:
    """Quintile breakpoints of the purchasing population: R on last purchase time (ms), F on orders, M on revenue."""

    recency: Cuts
    frequency: Cuts
    monetary: Cuts
    population: int

    def as_dict(self) -> dict[str, object]:
        return {
            "recency_last_purchase_ms": list(self.recency),
            "frequency": list(self.frequency),
            "monetary": list(self.monetary),
            "population": self.population,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Breakpoints:
        return cls(
            recency=_cuts(d["recency_last_purchase_ms"]),
            frequency=_cuts(d["frequency"]),
            monetary=_cuts(d["monetary"]),
            population=int(str(d["population"])),
        )


@dataclass(frozen=True, slots=True)
class RfmScore:
    r: int
    f: int
    m: int

    @property
    def code(self) -> str:
        """The classic three-digit code, e.g. ``"555"``."""
        return f"{self.r}{self.f}{self.m}"

    @property
    def total(self) -> int:
        return self.r + self.f + self.m

    @property
    def mean(self) -> float:
        return round(self.total / 3.0, 4)

    @property
    def fm(self) -> int:
        """The mean of F and M, rounded half up (an integer 1-5)."""
        return (self.f + self.m + 1) // 2


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of already sorted values, interpolating linearly between order statistics."""
    if not sorted_values:
        raise ValueError("quantile of an empty population")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo]) + (float(sorted_values[hi]) - float(sorted_values[lo])) * frac


def quintile_cuts(values: Sequence[float]) -> Cuts:
    """The 20/40/60/80th percentiles of ``values`` (any order)."""
    ordered = sorted(values)
    a, b, c, d = (quantile(ordered, q) for q in QUINTILES)
    return (a, b, c, d)


def breakpoints(population: Sequence[RawRfm]) -> Breakpoints:
    """Quintile breakpoints of a purchasing population (at least one customer)."""
    if not population:
        raise ValueError("no purchasing customers to compute breakpoints from")
    return Breakpoints(
        recency=quintile_cuts([float(c.last_purchase_ms) for c in population]),
        frequency=quintile_cuts([float(c.orders) for c in population]),
        monetary=quintile_cuts([c.revenue for c in population]),
        population=len(population),
    )


def score(value: float, cuts: Cuts) -> int:
    """1 plus the number of breakpoints strictly below ``value`` (higher values score higher)."""
    return 1 + sum(1 for c in cuts if value > c)


def score_rfm(raw: RawRfm, bp: Breakpoints) -> RfmScore:
    return RfmScore(
        r=score(float(raw.last_purchase_ms), bp.recency),
        f=score(float(raw.orders), bp.frequency),
        m=score(raw.revenue, bp.monetary),
    )


def recency_days(last_purchase_ms: int, now_ms: int) -> float:
    return round((now_ms - last_purchase_ms) / DAY_MS, 3)


def _cuts(raw: object) -> Cuts:
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        raise ValueError(f"expected 4 breakpoints, got {raw!r}")
    a, b, c, d = (float(x) for x in raw)
    return (a, b, c, d)
