"""The keyspace of one tenant, in one place for the tenant-operations code (quotas, fair training).

MERGE (issue 22): core/keyspace.py's ``Keys(prefix, tenant)`` puts the tenant in every key's hash tag; until it
lands, every tenant reads the single-shop keyspace. This is the only function to change."""

from __future__ import annotations

from core.keyspace import Keys


def tenant_keys(prefix: str, tenant: str) -> Keys:
    """The keys of ``tenant`` under ``prefix``."""
    del tenant  # MERGE: return Keys(prefix, tenant)
    return Keys(prefix)
