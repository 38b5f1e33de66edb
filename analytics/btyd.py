"""Buy-till-you-die closed forms: BG/NBD or MBG/NBD for purchase counts and survival, Gamma-Gamma for spend.

Pure functions of fitted parameters and one customer's history, fast enough to run on every profile read.
Time is in days. For a customer with ``orders`` purchases, the first at ``first`` and the last at ``last``:

* ``x = orders - 1`` repeat purchases, ``t_x = last - first`` (recency in the model's sense), ``T = now - first``.

References: Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to the Pareto/NBD
model" (BG/NBD); Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of models for
customer base analysis" (MBG/NBD: a customer may also drop out right after the first purchase); Fader & Hardie
(2013), "The Gamma-Gamma model of monetary value".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from scipy.special import expit, hyp2f1

DAY_MS = 86_400_000.0


class Variant(StrEnum):
    """Which purchase model: the classic BG/NBD, or the modified one (MBG/NBD)."""

    BGNBD = "bgnbd"
    MBGNBD = "mbgnbd"


@dataclass(frozen=True, slots=True)
class PurchaseParams:
    """BG/NBD-family parameters: purchase rates ~ Gamma(r, alpha), dropout probabilities ~ Beta(a, b)."""

    variant: Variant
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variant": self.variant.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PurchaseParams:
        return cls(Variant(d["variant"]), float(d["r"]), float(d["alpha"]), float(d["a"]), float(d["b"]))


@dataclass(frozen=True, slots=True)
class SpendParams:
    """Gamma-Gamma parameters of the mean order value."""

    p: float
    q: float
    v: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpendParams:
        return cls(float(d["p"]), float(d["q"]), float(d["v"]))


@dataclass(frozen=True, slots=True)
class History:
    """One purchasing customer's history in model units (days)."""

    x: int
    t_x: float
    T: float

    @classmethod
    def of(cls, orders: int, first_purchase_ms: int, last_purchase_ms: int, now_ms: int) -> History:
        """From the profile's raw fields (``orders`` at least 1), clamped to a consistent history: ``0 <= t_x <= T``,
        and ``t_x = 0`` without repeat purchases."""
        first = min(first_purchase_ms, last_purchase_ms)
        T = max(0.0, (now_ms - first) / DAY_MS)
        x = max(0, orders - 1)
        t_x = min(T, max(0.0, (last_purchase_ms - first) / DAY_MS)) if x > 0 else 0.0
        return cls(x=x, t_x=t_x, T=T)


def _log_odds_dead(params: PurchaseParams, h: History) -> float:
    """Log odds of having dropped out given the history (-inf when the model says the customer must be alive)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if params.variant is Variant.BGNBD:
        if h.x == 0:
            return -math.inf
        return math.log(a / (b + h.x - 1)) + (r + h.x) * math.log((alpha + h.T) / (alpha + h.t_x))
    return math.log(a / (b + h.x)) + (r + h.x) * math.log((alpha + h.T) / (alpha + h.t_x))


def p_alive(params: PurchaseParams, h: History) -> float:
    """P(the customer is still active | history)."""
    return float(expit(-_log_odds_dead(params, h)))


def expected_purchases(params: PurchaseParams, h: History, t: float) -> float:
    """Expected number of purchases in the next ``t`` days, given the history."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, T = h.x, h.T
    if params.variant is Variant.BGNBD:
        head = (a + b + x - 1) / (a - 1)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    else:
        head = (a + b + x) / (a - 1)
        hyp = hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    tail = 1.0 - math.pow((alpha + T) / (alpha + T + t), r + x) * float(hyp)
    return head * tail * p_alive(params, h)


def expected_order_value(spend: SpendParams, orders: int, mean_value: float) -> float:
    """Gamma-Gamma: the expected value of a future order given ``orders`` orders averaging ``mean_value``."""
    p, q, v = spend.p, spend.q, spend.v
    weight = p * orders / (p * orders + q - 1)
    return (1 - weight) * (v * p / (q - 1)) + weight * mean_value


@dataclass(frozen=True, slots=True)
class Forecast:
    """A customer's lifetime value over the horizon and churn risk."""

    lifetime_value: float
    expected_orders: float
    expected_order_value: float
    p_alive: float
    horizon_days: float

    @property
    def churn_risk(self) -> float:
        return 1.0 - self.p_alive


class ForecastError(ArithmeticError):
    """The closed forms gave no finite figure for this history (extreme parameters or history)."""


def forecast(
    purchase: PurchaseParams, spend: SpendParams, h: History, orders: int, revenue: float, horizon_days: float
) -> Forecast:
    """CLV = expected purchases over the horizon x expected order value (undiscounted); churn risk = 1 - P(alive)."""
    n = expected_purchases(purchase, h, horizon_days)
    value = expected_order_value(spend, orders, revenue / orders if orders else 0.0)
    alive = p_alive(purchase, h)
    figures = (n, value, alive)
    if not all(math.isfinite(f) for f in figures) or n < 0 or value < 0:
        raise ForecastError(f"no finite forecast for x={h.x} t_x={h.t_x:.3f} T={h.T:.3f}")
    return Forecast(
        lifetime_value=n * value,
        expected_orders=n,
        expected_order_value=value,
        p_alive=alive,
        horizon_days=horizon_days,
    )
