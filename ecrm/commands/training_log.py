"""``ecrm train-log drain`` and ``ecrm train-log status``: the training-log stores (trainer/logstore.py), the
trainer's copy of each tenant's interactions on disk. The worker drains on its timer (``ECRM_TRAINING_LOG_DRAIN_S``)
by running ``ecrm train-log drain --no-wait`` (every hosted tenant); every training drains its tenant's first."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from core.errors import StoreUnavailable, TrainingError
from core.redis import connect_sync
from core.settings import get_settings
from core.tenants import TenantError, configured_tenants
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import DEFAULT_TENANT, OptionalTenant, TenantOption

app = typer.Typer(help="The training log's copy on disk: drain it from Redis, show it.", no_args_is_help=True)


@app.command("drain")
def drain(
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a drain or a read another process runs (else skip)")
    ] = True,
    tenant: OptionalTenant = None,
) -> None:
    """Copy the training log's entries from Redis into the store, then remove them from Redis; apply erasures,
    merge segments, keep the bound (ECRM_INTERACTIONS_LOG_MAXLEN). Every hosted tenant's (ECRM_TENANTS and the
    tenants of ECRM_API_KEYS), or only the one ``--tenant`` names."""
    from trainer.logstore import TrainingLogStore

    settings = get_settings()
    try:
        tenants = [tenant] if tenant is not None else list(configured_tenants(settings.api_keys, settings.tenants))
    except TenantError as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    client = connect_sync(settings)
    failed = False
    try:
        for name in tenants:
            store = TrainingLogStore.of(settings, client, name)
            head = f"tenant {name}: " if len(tenants) > 1 or name != DEFAULT_TENANT else ""

            def echo(line: str, head: str = head) -> None:
                typer.echo(f"{head}{line}")

            try:
                result = store.drain(echo=echo, wait=wait)
            except (TrainingError, StoreUnavailable, ValueError) as exc:
                typer.echo(f"{head}{error_line(exc)}", err=True)
                failed = True
                continue
            if result is None:
                typer.echo(f"{head}the store is busy (another drain, a training or a backup): skipped")
            elif wait:
                typer.echo(
                    f"{head}drained {result.drained} entries ({result.trimmed} removed from Redis), {result.rewritten} "
                    f"segments rewritten for erasures, {result.merged} merged, {result.dropped} oldest entries "
                    "dropped by the bound"
                )
    finally:
        client.close()
    if failed:
        raise typer.Exit(2)


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Where the tenant's store is, what it holds, and whether Redis knows it as the store that drains its log."""
    from trainer.logstore import TrainingLogStore

    settings = get_settings()
    client = connect_sync(settings)
    try:
        store = TrainingLogStore.of(settings, client, tenant)
        found = store.status()
        found["tenant"] = tenant
        found["redis_tail"] = int(client.xlen(store.keys.interactions))
    except (TrainingError, StoreUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()
    if as_json:
        typer.echo(orjson.dumps(found).decode())
        return
    for name, value in found.items():
        typer.echo(f"{name:<16}{value}")
