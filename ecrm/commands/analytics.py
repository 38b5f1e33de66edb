"""``ecrm analytics refresh``: run the analytics refresh by hand (the worker runs it periodically)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from analytics.refresh import Outcome, Refresher, RefreshResult, make_refresher
from analytics.rules import RulesError
from analytics.settings import AnalyticsSettings
from core.errors import StoreUnavailable
from core.settings import get_settings
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption

app = typer.Typer(help="Customer analytics: RFM scores, segments, lifetime value.", no_args_is_help=True)


@app.command("refresh")
def refresh(
    force: Annotated[bool, typer.Option(help="Refresh even if the last refresh is recent")] = True,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Score every customer of a shop, fit its lifetime-value model and publish a new segment snapshot."""
    refresher = make_refresher(get_settings(), AnalyticsSettings(), tenant)
    try:
        result = asyncio.run(_run(refresher, force))
    except (StoreUnavailable, RulesError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(result.message, err=result.outcome in (Outcome.LOCKED, Outcome.LOCK_LOST))
    if result.outcome in (Outcome.LOCKED, Outcome.LOCK_LOST):
        raise typer.Exit(1)
    if result.state is not None:
        for seg in result.state.summary:
            typer.echo(f"  {seg['name']:<22}{seg['customers']:>8}")


async def _run(refresher: Refresher, force: bool) -> RefreshResult:
    try:
        return await refresher.refresh(force=force)
    finally:
        await refresher.store.client.aclose()
