"""Access control, the pure parts: key configuration, constant-time matching, binding, which events a key may send,
the rate-limit and CORS settings."""

from __future__ import annotations

from typing import Any

import pytest

from api import auth
from api.auth import Caller, KeyRing, check_bind, event_refusal, is_loopback, parse_keys
from api.main import cors_origins
from api.ratelimit import RateLimiter, parse_limits
from core.errors import ConfigError, Forbidden, RateLimited
from core.scopes import Scope, event_scope
from schemas.events import parse_event_obj

COLLECT = "c" * 20
SERVER = "s" * 20
ADMIN = "a-Z0.9_~+/" * 2 + "=="


def test_scopes_are_ordered_and_each_includes_the_lower_ones() -> None:
    assert Scope.COLLECT < Scope.SERVER < Scope.ADMIN
    admin = Caller(Scope.ADMIN, "admin", "key:x")
    assert all(admin.allows(s) for s in Scope)
    collect = Caller(Scope.COLLECT, "collect", "client:x")
    assert collect.allows(Scope.COLLECT) and not collect.allows(Scope.SERVER)
    with pytest.raises(Forbidden) as caught:
        collect.require(Scope.SERVER, "a profile")
    assert caught.value.scope == "server" and "a profile needs a key with the server scope" in str(caught.value)


def test_keys_are_parsed_with_their_scopes() -> None:
    ring = parse_keys(f" collect:{COLLECT} , SERVER:{SERVER},admin:{ADMIN}")
    assert not ring.open and ring.mode == "keys"
    assert [k.scope for k in ring.keys] == [Scope.COLLECT, Scope.SERVER, Scope.ADMIN]
    assert ring.match(SERVER) is ring.keys[1]
    assert ring.match(ADMIN) is ring.keys[2]
    assert ring.match(SERVER + "x") is None and ring.match("") is None
    assert all(SERVER not in repr(k) and COLLECT not in repr(k) for k in ring.keys), "secrets are not kept"


def test_keys_name_their_tenant() -> None:
    """``tenant:scope:secret`` is a key of that tenant, ``scope:secret`` one of the tenant default."""
    ring = parse_keys(f"collect:{COLLECT}, acme:server:{SERVER} ,shop-2:admin:{ADMIN}")
    assert [(k.tenant, k.scope) for k in ring.keys] == [
        ("default", Scope.COLLECT), ("acme", Scope.SERVER), ("shop-2", Scope.ADMIN),
    ]  # fmt: skip
    assert ring.match(SERVER) is ring.keys[1] and ring.match(ADMIN) is ring.keys[2]
    assert all(SERVER not in repr(k) for k in ring.keys)


def test_no_keys_is_the_open_mode() -> None:
    for raw in ("", "  "):
        ring = parse_keys(raw)
        assert ring.open and ring.mode == "open" and ring.match("anything") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"reader:{SERVER}", "entry 1 of 1: unknown scope 'reader' (expected one of collect, server, admin)"),
        (f"server:{SERVER},admin:", "entry 2 of 2 (admin): the secret is empty"),
        (f"server:{SERVER},collect:short", "entry 2 of 2 (collect): the secret has 5 characters, at least 16"),
        (SERVER, "entry 1 of 1 has no scope (expected scope:secret"),
        (f"server:{SERVER},", "entry 2 of 2 is empty"),
        (f"server:{SERVER},admin:{SERVER}", "entry 2 of 2 (admin): the same secret is configured twice"),
        ("server:" + "x" * 16 + " y", "entry 1 of 1 (server): the secret may only contain"),
        (f"Acme:server:{SERVER}", "entry 1 of 1: not a tenant name: 'Acme' (1-32 characters"),
        (f"server:{SERVER},a|b:admin:{ADMIN}", "entry 2 of 2: not a tenant name: 'a|b'"),
        (f"acme:server:{SERVER}:x", "entry 1 of 1 has 3 ':' (expected scope:secret or tenant:scope:secret"),
        (f"acme:reader:{SERVER}", "entry 1 of 1 (tenant acme): unknown scope 'reader'"),
        (f"acme:admin:{SERVER},shop-2:admin:{SERVER}", "entry 2 of 2 (tenant shop-2) (admin): the same secret is"),
    ],
)
def test_a_bad_key_entry_is_refused_naming_it(raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keys(raw)
    message = str(caught.value)
    assert "ECRM_API_KEYS " + expected in message
    assert SERVER not in message, "the message never shows a secret"


def test_a_secret_is_compared_in_constant_time_with_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = parse_keys(f"collect:{COLLECT},server:{SERVER},admin:{ADMIN}")
    calls: list[tuple[bytes, bytes]] = []
    real = auth.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth, "compare_digest", spy)
    found = ring.match(COLLECT)
    assert found is not None and found.scope == Scope.COLLECT
    # the first key matched, yet all three were compared (no early exit), always on fixed-length digests
    assert len(calls) == 3 and {len(a) for a, _ in calls} == {32} and {len(b) for _, b in calls} == {32}
    calls.clear()
    assert ring.match("wrong" * 5) is None and len(calls) == 3


def test_open_mode_listens_on_loopback_only() -> None:
    open_ring, keyed = KeyRing(), parse_keys(f"server:{SERVER}")
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, open_ring)
    for host in ("0.0.0.0", "", "::", "10.0.0.5", "shop.example"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="refusing to listen on .* without access control: ECRM_API_KEYS"):
            check_bind(host, open_ring)
        check_bind(host, keyed)  # with keys, any interface


def event(**fields: Any) -> Any:
    base = {"event_id": "e1", "timestamp": 1_790_000_000_000}
    return parse_event_obj({**base, **fields})


def test_which_scope_each_event_needs() -> None:
    anonymous = event(type="product_view", anonymous_id="v1", item_id="sku-1")
    known = event(type="product_view", customer_id="c1", item_id="sku-1")
    login = event(type="page_view", customer_id="c1", anonymous_id="v1")
    item = event(type="item", item_id="sku-1", title="T", category="c", price=1.0)
    assert event_scope(anonymous) == (Scope.COLLECT, "type")
    assert event_scope(known) == (Scope.SERVER, "customer_id")
    assert event_scope(login) == (Scope.SERVER, "customer_id")
    assert event_scope(item) == (Scope.ADMIN, "type")
    collect = Caller(Scope.COLLECT, "collect", "client:x")
    server = Caller(Scope.SERVER, "server", "key:s")
    assert event_refusal(anonymous, collect) is None
    refusal = event_refusal(login, collect)
    assert refusal is not None and refusal.field == "customer_id"
    assert refusal.reason.startswith("forbidden: an event with a customer_id needs a key with the server scope")
    assert event_refusal(login, server) is None
    refusal = event_refusal(item, server)
    assert refusal is not None and refusal.field == "type" and "admin scope (this key has server)" in refusal.reason


def test_rate_limit_setting() -> None:
    assert [str(i) for i in parse_limits("100/second; 3000/minute")] == ["100 per 1 second", "3000 per 1 minute"]
    assert parse_limits("") == [] and RateLimiter("").description == "off"
    with pytest.raises(ConfigError, match="ECRM_RATE_LIMIT='lots' is not a rate limit"):
        parse_limits("lots")


async def test_rate_limiter_counts_each_key_on_its_own() -> None:
    limiter = RateLimiter("2/minute")
    await limiter.hit("client:a")
    await limiter.hit("client:a")
    await limiter.hit("client:b")
    with pytest.raises(RateLimited) as caught:
        await limiter.hit("client:a")
    assert 1 <= caught.value.retry_after_s <= 60
    for _ in range(10):
        await RateLimiter("").hit("client:a")  # off: never refuses


async def test_the_rate_limit_counts_events() -> None:
    limiter = RateLimiter("10/minute")
    await limiter.hit("client:a", 7)
    await limiter.check("client:a")  # 3 left: not refused, nothing counted
    with pytest.raises(RateLimited, match="rate limit of 10 events per 1 minute exceeded"):
        await limiter.hit("client:a", 4)  # a batch of 4 does not fit
    await limiter.hit("client:a", 3)
    with pytest.raises(RateLimited):
        await limiter.check("client:a")
    with pytest.raises(ConfigError, match="ECRM_VISITOR_RATE_LIMIT='x' is not a rate limit"):
        RateLimiter("x", "ECRM_VISITOR_RATE_LIMIT")


@pytest.mark.parametrize(
    ("user_agent", "bot"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            False,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile Safari/604.1",
            False,
        ),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0 Safari/537.36",
            True,
        ),
        ("curl/8.5.0", True),
        ("python-requests/2.32.3", True),
        ("", True),
        (None, True),
    ],
)
def test_bots_are_recognised_on_collect_keys_only(user_agent: str | None, bot: bool) -> None:
    from api.ratelimit import EntryLimits, is_bot
    from core.settings import Settings

    assert is_bot(user_agent) is bot
    limits = EntryLimits(Settings())
    collect, server = Caller(Scope.COLLECT, "collect", "client:x"), Caller(Scope.SERVER, "server", "key:x")
    reason = limits.bot(collect, user_agent)
    assert (reason is not None) is bot and (reason is None or "bot" in reason)
    assert limits.bot(server, user_agent) is None  # the shop's back end may send what it likes
    assert limits.bot(Caller(Scope.ADMIN, "open", "client:x"), user_agent) is None  # open mode: local


async def test_a_visitor_is_counted_across_addresses_with_a_collect_key_only() -> None:
    from api.ratelimit import EntryLimits
    from core.settings import Settings

    limits = EntryLimits(Settings(visitor_rate_limit="2/minute"))
    first, second = Caller(Scope.COLLECT, "collect", "client:a"), Caller(Scope.COLLECT, "collect", "client:b")
    assert await limits.visitor(first, "v1") is None and await limits.visitor(second, "v1") is None
    over = await limits.visitor(first, "v1")
    assert over is not None and "per visitor" in str(over) and over.retry_after_s >= 1
    assert await limits.visitor(first, "v2") is None  # another visitor, another budget
    server = Caller(Scope.SERVER, "server", "key:s")
    assert all([await limits.visitor(server, "v1") is None for _ in range(5)])


def test_cors_origins_setting() -> None:
    assert cors_origins("") == []
    assert cors_origins("https://shop.example, http://127.0.0.1:8080/") == [
        "https://shop.example",
        "http://127.0.0.1:8080",
    ]
    assert cors_origins("*") == ["*"]
    for bad in ("shop.example", "ftp://shop.example", "https://shop.example/path"):
        with pytest.raises(ConfigError, match="ECRM_CORS_ORIGINS"):
            cors_origins(bad)


def test_the_auth_bench_compares_on_against_off_by_median() -> None:
    from benchmarks.auth import Figures, check_costs, lines

    def fig(mode: str, rate: float, p99: float) -> Figures:
        return Figures(mode, "GET /x", rate, 100.0, 0, 1.0, p99, 1.5, p99 + 1)

    out = lines([fig("off", 1000, 4.0), fig("on", 900, 5.0), fig("off", 1200, 6.0), fig("on", 1100, 5.0)], 100)
    assert out[-1] == (
        "GET /x: max rate 1000/s on vs 1100/s off (-9.1%); server p99 5.00 ms on vs 5.00 ms off (medians of 2 rounds)"
    )
    assert out[-2].startswith("cost of the checks in process, per request: key match (3 keys) ")
    costs = check_costs(200)
    assert set(costs) == {"key match (3 keys)", "rate-limit hit"} and all(0 < us < 10_000 for us in costs.values())


@pytest.mark.parametrize("keys", ["", f"server:{SERVER}"])
def test_the_openapi_document_says_who_may_call_and_what_the_collector_reads(keys: str) -> None:
    from api.main import create_app
    from core.settings import Settings

    schema = create_app(Settings(api_keys=keys, api_max_batch=7)).openapi()
    profile = schema["paths"]["/v1/customers/{customer_id}/profile"]["get"]
    assert {"401", "403"} <= set(profile["responses"])
    # open mode: a key is optional (the empty requirement); with keys it is required
    assert profile["security"] == ([{"ApiKey": ["server"]}, {}] if keys == "" else [{"ApiKey": ["server"]}])
    assert "security" not in schema["paths"]["/health/live"]["get"]
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    one, batch = body["schema"]["anyOf"]
    assert one["discriminator"]["propertyName"] == "type" and batch["maxItems"] == 7 and batch["items"] == one
    assert {"PageView", "Purchase", "OrderLine", "Item"} <= set(schema["components"]["schemas"])
    assert schema == create_app(Settings(api_keys=keys, api_max_batch=7)).openapi()  # documented once, the same


# --- open mode: loopback Host names and JSON bodies only (api/guard.py) ------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8000", True),
        ("localhost", True),
        ("LOCALHOST:1", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("127.0.0.2:80", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io:8000", False),
        ("10.0.0.1:8000", False),
        ("", False),
        (None, False),
    ],
)
def test_open_mode_answers_loopback_host_names_only(host: str | None, allowed: bool) -> None:
    from api.guard import host_refusal

    refusal = host_refusal(host)
    assert (refusal is None) == allowed, refusal
    if refusal is not None:
        assert "loopback" in refusal and "ECRM_API_KEYS" in refusal


def test_open_mode_takes_json_bodies_only() -> None:
    from api.guard import body_refusal

    assert body_refusal("POST", "application/json") is None
    assert body_refusal("POST", "Application/JSON; charset=utf-8") is None
    assert body_refusal("GET", None) is None and body_refusal("DELETE", None) is None
    for sent in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
        refusal = body_refusal("POST", sent)
        assert refusal is not None and sent.split(";")[0].lower() in refusal and "application/json" in refusal
    assert "no content type" in (body_refusal("POST", None) or "")


@pytest.mark.parametrize("keys", ["", f"collect:{COLLECT}"])
async def test_the_open_api_refuses_cross_site_bodies_and_foreign_hosts(keys: str) -> None:
    import httpx

    from api.main import create_app
    from core.settings import Settings

    app = create_app(Settings(api_keys=keys, rate_limit=""))  # the guard answers before any route: no lifespan
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        if not keys:  # with keys the route answers (a key is needed): tests/integration/test_auth.py
            beacon = await client.post("/v1/events", content=b'{"type":"item"}', headers={"content-type": "text/plain"})
            assert beacon.status_code == 415
            assert "application/json" in beacon.json()["detail"] and beacon.json()["errors"] == []
            form = await client.post("/v1/events", data={"a": "b"})
            assert form.status_code == 415
            assert (await client.get("/health/live")).status_code == 200
    async with httpx.AsyncClient(transport=transport, base_url="http://rebound.example:8000") as client:
        live = await client.get("/health/live")
        assert live.status_code == (400 if not keys else 200)
        if not keys:
            assert "rebound.example" in live.json()["detail"]
    async with httpx.AsyncClient(transport=transport, base_url="http://[::1]:9") as client:
        assert (await client.get("/health/live")).status_code == 200


def test_explain_needs_a_server_key() -> None:
    from api.routes.recommendations import check_explain

    collect = Caller(Scope.COLLECT, "collect", "client:x")
    assert check_explain(False, collect) is False
    with pytest.raises(Forbidden, match="explain=true needs a key with the server scope"):
        check_explain(True, collect)
    assert check_explain(True, Caller(Scope.SERVER, "server", "key:x")) is True
