"""Small commands: the event schema, topic administration and the key layout's migration."""

from __future__ import annotations

import orjson
import typer

from core.errors import BrokerUnavailable, StoreRefused, StoreUnavailable
from core.kafka import ensure_topics
from core.keyspace import Keys
from core.settings import get_settings
from ecrm.commands.errors import error_line
from profiles.migrate import forget_topic_offsets
from runtime.migrate import migrate_deployment
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
    keys kept beside a profile's hash (cart, aff, items, sess, recent, items_ts, bought) folded into it, one
    script per profile, key layout 3's long field names and layout 4's count fields (n:<type>, to their one-letter
    codes) renamed in every profile hash, the de-duplication sets cut to ECRM_DEDUPE_WINDOW_S; on a single node also
    the global keys of engines before the Redis Cluster support (popular, trending, the training log, catalogue
    sets, models, campaign counters, analytics ...) moved under the hash tag {g}, and the de-duplication markers of
    older engines (a key per event) into their profile's set; then every key of a single-shop deployment (the
    layouts before tenants) into the tenant ``default``; last, layout 4's profiles index dropped for each tenant's
    profile count (set to the profile hashes found). Each step is idempotent and may run again after a stop; the
    move into the tenant ``default`` wants the workers stopped (a key the new engine already wrote is a conflict:
    reported, both left as they are) (:mod:`runtime.migrate`)."""
    try:
        done = migrate_deployment(get_settings(), progress=lambda n: typer.echo(f"  {n} keys looked at", err=True))
    except (StoreUnavailable, StoreRefused) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"moved {done.moved} global keys under {{g}}, {done.markers} de-duplication markers into their profiles' "
        f"sets; folded {done.folded} older profile keys into {done.profiles} profile hashes, renamed the fields of "
        f"{done.renamed} profile hashes, cut {done.upgraded['seen']} de-duplication sets to the window; moved "
        f"{done.to_tenant} keys into the tenant default; {_index_line(done.indexed, done.counted)}"
    )
    if done.conflicts:
        named = ", ".join(done.conflicting)
        typer.echo(
            f"error: {done.conflicts} keys were not moved into the tenant default: the engine already wrote their new "
            f"names (were workers running?); compare and delete one of each pair, then run again: {named}",
            err=True,
        )
        raise typer.Exit(1)


def _index_line(indexed: int, counted: int) -> str:
    dropped = f"dropped the profiles index ({indexed} profiles), " if indexed else ""
    return f"{dropped}the profile counts set to {counted} profile hashes"
