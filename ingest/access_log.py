"""Web server access logs (Apache/Nginx "combined" or "common" format) to engine events.

Parsing uses the ``apachelogs`` library; bots are recognised by ``crawlerdetect`` plus the patterns file.
Each line ends in exactly one bucket, decided in this order:

1. ``rejected``: the line does not parse, or the event it makes does not validate (:func:`schemas.encode_event`);
2. ``asset``: a static asset or a feed (by extension or pattern), whatever its status or client;
3. ``error``: a failed request (status >= 400, or no request line at all);
4. ``bot``: a crawler, feed reader or script;
5. ``ignored``: redirects and other statuses, rules with ``event: ignore``, non-GET requests and non-page downloads
   that no rule matched;
6. an event: the first matching rule's, else ``page_view`` for a successful GET of an HTML page.

Privacy: the client address is only ever an input of a keyed hash (HMAC-SHA256 with a salt). The visitor is
``anonymous_id = HMAC(salt, address + user agent)``; event ids are ``HMAC(salt, line number + line)``, keyed too,
since an unkeyed hash of a line could be reversed by trying every IPv4 address.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from apachelogs import COMBINED, COMMON, LogParser
from crawlerdetect import CrawlerDetect

from ingest.patterns import LogPatterns, Rule
from schemas import EventLimits, InvalidEvent, encode_event

LogFormat = Literal["combined", "common"]
FORMATS: dict[str, str] = {"combined": COMBINED, "common": COMMON}
SESSION_GAP = timedelta(minutes=30)
MAX_TEXT = 4096  # the schema's limit for url, referrer and user agent: longer values are cut
_MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)

Bucket = Literal["asset", "error", "bot", "ignored"]


# --- outcomes of one line ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """The line became this (validated) event."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Drop:
    """The line was dropped on purpose: which bucket, and a short reason (a status, a rule name...)."""

    bucket: Bucket
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    """The line is malformed or made an invalid event: why (never containing the client address)."""

    reason: str


Outcome = Emit | Drop | Reject


@dataclass
class LogTally:
    """Counts of lines by bucket. Every line read is counted in exactly one of them."""

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    assets: int = 0
    errors: int = 0
    bots: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    rejects: int = 0
    sessions: int = 0

    def record(self, outcome: Outcome) -> None:
        self.lines += 1
        if isinstance(outcome, Emit):
            self.events[str(outcome.event["type"])] += 1
        elif isinstance(outcome, Reject):
            self.rejects += 1
        elif outcome.bucket == "asset":
            self.assets += 1
        elif outcome.bucket == "error":
            self.errors += 1
        elif outcome.bucket == "bot":
            self.bots += 1
        else:
            self.ignored[outcome.reason] += 1

    @property
    def accounted(self) -> int:
        """The sum over all buckets: equals :attr:`lines`."""
        buckets = self.assets + self.errors + self.bots + self.rejects
        return buckets + sum(self.events.values()) + sum(self.ignored.values())


# --- parsing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """The fields of one access-log line that the mapping needs."""

    host: str
    time: datetime
    request_line: str | None
    status: int | None
    referrer: str | None
    user_agent: str | None


class LogLineError(ValueError):
    """A line that is not an access-log entry of the expected format (the message never quotes the line)."""


class LineParser:
    """An ``apachelogs`` parser for one format, with errors mapped to :class:`LogLineError`."""

    def __init__(self, log_format: LogFormat = "combined") -> None:
        self.log_format = log_format
        self._parser = LogParser(FORMATS[log_format], encoding="utf-8", errors="replace")

    def parse(self, text: str) -> AccessRecord:
        try:
            entry = self._parser.parse(text)
        except (ValueError, OverflowError) as exc:
            raise LogLineError(self._reason(exc)) from exc
        headers = getattr(entry, "headers_in", None) or {}
        when = entry.request_time
        if not isinstance(when, datetime) or not isinstance(entry.remote_host, str):
            raise LogLineError("no time or client address")
        return AccessRecord(
            host=entry.remote_host,
            time=when,
            request_line=entry.request_line,
            status=entry.final_status,
            referrer=headers.get("Referer"),
            user_agent=headers.get("User-Agent"),
        )

    def _reason(self, exc: Exception) -> str:
        if type(exc).__name__ == "InvalidEntryError":
            return f"does not match the {self.log_format} log format"
        return f"bad field value: {type(exc).__name__}: {str(exc)[:200]}"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    url: str  # path with query string


def split_request(request_line: str | None) -> Request | None:
    """``"GET /a?b HTTP/1.1"`` -> Request; None when the request line is missing or not of that shape."""
    if not request_line:
        return None
    parts = request_line.split(" ")
    if len(parts) not in (2, 3) or not parts[0].isalpha():
        return None
    target = parts[1]
    if target.lower().startswith(("http://", "https://")):  # absolute form (proxies): keep path and query
        after = target.split("//", 1)[1]
        target = "/" + after.split("/", 1)[1] if "/" in after else "/"
    if not target.startswith("/"):
        return None
    return Request(method=parts[0].upper(), path=target.split("?", 1)[0], url=target)


# --- visitors, sessions, ids ---------------------------------------------------------------------------------------


class Anonymizer:
    """Keyed hashes: the client address and user agent never leave this object."""

    def __init__(self, salt: str) -> None:
        if not salt:
            raise ValueError("the salt must not be empty")
        self._key = salt.encode()

    def _digest(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def anonymous_id(self, host: str, user_agent: str | None) -> str:
        return "v_" + self._digest(f"{host}\n{user_agent or ''}".encode())[:32]

    def event_id(self, line_number: int, raw_line: bytes) -> str:
        return "log_" + self._digest(f"{line_number}\n".encode() + raw_line)[:40]


class Sessionizer:
    """Cuts a visitor's events into sessions after ``gap`` of inactivity.

    The session id is a hash of the anonymous id and the session's first event time, so the same file always
    gives the same ids. Lines slightly out of order (as in real logs) stay in their session; a jump back by more
    than ``gap`` starts a new one. Visitors idle for long are forgotten now and then, to bound memory.
    """

    def __init__(self, gap: timedelta = SESSION_GAP, prune_every: int = 10_000) -> None:
        self.gap = gap
        self.sessions = 0
        self._open: dict[str, tuple[datetime, datetime, str]] = {}  # visitor -> (start, last seen, session id)
        self._prune_every = prune_every
        self._seen = 0
        self._newest: datetime | None = None

    def session_id(self, visitor: str, when: datetime) -> str:
        self._tick(when)
        current = self._open.get(visitor)
        if current is not None:
            start, last, sid = current
            if start - self.gap <= when <= last + self.gap:
                self._open[visitor] = (start, max(last, when), sid)
                return sid
        sid = "s_" + hashlib.sha256(f"{visitor}|{when.isoformat()}".encode()).hexdigest()[:32]
        self._open[visitor] = (when, when, sid)
        self.sessions += 1
        return sid

    def _tick(self, when: datetime) -> None:
        self._newest = when if self._newest is None else max(self._newest, when)
        self._seen += 1
        if self._seen % self._prune_every == 0:
            horizon = self._newest - 2 * self.gap
            self._open = {v: s for v, s in self._open.items() if s[1] >= horizon}


class BotDetector:
    """crawlerdetect, plus the patterns file's own bot patterns and its empty-user-agent rule."""

    def __init__(self, patterns: LogPatterns, empty_is_bot: bool) -> None:
        self._patterns = patterns
        self._empty_is_bot = empty_is_bot
        self._crawlers = CrawlerDetect()
        self._cache: dict[str, bool] = {}

    def is_bot(self, user_agent: str | None) -> bool:
        ua = (user_agent or "").strip()
        if not ua or ua == "-":
            return self._empty_is_bot
        known = self._cache.get(ua)
        if known is None:
            known = bool(self._crawlers.is_crawler(ua)) or self._patterns.is_listed_bot(ua)
            if len(self._cache) < 100_000:
                self._cache[ua] = known
        return known


# --- the mapping ---------------------------------------------------------------------------------------------------


class FieldValueError(ValueError):
    """A rule's captured value cannot be used (e.g. a quantity that is not a whole number)."""


class AccessLogMapper:
    """Maps each line of one access log to an :data:`Outcome`; keeps session state and the tally."""

    def __init__(
        self,
        patterns: LogPatterns,
        salt: str,
        log_format: LogFormat = "combined",
        session_gap: timedelta = SESSION_GAP,
        limits: EventLimits | None = None,
    ) -> None:
        if not salt:
            raise ValueError("a secret salt is required: without one, anonymous ids could be linked to addresses")
        self.patterns = patterns
        self.limits = limits or EventLimits()
        self.tally = LogTally()
        self._parser = LineParser(log_format)
        self._anonymizer = Anonymizer(salt)
        self._sessions = Sessionizer(session_gap)
        self._bots = BotDetector(patterns, empty_is_bot=patterns.empty_user_agent_is_bot and log_format == "combined")

    def process(self, line_number: int, raw: bytes) -> Outcome:
        """Classify one raw line (bytes, with or without its newline) and count it."""
        outcome = self._outcome(line_number, raw.rstrip(b"\r\n"))
        self.tally.record(outcome)
        self.tally.sessions = self._sessions.sessions
        return outcome

    def _outcome(self, line_number: int, raw: bytes) -> Outcome:
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            return Reject("empty line")
        try:
            record = self._parser.parse(text)
        except LogLineError as exc:
            return Reject(str(exc))
        try:
            when = record.time.astimezone(UTC)
        except (OverflowError, ValueError):
            return Reject("time out of range")
        if not self.limits.floor <= when < _MAX_TIME:
            return Reject(f"time out of range ({when.year})")
        return self._classify(line_number, raw, record, when)

    def _classify(self, line_number: int, raw: bytes, record: AccessRecord, when: datetime) -> Outcome:
        request = split_request(record.request_line)
        status = record.status
        if request is None:
            failed = status is None or status >= 400
            return Drop("error", str(status)) if failed else Drop("ignored", "no request line")
        if self.patterns.is_asset(request.path, request.url):
            return Drop("asset")
        if status is None or status >= 400:
            return Drop("error", str(status))
        if self._bots.is_bot(record.user_agent):
            return Drop("bot")
        if not (200 <= status < 300 or status == 304):
            return Drop("ignored", "redirect" if 300 <= status < 400 else f"status {status}")
        matched = self.patterns.first_match(request.method, request.path, request.url)
        if matched is not None and matched[0].event == "ignore":
            return Drop("ignored", f"rule {matched[0].name}")
        if matched is None and not (request.method == "GET" and self.patterns.is_page(request.path)):
            return Drop("ignored", "not a page" if request.method == "GET" else f"method {request.method}")
        try:
            specific = _rule_fields(*matched) if matched is not None else {"type": "page_view"}
        except FieldValueError as exc:
            return Reject(f"rule {matched[0].name if matched else '?'}: {exc}")
        event = self._common_fields(line_number, raw, record, request, when) | specific
        return _validated(event, self.limits)

    def _common_fields(
        self, line_number: int, raw: bytes, record: AccessRecord, request: Request, when: datetime
    ) -> dict[str, Any]:
        visitor = self._anonymizer.anonymous_id(record.host, record.user_agent)
        event: dict[str, Any] = {
            "event_id": self._anonymizer.event_id(line_number, raw),
            "timestamp": when.isoformat(),
            "anonymous_id": visitor,
            "session_id": self._sessions.session_id(visitor, when),
            "url": request.url[:MAX_TEXT],
        }
        if record.referrer and record.referrer != "-":
            event["referrer"] = record.referrer[:MAX_TEXT]
        if record.user_agent and record.user_agent != "-":
            event["user_agent"] = record.user_agent[:MAX_TEXT]
        return event


def _validated(event: dict[str, Any], limits: EventLimits) -> Outcome:
    try:
        encode_event(event, limits)
    except InvalidEvent as exc:
        return Reject(f"invalid {event.get('type')} event: " + "; ".join(f"{e.field}: {e.reason}" for e in exc.errors))
    return Emit(event)


def _rule_fields(rule: Rule, groups: dict[str, str]) -> dict[str, Any]:
    """The event-specific fields a matched rule makes from its named groups."""
    values = rule.render(groups)
    fields: dict[str, Any] = {"type": rule.event}
    if rule.event == "purchase":
        line: dict[str, Any] = {
            "item_id": values.get("item_id"),
            "quantity": _whole(values.get("quantity", "1"), "quantity"),
            "unit_price": _amount(values.get("price", "0"), "price"),
        }
        if "category" in values:
            line["category"] = values["category"]
        return fields | {"order_id": values.get("order_id"), "lines": [line], "currency": rule.currency}
    for name in ("item_id", "category", "title", "query"):
        if name in values:
            fields[name] = values[name]
    if "quantity" in values:
        fields["quantity"] = _whole(values["quantity"], "quantity")
    if "price" in values:
        fields["price"] = _amount(values["price"], "price")
    return fields


_WHOLE = re.compile(r"\d{1,9}")


def _whole(value: str, name: str) -> int:
    if not _WHOLE.fullmatch(value.strip()):
        raise FieldValueError(f"{name} {value[:40]!r} is not a whole number")
    return int(value)


def _amount(value: str, name: str) -> float:
    try:
        amount = float(value)
    except ValueError as exc:
        raise FieldValueError(f"{name} {value[:40]!r} is not a number") from exc
    if not math.isfinite(amount):
        raise FieldValueError(f"{name} {value[:40]!r} is not a finite number")
    return amount


# --- rejects -------------------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])|[0-9A-Fa-f:]*::[0-9A-Fa-f:.]*")


def redact(text: str) -> str:
    """A rejected line as it may be written to the rejects file: the client field and any IP address masked."""
    head, sep, rest = text.strip().partition(" ")
    masked = "<client>" + sep + rest if sep else "<client>" if head else ""
    return _IPV6.sub("<ip>", _IPV4.sub("<ip>", masked))
