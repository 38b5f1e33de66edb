"""The HTTP collector: validate a batch, produce the valid events to Kafka (aiokafka), report the invalid ones.

Each event is also checked against the sender's key (:func:`api.auth.event_refusal`): an event the key may not send
is refused by index like an invalid one. Every record carries a Kafka header ``source`` naming the scope of the key
that sent it (``open`` when no keys are configured), for the worker to decide what it may trust."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from api.auth import Caller, event_refusal
from core import metrics
from core.errors import BadRequest, BrokerUnavailable, PayloadTooLarge
from core.kafka import broker_errors
from core.settings import Settings
from schemas.events import InvalidEvent, parse_event_obj


@dataclass
class CollectResult:
    accepted: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    forbidden: int = 0  # events refused because of the key's scope


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
    batch: list[Any], sender: Caller | None = None
) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]]]:
    """Split a batch into (key, value) records to produce and per-index errors (pure). With a ``sender``, the
    events its key may not send are refused too (their errors' reason starts with ``forbidden``)."""
    records: list[tuple[str, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, obj in enumerate(batch):
        try:
            event = parse_event_obj(obj)
        except InvalidEvent as exc:
            for err in exc.errors:
                errors.append({"index": index, "event_id": exc.event_id, **err.as_dict()})
            continue
        refusal = event_refusal(event, sender) if sender is not None else None
        if refusal is not None:
            errors.append({"index": index, "event_id": event.event_id, **refusal.as_dict()})
            continue
        records.append((event.kafka_key, orjson.dumps(obj)))
        metrics.EVENTS_COLLECTED.labels(event.type).inc()
    return records, errors


class Collector:
    """Produces validated events to the events topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

    async def collect(self, body: bytes, sender: Caller) -> CollectResult:
        batch = decode_batch(body, self.settings.api_max_batch)
        records, errors = validate_batch(batch, sender)
        metrics.EVENTS_REJECTED.inc(len(batch) - len(records))
        if records:
            await self._produce(records, sender.source)
        forbidden = len({e["index"] for e in errors if e["reason"].startswith("forbidden")})
        return CollectResult(accepted=len(records), errors=errors, forbidden=forbidden)

    async def _produce(self, records: list[tuple[str, bytes]], source: str) -> None:
        topic = self.settings.events_topic
        headers = [("source", source.encode())]
        with broker_errors(f"could not produce to {topic!r}"):
            futures = [
                await self.producer.send(topic, value=value, key=key.encode(), headers=headers)
                for key, value in records
            ]
            await asyncio.gather(*futures)
