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
