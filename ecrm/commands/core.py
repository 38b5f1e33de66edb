"""Small commands: the event schema, topic administration and the key layout's migration."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import typer

from core.errors import BrokerUnavailable, StoreRefused, StoreUnavailable
from core.kafka import ensure_topics
from core.keyspace import Keys, legacy_global, legacy_marker
from core.redis import connect_sync, redis_errors
from core.settings import get_settings
from ecrm.commands.errors import error_line
from profiles.migrate import forget_topic_offsets, upgrade_profile_key
from schemas import event_json_schema


def schema() -> None:
    """Print the JSON Schema of an event (the tagged union on ``type``)."""
    typer.echo(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode())


def topics() -> None:
    """Create the events and dead-letter topics on ECRM_KAFKA_BOOTSTRAP if they are missing (an events topic created
    again: the offsets Redis remembers of the old one are forgotten)."""
    settings = get_settings()
    try:
        created = ensure_topics(settings)
    except BrokerUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if settings.events_topic in created:
        try:
            forget_topic_offsets(settings)
        except (StoreUnavailable, StoreRefused) as exc:
            typer.echo(error_line(exc), err=True)
            typer.echo(
                f"error: {settings.events_topic} was created, but Redis may remember offsets of an older topic of that "
                f"name: delete its fields of {Keys(settings.key_prefix).applied_offsets} before starting workers",
                err=True,
            )
            raise typer.Exit(2) from exc
    typer.echo(f"created: {', '.join(created)}" if created else "topics already exist")


def migrate_keys() -> None:
    """Upgrade the keys an older engine wrote, on a single node or a Redis Cluster (every node is scanned): the
    item times and purchases folded into ``items`` (recent, items_ts, bought), the de-duplication sets cut to
    ECRM_DEDUPE_WINDOW_S; on
    a single node also the global keys of engines before the Redis Cluster support (popular, trending, the training
    log, catalogue sets, models, campaign counters, analytics ...) moved under the hash tag {g}, and the
    de-duplication markers of older engines (a key per event) into their profile's set. Each step is atomic and
    idempotent: it may run beside the workers and the API of the new engine, and again after a stop."""
    settings = get_settings()
    client = connect_sync(settings, decode_responses=True)
    moved = markers = 0
    done: Counter[str] = Counter()
    ttl_ms = int(settings.dedupe_window_s * 1000)
    now = int(time.time() * 1000) * 1024  # the set's score: when, in 1/1024 ms (profiles/apply.lua)
    prefix = settings.key_prefix
    try:
        with redis_errors("upgrading the key layout"):
            for n, key in enumerate(client.scan_iter(match=f"{prefix}:*", count=1000), start=1):
                step = upgrade_profile_key(client, prefix, key, ttl_ms)
                if step is not None:
                    done[step] += 1
                elif not settings.redis_cluster:  # a cluster never held the layouts before the tag {g}
                    new = legacy_global(prefix, key)
                    if new is not None and client.renamenx(key, new):
                        moved += 1
                    marker = legacy_marker(prefix, key)
                    if marker is not None:
                        pipe = client.pipeline(transaction=True)
                        pipe.zadd(marker[0], {marker[1]: now}, nx=True).pexpire(marker[0], ttl_ms).delete(key)
                        pipe.execute()
                        markers += 1
                if n % 100_000 == 0:
                    typer.echo(f"  {n} keys looked at", err=True)
    except (StoreUnavailable, StoreRefused) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()
    typer.echo(
        f"moved {moved} global keys under {{g}}, {markers} de-duplication markers into their profiles' sets; "
        f"folded {done['items_ts'] + done['recent'] + done['bought']} item-times and purchases keys into items, cut "
        f"{done['seen']} de-duplication sets to the window"
    )
