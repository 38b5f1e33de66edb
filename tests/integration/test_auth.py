"""Access control on the real app (over ASGI, real broker and Redis-compatible server): 401 / 403 / allowed for each
scope and each route class, per-event scopes in a batch, the ``source`` header on produced records, CORS, the rate
limit, the open mode; and on the real command line: loopback binding and bad key configuration refused."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from api.main import create_app
from core.errors import ConfigError
from core.kafka import ensure_topics
from core.redis import connect
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import plan_update
from runtime.embedded import free_port
from runtime.local import settings_env
from schemas import parse_event_obj
from tests.conftest import wait_for
from tests.integration.helpers import BROWSER_UA, api_client, now_ms, view

pytestmark = pytest.mark.integration

SECRETS = {"collect": "collect-" + "c" * 24, "server": "server-" + "s" * 24, "admin": "admin-" + "a" * 24}
KEYS = ",".join(f"{scope}:{secret}" for scope, secret in SECRETS.items())
CALLERS = ("none", "bad", "collect", "server", "admin")
RANK = {"collect": 1, "server": 2, "admin": 3}


def headers(who: str) -> dict[str, str]:
    if who == "none":
        return {}
    if who == "bad":
        return {"Authorization": "Bearer " + "not-a-configured-key-0000"}
    return {"Authorization": f"Bearer {SECRETS[who]}", "User-Agent": BROWSER_UA}


def anonymous_view(visitor: str = "v1", item: str = "sku-1") -> dict[str, Any]:
    return {"type": "product_view", "event_id": os.urandom(8).hex(), "timestamp": now_ms(), "anonymous_id": visitor,
            "item_id": item}  # fmt: skip


def item_event(item: str = "sku-1") -> dict[str, Any]:
    return {"type": "item", "event_id": os.urandom(8).hex(), "timestamp": now_ms(), "item_id": item, "title": "T",
            "category": "c", "price": 9.5}  # fmt: skip


@pytest.fixture()
def keyed(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings.model_copy(update={"api_keys": KEYS, "rate_limit": "", "visitor_rate_limit": ""})


# (method, path, body, scope needed, status when allowed)
ROUTES: list[tuple[str, str, Any, str, int]] = [
    ("GET", "/v1/sessions/v1/recommendations", None, "collect", 200),
    ("GET", "/v1/items/sku-1/similar", None, "collect", 200),
    ("POST", "/v1/recommendations/cart", {"item_ids": ["sku-1"]}, "collect", 200),
    ("POST", "/v1/recommendations/cart", {"item_ids": ["sku-1"], "customer_id": "c1"}, "server", 200),
    ("GET", "/v1/customers/c1/recommendations", None, "server", 200),
    ("GET", "/v1/customers/nobody/profile", None, "server", 404),
    ("GET", "/v1/segments", None, "admin", 200),
    ("GET", "/v1/segments/champions/customers", None, "admin", 404),
    ("POST", "/v1/events", [anonymous_view()], "collect", 202),
    ("POST", "/v1/events", [view("c1", "sku-1")], "server", 202),
    ("POST", "/v1/events", [view("c2", "sku-1", anonymous_id="v2")], "server", 202),  # a login
    ("POST", "/v1/events", [item_event()], "admin", 202),
    ("DELETE", "/v1/customers/nobody", None, "admin", 200),
]


async def test_each_route_class_needs_its_scope(keyed: Settings) -> None:
    async with api_client(keyed) as client:
        for method, path, body, needed, allowed in ROUTES:
            for who in CALLERS:
                resp = await client.request(method, path, json=body, headers=headers(who))
                what = f"{who} key: {method} {path} {body}"
                if who in ("none", "bad"):
                    assert resp.status_code == 401, what
                    challenge = "Bearer" if who == "none" else 'Bearer error="invalid_token"'
                    assert resp.headers["www-authenticate"] == challenge, what
                elif RANK[who] < RANK[needed]:
                    assert resp.status_code == 403, f"{what}: {resp.text}"
                    if path != "/v1/events":  # the collector refuses by event, in its body
                        assert f'scope="{needed}"' in resp.headers["www-authenticate"], what
                else:
                    assert resp.status_code == allowed, f"{what}: {resp.text}"


async def test_health_metrics_and_docs_stay_open(keyed: Settings) -> None:
    async with api_client(keyed) as client:
        for path in ("/health/live", "/metrics", "/openapi.json", "/docs"):
            assert (await client.get(path)).status_code == 200, path
        ready = (await client.get("/health/ready")).json()
        assert ready["auth"] == "keys" and ready["redis"] is True
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    paths = schema["paths"]
    assert paths["/v1/events"]["post"]["security"] == [{"ApiKey": ["collect"]}]
    assert paths["/v1/customers/{customer_id}/profile"]["get"]["security"] == [{"ApiKey": ["server"]}]
    assert paths["/v1/segments"]["get"]["security"] == [{"ApiKey": ["admin"]}]
    assert "`server` scope" in paths["/v1/customers/{customer_id}/recommendations"]["get"]["description"]
    assert "security" not in paths["/health/ready"]["get"]


async def test_a_mixed_batch_is_refused_by_index(keyed: Settings) -> None:
    batch = [anonymous_view(), view("c1", "sku-1"), item_event(), {"type": "product_view"}, anonymous_view("v9")]
    async with api_client(keyed) as client:
        resp = await client.post("/v1/events", json=batch, headers=headers("collect"))
        assert resp.status_code == 202
        body = resp.json()
        assert body["accepted"] == 2 and body["rejected"] == 3
        by_index = {e["index"]: e for e in body["errors"]}
        assert by_index[1]["field"] == "customer_id" and by_index[1]["event_id"] == batch[1]["event_id"]
        assert by_index[1]["reason"].startswith("forbidden: an event with a customer_id needs a key with the server")
        assert by_index[2]["field"] == "type" and "needs a key with the admin scope" in by_index[2]["reason"]
        assert not by_index[3]["reason"].startswith("forbidden")  # invalid, not forbidden
        # the same batch with a server key: only the item event is forbidden
        body = (await client.post("/v1/events", json=batch, headers=headers("server"))).json()
        assert body["accepted"] == 3 and [e["index"] for e in body["errors"] if "forbidden" in e["reason"]] == [2]
        # nothing accepted because of the key: 403, with the reasons
        resp = await client.post("/v1/events", json=[view("c1", "sku-1"), item_event()], headers=headers("collect"))
        assert resp.status_code == 403 and resp.json()["rejected"] == 2
        # nothing accepted because nothing is valid: still 422
        resp = await client.post("/v1/events", json=[{"type": "product_view"}], headers=headers("collect"))
        assert resp.status_code == 422


def read_records(settings: Settings, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record on the events topic, with its headers (kafka-python)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False)
    try:
        topic = settings.events_topic
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected:
            assert time.monotonic() < deadline, f"timed out reading {topic}: {len(out)} of {expected}"
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


async def test_each_record_names_the_scope_that_sent_it(keyed: Settings) -> None:
    sent: dict[str, str] = {}
    async with api_client(keyed) as client:
        for who in ("collect", "server", "admin"):
            event = anonymous_view(f"visitor-{who}")
            assert (await client.post("/v1/events", json=event, headers=headers(who))).status_code == 202
            sent[event["event_id"]] = who
    open_mode = keyed.model_copy(update={"api_keys": ""})
    async with api_client(open_mode) as client:
        event = anonymous_view("visitor-open")
        assert (await client.post("/v1/events", json=event)).status_code == 202
        sent[event["event_id"]] = "open"
    records = await asyncio.to_thread(read_records, keyed, len(sent))
    seen = {orjson.loads(r.value)["event_id"]: dict(r.headers) for r in records}
    assert {event_id: h.get("source") for event_id, h in seen.items()} == {
        event_id: who.encode() for event_id, who in sent.items()
    }


async def test_cors_allows_the_listed_origins_only(keyed: Settings) -> None:
    allowed = "https://shop.example"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with api_client(keyed.model_copy(update={"cors_origins": f"{allowed},https://m.shop.example"})) as client:
        resp = await client.options("/v1/events", headers={"Origin": allowed, **preflight})
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == allowed
        assert "POST" in resp.headers["access-control-allow-methods"]
        assert "authorization" in resp.headers["access-control-allow-headers"].lower()
        resp = await client.post("/v1/events", json=anonymous_view(), headers={"Origin": allowed, **headers("collect")})
        assert resp.status_code == 202 and resp.headers["access-control-allow-origin"] == allowed
        # a refusal carries the CORS headers too, so the page can read it
        resp = await client.get("/v1/items/sku-1/similar", headers={"Origin": allowed})
        assert resp.status_code == 401 and resp.headers["access-control-allow-origin"] == allowed
        other = await client.options("/v1/events", headers={"Origin": "https://evil.example", **preflight})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        simple = await client.get("/v1/items/sku-1/similar", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
    async with api_client(keyed) as client:  # default: no origin at all
        resp = await client.options("/v1/events", headers={"Origin": allowed, **preflight})
        assert "access-control-allow-origin" not in resp.headers


async def test_rate_limit_per_client_for_collect_keys_and_per_key_for_server_keys(keyed: Settings) -> None:
    limited = keyed.model_copy(update={"rate_limit": "3/minute"})
    app = create_app(limited)
    async with app.router.lifespan_context(app):

        def client(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

        async with client("10.0.0.1") as first, client("10.0.0.2") as second:

            async def post(http: httpx.AsyncClient, who: str) -> httpx.Response:
                return await http.post("/v1/events", json=anonymous_view(), headers=headers(who))

            assert [(await post(first, "collect")).status_code for _ in range(3)] == [202] * 3
            refused = await post(first, "collect")
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert "rate limit of 3 events per 1 minute exceeded" in refused.json()["detail"]
            # the collect key is public: another address has its own budget
            assert (await post(second, "collect")).status_code == 202
            # a server key is counted by key, wherever it comes from
            assert [(await post(first, "server")).status_code for _ in range(2)] == [202] * 2
            assert (await post(second, "server")).status_code == 202
            assert (await post(second, "server")).status_code == 429
            assert (await post(first, "admin")).status_code == 202  # another key, another budget
            # reads are not rate limited
            assert (await first.get("/v1/items/sku-1/similar", headers=headers("collect"))).status_code == 200


async def test_the_rate_limit_counts_events_not_requests(keyed: Settings) -> None:
    limited = keyed.model_copy(update={"rate_limit": "5/minute"})
    before = refused_count("rate_limit")
    async with api_client(limited) as client:
        batch = [anonymous_view(f"v{i}") for i in range(4)]
        assert (await client.post("/v1/events", json=batch, headers=headers("collect"))).status_code == 202
        two = [anonymous_view("v9"), anonymous_view("v9")]  # 4 + 2 > 5: the whole batch is refused
        refused = await client.post("/v1/events", json=two, headers=headers("collect"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "rate limit of 5 events per 1 minute exceeded" in refused.json()["detail"]
        assert (await client.post("/v1/events", json=two[:1], headers=headers("collect"))).status_code == 202
        # no event left: refused before its body is read
        assert (await client.post("/v1/events", json=two[1:], headers=headers("collect"))).status_code == 429
    assert refused_count("rate_limit") - before == 3  # 2 events, then 1 request refused before reading it


def refused_count(reason: str) -> float:
    from core import metrics

    return float(metrics.COLLECTOR_REFUSED.labels(reason, "default")._value.get())


async def test_a_visitor_and_a_bot_are_limited_at_the_entry_and_dead_lettered(keyed: Settings) -> None:
    from tests.integration.test_bounded_input import read_dead_letters

    limited = keyed.model_copy(update={"visitor_rate_limit": "3/minute"})
    visitor_before, bot_before = refused_count("visitor_rate_limit"), refused_count("bot")
    async with api_client(limited) as client:
        flood = [anonymous_view("flooder", f"sku-{i}") for i in range(5)] + [anonymous_view("other")]
        resp = await client.post("/v1/events", json=flood, headers=headers("collect"))
        body = resp.json()
        assert resp.status_code == 202 and body["accepted"] == 4 and body["rejected"] == 2
        found = [(e["index"], e["field"], e["status"]) for e in body["errors"]]
        assert found == [(3, "anonymous_id", 429), (4, "anonymous_id", 429)]
        assert "rate limit of 3 events per 1 minute per visitor exceeded" in body["errors"][0]["reason"]
        again = await client.post("/v1/events", json=flood[:1], headers=headers("collect"))
        assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1  # every event refused: 429
        # a server key's events are the shop's: no visitor limit
        server = [view("c-1", "sku-1") | {"anonymous_id": "flooder"}]
        assert (await client.post("/v1/events", json=server, headers=headers("server"))).status_code == 202
        # a bot's user agent on a collect key: every event refused, whatever it is
        bot = {
            **headers("collect"),
            "User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        }
        crawled = await client.post("/v1/events", json=[anonymous_view("crawler"), {"type": "?"}], headers=bot)
        assert crawled.status_code == 403
        found = [(e["index"], e["field"], e["status"]) for e in crawled.json()["errors"]]
        assert found == [(0, "user_agent", 403), (1, "user_agent", 403)]
        assert "Googlebot" in crawled.json()["errors"][0]["reason"]
        no_agent = {**headers("collect"), "User-Agent": ""}
        assert (await client.post("/v1/events", json=[anonymous_view("x")], headers=no_agent)).status_code == 403
        # the same user agent with a server key is the shop's back end: taken
        server_bot = {**headers("server"), "User-Agent": "python-httpx/0.28"}
        assert (await client.post("/v1/events", json=[anonymous_view("y")], headers=server_bot)).status_code == 202
    assert refused_count("visitor_rate_limit") - visitor_before == 3
    assert refused_count("bot") - bot_before == 3
    letters = read_dead_letters(limited, 6)
    assert sorted((d["stage"], d["errors"][0]["field"], d["source"]["api"]) for d in letters) == sorted(
        [("collector", "anonymous_id", "collect")] * 3 + [("collector", "user_agent", "collect")] * 3
    )
    flooded = [d for d in letters if d["key"] == "flooder"]
    assert len(flooded) == 3 and all(orjson.loads(d["original"])["anonymous_id"] == "flooder" for d in flooded)
    assert {d["event_id"] for d in flooded} == {flood[3]["event_id"], flood[4]["event_id"], flood[0]["event_id"]}


async def test_open_mode_says_so(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    ensure_topics(settings)
    with caplog.at_level(logging.WARNING, logger="api.auth"):
        async with api_client(settings) as client:
            ready = (await client.get("/health/ready")).json()
            assert ready["auth"] == "open"
            # every scope, without a key
            assert (await client.post("/v1/events", json=item_event())).status_code == 202
            assert (await client.get("/v1/segments")).status_code == 200
    assert any("ECRM_API_KEYS is not set: the API is open" in r.getMessage() for r in caplog.records)


async def test_a_collect_key_never_sees_a_known_customer_through_a_visitor(keyed: Settings) -> None:
    """Session recommendations: a server key follows a visitor's login to the customer's profile, a collect key
    (public, in the page) gets the visitor's own views only."""
    ts = now_ms() - 60_000
    events = [view(f"shopper{k}", item, ts) for k in range(5) for item in ("sku-a", "sku-b", "sku-c")]
    events += [view("known", "sku-a", ts, anonymous_id="v-known")]  # the visitor logs in as "known"
    store = ProfileStore(connect(keyed), keyed)
    await store.apply_plans([plan_update(parse_event_obj(e), keyed.event_weights) for e in events])
    await store.client.aclose()
    async with api_client(keyed) as client:

        async def items(who: str) -> list[str]:
            resp = await client.get("/v1/sessions/v-known/recommendations", headers=headers(who))
            assert resp.status_code == 200
            return [i["item_id"] for i in resp.json()["items"]]

        as_server, as_collect = await items("server"), await items("collect")
    assert "sku-a" not in as_server, "the customer's seen item is left out: the server key got the customer"
    assert "sku-a" in as_collect, "the collect key got nothing of the customer"


def test_a_bad_key_configuration_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="ECRM_API_KEYS entry 2 of 2: unknown scope 'reader'"):
        create_app(settings.model_copy(update={"api_keys": f"server:{SECRETS['server']},reader:{'x' * 20}"}))
    with pytest.raises(ConfigError, match="ECRM_RATE_LIMIT"):
        create_app(settings.model_copy(update={"rate_limit": "often"}))
    env = {**settings_env(settings), "ECRM_API_KEYS": "admin:short"}
    done = subprocess.run([sys.executable, "-m", "ecrm", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "error: ECRM_API_KEYS entry 1 of 1 (admin): the secret has 5 characters" in done.stderr


def listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4 and IPv6, from /proc/net/tcp*)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_api_command_binds_loopback_and_refuses_an_open_api_elsewhere(settings: Settings) -> None:
    ensure_topics(settings)
    port = free_port()
    # ECRM_MODEL_POLL_S at its default: with the fixture's 0.1 s poll, uvicorn's shutdown can hang in the model
    # holder's poll task (a cancellation lost in the Redis client), which is not what this test is about
    env = {**settings_env(settings), "ECRM_API_PORT": str(port), "ECRM_MODEL_POLL_S": "1.0"}
    env.pop("ECRM_API_HOST")  # the default
    refused = subprocess.run(
        [sys.executable, "-m", "ecrm", "api", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "refusing to listen on '0.0.0.0' without access control: ECRM_API_KEYS is not set" in refused.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "ecrm", "api"],
        env={**env, "ECRM_API_HOST": "::"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "refusing to listen on '::'" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "ecrm", "api"], env=env, stdin=subprocess.DEVNULL)
    try:

        def ready() -> bool:
            assert proc.poll() is None, "ecrm api exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).json()["auth"] == "open"
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, what="ecrm api to answer")
        assert listening(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0 (00000000) nor ::
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


async def test_an_admin_key_erases_a_customer(keyed: Settings) -> None:
    store = ProfileStore(connect(keyed), keyed)
    plans = [
        plan_update(parse_event_obj(e), keyed.event_weights) for e in [view("gone", "sku-1"), view("kept", "sku-1")]
    ]
    await store.apply_plans(plans)
    async with api_client(keyed) as client:
        assert (await client.get("/v1/customers/gone/profile", headers=headers("server"))).status_code == 200
        resp = await client.delete("/v1/customers/gone", headers=headers("admin"))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {
            "customer_id": "gone", "erased_profiles": ["c:gone"], "snapshot_rows": 0, "training_log_entries": 1
        }  # fmt: skip
        assert (await client.get("/v1/customers/gone/profile", headers=headers("server"))).status_code == 404
        assert (await client.get("/v1/customers/kept/profile", headers=headers("server"))).status_code == 200
    await store.client.aclose()
