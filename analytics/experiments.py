"""The statistics of a campaign's effect report (pure: counts in, numbers and a verdict out; scipy does the maths).

Every variant is compared with the control (the holdout, else the first variant), on the customers *assigned* to
each (intent-to-treat: every assigned customer counts, converted or not):

- proportions (conversion rate, click rate): the difference with Newcombe's hybrid score interval built from
  scipy's Wilson intervals of each rate (Newcombe 1998, method 10), the pooled two-proportion z-test's p-value,
  and the relative lift (ratio - 1) with the Katz log interval;
- revenue per customer: Welch's t-test (``scipy.stats.ttest_ind_from_stats``) from each variant's n, sum and sum
  of squares of per-customer revenue, its Welch-Satterthwaite interval, and the relative lift by the delta method;
- the split: a chi-square goodness-of-fit test of the assigned counts against the weights (sample-ratio
  mismatch, flagged at p < 0.001 as in GrowthBook's and Spotify's practice).

The verdict reads the campaign's goal metric: "not enough data yet" below ``min_customers`` per variant,
"sample ratio mismatch" when the split is off, else "variant X better" / "variant X worse" at a
Bonferroni-corrected level (0.05 over the number of comparisons), else "no significant difference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

ALPHA = 0.05
SRM_ALPHA = 0.001
NEWCOMBE = "Newcombe hybrid score interval (Wilson intervals, scipy.stats.binomtest); pooled two-proportion z-test"
KATZ = "Katz log interval of the ratio"
WELCH = "Welch t-test (scipy.stats.ttest_ind_from_stats), Welch-Satterthwaite interval"
DELTA = "delta method on the ratio of means"
SRM = "chi-square goodness of fit against the weights (scipy.stats.chisquare), flagged at p < 0.001"


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant's counts (from the counters in Redis)."""

    name: str
    weight: float  # its share of the traffic (the weights normalised)
    assigned: int = 0
    exposed: int = 0
    lists: int = 0
    impressions: int = 0
    clicks: int = 0
    clickers: int = 0
    converters: int = 0
    orders: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0  # sum over customers of (their revenue after exposure) squared
    attributed_orders: int = 0
    attributed_revenue: float = 0.0
    holdout: bool = False

    @classmethod
    def of(cls, name: str, weight: float, counts: Mapping[str, float], holdout: bool = False) -> Arm:
        ints = ("assigned", "exposed", "lists", "impressions", "clicks", "clickers", "converters", "orders",
                "attributed_orders")  # fmt: skip
        values: dict[str, Any] = {k: int(counts.get(k, 0)) for k in ints}
        values |= {k: float(counts.get(k, 0.0)) for k in ("revenue", "revenue_sq", "attributed_revenue")}
        return cls(name, weight, holdout=holdout, **values)

    def summary(self) -> dict[str, Any]:
        n = self.assigned
        return {
            "variant": self.name,
            "holdout": self.holdout,
            "weight": round(self.weight, 6),
            "assigned": n,
            "exposed": self.exposed,
            "lists": self.lists,
            "lists_per_customer": _ratio(self.lists, n),
            "impressions": self.impressions,
            "clicks": self.clicks,
            "clicking_customers": self.clickers,
            "ctr": _ratio(self.clicks, self.impressions),
            "converting_customers": self.converters,
            "conversion_rate": _ratio(self.converters, n),
            "orders": self.orders,
            "revenue": round(self.revenue, 2),
            "revenue_per_customer": _ratio(self.revenue, n),
            "attributed_orders": self.attributed_orders,
            "attributed_revenue": round(self.attributed_revenue, 2),
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def wilson(k: int, n: int, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (scipy)."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def compare_proportions(k1: int, n1: int, k0: int, n0: int, confidence: float = 1 - ALPHA) -> dict[str, Any]:
    """Variant (k1 of n1) against control (k0 of n0): difference, relative lift, intervals, p-value."""
    if n1 == 0 or n0 == 0:
        return {"difference": None, "ci": None, "relative_lift": None, "relative_ci": None, "p_value": None}
    p1, p0 = k1 / n1, k0 / n0
    l1, u1 = wilson(k1, n1, confidence)
    l0, u0 = wilson(k0, n0, confidence)
    d = p1 - p0
    lo = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    pooled = (k1 + k0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    p_value = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(d) / se))
    rel = rel_lo = rel_hi = None
    if k1 > 0 and k0 > 0:
        z = float(stats.norm.ppf(0.5 + confidence / 2))
        log_ratio = math.log(p1 / p0)
        se_log = math.sqrt(1 / k1 - 1 / n1 + 1 / k0 - 1 / n0)
        rel = p1 / p0 - 1
        rel_lo, rel_hi = math.exp(log_ratio - z * se_log) - 1, math.exp(log_ratio + z * se_log) - 1
    return {
        "difference": _r(d),
        "ci": [_r(lo), _r(hi)],
        "relative_lift": _r(rel),
        "relative_ci": [_r(rel_lo), _r(rel_hi)] if rel is not None else None,
        "p_value": _r(p_value),
    }


def _moments(total: float, total_sq: float, n: int) -> tuple[float, float]:
    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, var


def compare_means(
    sum1: float, sq1: float, n1: int, sum0: float, sq0: float, n0: int, confidence: float = 1 - ALPHA
) -> dict[str, Any]:
    """Variant against control on a per-customer amount given n, sum and sum of squares: Welch."""
    if n1 < 2 or n0 < 2:
        return {"difference": None, "ci": None, "relative_lift": None, "relative_ci": None, "p_value": None}
    m1, v1 = _moments(sum1, sq1, n1)
    m0, v0 = _moments(sum0, sq0, n0)
    d = m1 - m0
    a, b = v1 / n1, v0 / n0
    se = math.sqrt(a + b)
    if se == 0:
        return {"difference": _r(d), "ci": [_r(d), _r(d)], "relative_lift": None, "relative_ci": None,
                "p_value": 1.0 if d == 0 else 0.0}  # fmt: skip
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if a else 0.0) + (b * b / (n0 - 1) if b else 0.0))
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    p_value = float(stats.ttest_ind_from_stats(m1, math.sqrt(v1), n1, m0, math.sqrt(v0), n0, equal_var=False).pvalue)
    rel = rel_lo = rel_hi = None
    if m0 > 0 and m1 > 0:
        ratio = m1 / m0
        se_ratio = ratio * math.sqrt(a / (m1 * m1) + b / (m0 * m0))
        z = float(stats.norm.ppf(0.5 + confidence / 2))
        rel, rel_lo, rel_hi = ratio - 1, ratio - 1 - z * se_ratio, ratio - 1 + z * se_ratio
    return {
        "difference": _r(d),
        "ci": [_r(d - t * se), _r(d + t * se)],
        "relative_lift": _r(rel),
        "relative_ci": [_r(rel_lo), _r(rel_hi)] if rel is not None else None,
        "p_value": _r(p_value),
    }


def sample_ratio(arms: Sequence[Arm]) -> dict[str, Any]:
    """Chi-square test of the assigned counts against the weights."""
    total = sum(a.assigned for a in arms)
    if total == 0:
        return {"p_value": None, "flagged": False, "method": SRM}
    expected = [total * a.weight for a in arms]
    p_value = float(stats.chisquare([a.assigned for a in arms], expected).pvalue)
    return {
        "p_value": _r(p_value),
        "flagged": p_value < SRM_ALPHA,
        "observed": {a.name: a.assigned for a in arms},
        "expected": {a.name: round(e, 1) for a, e in zip(arms, expected, strict=True)},
        "method": SRM,
    }


GOAL_METRIC = {"click": "click_rate", "purchase": "conversion_rate", "revenue": "revenue_per_customer"}


def comparison(arm: Arm, control: Arm) -> dict[str, Any]:
    return {
        "variant": arm.name,
        "against": control.name,
        "conversion_rate": {
            **compare_proportions(arm.converters, arm.assigned, control.converters, control.assigned),
            "method": f"{NEWCOMBE}; relative: {KATZ}",
        },
        "click_rate": {
            **compare_proportions(arm.clickers, arm.assigned, control.clickers, control.assigned),
            "method": f"{NEWCOMBE}; relative: {KATZ}",
        },
        "revenue_per_customer": {
            **compare_means(
                arm.revenue, arm.revenue_sq, arm.assigned, control.revenue, control.revenue_sq, control.assigned
            ),
            "method": f"{WELCH}; relative: {DELTA}",
        },
    }


def verdict(goal: str, arms: Sequence[Arm], comparisons: Sequence[dict[str, Any]], srm: dict[str, Any],
            min_customers: int) -> str:  # fmt: skip
    """A plain reading of the goal metric (see the module's docstring)."""
    if any(a.assigned < min_customers for a in arms):
        return "not enough data yet"
    if srm["flagged"]:
        return "sample ratio mismatch: the split does not follow the weights; check the assignment before reading it"
    metric = GOAL_METRIC[goal]
    level = ALPHA / max(1, len(comparisons))
    better: list[tuple[float, str]] = []
    worse: list[tuple[float, str]] = []
    for c in comparisons:
        m = c[metric]
        if m["p_value"] is None or m["p_value"] >= level or m["difference"] is None:
            continue
        (better if m["difference"] > 0 else worse).append((abs(m["difference"]), c["variant"]))
    if better:
        return f"variant {max(better)[1]} better"
    if worse:
        return f"variant {max(worse)[1]} worse than {comparisons[0]['against']}"
    return "no significant difference"


# What the counters count, stated in every report (issue 18).
COUNTING_RULES = {
    "conversions": "orders, revenue and converters count only purchases the shop's server confirmed (a server or "
    "admin key, or an importer); a purchase a browser reports with the collect key converts nothing",
}


def effect_report(goal: str, arms: Sequence[Arm], control: str, min_customers: int) -> dict[str, Any]:
    """Per variant the counts and rates; each variant against ``control``; the split check; the verdict."""
    by_name = {a.name: a for a in arms}
    base = by_name[control]
    comparisons = [comparison(a, base) for a in arms if a.name != control]
    srm = sample_ratio(arms)
    return {
        "goal": goal,
        "goal_metric": GOAL_METRIC[goal],
        "control": control,
        "variants": [a.summary() for a in arms],
        "comparisons": comparisons,
        "sample_ratio_mismatch": srm,
        "confidence": 1 - ALPHA,
        "significance": f"p < {ALPHA} / {max(1, len(comparisons))} comparisons (Bonferroni)",
        "verdict": verdict(goal, arms, comparisons, srm, min_customers),
        "counting": dict(COUNTING_RULES),
    }
