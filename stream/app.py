"""The Faust application and its topics (one module, as faust's "Medium/Large Projects" layout suggests)."""

from __future__ import annotations

import faust

from ecrm.settings import Settings


def create_app(settings: Settings) -> faust.App:
    """A Faust app for the worker role. The web server is off or bound to 127.0.0.1; no exactly-once."""
    web_port = settings.worker_web_port
    return faust.App(
        settings.worker_app_id,
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
