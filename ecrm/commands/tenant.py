"""``--tenant``: the shop a command reads and writes (issue 22; :mod:`core.tenants`). Every command that touches a
shop's data takes it; without it, the tenant ``default`` (a single-shop deployment)."""

from __future__ import annotations

from typing import Annotated

import typer

from core.tenants import DEFAULT_TENANT, TenantError, validate_tenant


def _checked(name: str) -> str:
    try:
        return validate_tenant(name)
    except TenantError as exc:
        raise typer.BadParameter(str(exc)) from None


TENANT_HELP = "The shop (tenant) whose data the command reads and writes"

TenantOption = Annotated[str, typer.Option("--tenant", help=TENANT_HELP, callback=_checked)]
"""``--tenant NAME`` (default ``default``), checked against the tenant name rules."""

OptionalTenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        help="Only this shop's (tenant's) keys; default: every tenant's",
        callback=lambda name: None if name is None else _checked(name),
        show_default=False,
    ),
]

__all__ = ["DEFAULT_TENANT", "OptionalTenant", "TenantOption"]
