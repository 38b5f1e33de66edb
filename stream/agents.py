"""The Faust agent: consume ``ecrm.events`` in batches and hand them to :class:`BatchProcessor`.

Short by design: decode, call the processor, and let Faust ack the batch only after it was applied.
Batches are acked after the body returns (``take_events``), so a crash redelivers them: at-least-once, and the
store's de-duplication makes the effects idempotent.
"""

from __future__ import annotations

import logging
from typing import cast

import faust
import orjson

from ecrm.settings import Settings
from ecrm.store import ProfileStore, connect
from stream.app import dlq_topic, events_topic
from stream.processing import BatchProcessor, Envelope, RawMessage

log = logging.getLogger(__name__)


def register_agents(app: faust.App, settings: Settings) -> None:
    """Attach the profile agent to ``app``."""
    source = events_topic(app, settings)
    dlq = dlq_topic(app, settings)

    async def send_dead_letter(envelope: Envelope) -> None:
        key = (envelope.get("key") or "").encode() or None
        fut = await dlq.send(key=key, value=orjson.dumps(envelope))
        await fut  # delivered before the source batch is acked
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
                )
                for ev in events
            ]
            await processor.process(batch)
