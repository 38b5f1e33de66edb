"""A tenant's key, for the tenant-operations tests (issue 22).

The caller's tenant comes from its key (api/auth.py's ``Caller.tenant``, noted for the request by
:func:`api.tenancy.note_tenant`). For brevity, these tests let :func:`as_tenant` stand in for the key check (real
``tenant:scope:secret`` keys: tests/integration/test_tenants.py) through a dependency override: the tenant the
``x-tenant`` header names, with the scope ``x-scope`` names (admin by default), noted for the request as the key
check notes it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request

from api.auth import Caller, caller
from api.tenancy import note_tenant
from core.scopes import Scope


@dataclass(frozen=True, slots=True)
class TenantCaller(Caller):
    tenant: str = "default"


async def as_tenant(request: Request) -> Caller:
    scope = Scope.named(request.headers.get("x-scope", Scope.ADMIN.label))
    tenant = request.headers.get("x-tenant", "default")
    found = TenantCaller(scope, scope.label, f"key:{tenant}:{scope.label}", tenant)
    note_tenant(request, found)
    return found


def tenant_keys_for(app: FastAPI) -> None:
    """Callers of ``app`` act for the tenant their ``x-tenant`` header names."""
    app.dependency_overrides[caller] = as_tenant


def tenant(name: str, scope: str = "admin") -> dict[str, str]:
    return {"x-tenant": name, "x-scope": scope}
