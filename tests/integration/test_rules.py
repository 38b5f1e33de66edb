"""Business rules through the real API: each action, combinations and order, placements, time windows, hot reload
and refusal of an invalid file, explain, attributes, and the re-buy window end to end."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.redis import connect
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from profiles.store import ProfileStore
from profiles.updates import plan_update
from schemas import parse_event_obj
from tests.integration.helpers import api_client, now_ms, purchase, view
from trainer.training import train_once

pytestmark = pytest.mark.integration
CATS = {1: "a", 2: "a", 3: "a", 4: "a", 5: "b", 6: "b", 7: "b", 8: "b", 9: "gift-cards", 10: "gift-cards"}
CATS |= {11: "c", 12: "c"}
DAY_MS = 86_400_000


def sku(i: int) -> str:
    return f"sku-{i:02d}"


def item_event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "item",
        "event_id": uuid.uuid4().hex,
        "timestamp": now_ms() - 60_000,
        "item_id": sku(i),
        "title": f"Item {i}",
        "category": CATS[i],
        "price": 10.0 * i,
        **extra,
    }


async def load(settings: Settings, events: list[dict[str, Any]], tenant: str = DEFAULT_TENANT) -> None:
    store = ProfileStore(connect(settings), settings, tenant)
    await store.apply_plans([plan_update(parse_event_obj(e), settings.event_weights) for e in events])
    await store.client.aclose()


async def shop(settings: Settings, tenant: str = DEFAULT_TENANT) -> None:
    """12 items; sku-01 the most popular ... sku-12 the least; sku-07 and sku-08 are of brand acme (in ``tenant``'s
    keys)."""
    events = [
        item_event(i, attributes={"brand": "acme" if i in (7, 8) else "other"}, image_url=f"https://img/{i}.png")
        for i in CATS
    ]
    for i in CATS:
        events += [view(f"fan-{k}", sku(i)) for k in range(13 - i)]
    await load(settings, events, tenant)


def ruled(tmp_path: Path, settings: Settings, text: str, **extra: Any) -> Settings:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n" + text)
    return settings.model_copy(update={"rules_file": str(path), "rules_check_interval_s": 0.0, **extra})


async def personal(client: httpx.AsyncClient, customer: str = "shopper", n: int = 10, **params: Any) -> list[Any]:
    response = await client.get(f"/v1/customers/{customer}/recommendations", params={"n": n, **params})
    assert response.status_code == 200
    items: list[Any] = response.json()["items"]
    return items


def ids(items: list[Any]) -> list[str]:
    return [i["item_id"] for i in items]


async def test_without_rules_the_list_is_the_fallback_chain(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    async with api_client(ruled(tmp_path, settings, "")) as client:
        assert ids(await personal(client)) == [sku(i) for i in range(1, 11)]


@pytest.mark.parametrize(
    ("rules", "check"),
    [
        (
            "  - name: no-gift-cards\n    exclude: {category: [gift-cards]}\n",
            lambda got: got == [sku(i) for i in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)],
        ),
        ("  - name: cheap\n    include_only: {price: {max: 40}}\n", lambda got: got == [sku(i) for i in (1, 2, 3, 4)]),
        ("  - name: acme\n    exclude: {attributes: {brand: acme}}\n", lambda got: {sku(7), sku(8)}.isdisjoint(got)),
        ("  - name: ids\n    exclude: {item_ids: [sku-01, sku-02]}\n", lambda got: got[:2] == [sku(3), sku(4)]),
        (
            "  - name: own-brand\n    boost: {where: {attributes: {brand: acme}}, factor: 10}\n",
            lambda got: got[:2] == [sku(7), sku(8)] and got[2:] == [sku(i) for i in (1, 2, 3, 4, 5, 6, 9, 10)],
        ),
        (
            "  - name: bury-a\n    bury: {where: {category: a}, factor: 100}\n",
            lambda got: got == [sku(i) for i in (5, 6, 7, 8, 9, 10, 11, 12, 1, 2)],
        ),
        (
            "  - name: pin\n    pin: [{item_id: sku-12, position: 1}, {item_id: sku-11, position: 3}]\n",
            lambda got: got[0] == sku(12) and got[2] == sku(11) and got[1] == sku(1),
        ),
        (
            "  - name: promo\n    promote: {items: [sku-12, sku-11], share: 20%}\n",
            lambda got: set(got[-2:]) == {sku(11), sku(12)} and got[:8] == [sku(i) for i in range(1, 9)],
        ),
        (
            "  - name: variety\n    max_per_category: 2\n",
            lambda got: got == [sku(i) for i in (1, 2, 5, 6, 9, 10, 11, 12, 3, 4)],
        ),
    ],
)
async def test_each_action(settings: Settings, tmp_path: Path, rules: str, check: Any) -> None:
    await shop(settings)
    async with api_client(ruled(tmp_path, settings, rules)) as client:
        got = ids(await personal(client))
        assert check(got), str(got)


async def test_reasons_explain_attributes_and_the_counter(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    text = (
        "  - name: winter-sale\n    pin: [{item_id: sku-12, position: 1}]\n"
        "  - name: promo\n    promote: {items: [sku-11], share: 0.1, reason: staff pick}\n"
        "  - name: own-brand\n    boost: {where: {attributes: {brand: acme}}, factor: 1.5}\n"
    )
    async with api_client(ruled(tmp_path, settings, text)) as client:
        items = await personal(client, explain="true", attributes="true")
        by_id = {i["item_id"]: i for i in items}
        assert ids(items)[0] == sku(12) and by_id[sku(12)]["reason"] == "pinned (winter-sale)"
        assert by_id[sku(12)]["rules"] == ["winter-sale"]
        assert by_id[sku(11)]["reason"] == "staff pick (promo)" and by_id[sku(11)]["rules"] == ["promo"]
        assert by_id[sku(7)]["rules"] == ["own-brand"] and by_id[sku(7)]["final_score"] > 0
        assert by_id[sku(7)]["model_score"] == by_id[sku(7)]["score"]
        assert by_id[sku(7)]["attributes"] == {"brand": "acme"} and by_id[sku(7)]["image_url"] == "https://img/7.png"
        plain = await personal(client)
        assert set(plain[0]) == {"item_id", "score", "reason"}
        metrics = (await client.get("/metrics")).text
        assert 'ecrm_rules_applied_total{rule="winter-sale"}' in metrics
        assert 'ecrm_rules_in_force{tenant="default"} 3.0' in metrics


async def test_combinations_and_order(settings: Settings, tmp_path: Path) -> None:
    """Exclusions win over pins; pins and promotions win over the category cap; the first pin takes a position."""
    await shop(settings)
    text = (
        "  - name: no-gift-cards\n    exclude: {category: gift-cards}\n"
        "  - name: pin-gift\n    pin: [{item_id: sku-09, position: 1}, {item_id: sku-05, position: 2}]\n"
        "  - name: pin-again\n    pin: [{item_id: sku-06, position: 2}]\n"
        "  - name: variety\n    max_per_category: 1\n"
        "  - name: promo\n    promote: {items: [sku-03, sku-04], share: 0.4}\n"
    )
    async with api_client(ruled(tmp_path, settings, text)) as client:
        got = ids(await personal(client, n=5))
        assert sku(9) not in got  # an excluded item is never pinned
        assert got[1] == sku(5) and got[2] == sku(6)  # the first rule's pin keeps position 2, the next one moves
        assert {sku(3), sku(4)} <= set(got)  # promoted over the cap of one per category
        assert len(got) == 5


async def test_pin_is_refused_for_an_out_of_stock_or_bought_item(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    await load(settings, [item_event(12, in_stock=False), purchase("buyer", [(sku(11), 1, 110.0)])])
    text = "  - name: pins\n    pin: [{item_id: sku-12, position: 1}, {item_id: sku-11, position: 2}]\n"
    async with api_client(ruled(tmp_path, settings, text)) as client:
        got = ids(await personal(client, customer="buyer"))
        assert sku(12) not in got and sku(11) not in got


async def test_placements_and_time_windows(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    text = (
        "  - name: similar-only\n    placements: [similar]\n    exclude: {item_ids: [sku-02]}\n"
        "  - name: past\n    until: '2001-01-01T00:00:00Z'\n    exclude: {item_ids: [sku-03]}\n"
        "  - name: future\n    from: '2099-01-01T00:00:00Z'\n    exclude: {item_ids: [sku-04]}\n"
        "  - name: now\n    from: '2001-01-01T00:00:00Z'\n    until: '2099-01-01T00:00:00Z'\n"
        "    exclude: {item_ids: [sku-05]}\n"
        "  - name: cart-only\n    placements: [cart, session]\n    exclude: {item_ids: [sku-06]}\n"
    )
    async with api_client(ruled(tmp_path, settings, text)) as client:
        got = ids(await personal(client))
        assert {sku(2), sku(3), sku(4), sku(6)} <= set(got) and sku(5) not in got
        similar = (await client.get(f"/v1/items/{sku(1)}/similar", params={"n": 10})).json()
        assert sku(2) not in ids(similar["items"]) and sku(5) not in ids(similar["items"])
        cart = (await client.post("/v1/recommendations/cart", json={"item_ids": [sku(1)], "n": 10})).json()
        assert sku(6) not in ids(cart["items"]) and sku(2) in ids(cart["items"])
        session = (await client.get("/v1/sessions/visitor-1/recommendations", params={"n": 10})).json()
        assert sku(6) not in ids(session["items"])


async def settle(client: httpx.AsyncClient) -> None:
    """Wait until the API has written what it served (it writes after answering)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    await transport.app.state.recs.drain()  # type: ignore[attr-defined]


async def test_rotate_demotes_what_was_just_shown(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    text = "  - name: fresh\n    rotate: {lists: 1, factor: 0.01}\n"
    async with api_client(ruled(tmp_path, settings, text)) as client:
        first = ids(await personal(client, n=3))
        await settle(client)
        second = ids(await personal(client, n=3))
        await settle(client)
        third = ids(await personal(client, n=3))
        assert first == [sku(1), sku(2), sku(3)]
        assert set(first).isdisjoint(second) and second == [sku(4), sku(5), sku(6)]
        assert third == first  # only the last list is remembered by this rule


async def test_upsell_prefers_pricier_items_of_the_cart_categories(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    text = "  - name: upsell\n    placements: [cart]\n    upsell: {factor: 10}\n"
    async with api_client(ruled(tmp_path, settings, text)) as client:
        cart = (await client.post("/v1/recommendations/cart", json={"item_ids": [sku(2)], "n": 4})).json()
        assert ids(cart["items"])[:2] == [sku(3), sku(4)]


async def test_hot_reload_and_refusal(settings: Settings, tmp_path: Path) -> None:
    await shop(settings)
    ruled_settings = ruled(tmp_path, settings, "  - name: no-gift-cards\n    exclude: {category: [gift-cards]}\n")
    path = Path(str(ruled_settings.rules_file))
    async with api_client(ruled_settings) as client:
        assert sku(9) not in ids(await personal(client))
        path.write_text("version: 1\nrules:\n  - name: no-a\n    exclude: {category: [a]}\n")
        assert ids(await personal(client))[:2] == [sku(5), sku(6)]  # reloaded, no restart
        path.write_text("version: 1\nrules:\n  - name: broken-pin\n    pin: [{item_id: sku-01, position: 0}]\n")
        assert ids(await personal(client))[:2] == [sku(5), sku(6)]  # the last good rules stay
        status = (await client.get("/v1/rules")).json()
        assert status["valid"] is False and [r["name"] for r in status["rules"]] == ["no-a"]
        assert "rule 'broken-pin'" in status["error"] and "pin.0.position" in status["error"]
        assert "greater than or equal to 1" in status["error"]
        assert (await client.get("/health/ready")).json()["rules"] == "refused"
        assert 'ecrm_rules_file_valid{tenant="default"} 0.0' in (await client.get("/metrics")).text
        path.write_text("version: 1\nrules: []\n")
        assert ids(await personal(client))[:2] == [sku(1), sku(2)]
        assert (await client.get("/v1/rules")).json()["valid"] is True
        assert 'ecrm_rules_file_valid{tenant="default"} 1.0' in (await client.get("/metrics")).text


async def test_rebuy_window_end_to_end(settings: Settings, tmp_path: Path) -> None:
    """An old purchase comes back after the re-buy window (globally or per category by a rule), never before."""
    await shop(settings)
    old = now_ms() - 40 * DAY_MS
    await load(settings, [purchase("regular", [(sku(1), 1, 10.0), (sku(5), 1, 50.0)], ts=old), view("regular", sku(2))])
    async with api_client(ruled(tmp_path, settings, "")) as client:
        got = ids(await personal(client, customer="regular"))
        assert {sku(1), sku(5), sku(2)}.isdisjoint(got)  # default: never again; a viewed item is not news
    async with api_client(ruled(tmp_path, settings, "", rebuy_window_days=30.0)) as client:
        got = ids(await personal(client, customer="regular"))
        assert {sku(1), sku(5)} <= set(got) and sku(2) not in got
    async with api_client(ruled(tmp_path, settings, "", rebuy_window_days=60.0)) as client:
        assert {sku(1), sku(5)}.isdisjoint(ids(await personal(client, customer="regular")))
    text = "  - name: consumables\n    rebuy: {days: 30, category: [a]}\n"
    async with api_client(ruled(tmp_path, settings, text)) as client:
        got = ids(await personal(client, customer="regular"))
        assert sku(1) in got and sku(5) not in got  # category a comes back, b stays out


async def test_segment_condition_through_the_api(settings: Settings, tmp_path: Path) -> None:
    """A customer who never bought is in the non-buyers' segment of config/segments.yaml; a rule for it applies."""
    await shop(settings)
    await load(settings, [view("browser", sku(12))])
    from analytics.rules_file import DEFAULT_RULES_PATH as SEGMENTS
    from analytics.rules_file import load_rules as load_segments

    non_buyers = load_segments(SEGMENTS).non_buyers.name
    text = f"  - name: welcome\n    segment: [{non_buyers}]\n    pin: [{{item_id: sku-11, position: 1}}]\n"
    text += "  - name: others\n    segment: [Champions]\n    pin: [{item_id: sku-10, position: 1}]\n"
    async with api_client(ruled(tmp_path, settings, text)) as client:
        got = ids(await personal(client, customer="browser"))
        assert got[0] == sku(11)


def test_rules_check_and_preview(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from typer.testing import CliRunner

    from core.settings import get_settings
    from ecrm.cli import app

    asyncio.run(shop(settings))
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nrules:\n  - name: no-a\n    exclude: {category: a}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: oops\n    boost: {where: {category: a}, factor: 0}\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["rules", "check", str(good)])
    assert ok.exit_code == 0 and "valid, 1 rules" in ok.output and "no-a: exclude" in ok.output
    refused = runner.invoke(app, ["rules", "check", str(bad)])
    assert refused.exit_code == 1 and "rule 'oops': boost.factor: Input should be greater than 0" in refused.output
    monkeypatch.setenv("ECRM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("ECRM_KEY_PREFIX", settings.key_prefix)
    get_settings.cache_clear()
    try:
        shown = runner.invoke(app, ["rules", "preview", "--customer", "shopper", "--file", str(good), "--n", "5"])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    first = shown.output.splitlines()[2]
    assert "sku-01" in first and "sku-05" in first  # without rules / with rules, side by side
    assert "removed: sku-01, sku-02, sku-03, sku-04" in shown.output
    assert "rule no-a: touched 4 candidate(s)" in shown.output


async def test_the_rules_in_force_are_for_admin_keys_only(settings: Settings, tmp_path: Path) -> None:
    server, admin = "s" * 24, "a" * 24
    keyed = ruled(tmp_path, settings, "  - {name: variety, max_per_category: 2}\n")
    keyed = keyed.model_copy(update={"api_keys": f"server:{server},admin:{admin}", "rate_limit": ""})
    async with api_client(keyed) as client:
        assert (await client.get("/v1/rules")).status_code == 401
        assert (await client.get("/v1/rules", headers={"Authorization": f"Bearer {server}"})).status_code == 403
        body = (await client.get("/v1/rules", headers={"Authorization": f"Bearer {admin}"})).json()
        assert body["valid"] is True and body["rules"][0]["actions"] == ["max_per_category"]


async def test_rebuy_window_with_a_trained_model(settings: Settings, tmp_path: Path) -> None:
    """The same through the model's personal step: bought items are left out of its candidates only within the
    window."""
    await shop(settings)
    old = now_ms() - 40 * DAY_MS
    events = [purchase("regular", [(sku(1), 1, 10.0), (sku(5), 1, 50.0)], ts=old), view("regular", sku(2))]
    events += [view(f"fan-{k}", sku(1)) for k in range(3)] + [view(f"fan-{k}", sku(5)) for k in range(3)]
    await load(settings, events)
    result = await asyncio.to_thread(train_once, settings)
    assert result.promoted
    for window, back in ((0.0, False), (30.0, True), (60.0, False)):
        async with api_client(ruled(tmp_path, settings, "", rebuy_window_days=window)) as client:
            resp = (await client.get("/v1/customers/regular/recommendations", params={"n": 11})).json()
            assert resp["strategy"] == "personal" and resp["model_version"] == result.version, resp
            got = ids(resp["items"])
            assert ({sku(1), sku(5)} <= set(got)) is back and ({sku(1), sku(5)}.isdisjoint(got)) is not back, window
            assert sku(2) not in got  # a viewed item is not news, whatever the window
