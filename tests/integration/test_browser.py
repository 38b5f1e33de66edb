"""The shop's side in a real browser: the demo shop (runtime/shop.py) on its own origin, the tracker and widgets
(GET /tracker.js) talking to the real API with a collect key across CORS, a real worker, the embedded broker and
Valkey, driven by Playwright on Debian's headless Chromium (installed by ``make chromium``)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from core.kafka import ensure_topics, make_producer, produce_events
from core.keyspace import Keys, anonymous_pid
from core.settings import Settings, isolated
from profiles.layout import CART, SESSIONS, event_counts, split
from runtime.embedded import EmbeddedServer, free_port
from runtime.shop import ShopServer, build_shop, demo_catalogue
from runtime.simulate import SimulationConfig, simulate
from tests.conftest import start_worker, stop_worker
from tests.integration.helpers import BROWSER_UA, ApiServer, wait_committed
from trainer.training import train_once

pytestmark = pytest.mark.integration

COLLECT = "collect:browser-collect-key-0123456789"
SERVER = "server:browser-server-key-0123456789"
COLLECT_SECRET = COLLECT.split(":", 1)[1]
TITLES = {item.item_id: item.title for item in demo_catalogue(SimulationConfig())}
WAIT_MS = 20_000  # longest a page waits for something the test expects (a bound, not a timing assertion)


@dataclass
class Stack:
    settings: Settings
    api: ApiServer
    shop: ShopServer
    consent_shop: ShopServer  # the same shop, whose tag asks for consent first
    browser: Browser
    redis: redis.Redis

    def counts(self, visitor: str) -> dict[str, int]:
        """The event counts of a visitor's live profile (``n:<code>`` fields of its hash)."""
        h = self.redis.hgetall(Keys(self.settings.key_prefix).profile(anonymous_pid(visitor)))
        return event_counts(h)


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is not installed: run `make chromium` (make test does)"
    return found


@pytest.fixture(scope="module")
def stack(broker: EmbeddedServer, redis_server: EmbeddedServer) -> Iterator[Stack]:
    shop_port, consent_port = free_port(), free_port()
    origins = ",".join(f"http://127.0.0.1:{p}" for p in (shop_port, consent_port))
    settings = isolated(
        Settings(
            kafka_bootstrap=f"127.0.0.1:{broker.port}",
            redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
            topic_partitions=2,
            retrain_check_s=3600.0,
            model_poll_s=0.1,
            api_keys=f"{COLLECT},{SERVER}",
            cors_origins=origins,
            rate_limit="",
        )
    )
    ensure_topics(settings)
    worker = start_worker(settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.key_prefix)
    api = ApiServer(settings)
    shop = consent_shop = None
    try:
        # the demo's history: the shop's catalogue (titles, prices, images) and visitors' sessions, then a model of
        # all of it. The model is trained once the worker has acknowledged every record: trained as soon as the
        # catalogue arrived, it raced the worker and, on a busy machine, knew only the first sessions' items (the
        # catalogue comes first), none of the fragrances a test views: the personal widget stayed on its fallback
        producer = make_producer(settings)
        history = simulate(SimulationConfig(customers=80, anonymous_visitors=20))
        records = produce_events(producer, settings.events_topic, history)
        producer.close()
        wait_committed(settings, records, timeout=120)
        assert client.hget(keys.item("sku-00499"), "title") is not None  # the catalogue in Redis
        assert train_once(settings).version is not None
        api.start()
        engine = api.url
        shop = ShopServer(build_shop(engine, COLLECT_SECRET), shop_port).start()
        consent_shop = ShopServer(build_shop(engine, COLLECT_SECRET, consent=True), consent_port).start()
        with sync_playwright() as pw:
            # a shopper's browser: headless Chromium's own user agent ("HeadlessChrome") is a bot's, refused on a
            # collect key (api/ratelimit.py; test_a_headless_browser_is_a_bot_...). Set for the whole browser: a
            # context's override does not reach the keepalive requests a page sends as it goes away
            args = ["--no-sandbox", f"--user-agent={BROWSER_UA}"]
            browser = pw.chromium.launch(executable_path=chromium_path(), args=args)
            yield Stack(settings, api, shop, consent_shop, browser, client)
            browser.close()
    finally:
        for server in (shop, consent_shop):
            if server is not None:
                server.stop()
        api.stop()
        stop_worker(worker)


@dataclass
class Visit:
    """A fresh visitor (own cookies) with what their page printed and sent."""

    context: BrowserContext
    page: Page
    errors: list[str]  # console errors and uncaught exceptions
    sent: list[tuple[dict[str, str], list[dict[str, Any]]]]  # (headers, events) of each POST /v1/events

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The distinct events of a type sent (an event sent again after a failed attempt, a 503 when the broker is
        slow, has the same event id: at-least-once delivery, counted once by the worker)."""
        unique = {e["event_id"]: e for _, batch in self.sent for e in batch if e["type"] == kind}
        return list(unique.values())


@pytest.fixture()
def visit(stack: Stack) -> Iterator[Callable[[], Visit]]:
    contexts: list[BrowserContext] = []

    def new() -> Visit:
        context = stack.browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        seen = Visit(context, page, [], [])
        page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))

        def on_request(request: Request) -> None:
            if request.url.endswith("/v1/events") and request.method == "POST":
                seen.sent.append((request.headers, json.loads(request.post_data or "[]")))

        page.on("request", on_request)
        return seen

    yield new
    for context in contexts:
        context.close()


def until(v: Visit, predicate: Callable[[], bool], what: str | Callable[[], str], timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` while the browser runs (Playwright reports a page's requests only while it is called)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what() if callable(what) else what}")
        v.page.wait_for_timeout(200)


def cards(page: Page, widget: str) -> list[str]:
    return page.eval_on_selector_all(f"#{widget} [data-ecrm-item]", "els => els.map(e => e.dataset.ecrmItem)")


def wait_cards(page: Page, widget: str) -> list[str]:
    page.wait_for_selector(f"#{widget} [data-ecrm-item]")
    return cards(page, widget)


def test_the_demo_page_loads_with_no_console_error_and_sends_its_page_view_with_the_collect_key(
    stack: Stack, visit: Callable[[], Visit]
) -> None:
    v = visit()
    v.page.goto(stack.shop.url + "/")
    assert v.page.locator("#catalogue .card").count() == 24
    v.page.wait_for_function("() => window.ecrm && window.ecrm.anonymousId()")
    wait_cards(v.page, "personal")
    until(v, lambda: bool(v.events("page_view")), "the page view sent")
    headers, _ = v.sent[0]
    assert headers["authorization"] == f"Bearer {COLLECT_SECRET}"
    assert headers["content-type"] == "application/json"  # JSON with its type (an open API refuses others: 415)
    visitor = v.page.evaluate("ecrm.anonymousId()")
    assert v.events("page_view")[0]["anonymous_id"] == visitor
    assert any(c["name"] == "_ecrm_id" and c["value"] == visitor for c in v.context.cookies())
    until(v, lambda: stack.counts(visitor).get("page_view") == 1, "the page view in the profile")
    assert v.errors == []


HEADLESS_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0 Safari/537"


def test_a_headless_browser_is_a_bot_and_its_events_count_nothing(stack: Stack) -> None:
    context = stack.browser.new_context(user_agent=HEADLESS_UA)  # what headless Chromium says by itself
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        with page.expect_response(lambda r: r.url.endswith("/v1/events") and r.request.method == "POST") as answered:
            page.goto(stack.shop.url + "/")
        response = answered.value
        assert response.status == 403
        assert all(e["field"] == "user_agent" and "bot" in e["reason"] for e in response.json()["errors"])
        visitor = page.evaluate("ecrm.anonymousId()")
        page.wait_for_timeout(500)
        assert stack.counts(visitor) == {}  # nothing reached the visitor's profile
    finally:
        context.close()


def test_a_visitors_clicks_reach_their_profile(stack: Stack, visit: Callable[[], Visit]) -> None:
    v = visit()
    v.page.goto(stack.shop.url + "/?category=makeup")
    clicked = v.page.eval_on_selector_all("#catalogue .card", "els => els.slice(0, 3).map(e => e.dataset.id)")
    for item in clicked:
        v.page.click(f'#catalogue .card[data-id="{item}"]')
        v.page.wait_for_selector(f'[data-ecrm-product="{item}"]')
        v.page.go_back()
    v.page.goto(f"{stack.shop.url}/p/{clicked[0]}")
    v.page.click("#add")
    visitor = v.page.evaluate("ecrm.anonymousId()")
    keys = Keys(stack.settings.key_prefix)

    def arrived() -> bool:
        recent = set(split(stack.redis.hgetall(keys.profile(anonymous_pid(visitor)))).items)
        counts = stack.counts(visitor)
        return set(clicked) <= recent and counts.get("product_view", 0) >= 4 and counts.get("add_to_cart") == 1

    until(v, arrived, lambda: f"the views and the cart addition in the profile: {stack.counts(visitor)}, {v.sent}")
    assert stack.redis.hget(keys.profile(anonymous_pid(visitor)), CART + clicked[0]) == "1"
    v.page.goto(stack.shop.url + "/cart")  # the cart page lists the line, and the cart widget what goes with it
    v.page.wait_for_selector(f'#lines [data-id="{clicked[0]}"]')
    complements = wait_cards(v.page, "cart-recs")
    assert complements and clicked[0] not in complements
    # a "session" widget: what goes with this visit's views
    v.page.evaluate(
        "() => { const d = document.createElement('div'); d.id = 'visit'; d.dataset.ecrmWidget = 'session';"
        " d.dataset.n = '3'; document.body.appendChild(d); ecrm.refresh(); }"
    )
    assert len(wait_cards(v.page, "visit")) == 3 and not set(cards(v.page, "visit")) & set(clicked)
    assert stack.redis.hget(keys.profile(anonymous_pid(visitor)), SESSIONS) == "1"  # one session cookie, all pages
    views = v.events("product_view")  # what this page sent (earlier pages' requests left with them)
    assert views and all(e["item_id"] in clicked and e["category"] == "makeup" for e in views)
    assert v.errors == []


def test_widgets_render_cards_from_the_api_and_change_after_clicks(stack: Stack, visit: Callable[[], Visit]) -> None:
    v = visit()
    v.page.goto(stack.shop.url + "/")
    before = wait_cards(v.page, "personal")
    assert v.page.get_attribute("#personal", "data-ecrm-strategy") in ("trending", "popular")  # a new visitor
    card = v.page.locator("#personal .ecrm-card").first
    assert card.locator(".ecrm-title").inner_text() == TITLES[before[0]]
    assert card.locator(".ecrm-price").inner_text().startswith("€")
    assert card.locator("img").get_attribute("src") == f"/img/{before[0]}.svg"
    assert card.get_attribute("href") == f"/p/{before[0]}"
    # a visitor looking at fragrances: the personal list follows within the page (the widget fills itself again)
    v.page.goto(stack.shop.url + "/?category=fragrance")
    viewed = v.page.eval_on_selector_all("#catalogue .card", "els => els.slice(5, 9).map(e => e.dataset.id)")
    v.page.goto(f"{stack.shop.url}/p/{viewed[0]}")
    assert v.page.inner_text("#personal-heading") == f"Because you viewed {TITLES[viewed[0]]}"
    for item in viewed[1:]:
        v.page.evaluate("item => ecrm.productView(item, {category: 'fragrance'})", item)
    started = time.monotonic()
    visitor = v.page.evaluate("ecrm.anonymousId()")
    strategy = "() => document.getElementById('personal').dataset.ecrmStrategy"
    until(
        v,
        lambda: v.page.evaluate(strategy) == "session" and not set(cards(v.page, "personal")) & set(viewed),
        lambda: f"the personal widget to follow the views: {v.page.evaluate(strategy)}, {stack.counts(visitor)}",
    )
    took = time.monotonic() - started
    print(f"the personal widget followed the views after {took:.2f}s (batching 0.1s, refresh delay 0.4s included)")
    after = cards(v.page, "personal")
    assert after != before and len(after) == 6  # the model's list now, without what was just seen
    assert wait_cards(v.page, "similar") and viewed[0] not in cards(v.page, "similar")
    assert v.errors == []


def test_a_click_on_a_recommendation_is_recorded_with_its_recommendation_id(
    stack: Stack, visit: Callable[[], Visit]
) -> None:
    v = visit()
    v.page.goto(stack.shop.url + "/p/sku-00010")
    shown = wait_cards(v.page, "similar")
    rid = v.page.get_attribute("#similar", "data-ecrm-recommendation-id")
    assert rid
    until(v, lambda: any(e["recommendation_id"] == rid for e in v.events("recommendation_view")), "the impression")
    impression = next(e for e in v.events("recommendation_view") if e["recommendation_id"] == rid)
    assert impression["item_ids"] == shown
    visitor = v.page.evaluate("ecrm.anonymousId()")
    clicks = lambda r: r.url.endswith("/v1/events") and "recommendation_click" in (r.post_data or "")  # noqa: E731
    with v.page.expect_request(clicks):
        v.page.click(f'#similar [data-ecrm-item="{shown[1]}"]')
    v.page.wait_for_selector(f'[data-ecrm-product="{shown[1]}"]')
    assert v.events("recommendation_click") == [
        {**v.events("recommendation_click")[0], "recommendation_id": rid, "item_id": shown[1]}
    ]
    until(
        v,
        lambda: (
            stack.counts(visitor).get("recommendation_click") == 1
            and stack.counts(visitor).get("recommendation_view", 0) >= 1
        ),
        "the click and the impression in the profile",
    )
    assert v.errors == []


def test_nothing_is_sent_and_no_cookie_set_before_consent(stack: Stack, visit: Callable[[], Visit]) -> None:
    v = visit()
    v.page.goto(stack.consent_shop.url + "/p/sku-00020")
    v.page.wait_for_function("() => window.ecrm")
    wait_cards(v.page, "similar")  # similar items need no visitor id: the page works before consent
    v.page.evaluate("ecrm.track('search', {query: 'before consent'})")
    v.page.wait_for_timeout(1500)  # longer than the tracker's batching delay: anything queued would be sent
    assert v.sent == [] and v.page.evaluate("ecrm.anonymousId()") is None
    assert not [c for c in v.context.cookies() if c["name"] in ("_ecrm_id", "_ecrm_s")]
    assert v.page.locator("#personal .fallback").is_visible()
    v.page.click("#consent-accept")
    until(v, lambda: bool(v.events("product_view")), "the product view after consent")
    assert v.events("product_view")[0]["item_id"] == "sku-00020" and not v.events("search")
    visitor = v.page.evaluate("ecrm.anonymousId()")
    assert any(c["name"] == "_ecrm_id" and c["value"] == visitor for c in v.context.cookies())
    # consent withdrawn: the visitor's cookies go, and nothing more is sent
    v.page.evaluate("ecrm.consent(false)")
    sent = len(v.sent)
    after = v.page.evaluate("[ecrm.anonymousId(), ecrm.track('search', {query: 'after'}), ecrm.cart()]")
    assert after == [None, False, []]
    v.page.wait_for_timeout(1000)
    assert len(v.sent) == sent and not v.events("search")
    assert {c["name"]: c["value"] for c in v.context.cookies()}.get("_ecrm_consent") == "0"
    assert not [c for c in v.context.cookies() if c["name"] in ("_ecrm_id", "_ecrm_s")]
    assert v.errors == []


def test_the_page_keeps_its_content_and_shows_no_error_when_the_api_hangs(
    stack: Stack, visit: Callable[[], Visit]
) -> None:
    v = visit()
    v.page.route("**/v1/**", lambda route: None)  # every API call hangs: never answered
    v.page.goto(stack.shop.url + "/p/sku-00030")
    v.page.wait_for_function("() => window.ecrm")
    v.page.wait_for_timeout(6000)  # past the demo widgets' 5 s timeout
    assert v.page.inner_text("#title") == TITLES["sku-00030"]
    assert v.page.locator("#similar .fallback").is_visible() and cards(v.page, "similar") == []
    assert v.page.locator("#personal .fallback").is_visible()
    assert v.page.get_attribute("#similar", "data-ecrm-recommendation-id") is None
    assert "error" not in v.page.inner_text("body").lower()
    assert v.errors == []


def test_the_page_survives_the_api_being_down_and_the_tracker_delivers_once_it_is_back(
    stack: Stack, visit: Callable[[], Visit]
) -> None:
    """Pages loaded while the API is down keep their content; the events they tracked are retried with back-off,
    kept across pages while undelivered, and arrive when the API answers again."""
    api, shop = stack.api, stack.shop
    v = visit()
    v.page.goto(shop.url + "/")
    v.page.wait_for_function("() => window.ecrm && window.ecrm.anonymousId()")
    wait_cards(v.page, "personal")
    visitor = v.page.evaluate("ecrm.anonymousId()")
    api.stop()
    try:
        for item in ("sku-00040", "sku-00041"):  # tracker.js from the browser's cache; every API call refused
            v.page.goto(f"{shop.url}/p/{item}")
            v.page.wait_for_function("() => window.ecrm")
            v.page.wait_for_timeout(2500)
            assert v.page.inner_text("#title") == TITLES[item] and v.page.locator("#add").is_visible()
            assert v.page.locator("#similar .fallback").is_visible()
            assert "error" not in v.page.inner_text("body").lower()
        assert not [e for e in v.errors if "net::ERR_CONNECTION_REFUSED" not in e]  # the browser's own log line
    finally:
        api.start()
    keys = Keys(stack.settings.key_prefix)
    recent = lambda: set(split(stack.redis.hgetall(keys.profile(anonymous_pid(visitor)))).items)  # noqa: E731
    until(v, lambda: {"sku-00040", "sku-00041"} <= recent(), lambda: f"both product views: {recent()}", 60)
    v.page.wait_for_timeout(1000)
    assert stack.counts(visitor)["product_view"] == 2  # each once, though the first page's was sent again
    assert v.page.evaluate("localStorage.getItem('_ecrm_pending')") is None  # nothing left to send
