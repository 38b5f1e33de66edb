"""``ecrm train-log drain`` and ``ecrm train-log status``: the training-log store (trainer/logstore.py), the trainer's
copy of the interactions on disk. The worker drains on its timer (``ECRM_TRAINING_LOG_DRAIN_S``) by running
``ecrm train-log drain --no-wait``; every training drains first."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from core.errors import StoreUnavailable, TrainingError
from core.redis import connect_sync
from core.settings import get_settings
from ecrm.commands.errors import error_line

app = typer.Typer(help="The training log's copy on disk: drain it from Redis, show it.", no_args_is_help=True)


@app.command("drain")
def drain(
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a drain or a read another process runs (else skip)")
    ] = True,
) -> None:
    """Copy the training log's entries from Redis into the store, then remove them from Redis; apply erasures,
    merge segments, keep the bound (ECRM_INTERACTIONS_LOG_MAXLEN)."""
    from trainer.logstore import TrainingLogStore

    settings = get_settings()
    store = TrainingLogStore.of(settings, connect_sync(settings))
    try:
        result = store.drain(echo=typer.echo, wait=wait)
    except (TrainingError, StoreUnavailable, ValueError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if result is None:
        typer.echo("the store is busy (another drain, a training or a backup): skipped")
    elif wait:
        typer.echo(
            f"drained {result.drained} entries ({result.trimmed} removed from Redis), {result.rewritten} segments "
            f"rewritten for erasures, {result.merged} merged, {result.dropped} oldest entries dropped by the bound"
        )


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Where the store is, what it holds, and whether Redis knows it as the store that drains its log."""
    from trainer.logstore import TrainingLogStore

    settings = get_settings()
    client = connect_sync(settings)
    try:
        store = TrainingLogStore.of(settings, client)
        found = store.status()
        found["redis_tail"] = int(client.xlen(store.keys.interactions))
    except (TrainingError, StoreUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(orjson.dumps(found).decode())
        return
    for name, value in found.items():
        typer.echo(f"{name:<16}{value}")
