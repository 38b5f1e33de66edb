"""Small commands: the event schema, topic administration and the key layout's migration."""

from __future__ import annotations

import time

import orjson
import typer

from core.errors import BrokerUnavailable, StoreRefused, StoreUnavailable
from core.kafka import ensure_topics
from core.keyspace import legacy_global, legacy_marker
from core.redis import connect_sync, redis_errors
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
    moved = markers = 0
    ttl_ms = int(settings.dedupe_ttl_days * 86_400_000)
    now = int(time.time() * 1000) * 1024  # the set's score: when, in 1/1024 ms (profiles/apply.lua)
    try:
        with redis_errors("moving the global keys under {g}"):
            for key in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
                new = legacy_global(settings.key_prefix, key)
                if new is not None and client.renamenx(key, new):
                    moved += 1
                marker = legacy_marker(settings.key_prefix, key)
                if marker is not None:
                    pipe = client.pipeline(transaction=True)
                    pipe.zadd(marker[0], {marker[1]: now}, nx=True).pexpire(marker[0], ttl_ms).delete(key)
                    pipe.execute()
                    markers += 1
    except (StoreUnavailable, StoreRefused) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()
    typer.echo(f"moved {moved} global keys under {{g}}, {markers} de-duplication markers into their profiles' sets")
