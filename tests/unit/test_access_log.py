"""ingest.access_log on the shared Apache sample and on hand-made lines."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from ingest.access_log import (
    AccessLogMapper,
    Anonymizer,
    BotDetector,
    Drop,
    Emit,
    LogTally,
    Reject,
    Sessionizer,
    redact,
    split_request,
)
from ingest.patterns import LogPatterns, load_patterns, parse_patterns
from schemas import parse_event_obj

SAMPLE = "apache_access_sample.log"
SALT = "test-salt"

# A plain reading of the combined format, independent of the parser under test.
_Q = r'"(?:[^"\\]|\\.)*"'
COMBINED_LINE = re.compile(rf"^(\S+) \S+ \S+ \[[^\]]+\] ({_Q}) (\d{{3}}) (?:\d+|-) {_Q} ({_Q})$")
ASSET_EXT = {"png", "jpg", "jpeg", "gif", "ico", "svg", "css", "js", "ttf", "woff", "swf", "json", "map"}
FEED_OR_ROBOTS = re.compile(r"[?&]flav=(?:rss\d*|atom)\b|^/robots\.txt|^/(?:images|icons)/")


def line(
    path: str = "/about/",
    status: int = 200,
    ua: str = "Mozilla/5.0 (X11; Linux x86_64; rv:27.0) Gecko/20100101 Firefox/27.0",
    host: str = "203.0.113.7",
    when: str = "17/May/2015:10:05:03 +0000",
    method: str = "GET",
) -> bytes:
    return f'{host} - - [{when}] "{method} {path} HTTP/1.1" {status} 512 "-" "{ua}"'.encode()


@pytest.fixture(scope="module")
def patterns() -> LogPatterns:
    return load_patterns()


@pytest.fixture(scope="module")
def sample_lines(datasets: Path) -> list[bytes]:
    return (datasets / SAMPLE).read_bytes().splitlines()


@pytest.fixture(scope="module")
def sample_run(patterns: LogPatterns, sample_lines: list[bytes]) -> tuple[LogTally, list[Emit | Drop | Reject]]:
    mapper = AccessLogMapper(patterns, SALT)
    outcomes = [mapper.process(n, raw) for n, raw in enumerate(sample_lines, 1)]
    return mapper.tally, outcomes


def test_sample_figures(sample_run: tuple[LogTally, list[Emit | Drop | Reject]]) -> None:
    tally, _ = sample_run
    assert tally.lines == 10_000
    assert dict(tally.events) == {"page_view": 367, "product_view": 1212}
    assert (tally.assets, tally.errors, tally.bots, tally.rejects) == (6538, 170, 1527, 1)
    assert dict(tally.ignored) == {"not a page": 100, "redirect": 63, "method HEAD": 20, "method POST": 2}
    assert tally.accounted == tally.lines
    assert tally.sessions == 1064


def test_sample_rejects_are_the_lines_a_plain_reading_refuses(
    sample_run: tuple[LogTally, list[Emit | Drop | Reject]], sample_lines: list[bytes]
) -> None:
    _, outcomes = sample_run
    refused = [n for n, raw in enumerate(sample_lines, 1) if not COMBINED_LINE.match(raw.decode())]
    assert refused == [8899]  # a line cut short inside its user agent
    assert [n for n, o in enumerate(outcomes, 1) if isinstance(o, Reject)] == refused


def _plain(raw: bytes) -> tuple[str, int, str] | None:
    found = COMBINED_LINE.match(raw.decode())
    if found is None:
        return None
    parts = found.group(2)[1:-1].split(" ")
    return (parts[1] if len(parts) > 1 else ""), int(found.group(3)), found.group(4)[1:-1]


def test_sample_assets_and_errors_match_a_plain_count(
    sample_run: tuple[LogTally, list[Emit | Drop | Reject]], sample_lines: list[bytes]
) -> None:
    tally, _ = sample_run
    assets = errors = 0
    for raw in sample_lines:
        plain = _plain(raw)
        if plain is None:
            continue
        target, status, _ = plain
        path = target.split("?")[0]
        ext = path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in path.rsplit("/", 1)[-1] else ""
        if ext in ASSET_EXT or FEED_OR_ROBOTS.search(target):
            assets += 1
        elif status >= 400:
            errors += 1
    assert (tally.assets, tally.errors) == (assets, errors)
    assert assets > 6000 and errors > 100


def test_sample_bots_include_every_self_declared_robot(
    sample_run: tuple[LogTally, list[Emit | Drop | Reject]], sample_lines: list[bytes]
) -> None:
    _, outcomes = sample_run
    declared = re.compile(r"bot|spider|crawl|slurp|feedfetcher|feedparser", re.I)
    for raw, outcome in zip(sample_lines, outcomes, strict=True):
        plain = _plain(raw)
        if plain is not None and declared.search(plain[2]):
            assert not isinstance(outcome, Emit), raw


def test_sample_events_are_valid_unique_and_carry_no_address(
    sample_run: tuple[LogTally, list[Emit | Drop | Reject]], sample_lines: list[bytes]
) -> None:
    _, outcomes = sample_run
    events = [o.event for o in outcomes if isinstance(o, Emit)]
    for event in events:
        parse_event_obj(event)
    assert len({e["event_id"] for e in events}) == len(events)
    hosts = {raw.split(b" ", 1)[0].decode() for raw in sample_lines}
    blob = orjson.dumps(events).decode()
    assert not [h for h in hosts if h in blob]
    assert len({e["anonymous_id"] for e in events}) > 300


def test_sample_items_and_categories(sample_run: tuple[LogTally, list[Emit | Drop | Reject]]) -> None:
    _, outcomes = sample_run
    views = Counter(
        (o.event["item_id"], o.event.get("category"))
        for o in outcomes
        if isinstance(o, Emit) and o.event["type"] == "product_view"
    )
    assert views[("project:xdotool", "projects")] == 346
    assert views[("presentation:logstash-puppetconf-2012", "presentations")] == 48
    assert views[("blog:ssl-latency", "blog/geekery")] == 73
    categories = {c for _, c in views}
    assert {c.split("/")[0] for c in categories if c} == {"projects", "presentations", "articles", "blog"}
    assert {"blog", "blog/geekery", "blog/rants"} <= categories


def test_ingesting_again_gives_the_same_events(
    patterns: LogPatterns, sample_lines: list[bytes], sample_run: tuple[LogTally, list[Emit | Drop | Reject]]
) -> None:
    again = AccessLogMapper(patterns, SALT)
    first = [o.event for o in sample_run[1] if isinstance(o, Emit)]
    second = [o.event for n, raw in enumerate(sample_lines, 1) if isinstance(o := again.process(n, raw), Emit)]
    assert first == second
    other_salt = AccessLogMapper(patterns, "another-salt")
    third = [o.event for n, raw in enumerate(sample_lines, 1) if isinstance(o := other_salt.process(n, raw), Emit)]
    assert {e["anonymous_id"] for e in third}.isdisjoint({e["anonymous_id"] for e in first})


def test_sessions_never_span_thirty_idle_minutes(sample_run: tuple[LogTally, list[Emit | Drop | Reject]]) -> None:
    by_session: dict[str, list[datetime]] = {}
    for outcome in sample_run[1]:
        if isinstance(outcome, Emit):
            by_session.setdefault(outcome.event["session_id"], []).append(
                datetime.fromisoformat(outcome.event["timestamp"])
            )
    for times in by_session.values():
        times.sort()
        assert all(b - a <= timedelta(minutes=30) for a, b in zip(times, times[1:], strict=False))


# --- single lines ------------------------------------------------------------------------------------------------


def test_line_buckets(patterns: LogPatterns) -> None:
    mapper = AccessLogMapper(patterns, SALT)
    assert isinstance(mapper.process(1, line("/blog/geekery/ssl-latency.html")), Emit)
    assert mapper.process(2, line("/style2.css")) == Drop("asset")
    assert mapper.process(3, line("/?flav=rss20")) == Drop("asset")
    assert mapper.process(4, line("/missing/", status=404)) == Drop("error", "404")
    assert mapper.process(5, line("/", ua="Mozilla/5.0 (compatible; Googlebot/2.1)")) == Drop("bot")
    assert mapper.process(6, line("/", ua="-")) == Drop("bot")
    assert mapper.process(7, line("/old", status=301)) == Drop("ignored", "redirect")
    assert mapper.process(8, line("/", method="HEAD")) == Drop("ignored", "method HEAD")
    assert mapper.process(9, line("/files/x.tar.gz")) == Drop("ignored", "not a page")
    assert isinstance(mapper.process(10, b"not a log line"), Reject)
    assert mapper.process(11, b"") == Reject("empty line")
    assert isinstance(mapper.process(12, line(when="17/May/1999:10:05:03 +0000")), Reject)
    assert mapper.tally.lines == 12 and mapper.tally.accounted == 12


def test_product_view_event(patterns: LogPatterns) -> None:
    outcome = AccessLogMapper(patterns, SALT).process(7, line("/presentations/vim/"))
    assert isinstance(outcome, Emit)
    event = outcome.event
    assert event["type"] == "product_view"
    assert (event["item_id"], event["category"]) == ("presentation:vim", "presentations")
    assert event["timestamp"] == "2015-05-17T10:05:03+00:00"
    assert event["anonymous_id"] == Anonymizer(SALT).anonymous_id("203.0.113.7", event["user_agent"])
    assert event["event_id"] == Anonymizer(SALT).event_id(7, line("/presentations/vim/"))
    assert "203.0.113.7" not in orjson.dumps(event).decode()
    assert "referrer" not in event


def test_timezones_are_converted_to_utc(patterns: LogPatterns) -> None:
    outcome = AccessLogMapper(patterns, SALT).process(1, line("/", when="17/May/2015:12:05:03 +0200"))
    assert isinstance(outcome, Emit)
    assert outcome.event["timestamp"] == "2015-05-17T10:05:03+00:00"


def test_common_format_has_no_bot_detection_by_empty_agent(patterns: LogPatterns) -> None:
    mapper = AccessLogMapper(patterns, SALT, log_format="common")
    outcome = mapper.process(1, b'198.51.100.1 - - [17/May/2015:10:05:03 +0000] "GET /about/ HTTP/1.0" 200 12')
    assert isinstance(outcome, Emit)
    assert "user_agent" not in outcome.event
    assert isinstance(mapper.process(2, line("/about/")), Reject)  # a combined line is not a common one


SHOP = """
rules:
  - name: cart
    match: '/cart/add\\?item=(?P<sku>[\\w-]+)(?:&qty=(?P<qty>\\w+))?'
    target: url
    methods: [GET, POST]
    event: add_to_cart
    item_id: '{sku}'
    quantity: '{qty}'
  - name: confirm
    match: '/order/(?P<order>\\w+)/done\\?item=(?P<sku>[\\w%-]+)&price=(?P<price>[^&]+)'
    target: url
    event: purchase
    order_id: '{order}'
    item_id: '{sku}'
    price: '{price}'
    currency: EUR
  - name: admin
    match: '/admin/.*'
    event: ignore
  - name: search
    match: '/search\\?q=(?P<q>[^&]*)'
    target: url
    event: search
    query: '{q}'
"""


def test_shop_rules() -> None:
    mapper = AccessLogMapper(parse_patterns(SHOP), SALT)
    cart = mapper.process(1, line("/cart/add?item=sku-1&qty=3", method="POST"))
    assert isinstance(cart, Emit)
    assert (cart.event["type"], cart.event["item_id"], cart.event["quantity"]) == ("add_to_cart", "sku-1", 3)
    no_qty = mapper.process(2, line("/cart/add?item=sku-1"))
    assert isinstance(no_qty, Emit) and "quantity" not in no_qty.event
    bad_qty = mapper.process(3, line("/cart/add?item=sku-1&qty=many"))
    assert isinstance(bad_qty, Reject) and "quantity" in bad_qty.reason
    bought = mapper.process(4, line("/order/A17/done?item=sku%2D2&price=9.5"))
    assert isinstance(bought, Emit)
    assert bought.event["lines"] == [{"item_id": "sku-2", "quantity": 1, "unit_price": 9.5}]
    assert (bought.event["order_id"], bought.event["currency"]) == ("A17", "EUR")
    bad_price = mapper.process(5, line("/order/A17/done?item=x&price=nan"))
    assert isinstance(bad_price, Reject)
    assert mapper.process(6, line("/admin/users")) == Drop("ignored", "rule admin")
    found = mapper.process(7, line("/search?q=red+shoes"))
    assert isinstance(found, Emit) and found.event["query"] == "red shoes"
    empty = mapper.process(8, line("/search?q="))
    assert isinstance(empty, Reject) and "query" in empty.reason  # the schema refuses an empty query


def test_schema_limits_reject_rather_than_crash(patterns: LogPatterns) -> None:
    mapper = AccessLogMapper(patterns, SALT)
    long_slug = "x" * 300
    too_long = mapper.process(1, line(f"/presentations/{long_slug}/"))
    assert isinstance(too_long, Reject) and "item_id" in too_long.reason
    long_url = mapper.process(2, line("/about/?" + "a" * 5000))
    assert isinstance(long_url, Emit) and len(long_url.event["url"]) == 4096


# --- helpers -----------------------------------------------------------------------------------------------------


def test_split_request() -> None:
    req = split_request("GET /a/b.html?x=1 HTTP/1.1")
    assert req is not None and (req.method, req.path, req.url) == ("GET", "/a/b.html", "/a/b.html?x=1")
    absolute = split_request("GET http://example.com/a?b HTTP/1.0")
    assert absolute is not None and (absolute.path, absolute.url) == ("/a", "/a?b")
    assert split_request(None) is None
    assert split_request("GARBAGE") is None
    assert split_request("GET * HTTP/1.1") is None


def test_sessionizer_cuts_after_the_gap() -> None:
    s = Sessionizer(timedelta(minutes=30))
    t0 = datetime(2015, 5, 17, 10, 0, tzinfo=UTC)
    first = s.session_id("v", t0)
    assert s.session_id("v", t0 + timedelta(minutes=29)) == first
    assert s.session_id("v", t0 + timedelta(minutes=25)) == first  # slightly out of order: same session
    assert s.session_id("v", t0 + timedelta(minutes=58)) == first  # 29 minutes after the last one
    later = s.session_id("v", t0 + timedelta(minutes=89))
    assert later != first
    assert s.session_id("w", t0) != first  # another visitor
    assert Sessionizer().session_id("v", t0) == first  # deterministic
    assert s.sessions == 3


def test_sessionizer_forgets_idle_visitors_but_stays_deterministic() -> None:
    s = Sessionizer(timedelta(minutes=30), prune_every=2)
    t0 = datetime(2015, 5, 17, 10, 0, tzinfo=UTC)
    a = s.session_id("a", t0)
    s.session_id("b", t0 + timedelta(hours=3))
    assert s.session_id("a", t0 + timedelta(hours=3, minutes=1)) != a


def test_bot_detector(patterns: LogPatterns) -> None:
    bots = BotDetector(patterns, empty_is_bot=True)
    assert bots.is_bot("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)")
    assert bots.is_bot("UniversalFeedParser/4.2-pre-314-svn +http://feedparser.org/")
    assert bots.is_bot("curl/7.29.0")
    assert bots.is_bot(None) and bots.is_bot("-")
    assert not bots.is_bot("Mozilla/5.0 (Windows NT 6.1; WOW64; rv:27.0) Gecko/20100101 Firefox/27.0")
    assert not BotDetector(patterns, empty_is_bot=False).is_bot(None)


def test_redact_masks_addresses() -> None:
    text = '203.0.113.7 - - [17/May/2015:10:05:03 +0000] "GET /?ip=198.51.100.2&v6=2001:db8::1 HTTP/1.1" 200'
    masked = redact(text)
    assert "203.0.113.7" not in masked and "198.51.100.2" not in masked and "2001:db8::1" not in masked
    assert masked.startswith("<client> - - [17/May/2015:10:05:03 +0000]")
    assert redact("host.example.com garbage") == "<client> garbage"
    assert redact("") == ""
