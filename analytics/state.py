"""The published result of the last refresh, and the live analytics of one profile computed from it.

The refresh stores one :class:`AnalyticsState` (breakpoints, fitted parameters, segment totals, the snapshot id);
a profile read scores the profile's *live* raw values against it with :func:`live_analytics`, so a purchase made
a second ago changes the scores, the segment, the lifetime value and the churn risk at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from analytics.btyd import ForecastError, History, PurchaseParams, SpendParams, forecast
from analytics.rfm import Breakpoints, RawRfm, score_rfm
from analytics.rules import SegmentRules, classify
from analytics.snapshot import Snapshot, iso

NO_REFRESH = "no analytics refresh has run yet (the worker runs one periodically; or run `ecrm analytics refresh`)"
NO_PURCHASE = "no purchase yet"


@dataclass(frozen=True, slots=True)
class AnalyticsState:
    refreshed_at_ms: int
    snapshot_id: str
    breakpoints: Breakpoints | None
    purchase: PurchaseParams | None
    spend: SpendParams | None
    model_error: str | None
    horizon_days: float
    segments: list[str]
    summary: list[dict[str, Any]]
    customers_scored: int
    profiles: int
    duration_s: float = 0.0
    rules: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, snap: Snapshot, snapshot_id: str, duration_s: float, rules: dict[str, Any]) -> AnalyticsState:
        return cls(
            refreshed_at_ms=snap.refreshed_at_ms,
            snapshot_id=snapshot_id,
            breakpoints=snap.breakpoints,
            purchase=snap.models.purchase,
            spend=snap.models.spend,
            model_error=snap.models.error,
            horizon_days=snap.models.horizon_days,
            segments=snap.segments,
            summary=snap.summary,
            customers_scored=snap.customers_scored,
            profiles=snap.profiles,
            duration_s=duration_s,
            rules=rules,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "refreshed_at_ms": self.refreshed_at_ms,
                "snapshot_id": self.snapshot_id,
                "breakpoints": self.breakpoints.as_dict() if self.breakpoints else None,
                "purchase": self.purchase.as_dict() if self.purchase else None,
                "spend": self.spend.as_dict() if self.spend else None,
                "model_error": self.model_error,
                "horizon_days": self.horizon_days,
                "segments": self.segments,
                "summary": self.summary,
                "customers_scored": self.customers_scored,
                "profiles": self.profiles,
                "duration_s": self.duration_s,
                "rules": self.rules,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> AnalyticsState:
        d = orjson.loads(raw)
        return cls(
            refreshed_at_ms=int(d["refreshed_at_ms"]),
            snapshot_id=str(d["snapshot_id"]),
            breakpoints=Breakpoints.from_dict(d["breakpoints"]) if d.get("breakpoints") else None,
            purchase=PurchaseParams.from_dict(d["purchase"]) if d.get("purchase") else None,
            spend=SpendParams.from_dict(d["spend"]) if d.get("spend") else None,
            model_error=d.get("model_error"),
            horizon_days=float(d["horizon_days"]),
            segments=list(d["segments"]),
            summary=list(d["summary"]),
            customers_scored=int(d["customers_scored"]),
            profiles=int(d["profiles"]),
            duration_s=float(d.get("duration_s", 0.0)),
            rules=dict(d.get("rules") or {}),
        )

    @property
    def model_info(self) -> dict[str, Any]:
        return {
            "purchase": self.purchase.as_dict() if self.purchase else None,
            "spend": self.spend.as_dict() if self.spend else None,
            "horizon_days": self.horizon_days,
            "error": self.model_error,
        }


@dataclass(frozen=True, slots=True)
class LiveInput:
    """The live raw values of one profile."""

    orders: int
    revenue: float
    first_purchase_ms: int | None
    last_purchase_ms: int | None


def live_analytics(
    live: LiveInput, state: AnalyticsState | None, rules: SegmentRules, now_ms: int, horizon_days: float | None = None
) -> dict[str, Any]:
    """Scores, segment, lifetime value and churn risk of one profile, from its live values and the last refresh.

    Figures that cannot be given are None, and ``reason`` says why.
    """
    out: dict[str, Any] = {
        "r_score": None,
        "f_score": None,
        "m_score": None,
        "rfm_score": None,
        "rfm_total": None,
        "rfm_mean": None,
        "segment": None,
        "segment_description": None,
        "lifetime_value": None,
        "churn_risk": None,
        "p_alive": None,
        "expected_orders": None,
        "expected_order_value": None,
        "horizon_days": horizon_days or (state.horizon_days if state else None),
        "as_of": iso(state.refreshed_at_ms) if state else None,
        "reason": None,
    }
    if live.orders <= 0 or live.last_purchase_ms is None:
        name = rules.non_buyers.name
        out.update(segment=name, segment_description=rules.describe(name), reason=NO_PURCHASE)
        return out
    if state is None or state.breakpoints is None:
        out["reason"] = NO_REFRESH
        return out
    s = score_rfm(RawRfm(live.last_purchase_ms, live.orders, live.revenue), state.breakpoints)
    name = classify(s, rules)
    out.update(
        r_score=s.r,
        f_score=s.f,
        m_score=s.m,
        rfm_score=s.code,
        rfm_total=s.total,
        rfm_mean=s.mean,
        segment=name,
        segment_description=rules.describe(name),
    )
    out.update(_forecast(live, state, now_ms, out["horizon_days"]))
    return out


def _forecast(live: LiveInput, state: AnalyticsState, now_ms: int, horizon_days: float) -> dict[str, Any]:
    if state.purchase is None or state.spend is None:
        return {"reason": state.model_error or "no model fitted"}
    assert live.last_purchase_ms is not None
    first = live.first_purchase_ms if live.first_purchase_ms is not None else live.last_purchase_ms
    history = History.of(live.orders, first, live.last_purchase_ms, now_ms)
    try:
        fc = forecast(state.purchase, state.spend, history, live.orders, live.revenue, horizon_days)
    except ForecastError as exc:
        return {"reason": str(exc)}
    return {
        "lifetime_value": round(fc.lifetime_value, 2),
        "churn_risk": round(fc.churn_risk, 4),
        "p_alive": round(fc.p_alive, 4),
        "expected_orders": round(fc.expected_orders, 4),
        "expected_order_value": round(fc.expected_order_value, 2),
    }
