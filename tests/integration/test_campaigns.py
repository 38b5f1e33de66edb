"""Campaigns on the real stack (the real app over ASGI, the worker's batch processor and apply.lua on the real
Redis-compatible server): the response names the campaign and the variant, a holdout gets an empty list, a
strategy variant is served by its strategy, a variant's rules apply to it only; assignment is sticky (across a
login too) and matches the weights; a simulated campaign with a known uplift is reported with an interval that
contains it; an A/A campaign shows no difference; an injected ratio mismatch is flagged; counts are unchanged when
the same events are delivered twice; the e-mail export with its frequency cap."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from analytics.refresh import Outcome, make_refresher
from analytics.settings import AnalyticsSettings
from core.redis import connect
from core.settings import Settings
from merchandising.campaigns import parse_campaigns
from profiles.campaigns import CampaignStore
from profiles.store import ProfileStore
from runtime.local import settings_env
from runtime.simulate import CampaignPlay, Served, campaign_events
from stream.processing import BatchProcessor, RawMessage
from tests.integration.helpers import app_client, apply, now_ms, purchase, view

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def campaign_yaml(variants: str, placements: str = "[personal, session, email]", goal: str = "purchase") -> str:
    return f"""
version: 1
campaigns:
  - name: exp
    goal: {goal}
    from: "2020-01-01T00:00:00Z"
    until: "2099-01-01T00:00:00Z"
    placements: {placements}
    min_customers: 50
    frequency_cap_days: 7
    variants: {variants}
"""


THREE = "[{name: engine, weight: 45}, {name: popular, weight: 45, strategy: popularity}, " \
        "{name: holdout, weight: 10, holdout: true}]"  # fmt: skip
TWO = "[{name: a, weight: 50}, {name: b, weight: 50}]"


def with_campaigns(settings: Settings, tmp_path: Path, text: str, **extra: Any) -> Settings:
    path = tmp_path / f"campaigns-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    return settings.model_copy(update={"campaigns_file": str(path), "campaign_metrics_s": 0.0, **extra})


def item(i: int) -> dict[str, Any]:
    return {"type": "item", "event_id": uuid.uuid4().hex, "timestamp": now_ms() - 60_000, "item_id": f"sku-{i:02d}",
            "title": f"Item {i}", "category": "a" if i < 6 else "b", "price": 10.0 + i}  # fmt: skip


async def shop(settings: Settings) -> None:
    """12 items; sku-00 the most viewed; a few fans so trending and popular are known."""
    events = [item(i) for i in range(12)]
    for i in range(12):
        events += [view(f"fan-{k}", f"sku-{i:02d}") for k in range(12 - i)]
    await apply(settings, events)


async def counters(settings: Settings) -> dict[str, dict[str, float]]:
    store = CampaignStore(connect(settings), ProfileStore(connect(settings), settings).keys)
    try:
        return await store.counters("exp")
    finally:
        await store.client.aclose()


async def recs(client: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/customers/{customer}/recommendations", params={"n": 5})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_serving_names_the_variant_holdout_is_empty_strategy_serves_and_assignment_matches_weights(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(THREE))
    campaign = parse_campaigns(campaign_yaml(THREE)).campaigns[0]
    await shop(s)
    seen: dict[str, str] = {}
    async with app_client(s) as (app, client):
        for i in range(600):
            body = await recs(client, f"cust-{i}")
            assert body["campaign"] == "exp"
            variant = body["variant"]
            assert variant == campaign.assign(f"c:cust-{i}").name  # the hash decides
            assert body["recommendation_id"].endswith("-" + campaign.tag)
            if variant == "holdout":
                assert body["items"] == [] and body["strategy"] == "holdout"
            elif variant == "popular":
                assert body["strategy"] == "popular" and body["items"][0]["item_id"] == "sku-00"
            else:
                assert body["items"] and body["strategy"] != "holdout"
            seen[f"cust-{i}"] = variant
        for i in range(0, 600, 7):  # sticky: asked again, the same variant
            assert (await recs(client, f"cust-{i}"))["variant"] == seen[f"cust-{i}"]
        await app.state.recs.drain()
        report = (await client.get("/v1/campaigns/exp/report")).json()
        listing = (await client.get("/v1/campaigns")).json()
        metrics_text = (await client.get("/metrics")).text
    assert listing["valid"] and [c["name"] for c in listing["campaigns"]] == ["exp"]
    assert listing["campaigns"][0]["running"] is True
    by_variant = {v["variant"]: v for v in report["variants"]}
    for name in ("engine", "popular", "holdout"):
        assigned = sum(1 for v in seen.values() if v == name)
        assert by_variant[name]["assigned"] == assigned
    assert by_variant["holdout"]["exposed"] == 0 and by_variant["holdout"]["impressions"] == 0
    assert by_variant["engine"]["exposed"] == by_variant["engine"]["assigned"]
    srm = report["sample_ratio_mismatch"]
    print(f"assignment of 600 customers: {srm['observed']} vs expected {srm['expected']}, p={srm['p_value']}")
    assert not srm["flagged"] and srm["p_value"] > 0.001
    assert report["control"] == "holdout" and len(report["comparisons"]) == 2
    assert 'ecrm_campaign_lists_total{campaign="exp",variant="holdout"}' in metrics_text


async def test_a_variants_rules_apply_to_its_lists_only(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - {name: hero, pin: [{item_id: sku-11, position: 1}]}\n")
    variants = "[{name: plain, weight: 50}, {name: pinned, weight: 50, rules: [hero]}]"
    s = with_campaigns(settings, tmp_path, campaign_yaml(variants), rules_file=str(rules))
    await shop(s)
    async with app_client(s) as (_, client):
        firsts = {}
        for i in range(40):
            body = await recs(client, f"cust-{i}")
            firsts.setdefault(body["variant"], set()).add(body["items"][0]["item_id"])
        listing = (await client.get("/v1/campaigns")).json()
    assert firsts["pinned"] == {"sku-11"} and "sku-11" not in firsts["plain"]
    assert listing["warnings"] == []


async def test_a_visitor_keeps_the_variant_after_logging_in(settings: Settings, tmp_path: Path) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(TWO))
    campaign = parse_campaigns(campaign_yaml(TWO)).campaigns[0]
    await shop(s)
    # a visitor and a customer whose own hashes give different variants
    visitor = next(f"v{i}" for i in range(100) if campaign.assign(f"a:v{i}").name == "a")
    customer = next(f"x{i}" for i in range(100) if campaign.assign(f"c:x{i}").name == "b")
    async with app_client(s) as (app, client):
        body = (await client.get(f"/v1/sessions/{visitor}/recommendations")).json()
        assert body["variant"] == "a"
        await app.state.recs.drain()
        await apply(s, [view(customer, "sku-03", anonymous_id=visitor)])  # the login
        assert (await recs(client, customer))["variant"] == "a"
        assert (await client.get(f"/v1/sessions/{visitor}/recommendations")).json()["variant"] == "a"
        await app.state.recs.drain()
    assert (await counters(s))["a"]["assigned"] == 1 and "b" not in await counters(s)


def click(customer: str, rid: str, ts: int) -> dict[str, Any]:
    return {"type": "recommendation_click", "event_id": uuid.uuid4().hex, "timestamp": ts, "customer_id": customer,
            "recommendation_id": rid, "item_id": "sku-01"}  # fmt: skip


async def play(
    settings: Settings, customers: int, rates: dict[str, float], seed: int, order_value: float = 40.0
) -> tuple[dict[str, Any], dict[str, dict[str, int]], list[RawMessage]]:
    """Serve every customer once through the API, then let a share of each variant click and buy (events through
    the worker's batch processor and apply.lua); every fifth customer also sends forged clicks (an id of the
    campaign's form never served, another customer's list), which count nothing. Returns the report, what was
    simulated, and the messages."""
    rng = random.Random(seed)
    truth: dict[str, dict[str, int]] = {}
    events: list[dict[str, Any]] = []
    start = now_ms()
    async with app_client(settings) as (app, client):
        served = [(f"cust-{seed}-{i}", await recs(client, f"cust-{seed}-{i}")) for i in range(customers)]
        await app.state.recs.drain()
        after = now_ms()  # every exposure recorded: the outcomes come after it
        for k, (customer, body) in enumerate(served):
            t = truth.setdefault(body["variant"], {"assigned": 0, "converters": 0, "clicks": 0, "attributed": 0})
            t["assigned"] += 1
            ts = after + k
            clicked = rng.random() < 0.2
            if clicked:
                events.append(click(customer, body["recommendation_id"], ts))
                t["clicks"] += 1
            if k % 5 == 0:  # forged clicks count nothing: an id of the campaign's form never served, another's id
                forged = body["recommendation_id"].replace(body["recommendation_id"][:8], "f0f0f0f0", 1)
                events.append(click(customer, forged, ts + 1))
                events.append(click(customer, served[(k + 1) % len(served)][1]["recommendation_id"], ts + 2))
            if rng.random() < rates[body["variant"]]:
                events.append(purchase(customer, [("sku-01", 1, order_value)], ts + 10))
                t["converters"] += 1
                t["attributed"] += clicked
        # a purchase before the first exposure does not count
        events.append(purchase(served[0][0], [("sku-02", 1, 99.0)], start - 60_000))
        messages = [RawMessage(orjson.dumps(e)) for e in events]
        processor = BatchProcessor(ProfileStore(connect(settings), settings), settings, _no_dead_letters)
        result = await processor.process(messages)
        assert result.applied == len(messages) and not result.dead_lettered
        await processor.store.client.aclose()
        report = (await client.get("/v1/campaigns/exp/report")).json()
    return report, truth, messages


A_A_SEEDS = 10


async def reset(settings: Settings) -> None:
    store = CampaignStore(connect(settings), ProfileStore(connect(settings), settings).keys)
    await store.reset("exp")
    await store.client.aclose()


async def _no_dead_letters(envelope: dict[str, Any]) -> None:
    raise AssertionError(f"dead-lettered: {envelope['reason']}")


async def test_a_known_uplift_is_reported_with_an_interval_containing_it_and_redelivery_changes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(TWO))
    await shop(s)
    report, truth, messages = await play(s, 1600, {"a": 0.10, "b": 0.16}, seed=1)
    by_variant = {v["variant"]: v for v in report["variants"]}
    for name, t in truth.items():  # every count exact
        v = by_variant[name]
        assert (v["assigned"], v["converting_customers"], v["clicks"]) == (t["assigned"], t["converters"], t["clicks"])
        assert v["attributed_orders"] == t["attributed"] and v["orders"] == t["converters"]
        assert v["revenue"] == pytest.approx(40.0 * t["converters"])
    cmp = report["comparisons"][0]
    assert (cmp["variant"], cmp["against"]) == ("b", "a")
    lo, hi = cmp["conversion_rate"]["ci"]
    print(f"true uplift +6.0 points: reported {cmp['conversion_rate']['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}], "
          f"p={cmp['conversion_rate']['p_value']}; revenue/customer {cmp['revenue_per_customer']['ci']}")  # fmt: skip
    assert lo <= 0.06 <= hi
    rlo, rhi = cmp["revenue_per_customer"]["ci"]
    assert rlo <= 0.06 * 40.0 <= rhi
    assert report["verdict"] == "variant b better"
    assert "Newcombe" in cmp["conversion_rate"]["method"] and "Welch" in cmp["revenue_per_customer"]["method"]

    before = await counters(s)
    processor = BatchProcessor(ProfileStore(connect(s), s), s, _no_dead_letters)
    again = await processor.process(messages)  # the same events delivered twice
    await processor.store.client.aclose()
    assert again.applied == 0 and again.duplicates == len(messages)
    assert await counters(s) == before


async def test_an_a_a_campaign_shows_no_difference_and_an_injected_mismatch_is_flagged(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(TWO))
    await shop(s)
    quiet, p_values = 0, []
    for seed in range(A_A_SEEDS):  # each seed: new customers, the campaign's counters from zero
        await reset(s)
        report, _, _ = await play(s, 500, {"a": 0.12, "b": 0.12}, seed=100 + seed)
        quiet += report["verdict"] == "no significant difference"
        p_values.append(report["comparisons"][0]["conversion_rate"]["p_value"])
        assert not report["sample_ratio_mismatch"]["flagged"]
    print(f"A/A on the real stack: {quiet} of {A_A_SEEDS} seeds without a significant difference; p-values {p_values}")
    assert quiet >= A_A_SEEDS - 2
    # a broken assignment: 250 more customers land in variant a than the weights allow
    store = CampaignStore(connect(s), ProfileStore(connect(s), s).keys)
    for i in range(250):
        await store.record_exposure(f"c:extra-{i}", "exp", "a", now_ms(), True)
    await store.client.aclose()
    async with app_client(s) as (_, client):
        broken = (await client.get("/v1/campaigns/exp/report")).json()
    assert broken["sample_ratio_mismatch"]["flagged"] and broken["sample_ratio_mismatch"]["p_value"] < 0.001
    assert broken["verdict"].startswith("sample ratio mismatch")


async def test_unknown_campaign_and_a_refused_file(settings: Settings, tmp_path: Path) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(TWO))
    async with app_client(s) as (app, client):
        resp = await client.get("/v1/campaigns/nope/report")
        assert resp.status_code == 404 and "no campaign named 'nope'" in resp.json()["detail"]
        Path(str(s.campaigns_file)).write_text(campaign_yaml("[{name: a, weight: 1}]"))
        app.state.campaigns.get("default").current(force=True)
        listing = (await client.get("/v1/campaigns")).json()
    assert not listing["valid"] and "variants: List should have at least 2 items" in listing["error"]
    assert [c["name"] for c in listing["campaigns"]] == ["exp"]  # the last good file stays in force


async def test_email_export_gives_ids_per_customer_and_respects_the_frequency_cap(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(THREE, placements="[email]"))
    await shop(s)
    await apply(s, [purchase(f"buyer-{i}", [(f"sku-{i % 12:02d}", 1, 20.0)]) for i in range(30)])
    refresher = make_refresher(s, AnalyticsSettings())
    result = await refresher.refresh(force=True)
    await refresher.store.client.aclose()
    assert result.outcome is Outcome.REFRESHED, result.message
    async with app_client(s) as (_, client):
        segments = (await client.get("/v1/segments")).json()["segments"]
        segment = max(segments, key=lambda x: x["customers"])["name"]
        first = await client.post("/v1/campaigns/exp/export", json={"segment": segment, "n": 3})
        assert first.status_code == 200, first.text
        body = first.json()
        again = (await client.post("/v1/campaigns/exp/export", json={"segment": segment, "n": 3})).json()
        csv_file = tmp_path / "out.csv"
        cli = subprocess.run([sys.executable, "-m", "ecrm", "campaign", "export", "exp", "--segment", segment,
                              "--csv", str(csv_file)], env=settings_env(s), capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        csv_resp = await client.post("/v1/campaigns/exp/export?format=csv", json={"segment": segment})
        missing = await client.post("/v1/campaigns/exp/export", json={"segment": "no-such", "n": 3})
        # a personal page view is not covered by an email-only campaign
        assert (await recs(client, "buyer-0"))["campaign"] is None
    size = max(x["customers"] for x in segments)
    assert body["exported"] + body["skipped_holdout"] == size and body["exported"] > 0
    ids = [r["recommendation_id"] for r in body["rows"]]
    assert len(set(ids)) == len(ids) and all(len(r["item_ids"]) == 3 for r in body["rows"])
    assert {r["variant"] for r in body["rows"]} <= {"engine", "popular"}
    assert again["exported"] == 0 and again["skipped_capped"] == size  # within the frequency cap
    assert cli.returncode == 0, cli.stderr
    assert f"0 customers; skipped {size} within the frequency cap" in cli.stdout
    assert csv_file.read_text() == "customer_id,campaign,variant,recommendation_id,item_ids\n"
    assert csv_resp.text.splitlines() == ["customer_id,campaign,variant,recommendation_id,item_ids"]
    assert missing.status_code == 404


async def test_the_simulator_plays_a_campaign_and_the_command_reports_the_difference(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_campaigns(settings, tmp_path, campaign_yaml(THREE))
    await shop(s)
    async with app_client(s) as (app, client):
        served = []
        for i in range(900):
            body = await recs(client, f"sim-{i}")
            served.append(Served(f"sim-{i}", body["variant"], body["recommendation_id"],
                                 tuple(x["item_id"] for x in body["items"])))  # fmt: skip
        await app.state.recs.drain()
    play = CampaignPlay({"engine": 0.35, "popular": 0.10, "holdout": 0.10}, seed=3)
    start = now_ms()
    events = list(campaign_events(play, served, start))
    assert events == list(campaign_events(play, served, start))  # seeded: the same play, the same events
    processor = BatchProcessor(ProfileStore(connect(s), s), s, _no_dead_letters)
    result = await processor.process([RawMessage(orjson.dumps(e)) for e in events])
    await processor.store.client.aclose()
    assert result.applied == len(events)
    env = settings_env(s)
    out = subprocess.run([sys.executable, "-m", "ecrm", "campaign", "report", "exp", "--json"], env=env,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    report = json.loads(out.stdout)
    assert report["verdict"] == "variant engine better", report["verdict"]
    text = subprocess.run([sys.executable, "-m", "ecrm", "campaign", "report", "exp"], env=env,
                          capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    assert "verdict: variant engine better" in text and "engine vs holdout:" in text
    missing = subprocess.run([sys.executable, "-m", "ecrm", "campaign", "report", "nope"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and "no campaign named 'nope'" in missing.stderr


async def test_a_trending_variant_and_a_segment_audience(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    await apply(settings, [purchase(f"buyer-{i}", [(f"sku-{i % 12:02d}", 1, 20.0)]) for i in range(30)])
    refresher = make_refresher(settings, AnalyticsSettings())
    result = await refresher.refresh(force=True)
    await refresher.store.client.aclose()
    assert result.outcome is Outcome.REFRESHED, result.message
    variants = "[{name: hot, weight: 50, strategy: trending}, {name: hot2, weight: 50, strategy: trending}]"
    text = campaign_yaml(variants, placements="[personal]")
    s = with_campaigns(settings, tmp_path, text)
    async with app_client(s) as (app, client):
        segments = (await client.get("/v1/segments")).json()["segments"]
        segment = max(segments, key=lambda x: x["customers"])["name"]
        member = (await client.get(f"/v1/segments/{segment}/customers")).json()["customers"][0]["customer_id"]
        everyone = await recs(client, "stranger")
        assert everyone["campaign"] == "exp" and everyone["strategy"] == "trending"
        Path(str(s.campaigns_file)).write_text(
            text.replace("placements:", f"audience: {{segment: {segment}}}\n    placements:")
        )
        app.state.campaigns.get("default").current(force=True)  # (checked every 2 s; a forced check reads it now)
        inside, outside = await recs(client, member), await recs(client, "stranger-2")
    assert inside["campaign"] == "exp" and inside["variant"] in ("hot", "hot2")
    assert outside["campaign"] is None and outside["variant"] is None
