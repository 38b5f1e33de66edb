"""The Faust application and its topics (one module, as faust's "Medium/Large Projects" layout suggests)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from core.private_dir import private_dir
from core.settings import Settings


def set_fetch_max_wait(ms: int) -> None:
    """Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` and offers no setting for it.

    A broker that does not answer a waiting fetch as soon as data arrives (Tansu, the embedded broker) then adds up
    to that much latency to every event, so the worker sets the value from ``Settings.consumer_fetch_max_wait_ms``.
    On Kafka the fetch returns as soon as data arrives either way; there a smaller value only means more idle fetches.
    """
    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(thread_cls, "_ecrm_original_create", None) or thread_cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    thread_cls._ecrm_original_create = original
    thread_cls._create_worker_consumer = create


def create_app(settings: Settings) -> faust.App:
    """A Faust app for the worker role. The web server is off or bound to 127.0.0.1; no exactly-once."""
    web_port = settings.worker_web_port
    set_fetch_max_wait(settings.consumer_fetch_max_wait_ms)
    if settings.worker_data_dir:
        datadir = Path(settings.worker_data_dir)
        datadir.mkdir(parents=True, exist_ok=True)
    else:  # this user's own folder in the shared temp dir: 0700, refused when another user owns it
        base = private_dir(Path(tempfile.gettempdir()) / f"ecrm-faust-{os.getuid()}", "the worker's data folder")
        datadir = private_dir(base / settings.worker_app_id, "the worker's data folder")
    return faust.App(
        settings.worker_app_id,
        datadir=str(datadir),
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_commit_interval=1.0,
        processing_guarantee="at_least_once",
        web_enabled=web_port > 0,
        web_bind="127.0.0.1",
        web_port=web_port or 6066,
        web_in_thread=False,
        producer_acks=-1,
        stream_wait_empty=False,
    )


def events_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    return app.topic(settings.events_topic, partitions=settings.topic_partitions)


def dlq_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    return app.topic(settings.dlq_topic, partitions=settings.topic_partitions)
