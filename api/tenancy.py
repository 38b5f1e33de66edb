"""The caller's tenant in the API (issue 22, docs/tenants.md): one function reads it, one records it for the metrics.

The key a request sends names its tenant (``tenant:scope:secret``; api/auth.py's ``Caller.tenant``); a caller
without one (a ``scope:secret`` key, the open mode) acts for :data:`~core.tenants.DEFAULT_TENANT`. The services
a request acts through (its tenant's store, model, analytics...) are :mod:`api.tenant_services`' (apart: they import
this module's functions; api/auth.py's ``caller()`` calls :func:`note_tenant`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.requests import Request

from core.tenants import DEFAULT_TENANT, validate_tenant

if TYPE_CHECKING:  # api/auth.py imports this module
    from api.auth import Caller

_REQUEST_TENANT: ContextVar[str] = ContextVar("ecrm_request_tenant", default=DEFAULT_TENANT)
TENANT_STATE = "tenant"
"""The request-state entry (``scope["state"]``) holding the caller's tenant once a key was checked: the latency
middleware labels the request with it."""


def tenant_of(caller: Caller) -> str:
    """The tenant ``caller`` acts for: its key's, else ``default``."""
    return str(getattr(caller, "tenant", DEFAULT_TENANT))


def note_tenant(request: Request, caller: Caller) -> str:
    """Record the caller's tenant for the rest of the request and return it: on the request's state (the metrics'
    ``tenant`` label) and as :func:`request_tenant` (whose configuration files serve it). Called where the caller's
    key is checked, before the route runs."""
    tenant = tenant_of(caller)
    setattr(request.state, TENANT_STATE, tenant)
    _REQUEST_TENANT.set(tenant)
    return tenant


def request_tenant() -> str:
    """The tenant of the request being served (:func:`note_tenant`); ``default`` outside a request (a command)."""
    return _REQUEST_TENANT.get()


@contextmanager
def acting_for(tenant: str) -> Iterator[str]:
    """Outside a request (a command with ``--tenant``): :func:`request_tenant` is ``tenant`` within the block."""
    token = _REQUEST_TENANT.set(validate_tenant(tenant))
    try:
        yield tenant
    finally:
        _REQUEST_TENANT.reset(token)
