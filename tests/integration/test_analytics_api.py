"""Analytics on the real Redis-compatible server and the real app: refresh, live profile scores, /v1/segments,
the paginated export (stable across refreshes), hot-reloaded rules, the lock, the timer and the command.

Profiles are written by applying plans (no Kafka); the expected scores are computed here in plain Python.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from analytics.refresh import Outcome, Refresher
from analytics.rules_file import DEFAULT_RULES_PATH, RulesSource
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from core.kafka import ensure_topics
from core.keyspace import Keys
from core.metrics import WORKER_REGISTRY
from core.redis import connect
from core.settings import Settings
from runtime.embedded import die_with_parent
from runtime.local import settings_env
from stream.analytics_timer import refresh_if_due, register_analytics
from stream.app import create_app as create_faust_app
from tests.conftest import REPO, stop_worker, wait_for
from tests.integration.helpers import api_client, apply, now_ms, sync_redis

pytestmark = pytest.mark.integration
DAY = 86_400_000
NOW = now_ms()
BUYERS = 120


# ----- events and the independent expectation -----


def _purchase(customer: str, ts: int, amount: float) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": uuid.uuid4().hex,
        "timestamp": ts,
        "customer_id": customer,
        "order_id": uuid.uuid4().hex[:12],
        "currency": "EUR",
        "lines": [{"item_id": f"sku{int(amount) % 17}", "quantity": 1, "unit_price": amount}],
    }


def _visit(ts: int, *, customer: str | None = None, visitor: str | None = None, session: str) -> dict[str, Any]:
    who = {"customer_id": customer} if customer else {"anonymous_id": visitor}
    return {"type": "page_view", "event_id": uuid.uuid4().hex, "timestamp": ts, "session_id": session, **who}


def purchase_days(rng: random.Random) -> list[float]:
    """Days ago of one customer's purchases: buying at a personal rate until dropping out (as the model assumes)."""
    rate = rng.gammavariate(2.0, 1 / 60)  # about one order a month on average
    dropout = rng.betavariate(2.0, 3.0)
    first = rng.uniform(30, 400)
    days, t = [first], first
    while rng.random() > dropout:
        t -= rng.expovariate(rate)
        if t <= 0.5:
            break
        days.append(t)
    return days


def base_events(seed: int = 11, buyers: int = BUYERS) -> list[dict[str, Any]]:
    """Buyers (simulated purchase histories), 2 registered customers and 3 visitors who never bought."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(buyers):
        customer = f"b{i:03d}"
        days = purchase_days(rng)
        for d in days:
            events.append(_purchase(customer, NOW - int(d * DAY), round(rng.uniform(5, 200), 2)))
        events.append(_visit(NOW - int(days[-1] * DAY), customer=customer, session=f"s-{customer}"))
    for i in range(2):
        events.append(_visit(NOW - (i + 1) * DAY, customer=f"p{i}", session=f"sp{i}"))
    for i in range(3):
        for s in range(i + 1):
            events.append(_visit(NOW - (10 + s) * DAY, visitor=f"v{i}", session=f"sv{i}-{s}"))
    return events


def _type7(ordered: list[float], q: float) -> float:
    h = (len(ordered) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


def expected_scores(events: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """R, F, M scores per customer: 1 + the number of quintile cut points the value is strictly above."""
    last: dict[str, int] = {}
    orders: Counter[str] = Counter()
    revenue: defaultdict[str, float] = defaultdict(float)
    for e in events:
        if e["type"] == "purchase":
            c = e["customer_id"]
            last[c] = max(last.get(c, 0), e["timestamp"])
            orders[c] += 1
            revenue[c] += sum(line["quantity"] * line["unit_price"] for line in e["lines"])
    columns = {"r": {c: float(t) for c, t in last.items()}, "f": {c: float(n) for c, n in orders.items()}}
    columns["m"] = dict(revenue)
    cuts = {k: [_type7(sorted(v.values()), q) for q in (0.2, 0.4, 0.6, 0.8)] for k, v in columns.items()}

    def score(k: str, c: str) -> int:
        return 1 + sum(columns[k][c] > cut for cut in cuts[k])

    return {c: (score("r", c), score("f", c), score("m", c)) for c in last}


def expected_segment(r: int, f: int, m: int) -> str:
    """The shipped rules, restated as the R x FM grid of docs/analytics.md."""
    fm = (f + m + 1) // 2
    grid = {
        5: ["New", "Potential loyalists", "Potential loyalists", "Champions", "Champions"],
        4: ["Promising", "Potential loyalists", "Potential loyalists", "Loyal", "Loyal"],
        3: ["Hibernating", "Hibernating", "Need attention", "Loyal", "Loyal"],
        2: ["Hibernating", "Hibernating", "At risk", "At risk", "Cannot lose them"],
        1: ["Lost", "Lost", "At risk", "At risk", "Cannot lose them"],
    }
    return grid[r][fm - 1]


# ----- fixtures -----


@pytest.fixture()
def rules_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "segments.yaml"
    shutil.copy(DEFAULT_RULES_PATH, path)
    monkeypatch.setenv("ECRM_SEGMENTS_FILE", str(path))
    monkeypatch.setenv("ECRM_SEGMENTS_CHECK_INTERVAL_S", "0")
    return path


def refresher(settings: Settings, rules_path: Path, **overrides: Any) -> Refresher:
    cfg = AnalyticsSettings(segments_file=rules_path, **overrides)
    return Refresher(AnalyticsStore(connect(settings), settings.key_prefix), cfg, RulesSource(rules_path, 0.0))


async def refresh(settings: Settings, rules_path: Path) -> None:
    r = refresher(settings, rules_path)
    try:
        result = await r.refresh(force=True)
    finally:
        await r.store.client.aclose()
    assert result.outcome is Outcome.REFRESHED, result.message


async def export(
    client: httpx.AsyncClient, segment: str, limit: int, cursor: str | None = None
) -> list[dict[str, Any]]:
    pages = []
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = await client.get(f"/v1/segments/{segment}/customers", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["customers"]) <= limit
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return [row for p in pages for row in p["customers"]]


# ----- tests -----


async def test_refresh_scores_every_customer_and_the_api_serves_it(settings: Settings, rules_path: Path) -> None:
    events = base_events()
    await apply(settings, events)
    await refresh(settings, rules_path)
    expected = expected_scores(events)
    async with api_client(settings) as client:
        for customer, (r, f, m) in expected.items():
            body = (await client.get(f"/v1/customers/{customer}/profile")).json()
            rfm = body["rfm"]
            assert (rfm["r_score"], rfm["f_score"], rfm["m_score"]) == (r, f, m), customer
            assert rfm["rfm_score"] == f"{r}{f}{m}" and rfm["rfm_total"] == r + f + m
            assert rfm["frequency"] == body["orders"] and rfm["recency_days"] is not None  # raw fields kept
            assert body["segment"] == expected_segment(r, f, m), customer
            assert body["lifetime_value"] is not None and body["lifetime_value"] >= 0, body["analytics"]["reason"]
            assert 0 <= body["churn_risk"] <= 1
            assert body["analytics"]["horizon_days"] == 365 and body["analytics"]["reason"] is None

        prospect = (await client.get("/v1/customers/p0/profile")).json()
        assert prospect["segment"] == "Prospects" and prospect["rfm"]["r_score"] is None
        assert prospect["lifetime_value"] is None and prospect["analytics"]["reason"] == "no purchase yet"

        overview = (await client.get("/v1/segments")).json()
        assert overview["customers_scored"] == BUYERS and overview["profiles"] == BUYERS + 5
        assert overview["model"]["error"] is None and overview["model"]["purchase"]["variant"] == "mbgnbd"
        sizes = {s["name"]: s["customers"] for s in overview["segments"]}
        want = Counter(expected_segment(*s) for s in expected.values())
        # anonymous visitors (v0-v2) are profiles, not customers: in no segment (issue 18)
        assert sizes == {name: want.get(name, 0) for name in sizes if name != "Prospects"} | {"Prospects": 2}
        total_revenue = sum(line["unit_price"] for e in events if e["type"] == "purchase" for line in e["lines"])
        assert sum(s["revenue"] for s in overview["segments"]) == pytest.approx(total_revenue, abs=0.05)
        prospects = next(s for s in overview["segments"] if s["name"] == "Prospects")
        assert prospects["sessions"] == 2 and prospects["known_customers"] == 2

        # the analytics gauges are the worker's (the refresh runs there), not the API's
        assert "ecrm_analytics_segment_customers" not in (await client.get("/metrics")).text
        metrics = generate_latest(WORKER_REGISTRY).decode()
        assert 'ecrm_analytics_segment_customers{segment="Prospects"} 2.0' in metrics
        assert f"ecrm_analytics_customers_scored {BUYERS}.0" in metrics

        for segment, size in sizes.items():
            rows = await export(client, segment.lower().replace(" ", "-"), limit=4)
            assert len(rows) == size == len({r["profile_id"] for r in rows})
            assert all(r["segment"] == segment for r in rows)


async def test_a_purchase_shows_in_the_scores_at_once(settings: Settings, rules_path: Path) -> None:
    events = base_events()
    await apply(settings, events)
    await refresh(settings, rules_path)
    expected = expected_scores(events)
    lapsed = next(c for c, (r, f, _) in expected.items() if r == 1 and f == 1)
    async with api_client(settings) as client:
        before = (await client.get(f"/v1/customers/{lapsed}/profile")).json()
        await apply(settings, [_purchase(lapsed, now_ms() - 1000, 500.0)])
        after = (await client.get(f"/v1/customers/{lapsed}/profile")).json()
    assert after["rfm"]["r_score"] == 5 and after["rfm"]["m_score"] == 5
    assert after["rfm"]["f_score"] >= before["rfm"]["f_score"]
    assert after["segment"] != before["segment"]
    assert after["churn_risk"] < before["churn_risk"]


async def test_export_pages_through_one_snapshot_across_refreshes(settings: Settings, rules_path: Path) -> None:
    events = base_events()
    await apply(settings, events)
    await refresh(settings, rules_path)
    async with api_client(settings) as client:
        overview = (await client.get("/v1/segments")).json()
        biggest = max(overview["segments"], key=lambda s: s["customers"])
        whole = await export(client, biggest["slug"], limit=100)
        first = (await client.get(f"/v1/segments/{biggest['slug']}/customers", params={"limit": 2})).json()
        assert first["snapshot_id"] == overview["snapshot_id"] and first["total"] == len(whole)

        # everyone buys again and a new refresh replaces the snapshot while the export is under way
        await apply(
            settings, [_purchase(row["customer_id"] or "x", now_ms(), 1.0) for row in whole if row["customer_id"]]
        )
        await refresh(settings, rules_path)
        rest = await export(client, biggest["slug"], limit=3, cursor=first["next_cursor"])
        assert first["customers"] + rest == whole  # same members, same order, none skipped or repeated

        latest = (await client.get(f"/v1/segments/{biggest['slug']}/customers", params={"limit": 2})).json()
        assert latest["snapshot_id"] != first["snapshot_id"]

        # the replaced snapshot expires: its cursor is refused with the reason
        keys = sync_redis(settings).keys(Keys(settings.key_prefix).snapshot(first["snapshot_id"]) + "*")
        assert keys and all(sync_redis(settings).ttl(k) > 0 for k in keys)
        sync_redis(settings).delete(*keys)
        resp = await client.get(f"/v1/segments/{biggest['slug']}/customers", params={"cursor": first["next_cursor"]})
        assert resp.status_code == 400 and "cursor expired" in resp.json()["detail"]

        resp = await client.get(f"/v1/segments/{biggest['slug']}/customers", params={"cursor": "garbage!"})
        assert resp.status_code == 400 and "invalid cursor" in resp.json()["detail"]
        resp = await client.get("/v1/segments/prospects/customers", params={"cursor": latest["next_cursor"]})
        assert resp.status_code in (400,) and "pages through segment" in resp.json()["detail"]
        resp = await client.get("/v1/segments/whales/customers")
        assert resp.status_code == 404
        assert "unknown segment 'whales'" in resp.json()["detail"] and "Champions" in resp.json()["detail"]
        assert (await client.get("/v1/segments/x/customers", params={"limit": 0})).status_code == 422


async def test_before_any_refresh(settings: Settings, rules_path: Path) -> None:
    await apply(settings, [_purchase("solo", now_ms() - DAY, 10.0)])
    async with api_client(settings) as client:
        overview = (await client.get("/v1/segments")).json()
        assert (
            overview["refreshed_at"] is None
            and overview["segments"] == []
            and "ecrm analytics refresh" in overview["message"]
        )
        resp = await client.get("/v1/segments/champions/customers")
        assert resp.status_code == 404 and "no analytics refresh" in resp.json()["detail"]
        body = (await client.get("/v1/customers/solo/profile")).json()
        assert body["rfm"]["frequency"] == 1 and body["rfm"]["r_score"] is None and body["segment"] is None
        assert "no analytics refresh" in body["analytics"]["reason"]


async def test_too_small_a_base_is_scored_without_a_model(settings: Settings, rules_path: Path) -> None:
    await apply(settings, [_purchase(f"c{i}", now_ms() - i * DAY, 10.0 + i) for i in range(5)])
    await refresh(settings, rules_path)
    async with api_client(settings) as client:
        body = (await client.get("/v1/customers/c0/profile")).json()
        assert body["rfm"]["r_score"] == 5 and body["lifetime_value"] is None
        assert "not enough data" in body["analytics"]["reason"]
        assert "not enough data" in (await client.get("/v1/segments")).json()["model"]["error"]


async def test_rules_edits_take_effect_without_restart(settings: Settings, rules_path: Path) -> None:
    await apply(settings, base_events())
    await refresh(settings, rules_path)
    async with api_client(settings) as client:
        shipped = (await client.get("/v1/segments")).json()["rules"]
        assert shipped["error"] is None and "Champions" in shipped["segments"]

        rules_path.write_text(rules_path.read_text().replace("when: {r: 5, fm: [4, 5]}", "when: {r: 7}"))
        refused = (await client.get("/v1/segments")).json()["rules"]
        assert "segments[0] ('Champions').when.r: 7 is outside 1-5" in refused["error"]
        assert refused["segments"] == shipped["segments"]  # the last good rules stay

        rules_path.write_text("segments:\n  - name: Everyone\nnon_buyers: {name: Window shoppers}\n")
        edited = (await client.get("/v1/segments")).json()["rules"]
        assert edited["error"] is None and edited["segments"] == ["Everyone", "Window shoppers"]
        body = (await client.get("/v1/customers/b000/profile")).json()
        assert body["segment"] == "Everyone"  # live segment follows the new rules before any refresh

        await refresh(settings, rules_path)
        sizes = {s["name"]: s["customers"] for s in (await client.get("/v1/segments")).json()["segments"]}
        assert sizes == {"Everyone": BUYERS, "Window shoppers": 2}  # customers only: the 3 visitors are in none


async def test_one_refresher_at_a_time_and_only_when_due(settings: Settings, rules_path: Path) -> None:
    await apply(settings, base_events())
    first = refresher(settings, rules_path, analytics_interval_s=3600)
    other = refresher(settings, rules_path, analytics_interval_s=3600)
    try:
        assert await refresh_if_due(first) is Outcome.REFRESHED
        assert await refresh_if_due(other) is Outcome.NOT_DUE
        token = await first.store.acquire_lock(60)
        assert token is not None
        assert (await other.refresh(force=True)).outcome is Outcome.LOCKED
        await first.store.release_lock(token)
        assert (await other.refresh(force=True)).outcome is Outcome.REFRESHED
    finally:
        await first.store.client.aclose()
        await other.store.client.aclose()


def test_the_worker_registers_the_timer(settings: Settings) -> None:
    app = create_faust_app(settings)
    before = len(app._app_tasks)
    register_analytics(app, settings, AnalyticsSettings(analytics_interval_s=0))
    assert len(app._app_tasks) == before
    register_analytics(app, settings, AnalyticsSettings(analytics_interval_s=600))
    assert len(app._app_tasks) == before + 2  # the timer, and the gauges republished from Redis at start
    register_analytics(app, settings, AnalyticsSettings(analytics_interval_s=600))
    assert len(app._app_tasks) == before + 2  # once per app


WORKER_WITH_ANALYTICS = """
import faust
from core.settings import get_settings
from stream.analytics_timer import register_analytics
from stream.worker import build
settings = get_settings()
app = build(settings)
register_analytics(app, settings)
faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()
"""


async def test_a_real_worker_refreshes_on_its_timer(settings: Settings, rules_path: Path) -> None:
    ensure_topics(settings)
    await apply(settings, base_events())
    env = settings_env(settings) | {"ECRM_SEGMENTS_FILE": str(rules_path), "ECRM_ANALYTICS_INTERVAL_S": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_WITH_ANALYTICS],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        r = sync_redis(settings)
        wait_for(
            lambda: r.exists(Keys(settings.key_prefix).analytics_state), timeout=90, what="the worker's first refresh"
        )
        first = AnalyticsStore(connect(settings), settings.key_prefix)
        try:
            state = await first.state()
        finally:
            await first.client.aclose()
        assert state is not None and state.customers_scored == BUYERS and state.purchase is not None
    finally:
        stop_worker(proc)


async def test_the_command_refreshes(settings: Settings, rules_path: Path) -> None:
    await apply(settings, base_events())
    env = settings_env(settings) | {"ECRM_SEGMENTS_FILE": str(rules_path)}
    done = subprocess.run(
        [sys.executable, "-m", "ecrm", "analytics", "refresh"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"refreshed: {BUYERS} customers scored of {BUYERS + 5} profiles, model fitted" in done.stdout
    assert "Prospects" in done.stdout
