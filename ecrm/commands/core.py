"""Small commands: the event schema and topic administration."""

from __future__ import annotations

import orjson
import typer

from core.errors import BrokerUnavailable
from core.kafka import ensure_topics
from core.settings import get_settings
from ecrm.commands.errors import error_line
from schemas import event_json_schema


def schema() -> None:
    """Print the JSON Schema of an event (the tagged union on ``type``)."""
    typer.echo(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode())


def topics() -> None:
    """Create the events and dead-letter topics on ECRM_KAFKA_BOOTSTRAP if they are missing."""
    settings = get_settings()
    try:
        created = ensure_topics(settings)
    except BrokerUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created: {', '.join(created)}" if created else "topics already exist")
