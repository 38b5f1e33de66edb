"""``ecrm bench ...``: benchmark scripts that print figures (targets are checked by reading them, not by tests)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ecrm.settings import get_settings


def ingest(
    events: Annotated[int, typer.Option(help="Events pushed through the worker")] = 100_000,
    load_rate: Annotated[float, typer.Option(help="Steady load for the lag phase (0: half the worker rate)")] = 0.0,
    seconds: Annotated[float, typer.Option(help="Length of the lag phase")] = 20.0,
) -> None:
    """Worker throughput and event-to-profile lag, with a plain aiokafka consumer's rate for the ratio.

    Uses the embedded broker and Redis unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL name real ones."""
    from ecrm.bench_ingest import run_ingest_bench
    from ecrm.embedded import start_broker, start_redis

    settings = get_settings()
    servers = []
    try:
        if "ECRM_KAFKA_BOOTSTRAP" not in os.environ:
            servers.append(broker := start_broker())
            settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{broker.port}"})
        if "ECRM_REDIS_URL" not in os.environ:
            servers.append(redis := start_redis())
            settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0"})
        figures = run_ingest_bench(settings, events, load_rate or None, seconds, typer.echo)
    finally:
        for server in reversed(servers):
            server.stop()
    typer.echo("")
    for line in figures.lines():
        typer.echo(line)
