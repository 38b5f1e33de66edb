"""``ecrm train`` and ``ecrm model list|rollback``: model versions by hand."""

from __future__ import annotations

import redis
import typer

from ecrm.keys import Keys
from ecrm.settings import Settings, get_settings
from recommender.registry import Registry, RegistryError


def _registry(settings: Settings) -> Registry:
    client = redis.Redis.from_url(settings.redis_url)
    return Registry(client, Keys(settings.key_prefix), settings.model_keep_versions)


def train() -> None:
    """Run one training now: fit on the interaction log in Redis, check on the holdout, promote or refuse."""
    from recommender.training import NothingToTrain, TrainingBusy, train_once

    settings = get_settings()
    try:
        result = train_once(settings, echo=typer.echo)
    except (NothingToTrain, TrainingBusy, RegistryError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    typer.echo(f"holdout {result.holdout or 'n/a'}; served version's {result.current_holdout or 'n/a'}")
    typer.echo(f"timings: {timings}")
    if not result.promoted:
        raise typer.Exit(1)


def list_versions() -> None:
    """The promoted versions kept, newest first; the served one is marked with *."""
    registry = _registry(get_settings())
    try:
        current = registry.current()
        versions = registry.promoted()
        if not versions:
            typer.echo("no model version yet (run `ecrm train`)")
            return
        for version in versions:
            info = registry.info(version)
            mark = "*" if version == current else " "
            meta = info.meta
            typer.echo(
                f"{mark} {version}  interactions={meta.get('interactions')}  "
                f"holdout ndcg@10={info.ndcg if info.ndcg is not None else 'n/a'}  {meta.get('created_at', '')}"
            )
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def rollback() -> None:
    """Serve the previous promoted version again (every API replica switches within a second)."""
    try:
        version = _registry(get_settings()).rollback()
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"now serving {version}")
