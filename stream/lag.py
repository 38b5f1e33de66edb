"""Consumer lag per partition, measured by the worker: the end offset of each partition of the events topic minus
the offset the consumer group (``ECRM_WORKER_APP_ID``) committed there, as ``ecrm_consumer_lag{topic,partition}``.

End offsets come from ListOffsets(LATEST), which is the high watermark on Kafka. Every worker measures every
partition (not only its own), so a stalled or dead worker's partitions still show a rising number; panels and
alerts take ``max by (topic, partition)``. On the embedded broker (Tansu) ListOffsets(LATEST) answers the base
offset of the last record batch + 1, so there the lag reads low by up to one batch (docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from core import metrics
from core.errors import BrokerUnavailable
from core.kafka import broker_errors
from core.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_MS = 5_000


def lag_per_partition(ends: Mapping[int, int], committed: Mapping[int, int]) -> dict[int, int]:
    """Messages behind the head of each partition (pure). A partition the group never committed counts from 0
    (the group starts at the earliest offset); a negative difference (end offsets read before a commit) is 0."""
    return {p: max(0, end - max(committed.get(p, 0), 0)) for p, end in ends.items()}


async def measure(settings: Settings) -> dict[int, int]:
    """The lag of each partition of the events topic. Raises :class:`BrokerUnavailable`."""
    bootstrap = settings.kafka_bootstrap.split(",")
    topic = settings.events_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=TIMEOUT_MS)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    with broker_errors(f"measuring the consumer lag on {topic!r}"):
        try:
            await consumer.start()
            await admin.start()
            await consumer.topics()  # refreshes the metadata
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            if not partitions:
                return {}
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await consumer.end_offsets(tps)
            offsets = await admin.list_consumer_group_offsets(settings.worker_app_id, partitions=tps)
        finally:
            await consumer.stop()
            await admin.close()
    return lag_per_partition(
        {tp.partition: end for tp, end in ends.items()}, {tp.partition: om.offset for tp, om in offsets.items()}
    )


def publish(topic: str, lags: Mapping[int, int]) -> None:
    metrics.CONSUMER_LAG.clear()
    for partition, lag in lags.items():
        metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
    metrics.CONSUMER_LAG_CHECKED.set(time.time())


async def check(settings: Settings) -> None:
    """One check; never raises. A failed check drops the lag series (a stale number would mislead) and logs."""
    try:
        lags = await measure(settings)
    except BrokerUnavailable as exc:
        metrics.CONSUMER_LAG.clear()
        log.warning("consumer lag not measured: %s", exc)
        return
    publish(settings.events_topic, lags)


def register_lag_check(app: faust.App, settings: Settings) -> None:
    """Measure the consumer lag every ``ECRM_LAG_CHECK_S`` seconds (nothing when 0)."""
    if settings.lag_check_s <= 0:
        return

    @app.timer(interval=settings.lag_check_s, name="consumer_lag")
    async def consumer_lag() -> None:
        await check(settings)
