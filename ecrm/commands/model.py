"""``ecrm train`` and ``ecrm model list|rollback``: model versions by hand."""

from __future__ import annotations

import typer

from core.errors import RegistryError, StoreUnavailable, TrainingError
from core.keyspace import Keys
from core.redis import connect_sync
from core.registry import Registry
from core.settings import Settings, get_settings
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption


def _registry(settings: Settings, tenant: str) -> Registry:
    return Registry(connect_sync(settings), Keys(settings.key_prefix, tenant), settings.model_keep_versions)


def train(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Run one training of a shop now: fit on its interaction log in Redis, check on the holdout, promote or
    refuse (its own model versions)."""
    from trainer.training import train_once

    settings = get_settings()
    try:
        result = train_once(settings, echo=typer.echo, tenant=tenant)
    except (TrainingError, RegistryError, StoreUnavailable, ValueError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    typer.echo(f"holdout {result.holdout or 'n/a'}; served version's {result.current_holdout or 'n/a'}")
    if result.baselines:
        figures = ", ".join(f"{name} {values.get('ndcg@10', 0.0):.4f}" for name, values in result.baselines.items())
        typer.echo(f"baselines on the same window (NDCG@10): {figures}; personal lists: {result.serve}")
    typer.echo(f"timings: {timings}")
    if not result.promoted:
        raise typer.Exit(1)


def list_versions(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """A shop's promoted versions kept, newest first; the served one is marked with *; the last line says what
    serves the personal lists: the engine, or the baseline the retraining gate chose instead (since when, and
    why)."""
    registry = _registry(get_settings(), tenant)
    try:
        current = registry.current()
        versions = registry.promoted()
        baseline = registry.baseline()
        if not versions:
            typer.echo("no model version yet (run `ecrm train`)")
            return
        for version in versions:
            info = registry.info(version)
            mark = "*" if version == current else " "
            meta = info.meta
            gate = meta.get("gate", {})
            serve = gate.get("serve", "engine") if isinstance(gate, dict) else "engine"
            typer.echo(
                f"{mark} {version}  interactions={meta.get('interactions')}  "
                f"holdout ndcg@10={info.ndcg if info.ndcg is not None else 'n/a'}  gate={serve}  "
                f"{meta.get('created_at', '')}"
            )
        if baseline is None:
            typer.echo("personal lists: the engine serves")
        else:
            typer.echo(
                f"personal lists: the {baseline['baseline']} baseline serves instead of the engine since "
                f"{baseline.get('since', '?')} (gate of {baseline.get('decided_by', '?')}: "
                f"{baseline.get('reason', '')})"
            )
            ranker = meta.get("ranker")
            if isinstance(ranker, dict):
                state = "used" if ranker.get("used") else "not used"
                typer.echo(f"    ranking stage {state}: {ranker.get('reason', 'n/a')}")
    except (RegistryError, StoreUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc


def rollback(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Serve a shop's previous promoted version again (every API replica switches within a second)."""
    try:
        version = _registry(get_settings(), tenant).rollback()
    except (RegistryError, StoreUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"now serving {version}")
