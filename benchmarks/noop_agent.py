"""The reference of ``ecrm bench ingest``: a Faust agent that does nothing, on the worker's app settings.

It reads the events topic in its own consumer group, in batches as the worker's agent does (``take_events`` with
``ECRM_WORKER_BATCH_SIZE`` and ``ECRM_WORKER_BATCH_WINDOW_S``), and only counts what it read: one Redis ``INCRBY``
per batch, so the bench reads its progress the way it reads the worker's. Run by the bench as
``python -m benchmarks.noop_agent`` with the settings in the environment.
"""

from __future__ import annotations

import logging
from typing import cast

import faust

from core.redis import connect
from core.settings import Settings, get_settings
from stream.app import create_app, events_topic


def noop_count_key(settings: Settings) -> str:
    """The Redis key where the no-op agent of these settings (its group) counts the events it read."""
    return f"{settings.key_prefix}:bench:noop:{settings.worker_app_id}"


def build(settings: Settings) -> faust.App:
    """A Faust app with the worker's settings (its own group: ``<ECRM_WORKER_APP_ID>-noop``) and one no-op agent."""
    key = noop_count_key(settings)
    settings = settings.model_copy(update={"worker_app_id": f"{settings.worker_app_id}-noop"})
    app = create_app(settings)

    @app.agent(events_topic(app, settings), name="noop")
    async def noop(stream: faust.StreamT[bytes]) -> None:
        client = connect(settings)
        batches = cast(faust.Stream[bytes], stream).take_events(
            settings.worker_batch_size, within=settings.worker_batch_window_s
        )
        async for events in batches:
            await client.incrby(key, len(events))

    return app


def main() -> None:
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = faust.Worker(build(get_settings()), loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
