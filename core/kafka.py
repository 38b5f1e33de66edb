"""Kafka adapter: topic administration and a batching producer for the command-line side (kafka-python), and the
one place where broker errors become the engine's.

Async services use aiokafka (under Faust in the worker, directly in the API collector). Errors of both clients
are mapped to :class:`~core.errors.BrokerUnavailable` here (:func:`broker_errors`), at the boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiokafka.errors import KafkaError as AioKafkaError
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from core.errors import BrokerUnavailable
from core.settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def broker_errors(what: str) -> Iterator[None]:
    """Map kafka-python's, aiokafka's and socket errors raised inside the block (sync or awaited) to
    :class:`BrokerUnavailable`."""
    try:
        yield
    except (KafkaError, AioKafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: {exc}") from exc


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the events and dead-letter topics if missing. Returns the names created."""
    wanted = [settings.events_topic, settings.dlq_topic]
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id="ecrm-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=settings.topic_replication)
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in missing]
    except KafkaError as exc:
        raise BrokerUnavailable(f"topic administration failed on {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        admin.close()


def make_producer(settings: Settings) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and batches by 10 ms (kafka-python)."""
    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=10,
            batch_size=256 * 1024,
            retries=5,
            client_id="ecrm-cli",
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def event_key(event: dict[str, Any]) -> bytes:
    """The partition key of a raw event: customer, else anonymous visitor, else item."""
    key = event.get("customer_id") or event.get("anonymous_id") or event.get("item_id") or event.get("event_id")
    return str(key or "").encode()


def produce_events(
    producer: KafkaProducer, topic: str, events: Iterable[dict[str, Any]], flush_every: int = 10_000
) -> int:
    """Send JSON events keyed by visitor; flushes at the end. Returns the count sent."""
    count = 0
    try:
        for event in events:
            producer.send(topic, value=orjson.dumps(event), key=event_key(event))
            count += 1
            if count % flush_every == 0:
                producer.flush()
        producer.flush()
    except KafkaError as exc:
        raise BrokerUnavailable(f"producing to {topic!r} failed after {count} events: {exc}") from exc
    return count
