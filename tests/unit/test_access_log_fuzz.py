"""Property-based: no line, however malformed, crashes the mapper or goes uncounted."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.access_log import AccessLogMapper, Drop, Emit, Reject, redact
from ingest.patterns import LogPatterns, load_patterns, parse_patterns
from schemas import parse_event_obj

HOST = "192.0.2.44"
PATTERNS = load_patterns()
SHOP = parse_patterns(
    "rules:\n"
    "  - {name: cart, match: '/cart/(?P<sku>[^/]*)/(?P<q>[^/]*)', event: add_to_cart, item_id: '{sku}',"
    " quantity: '{q}'}\n"
    "  - {name: buy, match: '/buy/(?P<o>[^/]*)/(?P<sku>[^/]*)/(?P<p>[^/]*)', event: purchase, order_id: '{o}',"
    " item_id: '{sku}', price: '{p}', currency: EUR}\n"
)

text = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=80)
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "get", "", "G E T"])
paths = st.one_of(
    st.sampled_from(["/", "/a.png", "/blog/x/y.html", "/presentations/p/", "/cart/s/2", "/buy/o/s/1.5", "*"]),
    text.map(lambda t: "/" + t.replace(" ", "%20")),
    st.tuples(st.sampled_from(["/cart/", "/buy/o/"]), text, text).map(lambda t: f"{t[0]}{t[1]}/{t[2]}"),
)
statuses = st.one_of(st.integers(min_value=-5, max_value=1200).map(str), st.sampled_from(["-", "2OO", ""]))
dates = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%d/%b/%Y:%H:%M:%S +0000")),
    st.sampled_from(["17/May/2015:10:05:03 +0000", "31/Feb/2015:10:05:03 +0000", "17/May/2015:10:05:03 +9999"]),
    text,
)
user_agents = st.one_of(st.sampled_from(["-", "", "Googlebot/2.1", "Mozilla/5.0 Firefox/27.0"]), text)


@st.composite
def log_lines(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(min_value=0, max_value=3))
    if shape == 0:  # anything at all
        return draw(st.binary(max_size=300)).replace(b"\n", b" ")
    line = (
        f'{HOST} - - [{draw(dates)}] "{draw(methods)} {draw(paths)} HTTP/1.1" {draw(statuses)} '
        f'{draw(st.sampled_from(["-", "12", "x"]))} "{draw(text)}" "{draw(user_agents)}"'
    )
    if shape == 1:  # a well-formed line, possibly cut short
        return line.encode()[: draw(st.integers(min_value=0, max_value=len(line.encode()) + 1))]
    if shape == 2:  # a character inserted somewhere
        at = draw(st.integers(min_value=0, max_value=len(line)))
        return (line[:at] + draw(st.sampled_from(['"', "\\", "[", "]", " ", "\x00", "é"])) + line[at:]).encode()
    return line.encode()


@pytest.mark.parametrize("patterns", [PATTERNS, SHOP], ids=["default", "shop"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(log_lines(), min_size=1, max_size=25))
def test_every_line_is_counted_once_and_nothing_crashes(patterns: LogPatterns, batch: list[bytes]) -> None:
    mapper = AccessLogMapper(patterns, "fuzz")
    outcomes = [mapper.process(n, raw) for n, raw in enumerate(batch, 1)]
    tally = mapper.tally
    assert tally.lines == len(batch) == tally.accounted
    assert sum(isinstance(o, Reject) for o in outcomes) == tally.rejects
    assert sum(isinstance(o, Emit) for o in outcomes) == sum(tally.events.values())
    for outcome in outcomes:
        assert isinstance(outcome, Emit | Drop | Reject)
        if isinstance(outcome, Emit):
            parse_event_obj(outcome.event)
            assert HOST not in orjson.dumps(outcome.event).decode()
        if isinstance(outcome, Reject):
            assert HOST not in outcome.reason


@settings(max_examples=100, deadline=None)
@given(raw=log_lines())
def test_redacted_rejects_never_show_the_client(raw: bytes) -> None:
    assert HOST not in redact(raw.decode("utf-8", "replace"))


def test_a_whole_file_of_noise_is_counted() -> None:
    mapper = AccessLogMapper(PATTERNS, "fuzz")
    for n, raw in enumerate([b"\x00" * 10, b"\xff\xfe", b" " * 5, b'"' * 9, b"[" * 3], 1):
        assert isinstance(mapper.process(n, raw), Reject)
    assert mapper.tally.rejects == mapper.tally.lines == 5
