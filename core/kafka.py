"""Kafka adapter: topic administration and a batching producer for the command-line side (kafka-python), and the
one place where broker errors become the engine's.

Async services use aiokafka (under Faust in the worker, directly in the API collector). Errors of both clients
are mapped to :class:`~core.errors.BrokerUnavailable` here (:func:`broker_errors`), at the boundary.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiokafka.errors import KafkaError as AioKafkaError
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

from core.errors import BrokerUnavailable, DeliveryFailed
from core.settings import Settings
from core.tenants import DEFAULT_TENANT, TENANT_HEADER

log = logging.getLogger(__name__)


@contextmanager
def broker_errors(what: str) -> Iterator[None]:
    """Map kafka-python's, aiokafka's and socket errors raised inside the block (sync or awaited) to
    :class:`BrokerUnavailable`."""
    try:
        yield
    except (KafkaError, AioKafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: {exc}") from exc


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a bootstrap list (``PLAINTEXT://`` prefixes and IPv6 brackets allowed; pure)."""
    pairs: list[tuple[str, int]] = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().split("://")[-1].rpartition(":")
        if port.isdigit():
            pairs.append((host.strip("[]") or "127.0.0.1", int(port)))
    return pairs


def probe_broker(settings: Settings, timeout_s: float = 3.0) -> None:
    """Raise :class:`BrokerUnavailable` at once when no bootstrap server accepts a TCP connection (a client would
    retry until its bootstrap timeout, 30 s, to say the same)."""
    for host, port in bootstrap_addresses(settings.kafka_bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError:
            continue
    raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: nothing accepts connections there")


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the events and dead-letter topics if missing. Returns the names created. Raises
    :class:`BrokerUnavailable` within seconds when nothing listens at the bootstrap address."""
    probe_broker(settings)
    wanted = [settings.events_topic, settings.dlq_topic]
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id="ecrm-admin",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
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
    """A producer that waits for all in-sync replicas and batches by 10 ms (kafka-python). It waits at most
    ``producer_timeout_s`` for the broker to take a message (metadata, buffer) or to acknowledge it; fails at once
    when nothing listens at the bootstrap address."""
    probe_broker(settings)
    timeout_ms = int(settings.producer_timeout_s * 1000)
    linger_ms = 10
    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=linger_ms,
            batch_size=256 * 1024,
            retries=5,
            client_id="ecrm-cli",
            max_block_ms=timeout_ms,
            request_timeout_ms=min(30_000, timeout_ms - linger_ms),
            delivery_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def event_key(event: dict[str, Any], tenant: str = DEFAULT_TENANT) -> bytes:
    """The partition key of a raw event: customer, else anonymous visitor, else item (:func:`tenant_key`)."""
    key = event.get("customer_id") or event.get("anonymous_id") or event.get("item_id") or event.get("event_id")
    return tenant_key(tenant, str(key or "").encode())


def tenant_key(tenant: str, key: bytes) -> bytes:
    """An event's partition key in its tenant: ``<tenant>:<key>`` (one profile's events stay in order on one
    partition, and two shops' same ids spread apart), the key itself for the tenant ``default`` (as a producer of
    its own keys them: its events, which carry no tenant header, are the tenant default's) (pure)."""
    return key if tenant == DEFAULT_TENANT else tenant.encode() + b":" + key


def tenant_headers(tenant: str) -> list[tuple[str, bytes]]:
    """The header naming an event's tenant (:data:`core.tenants.TENANT_HEADER`)."""
    return [(TENANT_HEADER, tenant.encode())]


class _Deliveries:
    """The send futures of one producer run, settled (flushed and checked one by one) batch by batch."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.pending: list[FutureRecordMetadata] = []
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None

    def fail(self, error: BaseException) -> None:
        self.failed += 1
        self.first_error = self.first_error or f"{type(error).__name__}: {error}"

    def settle(self) -> None:
        """Flush, then count each message acknowledged or failed (``flush`` itself only logs failures)."""
        try:
            self.producer.flush()
        except KafkaError as exc:  # a flush that timed out: the futures not done count as failed below
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
        for future in self.pending:
            if future.succeeded():
                self.delivered += 1
            else:
                self.fail(future.exception or TimeoutError("not acknowledged"))
        self.pending = []
        if self.failed:
            raise self.error()

    def error(self) -> DeliveryFailed:
        return DeliveryFailed(
            f"{self.failed} of {self.failed + self.delivered} events sent to {self.topic!r} were not acknowledged "
            f"by the broker ({self.first_error})",
            delivered=self.delivered,
            failed=self.failed,
        )


def produce_events(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[dict[str, Any]],
    flush_every: int = 10_000,
    tenant: str = DEFAULT_TENANT,
) -> int:
    """Send JSON events of ``tenant`` (its header, its partition keys: :func:`tenant_key`) keyed by visitor,
    checking the delivery of every one: after each ``flush_every`` events
    and at the end, flush and look at each send's result. Returns the count acknowledged; raises
    :class:`DeliveryFailed` (naming how many failed and how many were acknowledged) at the first batch with a
    failure, and sends nothing more."""
    deliveries = _Deliveries(producer, topic)
    headers = tenant_headers(tenant)
    for event in events:
        try:
            value, key = orjson.dumps(event), event_key(event, tenant)
            deliveries.pending.append(producer.send(topic, value=value, key=key, headers=headers))
        except MessageSizeTooLargeError as exc:  # this message only: the others go on
            deliveries.fail(exc)
        except KafkaError as exc:  # the broker cannot take messages (metadata or buffer wait timed out)
            deliveries.fail(exc)
            deliveries.settle()  # counts what was pending, then raises
        if len(deliveries.pending) >= flush_every:
            deliveries.settle()
    deliveries.settle()
    return deliveries.delivered
