"""A refresh over rows (pure): scores, segments, totals, ordering; live figures of a profile; cursors; state JSON."""

from __future__ import annotations

import random
from typing import Any

import pytest

from analytics.btyd import PurchaseParams, SpendParams, Variant
from analytics.cursor import Cursor, InvalidCursor
from analytics.refresh import fit_models
from analytics.rules_file import DEFAULT_RULES_PATH, load_rules
from analytics.settings import AnalyticsSettings
from analytics.snapshot import Models, ProfileRow, build_snapshot
from analytics.state import NO_PURCHASE, NO_REFRESH, AnalyticsState, LiveInput, live_analytics

DAY = 86_400_000
NOW = 1_750_000_000_000
RULES = load_rules(DEFAULT_RULES_PATH)
MODELS = Models(
    purchase=PurchaseParams(Variant.MBGNBD, r=0.5, alpha=10.0, a=0.8, b=2.5),
    spend=SpendParams(p=6.0, q=4.0, v=15.0),
    horizon_days=365.0,
)


def buyer(i: int, orders: int, revenue: float, last_days_ago: float, first_days_ago: float = 400.0) -> ProfileRow:
    return ProfileRow(
        pid=f"c:{i}",
        orders=orders,
        revenue=revenue,
        first_purchase_ms=int(NOW - first_days_ago * DAY),
        last_purchase_ms=int(NOW - last_days_ago * DAY),
        first_seen_ms=int(NOW - first_days_ago * DAY),
        last_seen_ms=int(NOW - last_days_ago * DAY),
        views=3,
        sessions=2,
    )


def base() -> list[ProfileRow]:
    rows = [buyer(i, orders=1 + i % 7, revenue=10.0 * (i + 1), last_days_ago=i * 3.0) for i in range(50)]
    rows.append(ProfileRow(pid="a:v1", views=4, sessions=1, first_seen_ms=NOW - 2 * DAY, last_seen_ms=NOW - DAY))
    rows.append(
        ProfileRow(pid="c:nobuy", views=1, sessions=1, first_seen_ms=NOW - 40 * DAY, last_seen_ms=NOW - 40 * DAY)
    )
    return rows


def test_every_profile_lands_in_exactly_one_segment() -> None:
    snap = build_snapshot(base(), RULES, MODELS, NOW)
    assert snap.profiles == 52 and snap.customers_scored == 50
    pids = [row["profile_id"] for rows in snap.members.values() for row in rows]
    # anonymous visitors are not customers: counted as profiles, in no segment
    assert sorted(pids) == sorted(r.pid for r in base() if r.pid.startswith("c:"))
    assert sum(s["customers"] for s in snap.summary) == 51
    assert [s["name"] for s in snap.summary] == RULES.names
    assert snap.breakpoints is not None and snap.breakpoints.population == 50


def test_segment_totals_add_up() -> None:
    snap = build_snapshot(base(), RULES, MODELS, NOW)
    for summary in snap.summary:
        members = snap.members.get(summary["name"], [])
        assert summary["revenue"] == pytest.approx(sum(m.get("revenue", 0.0) for m in members), abs=0.01)
        assert summary["orders"] == sum(m.get("orders", 0) for m in members)
        clvs = [m["lifetime_value"] for m in members if m.get("lifetime_value") is not None]
        assert summary["avg_lifetime_value"] == (pytest.approx(sum(clvs) / len(clvs), abs=0.01) if clvs else None)
    prospects = next(s for s in snap.summary if s["name"] == "Prospects")
    assert prospects["customers"] == 1 and prospects["known_customers"] == 1
    assert prospects["sessions"] == 1 and prospects["views"] == 1
    assert prospects["active_last_30_days"] == 0
    assert prospects["last_visit"] is not None and prospects["revenue"] == 0


def test_members_are_listed_by_revenue_and_prospects_by_last_visit() -> None:
    snap = build_snapshot(base(), RULES, MODELS, NOW)
    for name, rows in snap.members.items():
        if name == "Prospects":
            assert [r["profile_id"] for r in rows] == ["c:nobuy"]
        else:
            revenues = [r["revenue"] for r in rows]
            assert revenues == sorted(revenues, reverse=True)


def test_best_and_worst_customers() -> None:
    rows = base()
    snap = build_snapshot(rows, RULES, MODELS, NOW)
    by_pid = {r["profile_id"]: r for rows_of in snap.members.values() for r in rows_of}
    # c:48: 7 orders, high revenue, bought 144 days ago -> old and valuable; c:0: 1 order, bought now
    assert by_pid["c:0"]["r_score"] == 5 and by_pid["c:0"]["f_score"] == 1 and by_pid["c:0"]["segment"] == "New"
    assert by_pid["c:48"]["r_score"] == 1 and by_pid["c:48"]["segment"] == "Cannot lose them"
    assert 0 <= by_pid["c:48"]["churn_risk"] <= 1 and by_pid["c:48"]["lifetime_value"] > 0


def test_without_a_model_the_figures_are_null_with_the_reason() -> None:
    models = fit_models([buyer(1, 2, 20.0, 1.0)], AnalyticsSettings(), NOW)
    assert models.purchase is None and models.error is not None and "not enough data" in models.error
    snap = build_snapshot([buyer(1, 2, 20.0, 1.0)], RULES, models, NOW)
    row = snap.members[next(iter(snap.members))][0]
    assert row["lifetime_value"] is None and row["churn_risk"] is None and row["rfm_score"] is not None


def test_fit_models_refuses_a_base_where_nobody_seems_to_stop_buying() -> None:
    models = fit_models([r for r in base() if r.is_buyer], AnalyticsSettings(), NOW)
    assert models.purchase is None and models.error is not None
    assert "edge of the parameter range" in models.error and "stopped buying" in models.error


def simulated(n: int, seed: int) -> list[ProfileRow]:
    """Customers who buy at a personal rate and drop out after a purchase with a personal probability."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rate, dropout, t = rng.gammavariate(2.0, 1 / 60), rng.betavariate(2.0, 3.0), rng.uniform(30, 400)
        days = [t]
        while rng.random() > dropout and (t := t - rng.expovariate(rate)) > 0:
            days.append(t)
        revenue = sum(rng.uniform(5, 200) for _ in days)
        rows.append(buyer(i, orders=len(days), revenue=revenue, last_days_ago=days[-1], first_days_ago=days[0]))
    return rows


def test_fit_models_on_a_base_with_dropout() -> None:
    rows = simulated(300, seed=3)
    models = fit_models(rows, AnalyticsSettings(), NOW)
    assert models.error is None and models.purchase is not None and models.spend is not None
    snap = build_snapshot(rows, RULES, models, NOW)
    scored = [r for rows_of in snap.members.values() for r in rows_of]
    assert all(r["lifetime_value"] is not None and 0 <= r["churn_risk"] <= 1 for r in scored)
    lost = snap.members.get("Lost", [])
    champions = snap.members.get("Champions", [])
    assert lost and champions

    def mean(rows_of: list[dict[str, Any]], key: str) -> float:
        return sum(float(r[key]) for r in rows_of) / len(rows_of)

    assert mean(lost, "churn_risk") > mean(champions, "churn_risk")
    assert mean(lost, "lifetime_value") < mean(champions, "lifetime_value")


def state_of(rows: list[ProfileRow]) -> AnalyticsState:
    snap = build_snapshot(rows, RULES, MODELS, NOW)
    return AnalyticsState.of(snap, "sid1", 0.5, {"path": "x"})


def test_state_round_trips_through_json() -> None:
    state = state_of(base())
    assert AnalyticsState.from_json(state.to_json()) == state


def test_live_figures_follow_a_purchase_at_once() -> None:
    state = state_of(base())
    lapsed = LiveInput(orders=1, revenue=10.0, first_purchase_ms=NOW - 300 * DAY, last_purchase_ms=NOW - 300 * DAY)
    before = live_analytics(lapsed, state, RULES, NOW)
    assert before["r_score"] == 1 and before["segment"] == "Lost"
    bought = LiveInput(orders=2, revenue=600.0, first_purchase_ms=lapsed.first_purchase_ms, last_purchase_ms=NOW - 1000)
    after = live_analytics(bought, state, RULES, NOW)
    assert after["r_score"] == 5 and after["m_score"] == 5
    assert after["rfm_score"] == f"{after['r_score']}{after['f_score']}{after['m_score']}"
    assert after["segment"] != "Lost"
    assert after["churn_risk"] < before["churn_risk"]
    assert after["lifetime_value"] > 0 and after["as_of"] is not None and after["reason"] is None


def test_live_figures_without_purchase_or_refresh() -> None:
    none = live_analytics(LiveInput(0, 0.0, None, None), state_of(base()), RULES, NOW)
    assert none["segment"] == "Prospects" and none["reason"] == NO_PURCHASE and none["r_score"] is None
    early = live_analytics(LiveInput(1, 5.0, NOW - DAY, NOW - DAY), None, RULES, NOW)
    assert early["reason"] == NO_REFRESH and early["r_score"] is None and early["segment"] is None


def test_cursor_round_trip_and_refusals() -> None:
    cursor = Cursor("sid-1", "At risk", 200)
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("nonsense!", "e30", Cursor("s", "g", 0).encode()[:-3] + "AAA"):
        with pytest.raises(InvalidCursor, match="cursor"):
            Cursor.decode(bad)


def test_anonymous_buyers_move_no_customer_cut_off() -> None:
    """400 anonymous 'buyers' (issue 18: once moved a top customer from r2 f5 m5 to r1 f1 m1) change nothing."""
    plain = build_snapshot(base(), RULES, MODELS, NOW)
    fakes = [
        ProfileRow(pid=f"a:fake{i}", orders=50, revenue=100_000.0, first_purchase_ms=NOW, last_purchase_ms=NOW,
                   first_seen_ms=NOW, last_seen_ms=NOW, views=1, sessions=1)
        for i in range(400)
    ]  # fmt: skip
    attacked = build_snapshot([*base(), *fakes], RULES, MODELS, NOW)
    assert attacked.breakpoints == plain.breakpoints and attacked.customers_scored == 50
    assert attacked.members == plain.members and attacked.summary == plain.summary
    assert attacked.profiles == plain.profiles + 400


def test_fit_models_gives_the_same_models_whatever_the_order_of_the_rows() -> None:
    """A scan gives the rows in any order (a Redis Cluster's nodes answer as they come): the models do not move."""
    rows = simulated(300, seed=3)
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    assert shuffled != rows
    assert fit_models(shuffled, AnalyticsSettings(), NOW) == fit_models(rows, AnalyticsSettings(), NOW)
    assert fit_models(list(reversed(rows)), AnalyticsSettings(), NOW) == fit_models(rows, AnalyticsSettings(), NOW)
