"""One refresh over the whole customer base, as a pure function: rows in, scores, segments and totals out.

The refresh job (:mod:`analytics.refresh`) reads every profile (:class:`ProfileRow`), fits the models, then calls
:func:`build_snapshot`; the result is written to Redis as an immutable snapshot that the segment export pages
through, while profile reads score live values against the snapshot's breakpoints and parameters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analytics.btyd import ForecastError, History, PurchaseParams, SpendParams, forecast
from analytics.fit import FitInput
from analytics.rfm import DAY_MS, Breakpoints, RawRfm, breakpoints, recency_days, score_rfm
from analytics.rules import SegmentRules, classify, slug
from core.keyspace import parse_pid

ACTIVE_DAYS = 30  # "active" in the engagement figures: seen within this many days of the refresh


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """What the refresh reads of one profile."""

    pid: str
    orders: int = 0
    revenue: float = 0.0
    first_purchase_ms: int | None = None
    last_purchase_ms: int | None = None
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    views: int = 0
    sessions: int = 0

    @property
    def is_buyer(self) -> bool:
        return self.orders > 0 and self.last_purchase_ms is not None

    def raw_rfm(self) -> RawRfm:
        assert self.last_purchase_ms is not None
        return RawRfm(self.last_purchase_ms, self.orders, self.revenue)

    def history(self, now_ms: int) -> History:
        assert self.last_purchase_ms is not None
        first = self.first_purchase_ms if self.first_purchase_ms is not None else self.last_purchase_ms
        return History.of(self.orders, first, self.last_purchase_ms, now_ms)


@dataclass(frozen=True, slots=True)
class Models:
    """The fitted models of a refresh, or why there are none."""

    purchase: PurchaseParams | None = None
    spend: SpendParams | None = None
    error: str | None = None
    horizon_days: float = 365.0


@dataclass
class Snapshot:
    refreshed_at_ms: int
    breakpoints: Breakpoints | None
    models: Models
    segments: list[str]
    members: dict[str, list[dict[str, Any]]]
    summary: list[dict[str, Any]]
    customers_scored: int
    profiles: int


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


def fit_input(buyers: Sequence[ProfileRow], now_ms: int) -> FitInput:
    """The model inputs of the purchasing customers."""
    histories = [b.history(now_ms) for b in buyers]
    return FitInput(
        x=[h.x for h in histories],
        t_x=[h.t_x for h in histories],
        T=[h.T for h in histories],
        orders=[b.orders for b in buyers],
        revenue=[b.revenue for b in buyers],
    )


def _ids(pid: str) -> dict[str, Any]:
    who = parse_pid(pid)
    return {"profile_id": pid, "customer_id": who.customer_id, "anonymous_id": who.anonymous_id}


def _engagement(row: ProfileRow) -> dict[str, Any]:
    return {
        "sessions": row.sessions,
        "views": row.views,
        "first_seen": iso(row.first_seen_ms),
        "last_seen": iso(row.last_seen_ms),
    }


def buyer_row(row: ProfileRow, bp: Breakpoints, models: Models, rules: SegmentRules, now_ms: int) -> dict[str, Any]:
    """The export row of one purchasing customer (its segment under ``"segment"``)."""
    s = score_rfm(row.raw_rfm(), bp)
    out: dict[str, Any] = {
        **_ids(row.pid),
        "segment": classify(s, rules),
        "rfm_score": s.code,
        "r_score": s.r,
        "f_score": s.f,
        "m_score": s.m,
        "recency_days": recency_days(row.raw_rfm().last_purchase_ms, now_ms),
        "orders": row.orders,
        "revenue": round(row.revenue, 2),
        "first_purchase": iso(row.first_purchase_ms),
        "last_purchase": iso(row.last_purchase_ms),
        "lifetime_value": None,
        "churn_risk": None,
        **_engagement(row),
    }
    if models.purchase is not None and models.spend is not None:
        try:
            fc = forecast(
                models.purchase, models.spend, row.history(now_ms), row.orders, row.revenue, models.horizon_days
            )
        except ForecastError:
            return out
        out["lifetime_value"] = round(fc.lifetime_value, 2)
        out["churn_risk"] = round(fc.churn_risk, 4)
    return out


def prospect_row(row: ProfileRow, rules: SegmentRules) -> dict[str, Any]:
    return {**_ids(row.pid), "segment": rules.non_buyers.name, **_engagement(row)}


def customers_only(rows: Sequence[ProfileRow]) -> list[ProfileRow]:
    """The rows of known customers (``c:`` profiles): RFM cut-offs, segments, exports and the lifetime-value model
    are about customers, never about anonymous visitors (pure)."""
    return [row for row in rows if row.pid.startswith("c:")]


def population_breakpoints(rows: Iterable[ProfileRow]) -> Breakpoints | None:
    """The quintile breakpoints of the buyers among ``rows`` (None without buyers)."""
    buyers = [row.raw_rfm() for row in rows if row.is_buyer]
    return breakpoints(buyers) if buyers else None


def build_snapshot(rows: Sequence[ProfileRow], rules: SegmentRules, models: Models, now_ms: int) -> Snapshot:
    """Score every buyer among the customers against the quintiles of all buyers among them, and put every
    customer in a segment. Anonymous visitors are not customers: they are counted in ``profiles`` but neither
    move the cut-offs nor appear in segments or exports (:func:`customers_only`).

    Buyers are listed by revenue (highest first), non-buyers by last visit (latest first), ties by profile id.
    """
    profiles = len(rows)
    rows = customers_only(rows)
    bp = population_breakpoints(rows)
    grouped: dict[str, list[tuple[ProfileRow, dict[str, Any]]]] = defaultdict(list)
    scored = 0
    for row in rows:
        if row.is_buyer and bp is not None:
            scored += 1
            out = buyer_row(row, bp, models, rules, now_ms)
        else:
            out = prospect_row(row, rules)
        grouped[out["segment"]].append((row, out))
    for pairs in grouped.values():
        pairs.sort(key=_order)
    summary = [segment_summary(name, rules, grouped.get(name, []), now_ms) for name in rules.names]
    return Snapshot(
        refreshed_at_ms=now_ms,
        breakpoints=bp,
        models=models,
        segments=list(rules.names),
        members={name: [out for _, out in pairs] for name, pairs in grouped.items()},
        summary=summary,
        customers_scored=scored,
        profiles=profiles,
    )


def _order(pair: tuple[ProfileRow, dict[str, Any]]) -> tuple[float, str]:
    row = pair[0]
    if row.is_buyer:
        return (-row.revenue, row.pid)
    return (-float(row.last_seen_ms or 0), row.pid)


def segment_summary(
    name: str, rules: SegmentRules, pairs: Sequence[tuple[ProfileRow, dict[str, Any]]], now_ms: int
) -> dict[str, Any]:
    """Size and totals of one segment."""
    rows = [row for row, _ in pairs]
    n = len(rows)
    revenue = round(sum(r.revenue for r in rows), 2)
    orders = sum(r.orders for r in rows)
    sessions = sum(r.sessions for r in rows)
    clvs = [float(out["lifetime_value"]) for _, out in pairs if out.get("lifetime_value") is not None]
    risks = [float(out["churn_risk"]) for _, out in pairs if out.get("churn_risk") is not None]
    active_since = now_ms - ACTIVE_DAYS * DAY_MS
    return {
        "name": name,
        "slug": slug(name),
        "description": rules.describe(name),
        "buyers": name != rules.non_buyers.name,
        "customers": n,
        "known_customers": sum(1 for r in rows if r.pid.startswith("c:")),
        "revenue": revenue,
        "orders": orders,
        "avg_revenue": round(revenue / n, 2) if n else None,
        "avg_order_value": round(revenue / orders, 2) if orders else None,
        "lifetime_value_total": round(sum(clvs), 2) if clvs else None,
        "avg_lifetime_value": round(sum(clvs) / len(clvs), 2) if clvs else None,
        "avg_churn_risk": round(sum(risks) / len(risks), 4) if risks else None,
        "sessions": sessions,
        "views": sum(r.views for r in rows),
        "avg_sessions": round(sessions / n, 3) if n else None,
        "last_visit": iso(max((r.last_seen_ms for r in rows if r.last_seen_ms is not None), default=None)),
        f"active_last_{ACTIVE_DAYS}_days": sum(1 for r in rows if (r.last_seen_ms or 0) >= active_since),
    }
