"""The Faust agent: consume ``ecrm.events`` in batches and hand them to :class:`BatchProcessor`.

Short by design: decode, call the processor, and ack a batch only after it was applied. The agent reads with
``noack_take`` and acks each batch itself once written (:class:`WriteBehind`), so a crash redelivers it:
at-least-once, and the store's de-duplication makes the effects idempotent. With ``ECRM_WORKER_WRITE_BEHIND`` the
agent reads and prepares the next batch while one is written to Redis (Redis and this process work at the same time);
either way a batch is written only after the one before it, so events are applied in the order read. No exception
may end the body quietly: bad input is dead-lettered, Redis and Kafka outages are retried, and anything else ends the
process before the batch is acked.
A cancellation (a graceful stop, SIGTERM) while a batch is read but not yet written withholds its acks and ends the
process at once, before Faust's shutdown could commit anything more, so the offsets are not committed and the next
worker reads the batch again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, cast

import faust
import orjson
from faust.types import EventT, Message

from core.errors import BrokerUnavailable
from core.kafka import broker_errors
from core.redis import connect
from core.settings import Settings
from core.tenants import DEFAULT_TENANT, TENANT_HEADER
from profiles.store import ProfileStore
from profiles.updates import DIRECT
from stream.app import dlq_topic, events_topic
from stream.processing import MAX_TENANT_HEADER, BatchProcessor, Envelope, PreparedBatch, RawMessage

log = logging.getLogger(__name__)


def source_of(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> str:
    """The ``source`` header of a message (the collector sets it to the sending key's scope), else ``direct``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    for name, value in pairs:
        if name == "source" and isinstance(value, bytes) and 0 < len(value) <= 32:
            return value.decode("ascii", "replace")
    return DIRECT


def client_of(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> str | None:
    """The ``client`` header of a message (a digest the collector sets for a collect key's events), else None."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    for name, value in pairs:
        if name == "client" and isinstance(value, bytes) and 0 < len(value) <= 32:
            return value.decode("ascii", "replace")
    return None


def senders_of(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> tuple[str, str | None, str]:
    """:func:`source_of`, :func:`client_of` and the ``tenant`` header (as sent, cut to 64 bytes; none: the tenant
    ``default``; the processor refuses a bad one) in one pass over the headers (the worker reads them for every
    event; a message without headers, the common case of a producer's own events, costs nothing)."""
    if not headers:
        return DIRECT, None, DEFAULT_TENANT
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    source: str | None = None
    client: str | None = None
    tenant: str | None = None
    for name, value in pairs:
        if name == "source" and source is None and isinstance(value, bytes) and 0 < len(value) <= 32:
            source = value.decode("ascii", "replace")
        elif name == "client" and client is None and isinstance(value, bytes) and 0 < len(value) <= 32:
            client = value.decode("ascii", "replace")
        elif name == TENANT_HEADER and tenant is None:
            raw = value if isinstance(value, bytes) else b""
            tenant = raw[:MAX_TENANT_HEADER].decode("utf-8", "replace")
    return source or DIRECT, client, DEFAULT_TENANT if tenant is None else tenant


def record_time_ms(timestamp: float | None) -> float | None:
    """Faust's record timestamp (seconds) in milliseconds; None when the broker gave none."""
    return timestamp * 1000.0 if timestamp else None


def register_agents(app: faust.App, settings: Settings) -> None:
    """Attach the profile agent to ``app``."""
    source = events_topic(app, settings)
    dlq = dlq_topic(app, settings)

    async def send_dead_letter(envelope: Envelope) -> None:
        """Deliver to the dead-letter topic before the source batch is acked; retry while Kafka refuses."""
        key = (envelope.get("key") or "").encode() or None
        while True:
            try:
                with broker_errors("sending to the dead-letter topic"):
                    fut = await dlq.send(key=key, value=orjson.dumps(envelope))
                    await fut
                break
            except BrokerUnavailable as exc:
                log.warning("dead-letter topic unavailable, retrying in 1s: %s", exc)
                await asyncio.sleep(1.0)
        log.warning("dead-lettered %s: %s", envelope.get("event_id") or envelope["source"], envelope["reason"])

    @app.agent(source, name="profiles")
    async def profiles(stream: faust.StreamT[bytes]) -> None:
        processor = BatchProcessor(ProfileStore(connect(settings), settings), settings, send_dead_letter)
        events_in = cast(faust.Stream[bytes], stream)
        writes = WriteBehind(processor, events_in.ack)
        events: Sequence[EventT[bytes]] = ()
        try:
            # noack_take: the events are acked here, each batch once written (WriteBehind), not when the body
            # moves on to the next batch.
            async for taken in events_in.noack_take(settings.worker_batch_size, settings.worker_batch_window_s):
                events = cast(Sequence[EventT[bytes]], taken)
                try:
                    prepared = processor.prepare([raw_message(ev.message) for ev in events])
                except Exception:  # a bug, not bad input (that is dead-lettered)
                    log.exception("unexpected error preparing a batch; exiting without acking it")
                    exit_now(70)
                await writes.submit(prepared, events)
                if not settings.worker_write_behind:
                    await writes.written()  # this batch written (and acked) before the next one is read
                events = ()
        except asyncio.CancelledError:
            unacked = [*writes.unacked(), *events]
            if not unacked:
                raise  # nothing read is left unwritten: Faust's own shutdown commits what was acked
            withhold_acks(unacked)
            log.warning(
                "stopped before a batch of %d events was written: left unacked for redelivery, exiting now",
                len(unacked),
            )
            # Faust's own way out can still commit the batch's offsets (seen under load: its messages acked
            # while the consumer stops, the final commit then covering them), so nothing of it may run:
            # the process ends here, and the next worker reads the batch again.
            exit_now(0)


def raw_message(message: Message) -> RawMessage:
    """The processor's view of a Kafka message."""
    source, client, tenant = senders_of(message.headers)
    return RawMessage(
        message.value,
        message.key,
        message.topic,
        message.partition,
        message.offset,
        source,
        record_time_ms(message.timestamp),
        client,
        tenant,
    )


class WriteBehind:
    """Writes one prepared batch to Redis while the agent reads and prepares the next (with
    ``ECRM_WORKER_WRITE_BEHIND``; otherwise the agent waits for each write: :meth:`written`).

    Redis runs the batch's scripts on its own core while this process reads on (Faust) and validates and plans the
    next batch, so the two overlap instead of taking turns. At most one batch is written at a time, in the order
    read (a batch starts only when the one before it is written), and a batch's events are acked only once it is
    written: a crash or a stop before that leaves them unacked, for the next worker to read again.
    """

    def __init__(self, processor: BatchProcessor, ack: Callable[[EventT[Any]], Awaitable[bool]]) -> None:
        self.processor = processor
        self.ack = ack
        self.task: asyncio.Task[None] | None = None
        self.writing: Sequence[EventT[Any]] = ()

    async def submit(self, batch: PreparedBatch, events: Sequence[EventT[Any]]) -> None:
        """Wait until the previous batch is written and acked, then start writing ``batch``."""
        if self.task is not None:
            await self.task
        self.writing = events
        self.task = asyncio.create_task(self._write(batch, events))

    async def written(self) -> None:
        """Wait until the batch being written is written and acked."""
        if self.task is not None:
            await self.task

    def unacked(self) -> Sequence[EventT[Any]]:
        """The events of the batch being written (empty once it is written and acked)."""
        return self.writing if self.task is not None and not self.task.done() else ()

    async def _write(self, batch: PreparedBatch, events: Sequence[EventT[Any]]) -> None:
        try:
            await self.processor.apply(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug, not bad input (that is dead-lettered) nor Redis/Kafka down (retried)
            # Exit without acking: the batch is redelivered after the restart, and de-duplication keeps its effects
            # exact.
            log.exception("unexpected error in a batch; exiting without acking it")
            exit_now(70)
        for event in events:
            await self.ack(event)


def exit_now(code: int) -> NoReturn:
    """End the process at once (no Faust shutdown: no ack, no commit), the log written out first."""
    logging.shutdown()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


def withhold_acks(events: Sequence[EventT[Any]]) -> None:
    """Keep ``events`` from being acked when the body is left by a cancellation.

    Faust acks a message only once (``Message.ack`` does nothing for a message already marked acked), so marking the
    messages here, without telling the consumer, turns any later ack into a no-op for them (a write that completes
    while the worker stops included): their offsets never reach the consumer's acked set and are not committed, and
    the consumer does not wait for them on its way out. Used only when the agent stops:
    the process does not read on from there, and the next worker reads the batch again (de-duplication keeps the
    effects of anything already written exact).
    """
    for event in events:
        event.message.acked = True
