"""Small commands: the event schema, topic administration and the key layout's migration."""

from __future__ import annotations

import orjson
import typer

from core.errors import BrokerUnavailable, StoreRefused, StoreUnavailable
from core.kafka import ensure_topics
from core.redis import connect_sync
from core.settings import get_settings
from ecrm.commands.errors import error_line
from runtime.migrate import migrate_layout
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


def migrate_keys() -> None:
    """Move the global keys written by an engine older than the Redis Cluster support (popular, trending, the
    training log, catalogue sets, models, campaign counters, analytics ...) under the hash tag {g}, and the
    de-duplication markers of older engines (a key per event) into their profile's set. Run it once on the single
    Redis node, with the workers and the API stopped; keys already moved stay as they are."""
    settings = get_settings()
    if settings.redis_cluster:
        typer.echo("error: run migrate-keys on the single node the older engine wrote (not a cluster)", err=True)
        raise typer.Exit(2)
    client = connect_sync(settings, decode_responses=True)
    try:
        moved, markers = migrate_layout(client, settings.key_prefix, settings.dedupe_ttl_days)
    except (StoreUnavailable, StoreRefused) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()
    typer.echo(f"moved {moved} global keys under {{g}}, {markers} de-duplication markers into their profiles' sets")
