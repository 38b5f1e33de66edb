"""Both importers against the real embedded broker: counts on the topic, and identical ids on a second import."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from core.kafka import ensure_topics
from core.settings import Settings
from ecrm.cli import app
from ecrm.commands import import_orders, ingest_log
from ingest.sink import KafkaSink
from runtime.embedded import start_broker
from schemas import parse_event

pytestmark = pytest.mark.integration
runner = CliRunner()


def read_topic(settings: Settings, expected: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every message on the events topic: at least ``expected``, then until nothing more comes for a second.

    (The embedded broker's end offsets can lag behind what it has acknowledged, so they are not used.)
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False, group_id=None
    )
    try:
        topic = settings.events_topic
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while len(out) < expected or time.monotonic() - quiet_since < 1.0:
            assert time.monotonic() < deadline, f"timed out reading {topic}: {len(out)} of {expected}"
            batches = consumer.poll(timeout_ms=200)
            if batches:
                quiet_since = time.monotonic()
            for batch in batches.values():
                out.extend(orjson.loads(message.value) for message in batch)
        return out
    finally:
        consumer.close()


def invoke(args: list[str]) -> str:
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture()
def broker_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    ensure_topics(settings)
    monkeypatch.setattr(ingest_log, "get_settings", lambda: settings)
    monkeypatch.setattr(import_orders, "get_settings", lambda: settings)
    return settings


def test_ingest_log_twice(broker_settings: Settings, datasets: Path, tmp_path: Path) -> None:
    args = ["ingest-log", str(datasets / "apache_access_sample.log"), "--salt", "it", "--rejects", str(tmp_path / "r")]
    output = invoke(args)
    assert "produced              1579" in output
    first = read_topic(broker_settings, 1579)
    assert len(first) == 1579
    assert Counter(e["type"] for e in first) == {"page_view": 367, "product_view": 1212}
    for event in first[:50]:
        parse_event(orjson.dumps(event))

    invoke(args)
    both = read_topic(broker_settings, 2 * 1579)
    assert len(both) == 2 * 1579
    ids = Counter(e["event_id"] for e in both)
    assert set(ids) == {e["event_id"] for e in first} and set(ids.values()) == {2}


def test_import_orders_twice(broker_settings: Settings, datasets: Path, tmp_path: Path) -> None:
    args = ["import-orders", str(datasets / "online_retail_sample.csv"), "--rejects", str(tmp_path / "r")]
    output = invoke(args)
    assert "produced                11476" in output
    first = read_topic(broker_settings, 11_476)
    assert len(first) == 11_476
    assert {e["type"] for e in first} == {"purchase"}
    assert sum(len(e["lines"]) for e in first) == 29_183

    invoke(args)
    both = read_topic(broker_settings, 2 * 11_476)
    ids = Counter(e["event_id"] for e in both)
    assert len(both) == 2 * 11_476
    assert set(ids) == {e["event_id"] for e in first} and set(ids.values()) == {2}
    assert all(event_id.startswith("order:") for event_id in ids)


def test_a_broker_lost_mid_import_exits_2_naming_the_failed_count(
    settings: Settings, datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real broker that goes away after the first batch: the next batch's deliveries fail (each one checked),
    and the command says how many were acknowledged and how many failed."""
    own = start_broker()
    try:
        local = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{own.port}", "producer_timeout_s": 3.0})
        monkeypatch.setattr(import_orders, "get_settings", lambda: local)
        real_flush = KafkaSink.flush

        def flush_then_lose_the_broker(sink: KafkaSink) -> None:
            real_flush(sink)
            if sink.sent:
                own.stop()

        monkeypatch.setattr(KafkaSink, "flush", flush_then_lose_the_broker)
        args = ["import-orders", str(datasets / "online_retail_sample.csv"), "--batch-size", "200"]
        result = runner.invoke(app, [*args, "--rejects", str(tmp_path / "r"), "--no-progress"])
        assert result.exit_code == 2, result.output
        assert "error: 200 of 200 events sent to" in result.output and "were not acknowledged" in result.output
        assert "In all 200 events were acknowledged and 200 failed; the import stopped there" in result.output
    finally:
        own.stop()
