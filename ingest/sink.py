"""Where importers send their output: events to Kafka in batches (or nowhere, in a dry run), rejects to a file.

Thin adapters around :mod:`core.kafka`; errors surface as :class:`core.errors.BrokerUnavailable`, and a batch in
which any message was not acknowledged as :class:`core.errors.DeliveryFailed` (``sent`` and ``failed`` count them).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TextIO

from core.errors import DeliveryFailed
from core.kafka import ensure_topics, make_producer, produce_events
from core.settings import Settings
from core.tenants import DEFAULT_TENANT


class EventSink(Protocol):
    sent: int
    failed: int

    def add(self, event: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class DryRunSink:
    """Counts the events it is given and sends nothing."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0

    def add(self, event: dict[str, Any]) -> None:
        del event  # only counted
        self.sent += 1

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class KafkaSink:
    """Produces events to the events topic, ``batch_size`` at a time, each batch flushed and every message's
    delivery checked; stops at the first batch with a failed delivery (:class:`DeliveryFailed`)."""

    def __init__(self, settings: Settings, batch_size: int = 500, tenant: str = DEFAULT_TENANT) -> None:
        ensure_topics(settings, timeout_s=settings.producer_timeout_s)
        self._tenant = tenant  # every event's tenant (its header and partition key)
        self._producer = make_producer(settings)
        self._topic = settings.events_topic
        self._batch: list[dict[str, Any]] = []
        self._batch_size = batch_size
        self.sent = 0  # acknowledged by the broker
        self.failed = 0  # sent and not acknowledged

    def add(self, event: dict[str, Any]) -> None:
        self._batch.append(event)
        if len(self._batch) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            try:
                self.sent += produce_events(self._producer, self._topic, batch, tenant=self._tenant)
            except DeliveryFailed as exc:
                self.sent += exc.delivered
                self.failed += exc.failed
                raise

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=5)


def rejects_beside(path: Path) -> Path:
    """The default rejects file of an input: ``NAME.rejects.tsv`` in the input's own directory (pure)."""
    return path.with_name(f"{path.name}.rejects.tsv")


def unwritable(path: Path) -> str | None:
    """Why a rejects file cannot be created at ``path`` (its directory is missing or read-only), or None."""
    directory = path.parent
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK):
        return f"{directory} is not writable"
    return None


class RejectsFile:
    """Tab-separated ``number, reason, text`` lines, written to ``path`` from the first reject on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: TextIO | None = None

    def write(self, number: int, reason: str, text: str) -> None:
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="\n")
            self._handle.write("line\treason\ttext\n")
        self._handle.write(f"{number}\t{_one_line(reason)}\t{_one_line(text)}\n")
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def failure_message(exc: Exception, sink: EventSink) -> str:
    """The importers' last line when the broker failed them: what failed, and how many events made it."""
    if isinstance(exc, DeliveryFailed):
        return (
            f"error: {exc}. In all {sink.sent} events were acknowledged and {sink.failed} failed; the import stopped "
            "there. Event ids are stable: importing the same input again applies no event twice"
        )
    return f"error: {exc} ({sink.sent} events were acknowledged before)"
