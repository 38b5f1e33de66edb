"""``ecrm forget ID``: erase a customer (the right to erasure), the same as ``DELETE /v1/customers/{id}``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from analytics.store import AnalyticsStore
from core import erasure_log
from core.errors import ServiceUnavailable
from core.redis import connect
from core.settings import Settings, get_settings
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from profiles.store import ProfileStore


def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase", show_default=False)],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Erase a customer of a shop: their profile, the visitors who logged in as them, their rows in the segment
    snapshot. Training skips their logged interactions, and their older events are not applied again on a replay.
    The same customer id in another shop is another customer, left as it is."""
    try:
        pids, rows, logged = asyncio.run(erase(get_settings(), customer_id, tenant))
    except ServiceUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    visitors = len(pids) - 1
    typer.echo(
        f"erased customer {customer_id!r}: {visitors} visitor profile(s), {rows} segment snapshot row(s), "
        f"{logged} training-log entr{'y' if logged == 1 else 'ies'}"
    )


async def erase(settings: Settings, customer_id: str, tenant: str = DEFAULT_TENANT) -> tuple[list[str], int, int]:
    """Erase ``customer_id`` of ``tenant`` everywhere; returns the profile ids erased, the snapshot rows and the
    training-log entries removed."""
    client = connect(settings)
    try:
        store = ProfileStore(client, settings, tenant)
        await erasure_log.record(client, store.keys, customer_id, settings.erasure_log_file)  # read by ecrm restore
        erased = await store.erase(customer_id)
        rows = await AnalyticsStore(client, settings.key_prefix, tenant).forget_rows(erased.pids)
    finally:
        await client.aclose()
    return erased.pids, rows, erased.log_entries
