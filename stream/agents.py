"""The Faust agent: consume ``ecrm.events`` in batches and hand them to :class:`BatchProcessor`.

Short by design: decode, call the processor, and let Faust ack the batch only after it was applied.
Batches are acked after the body returns (``take_events``), so a crash redelivers them: at-least-once, and the
store's de-duplication makes the effects idempotent. An exception inside the body would also ack the batch (the
stream acks in a ``finally``), so none may escape: bad input is dead-lettered, Redis and Kafka outages are retried,
and anything else ends the process before the batch is acked. A cancellation (a graceful stop, SIGTERM, while the
batch waits for Redis or Kafka) withholds the batch's acks and ends the process at once, before Faust's shutdown
could commit anything more, so the offsets are not committed and the next worker reads the batch again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn, cast

import faust
import orjson
from faust.types import EventT

from core.errors import BrokerUnavailable
from core.kafka import broker_errors
from core.redis import connect
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import DIRECT
from stream.app import dlq_topic, events_topic
from stream.processing import BatchProcessor, Envelope, RawMessage

log = logging.getLogger(__name__)


def source_of(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> str:
    """The ``source`` header of a message (the collector sets it to the sending key's scope), else ``direct``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    for name, value in pairs:
        if name == "source" and isinstance(value, bytes) and 0 < len(value) <= 32:
            return value.decode("ascii", "replace")
    return DIRECT


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
        batches = cast(faust.Stream[bytes], stream).take_events(
            settings.worker_batch_size, within=settings.worker_batch_window_s
        )
        async for events in batches:
            batch = [
                RawMessage(
                    value=ev.message.value,
                    key=ev.message.key,
                    topic=ev.message.topic,
                    partition=ev.message.partition,
                    offset=ev.message.offset,
                    source=source_of(ev.message.headers),
                    timestamp_ms=record_time_ms(ev.message.timestamp),
                )
                for ev in events
            ]
            try:
                await processor.process(batch)
            except asyncio.CancelledError:
                withhold_acks(events)
                log.warning(
                    "stopped before a batch of %d events was written: left unacked for redelivery, exiting now",
                    len(batch),
                )
                # Faust's own way out can still commit the batch's offsets (seen under load: its messages acked
                # while the consumer stops, the final commit then covering them), so nothing of it may run:
                # the process ends here, and the next worker reads the batch again.
                exit_now(0)
            except Exception:  # a bug, not bad input (that is dead-lettered) nor Redis/Kafka down (retried)
                # Leaving the loop would ack this batch (take_events acks in a finally): exit without acking, so
                # the batch is redelivered after the restart, and de-duplication keeps its effects exact.
                log.exception("unexpected error in a batch; exiting without acking it")
                exit_now(70)


def exit_now(code: int) -> NoReturn:
    """End the process at once (no Faust shutdown: no ack, no commit), the log written out first."""
    logging.shutdown()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


def withhold_acks(events: Sequence[EventT[Any]]) -> None:
    """Keep ``take_events`` from acking ``events`` when the body is left by a cancellation.

    ``take_events`` acks its buffer in a ``finally`` whatever ended the body. Faust acks a message only once
    (``Message.ack`` does nothing for a message already marked acked), so marking the messages here, without telling
    the consumer, turns that ``finally`` into a no-op for them: their offsets never reach the consumer's acked set
    and are not committed, and the consumer does not wait for them on its way out. Used only when the agent stops:
    the process does not read on from there, and the next worker reads the batch again (de-duplication keeps the
    effects of anything already written exact).
    """
    for event in events:
        event.message.acked = True
