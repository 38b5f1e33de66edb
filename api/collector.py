"""The HTTP collector: validate a batch, produce the valid events to Kafka (aiokafka), report the invalid ones."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from core import metrics
from core.errors import BadRequest, BrokerUnavailable, PayloadTooLarge
from core.kafka import broker_errors
from core.settings import Settings
from schemas.events import EventLimits, EventTooLarge, InvalidEvent, encode_event


@dataclass
class CollectResult:
    accepted: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


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
    batch: list[Any], limits: EventLimits | None = None
) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]]]:
    """Split a batch into (key, value) records to produce and per-index errors (pure). Each error carries the
    HTTP ``status`` of its refusal: 413 for an event over the size limit, 422 for an invalid one."""
    records: list[tuple[str, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, obj in enumerate(batch):
        try:
            event, value = encode_event(obj, limits)
        except InvalidEvent as exc:
            status = 413 if isinstance(exc, EventTooLarge) else 422
            for err in exc.errors:
                errors.append({"index": index, "event_id": exc.event_id, **err.as_dict(), "status": status})
            continue
        records.append((event.kafka_key, value))
        metrics.EVENTS_COLLECTED.labels(event.type).inc()
    return records, errors


def response_status(accepted: int, errors: list[dict[str, Any]]) -> int:
    """202 when any event was accepted; else the status all refusals share (413: every event too large), else 422."""
    if accepted:
        return 202
    statuses = {e.get("status", 422) for e in errors}
    return statuses.pop() if len(statuses) == 1 else 422


class Collector:
    """Produces validated events to the events topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = settings.event_limits()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=5,
            client_id="ecrm-api",
            request_timeout_ms=15_000,
        )
        self._started = False

    async def start(self) -> None:
        with broker_errors(f"cannot reach Kafka at {self.settings.kafka_bootstrap}"):
            await self.producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.producer.stop()

    async def ready(self, timeout_s: float = 2.0) -> bool:
        try:
            with broker_errors("reading the broker's metadata"):
                return bool(await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout_s))
        except BrokerUnavailable:
            return False

    async def collect(self, body: bytes) -> CollectResult:
        batch = decode_batch(body, self.settings.api_max_batch)
        records, errors = validate_batch(batch, self.limits)
        metrics.EVENTS_REJECTED.inc(len(batch) - len(records))
        if records:
            await self._produce(records)
        return CollectResult(accepted=len(records), errors=errors)

    async def _produce(self, records: list[tuple[str, bytes]]) -> None:
        topic = self.settings.events_topic
        with broker_errors(f"could not produce to {topic!r}"):
            futures = [await self.producer.send(topic, value=value, key=key.encode()) for key, value in records]
            await asyncio.gather(*futures)
