"""Safe delivery: every produced message's delivery is checked (kafka-python's ``flush`` only logs failures), the
commands exit 2 naming how many failed, and dead-letter records stay under the broker's message size."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from kafka.future import Future
from typer.testing import CliRunner

import ingest.sink
from core.errors import BrokerUnavailable, DeliveryFailed
from core.kafka import produce_events
from core.settings import Settings
from ecrm.cli import app
from ecrm.commands import import_orders, ingest_log, runtime
from ingest.sink import KafkaSink
from schemas import FieldError
from stream.processing import RawMessage, dead_letter

runner = CliRunner()


class FakeProducer:
    """kafka-python's producer surface: ``send`` returns a future that ``flush`` settles (ack or failure)."""

    def __init__(self, fails: Callable[[int], BaseException | None] = lambda n: None) -> None:
        self.fails = fails
        self.sent: list[tuple[bytes, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []
        self.pending: list[tuple[int, Future]] = []
        self.closed = False

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> Future:
        n = len(self.sent)
        self.sent.append((key, value))
        self.headers.append(headers)
        error = self.fails(n)
        if isinstance(error, KafkaTimeoutError | MessageSizeTooLargeError):  # raised by send itself
            raise error
        future = Future()
        self.pending.append((n, future))
        return future

    def flush(self) -> None:
        for n, future in self.pending:
            error = self.fails(n)
            future.failure(error) if error is not None else future.success(n)
        self.pending = []

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def events(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "page_view", "event_id": f"e{i}", "timestamp": 1795424400000, "customer_id": f"c{i}"} for i in range(n)
    ]


def test_every_event_names_its_tenant() -> None:
    """The importers' and the simulator's events carry the tenant header, and the tenant in the partition key (not
    for the tenant default: its key stays the profile's, as a producer of its own keys it)."""
    producer = FakeProducer()
    events = [{"type": "page_view", "customer_id": "c1"}, {"type": "page_view", "anonymous_id": "v1"}]
    assert produce_events(producer, "t", events, tenant="acme") == 2  # type: ignore[arg-type]
    assert [k for k, _ in producer.sent] == [b"acme:c1", b"acme:v1"]
    assert producer.headers == [[("tenant", b"acme")]] * 2
    plain = FakeProducer()
    produce_events(plain, "t", events)  # type: ignore[arg-type]
    assert [k for k, _ in plain.sent] == [b"c1", b"v1"] and plain.headers == [[("tenant", b"default")]] * 2


def test_all_delivered() -> None:
    producer = FakeProducer()
    assert produce_events(producer, "t", events(25), flush_every=10) == 25  # type: ignore[arg-type]
    assert [orjson.loads(v)["event_id"] for _, v in producer.sent] == [f"e{i}" for i in range(25)]
    assert producer.sent[3][0] == b"c3"


def test_failed_deliveries_are_counted_and_raised() -> None:
    producer = FakeProducer(lambda n: RequestTimedOutError("no ack") if n % 7 == 3 else None)
    with pytest.raises(DeliveryFailed) as info:
        produce_events(producer, "t", events(25), flush_every=10)  # type: ignore[arg-type]
    # the first batch (0..9) holds one failure (3): counted, and nothing after that batch is sent
    assert (info.value.delivered, info.value.failed) == (9, 1)
    assert len(producer.sent) == 10
    assert "1 of 10 events sent to 't' were not acknowledged by the broker (RequestTimedOutError" in str(info.value)
    assert isinstance(info.value, BrokerUnavailable)


def test_failures_in_the_last_batch() -> None:
    producer = FakeProducer(lambda n: RequestTimedOutError("no ack") if n >= 20 else None)
    with pytest.raises(DeliveryFailed) as info:
        produce_events(producer, "t", events(25), flush_every=10)  # type: ignore[arg-type]
    assert (info.value.delivered, info.value.failed) == (20, 5)


def test_a_broker_that_cannot_take_messages_stops_the_run() -> None:
    producer = FakeProducer(lambda n: KafkaTimeoutError("metadata not available") if n == 4 else None)
    consumed: list[int] = []

    def stream() -> Iterator[dict[str, Any]]:
        for i, event in enumerate(events(1000)):
            consumed.append(i)
            yield event

    with pytest.raises(DeliveryFailed) as info:
        produce_events(producer, "t", stream())  # type: ignore[arg-type]
    assert (info.value.delivered, info.value.failed) == (4, 1)
    assert len(consumed) == 5  # the input was not read on
    assert "KafkaTimeoutError" in str(info.value)


def test_one_oversize_message_fails_alone() -> None:
    producer = FakeProducer(lambda n: MessageSizeTooLargeError("too big") if n == 2 else None)
    with pytest.raises(DeliveryFailed) as info:
        produce_events(producer, "t", events(6))  # type: ignore[arg-type]
    assert (info.value.delivered, info.value.failed) == (5, 1)


def test_kafka_sink_counts_over_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(lambda n: RequestTimedOutError("no ack") if n in (12, 13) else None)
    monkeypatch.setattr(ingest.sink, "ensure_topics", lambda settings, timeout_s: [])
    monkeypatch.setattr(ingest.sink, "make_producer", lambda settings: producer)
    sink = KafkaSink(Settings(), batch_size=5)
    with pytest.raises(DeliveryFailed):
        for event in events(30):
            sink.add(event)
    assert (sink.sent, sink.failed) == (13, 2)  # batches 0-4, 5-9 delivered; 10-14 lost two of five
    assert len(producer.sent) == 15


# --- The commands -----------------------------------------------------------------------------------------------

LOG_LINE = (
    '203.0.113.{n} - - [17/May/2015:10:05:{s:02d} +0000] "GET /presentations/vim/ HTTP/1.1" 200 10 "-" '
    '"Mozilla/5.0 (X11; Linux x86_64; rv:27.0) Gecko/20100101 Firefox/27.0"\n'
)


def _failing_broker(monkeypatch: pytest.MonkeyPatch, fails: Callable[[int], BaseException | None]) -> FakeProducer:
    producer = FakeProducer(fails)
    settings = Settings()
    for module in (ingest_log, import_orders, runtime):
        monkeypatch.setattr(module, "get_settings", lambda: settings)
    monkeypatch.setattr(ingest.sink, "ensure_topics", lambda settings, timeout_s: [])
    monkeypatch.setattr(ingest.sink, "make_producer", lambda settings: producer)
    monkeypatch.setattr(runtime, "ensure_topics", lambda settings, timeout_s: [])
    monkeypatch.setattr(runtime, "make_producer", lambda settings: producer)
    return producer


def test_ingest_log_exits_2_naming_the_failed_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _failing_broker(monkeypatch, lambda n: RequestTimedOutError("no ack") if n in (3, 7, 8) else None)
    log = tmp_path / "a.log"
    log.write_text("".join(LOG_LINE.format(n=n, s=n) for n in range(40)))
    args = [
        "ingest-log",
        str(log),
        "--salt",
        "s",
        "--batch-size",
        "10",
        "--no-progress",
        "--rejects",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error: 3 of 10 events sent to 'ecrm.events' were not acknowledged by the broker" in result.output
    assert "In all 7 events were acknowledged and 3 failed; the import stopped there" in result.output
    assert "produced" not in result.output  # no summary that could be read as a success
    assert len(producer.sent) == 10


def test_import_orders_exits_2_naming_the_failed_count(
    datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = _failing_broker(monkeypatch, lambda n: RequestTimedOutError("no ack") if n == 1234 else None)
    args = [
        "import-orders",
        str(datasets / "online_retail_sample.csv"),
        "--no-progress",
        "--rejects",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "1 of 500 events sent to 'ecrm.events' were not acknowledged" in result.output
    assert "In all 1499 events were acknowledged and 1 failed" in result.output
    assert len(producer.sent) == 1500


def test_simulate_exits_2_naming_the_failed_count(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _failing_broker(monkeypatch, lambda n: RequestTimedOutError("no ack") if n % 2 else None)
    result = runner.invoke(app, ["simulate", "--customers", "3", "--visitors", "2", "--items", "10", "--days", "1"])
    assert result.exit_code == 2, result.output
    total = len(producer.sent)
    assert f"{total // 2} of {total} events sent to 'ecrm.events' were not acknowledged" in result.output
    assert "produced" not in result.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["ingest-log", "import-orders", "simulate"])
def test_an_unreachable_broker_exits_2(
    command: str, datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{_closed_port()}", producer_timeout_s=1)
    for module in (ingest_log, import_orders, runtime):
        monkeypatch.setattr(module, "get_settings", lambda: settings)
    paths = {
        "ingest-log": datasets / "apache_access_sample.log",
        "import-orders": datasets / "online_retail_sample.csv",
    }
    args = {
        "ingest-log": ["ingest-log", str(paths["ingest-log"]), "--salt", "s", "--no-progress", "--rejects", "r"],
        "import-orders": ["import-orders", str(paths["import-orders"]), "--no-progress", "--rejects", "r"],
        "simulate": ["simulate", "--customers", "3"],
    }[command]
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: cannot reach Kafka at {settings.kafka_bootstrap}" in result.output


# --- Dead letters -----------------------------------------------------------------------------------------------


def test_a_small_dead_letter_keeps_the_original_exactly() -> None:
    raw = b'{"type": "purchase", "event_id": "x"}'
    letter = dead_letter(RawMessage(raw, b"k", "t", 1, 7), [FieldError("lines", "Field required")], "x", "validation")
    assert base64.b64decode(letter["original_b64"]) == raw and letter["original"] == raw.decode()
    assert letter["original_size"] == len(raw) and letter["original_truncated"] is False
    assert letter["type"] == "purchase" and letter["key"] == "k"
    assert letter["source"] == {"topic": "t", "partition": 1, "offset": 7}


def test_a_large_dead_letter_is_cut_and_keeps_the_size() -> None:
    raw = b'{"type": "page_view", "url": "' + b"u" * 900_000 + b'"}'
    letter = dead_letter(RawMessage(raw), [FieldError("(event)", "too large")], None, "validation", 1000)
    assert base64.b64decode(letter["original_b64"]) == raw[:1000]
    assert letter["original"] == raw[:1000].decode()
    assert letter["original_size"] == len(raw) and letter["original_truncated"] is True
    assert letter["type"] == "page_view"  # read from the whole message
    assert len(orjson.dumps(letter)) < 3000


def test_the_worst_dead_letter_stays_under_the_brokers_message_size() -> None:
    """At the largest setting, with bytes that JSON escapes six-fold, a 1 MB key and the most reasons."""
    largest = Settings.model_fields["dlq_max_original_bytes"].metadata
    bound = next(m.le for m in largest if hasattr(m, "le"))
    raw = b"\x01" * 1_000_000
    errors = [FieldError("f" * 200, "r" * 500)] * 20
    letter = dead_letter(RawMessage(raw, b"k" * 1_000_000, "t" * 249), errors, "e" * 256, "validation", bound)
    assert len(orjson.dumps(letter)) < 1_000_000  # Faust's producer_max_request_size
    assert len(letter["key"]) == 1024


def test_unknown_types_share_one_metric_label() -> None:
    for raw in [b'{"type": "x' + b"y" * 30 + b'"}', b'{"type": 5}', b"[]", b"\xff"]:
        assert dead_letter(RawMessage(raw), [], None, "validation")["type"] == "unknown"
