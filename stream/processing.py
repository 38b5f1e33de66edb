"""One batch of raw Kafka messages -> validated plans -> Redis, and invalid messages -> dead-letter envelopes.

Independent of Faust: the agent (stream/agents.py) only feeds batches in, so this is tested directly too. A batch is
prepared (validated and planned, no I/O: :meth:`BatchProcessor.prepare`) and then applied (Redis, dead letters:
:meth:`BatchProcessor.apply`); the agent prepares the next batch while the previous one is applied.

**Tenants.** A message's tenant is its ``tenant`` header (none: the tenant ``default``); a message of a tenant that
is not a valid name or not one this engine hosts (``ECRM_TENANTS`` and the tenants ``ECRM_API_KEYS`` names) goes
to the dead-letter topic. A batch is applied tenant by tenant, in the order of each tenant's first message, each
tenant's events in their order and with that tenant's keys (its chunks: one global call each, in its own slot).
Redeliveries stay exact: a tenant's applied offsets record, per partition, the highest offset among its own events,
which grows as the partition is read, so any redelivered event of that tenant is at or below it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from core import metrics
from core.errors import StoreRefused, StoreUnavailable
from core.scopes import Scope, claim_refusal, scope_refusal, trusted
from core.settings import Settings
from core.tenants import DEFAULT_TENANT, TENANT_HEADER, TENANT_PATTERN, configured_tenants
from merchandising.campaign_source import CampaignsSource, campaigns_path
from merchandising.campaigns import CampaignSet, tag_of
from profiles.campaigns import served_digest
from profiles.script import Origin
from profiles.store import APPLIED, DUPLICATE, ERASED, ProfileStore, Status
from profiles.updates import DIRECT, CampaignOutcome, Plan, plan_update
from schemas.events import (
    EVENT_TYPES,
    Behaviour,
    FieldError,
    InvalidEvent,
    Item,
    Purchase,
    RecommendationClick,
    parse_event,
)

log = logging.getLogger(__name__)

Envelope = dict[str, Any]


class RawMessage(NamedTuple):
    """A message as read from Kafka (a named tuple: immutable, and built for every event at a quarter of a frozen
    dataclass's cost)."""

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    source: str = DIRECT  # the ``source`` header: the API key scope that sent it, else a producer of its own
    timestamp_ms: float | None = None  # the record's timestamp (when it was produced), if the broker gave one
    client: str | None = None  # the ``client`` header: a digest of a collect key's sender (its network address)
    tenant: str = DEFAULT_TENANT  # the ``tenant`` header, as sent (checked by :meth:`BatchProcessor.prepare`)


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    erased: int = 0
    dead_lettered: list[Envelope] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class PreparedBatch:
    """A batch validated and planned, not yet written: the plans with their messages, the dead letters so far."""

    size: int
    plans: list[Plan] = field(default_factory=list)
    plan_msgs: list[RawMessage] = field(default_factory=list)
    result: BatchResult = field(default_factory=BatchResult)
    seconds: float = 0.0  # the time spent preparing it (part of ecrm_batch_processing_seconds)


DLQ_MAX_KEY_CHARS = 1024
MAX_TENANT_HEADER = 64  # characters of a tenant header kept in a dead letter (a valid name has 32 at most)


def tenant_refusal(tenant: str, hosted: frozenset[str]) -> FieldError | None:
    """Why a message's ``tenant`` header is refused: not a tenant name, or a tenant this engine does not host
    (pure)."""
    if tenant in hosted:
        return None
    shown = tenant[:MAX_TENANT_HEADER]
    if not TENANT_PATTERN.match(tenant):
        reason = (
            f"not a tenant name: {shown!r} (1-32 characters: lowercase letters, digits and '-', starting with a "
            "letter or a digit)"
        )
        return FieldError(f"(header) {TENANT_HEADER}", reason)
    reason = (
        f"the tenant {shown!r} is not hosted by this engine (hosted: {', '.join(sorted(hosted))}; add it to "
        "ECRM_TENANTS on the workers)"
    )
    return FieldError(f"(header) {TENANT_HEADER}", reason)


def dead_letter(
    msg: RawMessage, errors: list[FieldError], event_id: str | None, stage: str, max_original_bytes: int = 65_536
) -> Envelope:
    """The dead-letter record: why, where from, and the original bytes (base64, exact up to
    ``max_original_bytes``; a longer original is cut there, ``original_truncated`` says so and ``original_size``
    keeps its size), so that a record never exceeds the broker's message size."""
    original = msg.value or b""
    kept = original[:max_original_bytes]
    key = msg.key.decode("utf-8", "replace") if msg.key else None
    return {
        "reason": "; ".join(f"{e.field}: {e.reason}" for e in errors),
        "errors": [e.as_dict() for e in errors],
        "stage": stage,
        "event_id": event_id,
        "type": _event_type(msg.value),
        "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
        "tenant": msg.tenant[:MAX_TENANT_HEADER],
        "key": key[:DLQ_MAX_KEY_CHARS] if key else None,
        "original_b64": base64.b64encode(kept).decode(),
        "original": kept.decode("utf-8", "replace"),
        "original_size": len(original),
        "original_truncated": len(kept) < len(original),
        "dead_lettered_at": int(time.time() * 1000),
    }


def source_refusal(event: Behaviour | Item, source: str) -> FieldError | None:
    """Why an event may not come from ``source`` (pure). A source named after an API key scope is held to that
    scope, like the collector holds the key (:mod:`core.scopes`); the collector refuses these already, the worker
    checks again for what reaches Kafka another way. ``open`` and ``direct`` producers are trusted."""
    scope = _scope_named(source)
    return None if scope is None else scope_refusal(event, scope, source)


@functools.lru_cache(maxsize=64)
def _scope_named(source: str) -> Scope | None:
    """The scope a source is named after, else None (memoised: every event asks, and a miss raises)."""
    try:
        return Scope.named(source)
    except KeyError:
        return None


def campaign_outcomes(
    event: Behaviour | Item, campaigns: CampaignSet, source: str = DIRECT
) -> tuple[CampaignOutcome, ...]:
    """The running campaigns an event may count for (pure): a purchase the shop's server confirmed (a trusted
    ``source``: :func:`core.scopes.trusted`; a browser's claim converts nothing), for every campaign running at its
    time (the store counts it for the profile's recorded variant, if any); a recommendation click, for the campaign
    its ``recommendation_id`` names (:func:`merchandising.campaigns.tagged_id`), carrying the id's digest: the store
    counts it only when that list was served to the profile (:func:`profiles.campaigns.served_digest`)."""
    served = ""
    if isinstance(event, RecommendationClick):
        tag = tag_of(event.recommendation_id)
        if tag is None:
            return ()
        served = served_digest(event.recommendation_id)
    elif isinstance(event, Purchase) and trusted(source):
        tag = None
    else:
        return ()
    return tuple(
        CampaignOutcome(c.name, c.attribution_ms, clicked=tag is not None, served=served)
        for c in campaigns.campaigns
        if c.running(event.ts_ms) and (tag is None or c.tag == tag)
    )


def by_tenant(plans: list[Plan], msgs: list[RawMessage]) -> list[tuple[str, list[Plan], list[RawMessage]]]:
    """A batch's plans per tenant, in the order of each tenant's first message, each tenant's in their order
    (pure; one tenant, the common case: the lists themselves)."""
    first = msgs[0].tenant if msgs else DEFAULT_TENANT
    if all(m.tenant == first for m in msgs):
        return [(first, plans, msgs)] if msgs else []
    groups: dict[str, tuple[list[Plan], list[RawMessage]]] = {}
    for plan, msg in zip(plans, msgs, strict=True):
        found = groups.setdefault(msg.tenant, ([], []))
        found[0].append(plan)
        found[1].append(msg)
    return [(tenant, p, m) for tenant, (p, m) in groups.items()]


def origin_of(msg: RawMessage) -> Origin | None:
    """Where a message was read (``("<topic>:<partition>", offset)``), None for one not read from Kafka (pure)."""
    if not msg.topic or msg.partition < 0 or msg.offset < 0:
        return None
    if msg.timestamp_ms is None or msg.timestamp_ms <= 0:
        return f"{msg.topic}:{msg.partition}", msg.offset
    return f"{msg.topic}:{msg.partition}", msg.offset, int(msg.timestamp_ms)


def _event_type(raw: bytes | None) -> str:
    """The event's type for a metric label: one of the schema's, else ``unknown`` (bounded label values)."""
    try:
        obj = orjson.loads(raw or b"")
        t = obj.get("type") if isinstance(obj, dict) else None
        return t if t in EVENT_TYPES else "unknown"
    except orjson.JSONDecodeError:
        return "unknown"


def lag_kind(event_ms: float, produced_ms: float | None, backfill_ms: float) -> str:
    """``live`` for an event produced within ``backfill_ms`` of its own time, ``backfill`` for history produced
    later (an import, a replay) (pure). Judged by the record's timestamp, not by the lag itself, so that a stalled
    worker's live events still count as live: their lag is what the objective is about. Without a record
    timestamp an event counts as live."""
    if produced_ms is None or produced_ms <= 0:
        return "live"
    return "backfill" if produced_ms - event_ms > backfill_ms else "live"


class BatchProcessor:
    """Validates, plans and applies batches; retries Redis until it succeeds (nothing is acked unapplied)."""

    def __init__(
        self,
        store: ProfileStore,
        settings: Settings,
        send_dead_letter: Callable[[Envelope], Awaitable[None]],
        retry_delay_s: float = 0.5,
        campaigns: CampaignsSource | None = None,
    ) -> None:
        self.store = store
        self.campaigns = campaigns or CampaignsSource(
            campaigns_path(settings.campaigns_file), settings.campaigns_check_interval_s
        )
        self.settings = settings
        self.send_dead_letter = send_dead_letter
        self.retry_delay_s = retry_delay_s
        self.limits = settings.event_limits()
        self.tenants = frozenset(configured_tenants(settings.api_keys, settings.tenants))

    async def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Validate, plan and apply one batch (:meth:`prepare`, then :meth:`apply`)."""
        return await self.apply(self.prepare(messages))

    def prepare(self, messages: Sequence[RawMessage]) -> PreparedBatch:
        """Validate and plan a batch (no I/O): the plans to apply, and the dead letters of invalid events. The
        worker prepares the next batch while the previous one is written (stream/agents.py)."""
        started = time.perf_counter()
        batch = PreparedBatch(len(messages))
        campaigns = self.campaigns.current()
        consumed: Counter[str] = Counter()  # counted per batch: a metric child per event costs more than its work
        limits, weights, dead = self.limits, self.settings.event_weights, batch.result.dead_lettered
        for msg in messages:
            try:
                event = parse_event(msg.value or b"", limits)
            except InvalidEvent as exc:
                consumed[_event_type(msg.value)] += 1
                dead.append(self._dead_letter(msg, exc.errors, exc.event_id, "validation"))
                continue
            consumed[event.type] += 1
            refused = None if msg.tenant in self.tenants else tenant_refusal(msg.tenant, self.tenants)
            refused = refused or source_refusal(event, msg.source)
            refused = refused or claim_refusal(event, msg.source, limits.collect_max_lines)
            if refused is not None:
                dead.append(self._dead_letter(msg, [refused], event.event_id, "validation"))
                continue
            outcomes = campaign_outcomes(event, campaigns, msg.source) if campaigns.campaigns else ()
            batch.plans.append(plan_update(event, weights, msg.source, outcomes, msg.client))
            batch.plan_msgs.append(msg)
        for event_type, count in consumed.items():
            metrics.EVENTS_CONSUMED.labels(event_type).inc(count)
        batch.seconds = time.perf_counter() - started
        return batch

    async def apply(self, batch: PreparedBatch) -> BatchResult:
        """Write a prepared batch to Redis (in chunks, retried while Redis is unavailable), then deliver its dead
        letters. Returns when all of it is written: only then may its messages be acked."""
        started = time.perf_counter()
        result = batch.result
        size = self.settings.store_chunk_size
        for tenant, plans, msgs in by_tenant(batch.plans, batch.plan_msgs):
            store = self.store.for_tenant(tenant)
            for start in range(0, len(plans), size):
                await self._apply(store, plans[start : start + size], msgs[start : start + size], result)
        for envelope in result.dead_lettered:
            await self.send_dead_letter(envelope)
            metrics.EVENTS_DEAD_LETTERED.labels(envelope["type"]).inc()
        metrics.BATCH_SECONDS.observe(batch.seconds + time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(batch.size)
        return result

    def _dead_letter(self, msg: RawMessage, errors: list[FieldError], event_id: str | None, stage: str) -> Envelope:
        return dead_letter(msg, errors, event_id, stage, self.settings.dlq_max_original_bytes)

    async def _apply(self, store: ProfileStore, plans: list[Plan], msgs: list[RawMessage], result: BatchResult) -> None:
        statuses = await self._apply_with_retry(store, plans, msgs, result)
        written = time.time() * 1000
        backfill_ms = self.settings.backfill_after_s * 1000
        processed: Counter[str] = Counter()
        duplicates: Counter[str] = Counter()
        lags: dict[str, list[float]] = {kind: [] for kind in metrics.LAG_KINDS}  # observed once per chunk
        lags_s = result.lags_s
        for plan, msg, status in zip(plans, msgs, statuses, strict=True):
            if status == APPLIED:
                processed[plan.type] += 1
                lag = max(0.0, (written - plan.ts) / 1000.0)
                lags_s.append(lag)
                lags[lag_kind(plan.ts, msg.timestamp_ms, backfill_ms)].append(lag)
            elif status == DUPLICATE:
                result.duplicates += 1
                duplicates[plan.type] += 1
            elif status == ERASED:
                result.erased += 1
        for event_type, count in processed.items():
            result.applied += count
            metrics.EVENTS_PROCESSED.labels(event_type).inc(count)
        for kind, observed in lags.items():
            if observed:
                metrics.observe_many(metrics.EVENT_LAG_SECONDS.labels(kind), observed)
        for event_type, count in duplicates.items():
            metrics.EVENTS_DUPLICATE.labels(event_type).inc(count)

    async def _apply_with_retry(
        self, store: ProfileStore, plans: list[Plan], msgs: list[RawMessage], result: BatchResult
    ) -> list[Status]:
        """Apply a chunk. A refusal of the data (:class:`StoreRefused`) isolates the offending event into the
        dead-letter topic; a state of the server (:class:`StoreUnavailable`: Redis down, out of memory, read-only
        after a failover, busy ...) is retried until it passes, so nothing is acked unapplied or dead-lettered
        for it."""
        origins = [origin_of(m) for m in msgs]  # a redelivery is known by its offset
        try:
            statuses = await self._retry(store, plans, origins)
        except StoreRefused:
            statuses = []
            for i, plan in enumerate(plans):
                try:
                    statuses.extend(await self._retry(store, [plan], origins[i : i + 1] if origins else None))
                except StoreRefused as exc:
                    statuses.append(f"could not be applied to the profile store: {exc}")
        for plan, msg, status in zip(plans, msgs, statuses, strict=True):
            if isinstance(status, str):  # refused before its first write: the event changed nothing
                error = FieldError("(event)", status)
                result.dead_lettered.append(self._dead_letter(msg, [error], plan.event_id, "store"))
        return statuses

    async def _retry(self, store: ProfileStore, plans: list[Plan], origins: list[Origin | None] | None) -> list[Status]:
        while True:
            try:
                return await store.apply_plans(plans, origins)
            except StoreUnavailable as exc:
                metrics.STORE_RETRIES.labels(exc.reason).inc()
                log.warning("Redis write failed, retrying in %.1fs: %s", self.retry_delay_s, exc)
                await asyncio.sleep(self.retry_delay_s)
