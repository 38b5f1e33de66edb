"""The HTTP collector: validate a batch, produce the valid events to Kafka (aiokafka), report the invalid ones.

Each event is also checked against the sender's key (:func:`api.auth.event_refusal`): an event the key may not send
is refused by index like an invalid one. Every record carries a Kafka header ``source`` naming the scope of the key
that sent it (``open`` when no keys are configured), for the worker to decide what it may trust, and a header
``tenant`` naming the key's tenant (``default`` in open mode), which is also in the record's partition key
(:func:`core.kafka.tenant_key`): the worker applies the event inside that tenant only.

The abuse limits (:mod:`api.ratelimit`) come first: the sender's events counted (429 over the limit), a collect
key's request from a bot refused, a visitor's events over its own limit refused; those refusals are dead-lettered
here, with the reason, on the same topic as the worker's (``ECRM_DLQ_TOPIC``, ``stage: "collector"``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from api.auth import Caller, event_refusal
from api.background import cancel_and_wait
from api.quotas import QuotaGate
from api.ratelimit import EntryLimits
from api.tenancy import tenant_of
from core import metrics
from core.errors import BadRequest, BrokerUnavailable, PayloadTooLarge
from core.kafka import broker_errors, tenant_headers, tenant_key
from core.scopes import claim_refusal
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from schemas.events import EventLimits, EventTooLarge, InvalidEvent, encode_event

DEFAULT_LIMITS = EventLimits()

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    accepted: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    retry_after_s: int | None = None  # some events were refused by a rate limit: when to send them again


def entry_dead_letter(
    obj: Any, refusal: dict[str, Any], sender: Caller, key: str | None, max_original_bytes: int
) -> dict[str, Any]:
    """The dead-letter record of an event the collector's abuse limits refused: the worker's shape
    (docs/event-schema.md), ``stage: "collector"``, ``source`` the key's scope (pure but for the clock)."""
    original = orjson.dumps(obj)
    kept = original[:max_original_bytes]
    fields = obj if isinstance(obj, dict) else {}
    kind = fields.get("type")
    event_id = fields.get("event_id")
    return {
        "reason": f"{refusal['field']}: {refusal['reason']}",
        "errors": [{"field": refusal["field"], "reason": refusal["reason"]}],
        "stage": "collector",
        "event_id": event_id if isinstance(event_id, str) else None,
        "type": kind if isinstance(kind, str) else None,
        "source": {"api": sender.source},
        "tenant": sender.tenant,
        "key": key[:1024] if key else None,
        "original_b64": base64.b64encode(kept).decode(),
        "original": kept.decode("utf-8", "replace"),
        "original_size": len(original),
        "original_truncated": len(kept) < len(original),
        "dead_lettered_at": int(time.time() * 1000),
    }


def decode_batch(body: bytes, max_batch: int) -> list[Any]:
    """One event or a JSON array of events -> list. Raises BadRequest / PayloadTooLarge."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    batch = data if isinstance(data, list) else [data]
    if not batch:
        raise BadRequest("empty batch: send one event object or a non-empty array of events")
    if len(batch) > max_batch:
        raise PayloadTooLarge(f"batch of {len(batch)} events exceeds the limit of {max_batch} events per request")
    return batch


def validate_batch(
    batch: list[Any], sender: Caller | None = None, limits: EventLimits | None = None
) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]]]:
    """:func:`validate_typed` without the types."""
    records, errors, _ = validate_typed(batch, sender, limits)
    return records, errors


def validate_typed(
    batch: list[Any], sender: Caller | None = None, limits: EventLimits | None = None
) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]], list[str]]:
    """Split a batch into (key, value) records to produce and per-index errors (pure). Each error carries the
    HTTP ``status`` of its refusal: 413 for an event over the size limit, 422 for an invalid one, 403 for one the
    ``sender``'s key may not send (its reason starts with ``forbidden``)."""
    records: list[tuple[str, bytes]] = []
    errors: list[dict[str, Any]] = []
    types: list[str] = []  # the type of each record
    for index, obj in enumerate(batch):
        try:
            event, value = encode_event(obj, limits)
        except InvalidEvent as exc:
            status = 413 if isinstance(exc, EventTooLarge) else 422
            for err in exc.errors:
                errors.append({"index": index, "event_id": exc.event_id, **err.as_dict(), "status": status})
            continue
        refusal = event_refusal(event, sender) if sender is not None else None
        if refusal is None and sender is not None:
            refusal = claim_refusal(event, sender.source, (limits or DEFAULT_LIMITS).collect_max_lines)
            if refusal is not None:
                errors.append({"index": index, "event_id": event.event_id, **refusal.as_dict(), "status": 422})
                continue
        if refusal is not None:
            errors.append({"index": index, "event_id": event.event_id, **refusal.as_dict(), "status": 403})
            continue
        records.append((event.kafka_key, value))
        types.append(event.type)
    return records, errors, types


def response_status(accepted: int, errors: list[dict[str, Any]]) -> int:
    """202 when any event was accepted; else the status all refusals share (413: every event too large; 403:
    every event forbidden to the key); a mix is 403 when the key was refused any, else 422."""
    if accepted:
        return 202
    statuses = {e.get("status", 422) for e in errors}
    if len(statuses) == 1:
        return int(statuses.pop())
    return 403 if 403 in statuses else 422


@dataclass
class Screened:
    """What the collector sends on: records (key, value), their types; the refusals by index."""

    records: list[tuple[str, bytes]]
    errors: list[dict[str, Any]]
    types: list[str]
    retry_after_s: int | None = None


def refusal(index: int, obj: Any, field_name: str, reason: str, status: int) -> dict[str, Any]:
    """One refusal by index, as the collector reports it (pure)."""
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return {"index": index, "event_id": event_id if isinstance(event_id, str) else None, "field": field_name,
            "reason": reason, "status": status}  # fmt: skip


RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 2.0
FIRST_ATTEMPT_S = 5.0
PRODUCER_REQUEST_TIMEOUT_MS = 5_000


def client_of(sender: Caller) -> str | None:
    """The ``client`` header of a collect key's events: a digest of what the rate limit counts the sender by (its
    network address), so the worker counts a browser's events in shared state at most once per client and item
    (docs/tracker.md); None for other keys (pure)."""
    if sender.source != "collect":
        return None
    return hashlib.blake2b(sender.rate_key.encode(), digest_size=8, person=b"ecrm-client").hexdigest()


class Collector:
    """Produces validated events to the events topic.

    The broker is not needed to start: :meth:`start` connects in the background and keeps trying, so the API
    serves reads while the broker is away. Until it is connected, and whenever the broker does not take a batch
    within ``ECRM_API_PRODUCE_TIMEOUT_S``, :meth:`collect` raises :class:`BrokerUnavailable` (HTTP 503 with
    ``Retry-After``). A batch answered 503 may still reach the broker later; sending it again with the same event
    ids is safe, since the worker de-duplicates by event id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = settings.event_limits()
        self.producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=5,
            client_id="ecrm-api",
            # A batch not delivered by then is dropped by the producer: the client had its 503 long before, and a
            # stop with the broker away waits no longer than this.
            request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
        )

    async def start(self) -> None:
        """Connect to the broker in the background. Returns after the first attempt (connected or not), or after
        ``FIRST_ATTEMPT_S`` when the broker does not answer at all: the API starts either way."""
        tried = asyncio.Event()
        self._connecting = asyncio.create_task(self._connect(tried))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_ATTEMPT_S):
                await tried.wait()

    async def _connect(self, tried: asyncio.Event) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            producer = self._new_producer()
            try:
                with broker_errors(f"cannot reach Kafka at {self.settings.kafka_bootstrap}"):
                    await producer.start()
            except asyncio.CancelledError:
                await producer.stop()  # stopped while connecting
                raise
            except BrokerUnavailable as exc:
                await producer.stop()
                tried.set()
                log.warning("%s; writes answer 503 meanwhile, retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            tried.set()
            self.producer = producer
            log.info("connected to Kafka at %s: writes accepted", self.settings.kafka_bootstrap)
            return

    async def stop(self) -> None:
        if self._connecting is not None:
            await cancel_and_wait(self._connecting)
        if self.producer is not None:
            await self.producer.stop()

    async def ready(self) -> bool:
        """The broker answers (its metadata within the produce budget); False while not connected."""
        producer = self.producer
        if producer is None:
            return False
        try:
            with broker_errors("reading the broker's metadata"):
                async with asyncio.timeout(self.settings.api_produce_timeout_s):
                    return bool(await producer.client.fetch_all_metadata())
        except BrokerUnavailable:
            return False

    async def collect(
        self, body: bytes, sender: Caller, entry: EntryLimits | None = None, user_agent: str | None = None
    ) -> CollectResult:
        batch = decode_batch(body, self.settings.api_max_batch)
        screened = await self._screened(batch, sender, entry, user_agent)
        records, errors, types = screened.records, screened.errors, screened.types
        label = metrics.tenant_label(tenant_of(sender))
        metrics.EVENTS_REJECTED.labels(label).inc(len(batch) - len(records))
        if records:
            await self._produce(records, sender.source, client_of(sender), sender.tenant)  # failures: api/errors.py
            for event_type in types:  # counted once the broker acknowledged them
                metrics.EVENTS_COLLECTED.labels(event_type, label).inc()
        return CollectResult(accepted=len(records), errors=errors, retry_after_s=screened.retry_after_s)

    async def _screened(
        self, batch: list[Any], sender: Caller, entry: EntryLimits | None, user_agent: str | None
    ) -> Screened:
        """The batch through the abuse limits and the schema: 429 (raised) when the sender is over its rate limit;
        every event refused (403, dead-lettered) when a collect key's request comes from a bot; the valid events
        of a visitor over its own limit refused (429, dead-lettered)."""
        if entry is None:
            return Screened(*validate_typed(batch, sender, self.limits))
        await entry.admit(sender, len(batch))
        tenant = tenant_of(sender)
        if entry.quotas is not None:  # the tenant's events per second (api/quotas.py): 429, the whole request
            await entry.quotas.admit(tenant, len(batch))
        bot = entry.bot(sender, user_agent)
        if bot is not None:
            refusals = [refusal(i, obj, "user_agent", bot, 403) for i, obj in enumerate(batch)]
            metrics.COLLECTOR_REFUSED.labels("bot", metrics.tenant_label(tenant)).inc(len(batch))
            await self._dead_letter([entry_dead_letter(obj, r, sender, None, self._dlq_bytes) for obj, r in
                                     zip(batch, refusals, strict=True)], sender)  # fmt: skip
            return Screened([], refusals, [])
        records, errors, types = validate_typed(batch, sender, self.limits)
        invalid = {e["index"] for e in errors}
        indices = [i for i in range(len(batch)) if i not in invalid]  # the records', in order
        kept: Screened = Screened([], errors, [])
        kept_indices: list[int] = []
        dead: list[dict[str, Any]] = []
        for index, record, kind in zip(indices, records, types, strict=True):
            over = await entry.visitor(sender, record[0])  # a collect key's events are keyed by anonymous_id
            if over is None:
                kept.records.append(record)
                kept.types.append(kind)
                kept_indices.append(index)
                continue
            refused = refusal(index, batch[index], "anonymous_id", f"refused: {over}", 429)
            kept.errors.append(refused)
            dead.append(entry_dead_letter(batch[index], refused, sender, record[0], self._dlq_bytes))
            kept.retry_after_s = max(kept.retry_after_s or 0, over.retry_after_s)
        if dead:
            metrics.COLLECTOR_REFUSED.labels("visitor_rate_limit", metrics.tenant_label(tenant)).inc(len(dead))
            await self._dead_letter(dead, sender)
        if entry.quotas is not None and kept.records:
            return await self._within_quotas(kept, kept_indices, batch, sender, entry.quotas)
        return kept

    async def _within_quotas(
        self, kept: Screened, indices: list[int], batch: list[Any], sender: Caller, quotas: QuotaGate
    ) -> Screened:
        """The events that would create a profile or an item past the tenant's quota refused by index (429) and
        dead-lettered (api/quotas.py)."""
        tenant = tenant_of(sender)
        refused = await quotas.refusals(tenant, kept.records, kept.types)
        if not refused:
            return kept
        out = Screened([], kept.errors, [], kept.retry_after_s)
        gone = {r.index: r for r in refused}
        dead: list[dict[str, Any]] = []
        for position, (record, kind) in enumerate(zip(kept.records, kept.types, strict=True)):
            refusal_of = gone.get(position)
            if refusal_of is None:
                out.records.append(record)
                out.types.append(kind)
                continue
            index = indices[position]
            refused_one = refusal(index, batch[index], refusal_of.field, refusal_of.reason, 429)
            out.errors.append(refused_one)
            dead.append(entry_dead_letter(batch[index], refused_one, sender, record[0], self._dlq_bytes))
        out.retry_after_s = max(out.retry_after_s or 0, quotas.retry_after_s)
        metrics.COLLECTOR_REFUSED.labels("quota", metrics.tenant_label(tenant)).inc(len(dead))
        await self._dead_letter(dead, sender)
        return out

    @property
    def _dlq_bytes(self) -> int:
        return self.settings.dlq_max_original_bytes

    async def _dead_letter(self, envelopes: list[dict[str, Any]], sender: Caller) -> None:
        """Produce the collector's dead letters, within the produce budget: BrokerUnavailable otherwise."""
        producer = self.producer
        topic = self.settings.dlq_topic
        if producer is None:
            raise BrokerUnavailable(f"not connected to Kafka at {self.settings.kafka_bootstrap} yet (retrying)")
        headers = [("source", sender.source.encode()), *tenant_headers(sender.tenant)]
        budget = self.settings.api_produce_timeout_s
        with broker_errors(f"could not produce to {topic!r} within {budget}s"):
            async with asyncio.timeout(budget):
                futures = [
                    await producer.send(topic, value=orjson.dumps(e), headers=headers,
                                        key=tenant_key(sender.tenant, (e["key"] or "").encode()) or None)
                    for e in envelopes
                ]  # fmt: skip
                await asyncio.gather(*futures)
        for envelope in envelopes:
            log.info("dead-lettered at the collector %s: %s", envelope["event_id"], envelope["reason"])

    async def _produce(
        self, records: list[tuple[str, bytes]], source: str, client: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Produce with the sender's ``source`` and ``tenant`` headers (and ``client`` for a collect key), keyed in
        the tenant (:func:`core.kafka.tenant_key`), and wait for every delivery, within the budget:
        BrokerUnavailable otherwise."""
        producer = self.producer
        topic = self.settings.events_topic
        if producer is None:
            raise BrokerUnavailable(f"not connected to Kafka at {self.settings.kafka_bootstrap} yet (retrying)")
        headers = [("source", source.encode()), *tenant_headers(tenant)]
        if client is not None:
            headers.append(("client", client.encode()))
        budget = self.settings.api_produce_timeout_s
        with broker_errors(f"could not produce to {topic!r} within {budget}s"):
            async with asyncio.timeout(budget):
                futures = [
                    await producer.send(topic, value=value, key=tenant_key(tenant, key.encode()), headers=headers)
                    for key, value in records
                ]
                await asyncio.gather(*futures)
