"""End to end on the real embedded broker and Redis-compatible server: collector -> Kafka -> worker -> API, on one
Redis node and on the three-node Redis Cluster the suite starts (``ECRM_REDIS_CLUSTER``)."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaConsumer

from core.kafka import make_producer, produce_events
from core.keyspace import Keys, customer_pid
from core.settings import Settings
from profiles import layout
from tests.conftest import on_cluster, wait_for
from tests.integration.helpers import api_client, now_ms, profile_hash, purchase, sync_redis, view, wait_committed

pytestmark = pytest.mark.integration
StartWorker = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture(params=["single", "cluster"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings on one Redis node, then on the Redis Cluster."""
    if request.param == "single":
        return settings
    return on_cluster(settings, request.getfixturevalue("redis_cluster"))


async def wait_async(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[misc]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def test_collector_to_profile_through_worker(settings: Settings, worker: StartWorker) -> None:
    worker()
    ts = now_ms()
    batch = [
        view("alice", "sku-1", ts, category="shoes"),
        view("alice", "sku-2", ts + 1, category="shoes"),
        {"type": "add_to_cart", "event_id": "cart-1", "timestamp": ts + 2, "customer_id": "alice", "item_id": "sku-2"},
        purchase("alice", [("sku-2", 2, 10.0)], ts + 3),
    ]
    async with api_client(settings) as client:
        resp = await client.post("/v1/events", json=batch)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"detail": "4 events accepted", "accepted": 4, "rejected": 0, "errors": []}

        async def visible() -> bool:
            r = await client.get("/v1/customers/alice/profile")
            return r.status_code == 200 and r.json()["events_total"] == 4

        await wait_async(visible, what="alice's profile")
        profile = (await client.get("/v1/customers/alice/profile")).json()
    assert profile["event_counts"] == {"product_view": 2, "add_to_cart": 1, "purchase": 1}
    assert profile["orders"] == 1 and profile["revenue"] == 20.0
    assert profile["rfm"]["frequency"] == 1 and profile["rfm"]["monetary"] == 20.0
    assert profile["cart"] == []  # the purchase emptied the cart line it bought
    assert [r["item_id"] for r in profile["recent_items"]] == ["sku-2", "sku-1"]
    assert list(profile["category_affinity"]) == ["shoes"]


async def test_collector_reports_invalid_events_and_accepts_the_valid(settings: Settings) -> None:
    good = view("bob", "sku-1")
    bad_type = {"type": "teleport", "event_id": "x1", "timestamp": now_ms(), "customer_id": "bob"}
    bad_field = {**view("bob", "sku-2"), "timestamp": 1700000000}  # seconds, not milliseconds
    no_identity = {"type": "page_view", "event_id": "x3", "timestamp": now_ms()}
    async with api_client(settings) as client:
        resp = await client.post("/v1/events", json=[good, bad_type, bad_field, no_identity])
        assert resp.status_code == 202
        body = resp.json()
        assert body["accepted"] == 1 and body["rejected"] == 3
        by_index = {e["index"]: e for e in body["errors"]}
        assert by_index[1]["field"] == "type"
        assert by_index[2]["field"] == "timestamp" and "milliseconds" in by_index[2]["reason"]
        assert by_index[2]["event_id"] == bad_field["event_id"]
        assert "customer_id or anonymous_id" in by_index[3]["reason"]

        only_bad = await client.post("/v1/events", json=[bad_type])
        assert only_bad.status_code == 422 and only_bad.json()["accepted"] == 0

        too_many = await client.post("/v1/events", json=[view("bob", "x")] * (settings.api_max_batch + 1))
        assert too_many.status_code == 413 and "limit of 500" in too_many.json()["detail"]

        huge = b"[" + b" " * (settings.api_max_body_bytes + 1) + b"]"
        too_big = await client.post("/v1/events", content=huge, headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and "bytes" in too_big.json()["detail"]

        not_json = await client.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 400


def test_invalid_message_on_kafka_goes_to_dead_letter_topic(settings: Settings, worker: StartWorker) -> None:
    producer = make_producer(settings)
    raw_bad = b'{"type": "purchase", "event_id": "bad-1", "timestamp": 1767225600000, "customer_id": "c9"}'
    producer.send(settings.events_topic, value=raw_bad, key=b"c9")
    producer.send(settings.events_topic, value=b"\xff not json", key=b"c9")
    produce_events(producer, settings.events_topic, [view("c9", "sku-9")])
    producer.close()
    worker()
    consumer = KafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    letters: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while len(letters) < 2 and time.monotonic() < deadline:
        letters.extend(orjson.loads(m.value) for m in consumer)
    consumer.close()
    assert len(letters) == 2
    by_id = {letter["event_id"]: letter for letter in letters}
    purchase_letter = by_id["bad-1"]
    assert base64.b64decode(str(purchase_letter["original_b64"])) == raw_bad
    fields = {e["field"] for e in purchase_letter["errors"]}  # type: ignore[attr-defined]
    assert {"order_id", "lines", "currency"} <= fields
    assert "not valid JSON" in str(by_id[None]["reason"])
    assert base64.b64decode(str(by_id[None]["original_b64"])) == b"\xff not json"
    # the valid event beside them was processed
    wait_for(
        lambda: profile_hash(settings, "c:c9").get(layout.count_field("product_view")) == "1", what="c9's valid event"
    )


def test_sigkill_mid_stream_neither_loses_nor_double_counts(settings: Settings, worker: StartWorker) -> None:
    sigkill_mid_stream(settings, worker)


def test_sigkill_mid_stream_with_writes_in_turn(
    settings: Settings, worker_factory: Callable[[Settings], subprocess.Popen[bytes]]
) -> None:
    """The same with ``ECRM_WORKER_WRITE_BEHIND=false`` (the default writes behind: a batch read while the one
    before it is written is acked only once written itself): the worker waits for each write before it reads on,
    and the kill loses nothing and the redelivery counts nothing twice either way."""
    in_turn = settings.model_copy(update={"worker_write_behind": False})
    sigkill_mid_stream(in_turn, lambda: worker_factory(in_turn))


def sigkill_mid_stream(settings: Settings, worker: StartWorker) -> None:
    customers = [f"k{i}" for i in range(40)]
    events = [view(customers[i % len(customers)], f"sku-{i % 97}") for i in range(30_000)]
    events += [purchase(c, [("sku-1", 1, 2.5)]) for c in customers]
    # the same event sent twice by a producer is counted once as well
    events += [events[0], events[1]]
    producer = make_producer(settings)
    produce_events(producer, settings.events_topic, events)
    producer.close()
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)

    def processed() -> int:
        return sum(
            int(r.hget(keys.profile(customer_pid(c)), layout.count_field("product_view")) or 0) for c in customers
        )

    first = worker()
    wait_for(lambda: processed() > 3_000, timeout=90, what="the first worker to be mid-stream")
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = processed()
    assert 0 < at_kill < 30_000, f"the kill should land mid-stream, processed {at_kill}"
    worker()
    wait_for(lambda: processed() >= 30_000, timeout=180, what="the restarted worker to finish")
    wait_committed(settings, len(events))  # every record acked: any redelivered duplicate would have landed
    expected = Counter(customers[i % len(customers)] for i in range(30_000))
    for c in customers:
        h = r.hgetall(keys.profile(customer_pid(c)))
        assert int(h[layout.count_field("product_view")]) == expected[c], c
        assert (
            int(h[layout.count_field("purchase")]) == 1
            and int(h[layout.ORDERS]) == 1
            and float(h[layout.REVENUE]) == 2.5
        ), c
    # the effects across profiles too (on a cluster, in a second call the kill may have come before)
    assert int(r.get(keys.applied_count) or 0) == 30_000 + len(customers)
    assert int(r.get(keys.interactions_count) or 0) == 30_000 + len(customers)
    assert r.xlen(keys.interactions) == 30_000 + len(customers)
    assert int(r.get(keys.profile_count) or 0) == len(customers)  # each counted once
    popular = dict(r.zrange(keys.popular, 0, -1, withscores=True))
    weights = settings.event_weights
    assert popular["sku-1"] == pytest.approx(Counter(i % 97 for i in range(30_000))[1] * weights["product_view"]
                                             + len(customers) * weights["purchase"])  # fmt: skip


THREE_SHOPS = ("shop-a", "shop-b", "shop-d")  # their global slots are on the cluster's three nodes


def test_three_tenants_through_a_sigkill(
    settings: Settings, worker_factory: Callable[[Settings], subprocess.Popen[bytes]]
) -> None:
    """Three shops with the same customer and item ids, their events interleaved on the topic (each with its tenant
    header and partition key): a worker killed mid-stream and restarted neither loses nor double-counts any shop's
    events, and each shop's profiles and counters hold exactly its own (on the cluster, each shop's global calls go
    to its own slot)."""
    shops = settings.model_copy(update={"tenants": ",".join(THREE_SHOPS)})
    customers = [f"k{i}" for i in range(20)]
    per_shop = {shop: 1500 * (n + 1) for n, shop in enumerate(THREE_SHOPS)}  # a different count per shop
    producer = make_producer(shops)
    rounds = {
        shop: [view(customers[i % 20], f"sku-{i % 13}") for i in range(count)] for shop, count in per_shop.items()
    }
    rounds = {shop: [*events, purchase("k1", [("sku-1", 1, 2.5 * (n + 1))])] for n, (shop, events) in
              enumerate(rounds.items())}  # fmt: skip
    for start in range(0, max(len(e) for e in rounds.values()), 500):
        for shop, events in rounds.items():
            produce_events(producer, shops.events_topic, events[start : start + 500], tenant=shop)
    producer.close()
    r = sync_redis(shops)
    keys = {shop: Keys(shops.key_prefix, shop) for shop in THREE_SHOPS}

    def processed() -> int:
        return sum(int(r.get(k.applied_count) or 0) for k in keys.values())

    first = worker_factory(shops)
    wait_for(lambda: processed() > 1000, timeout=90, what="the first worker to be mid-stream")
    first.send_signal(signal.SIGKILL)
    first.wait()
    total = sum(len(e) for e in rounds.values())
    assert 0 < processed() < total, f"the kill should land mid-stream, processed {processed()}"
    worker_factory(shops)
    wait_for(lambda: processed() >= total, timeout=180, what="the restarted worker to finish")
    wait_committed(shops, total)
    for n, (shop, count) in enumerate(per_shop.items()):
        k = keys[shop]
        expected = Counter(customers[i % 20] for i in range(count))
        for c in customers:
            views = int(r.hget(k.profile(customer_pid(c)), layout.count_field("product_view")) or 0)
            assert views == expected[c], (shop, c)
        assert float(r.hget(k.profile(customer_pid("k1")), layout.REVENUE) or 0) == 2.5 * (n + 1), shop
        assert int(r.get(k.applied_count) or 0) == count + 1, shop
        assert r.xlen(k.interactions) == count + 1 and int(r.get(k.profile_count) or 0) == len(customers), shop
        popular = dict(r.zrange(k.popular, 0, -1, withscores=True))
        assert popular["sku-2"] == pytest.approx(
            Counter(i % 13 for i in range(count))[2] * shops.event_weights["product_view"]
        )
    assert not r.exists(Keys(shops.key_prefix).applied_count)  # nothing landed in the tenant default


async def test_recommendations_for_unknown_and_known_customers(settings: Settings, worker: StartWorker) -> None:
    worker()
    ts = now_ms()
    events = [view(f"u{i}", "hit", ts + i) for i in range(5)]
    events += [view("u0", "second", ts + 10), view("u1", "second", ts + 11), view("u2", "third", ts + 12)]
    events.append(purchase("buyer", [("hit", 1, 5.0)], ts + 20))
    async with api_client(settings) as client:
        assert (await client.post("/v1/events", json=events)).status_code == 202

        async def settled() -> bool:
            r = await client.get("/v1/customers/buyer/profile")
            return r.status_code == 200

        await wait_async(settled, what="the buyer's profile")
        unknown = await client.get("/v1/customers/nobody/recommendations", params={"n": 3})
        assert unknown.status_code == 200
        body = unknown.json()
        assert [i["item_id"] for i in body["items"]] == ["hit", "second", "third"]
        assert body["strategy"] == "trending" and body["model_version"]
        assert all(i["reason"] for i in body["items"])
        other = (await client.get("/v1/customers/nobody/recommendations")).json()
        assert other["recommendation_id"] != body["recommendation_id"]

        known = (await client.get("/v1/customers/buyer/recommendations", params={"n": 3})).json()
        assert "hit" not in [i["item_id"] for i in known["items"]]  # already bought
        assert [i["item_id"] for i in known["items"]] == ["second", "third"]

        missing = await client.get("/v1/customers/nobody/profile")
        assert missing.status_code == 404


async def test_health_and_metrics(settings: Settings) -> None:
    async with api_client(settings) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {
            "status": "ok",
            "reads": True,
            "writes": True,
            "redis": True,
            "kafka": True,
            "worker": False,  # no worker runs in this test (stream/heartbeat.py)
            "auth": "open",
            "rules": "ok",  # the business rules file in force (docs/rules.md)
        }
        await client.get("/v1/customers/x/recommendations")
        text = (await client.get("/metrics")).text
        assert 'ecrm_api_request_seconds_count{method="GET",route="/v1/customers/{customer_id}/recommendations"' in text
