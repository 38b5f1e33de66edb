"""Tenants (issue 22): one engine hosts several shops, each walled off. A tenant is named by the API key that acts
for it (``tenant:scope:secret`` in ``ECRM_API_KEYS``; ``scope:secret`` is the tenant :data:`DEFAULT_TENANT`), never
by a request body; events carry it on Kafka in the header :data:`TENANT_HEADER`.

This module holds the name rules only (pure); the keyspace (``core/keyspace.py``), the API, the worker, the trainer
and the configuration files take a tenant name validated here."""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
"""The tenant of a key without one (``scope:secret``), of events without a tenant header, and of every ``ecrm``
command run without ``--tenant``: a single-shop deployment is this tenant."""
TENANT_HEADER = "tenant"
"""The Kafka header carrying the tenant of an event (set by the collector and the importers)."""
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class TenantError(ValueError):
    """A tenant name that does not match :data:`TENANT_PATTERN`."""


def validate_tenant(name: str) -> str:
    """``name`` when it is a valid tenant name (lowercase letters, digits and ``-``, 1-32 characters, not starting
    with ``-``); :class:`TenantError` otherwise."""
    if not TENANT_PATTERN.match(name):
        raise TenantError(
            f"not a tenant name: {name!r} (1-32 characters: lowercase letters, digits and '-', "
            "starting with a letter or a digit)"
        )
    return name


def key_tenant(entry: str) -> str:
    """The tenant of one ``ECRM_API_KEYS`` entry: ``tenant:scope:secret`` names it, ``scope:secret`` is
    :data:`DEFAULT_TENANT` (a secret holds no ``:``). Only the name is checked here; api/auth.py checks the rest."""
    parts = entry.strip().split(":")
    return validate_tenant(parts[0].strip()) if len(parts) == 3 else DEFAULT_TENANT


def configured_tenants(api_keys: str, tenants: str) -> tuple[str, ...]:
    """Every tenant the engine hosts (pure): :data:`DEFAULT_TENANT`, those ``ECRM_TENANTS`` lists and those the
    ``ECRM_API_KEYS`` entries name, in that order, each once. :class:`TenantError` for a bad name."""
    names = [DEFAULT_TENANT]
    names += [validate_tenant(t.strip()) for t in tenants.split(",") if t.strip()]
    names += [key_tenant(e) for e in api_keys.split(",") if e.strip()]
    return tuple(dict.fromkeys(names))
