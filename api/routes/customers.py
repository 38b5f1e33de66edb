"""Customer profiles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import StoreDep
from api.errors import NotFound
from api.models import Profile
from ecrm.keys import customer_pid

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}/profile", response_model=Profile, responses={404: {}})
async def profile(customer_id: str, store: StoreDep) -> dict[str, Any]:
    """The live profile: counts, recency/frequency/monetary, recent items, cart, category affinities."""
    found = await store.profile(customer_pid(customer_id))
    if found is None:
        raise NotFound(f"no profile for customer {customer_id!r}")
    return found
