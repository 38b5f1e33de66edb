"""Customer profiles and one-to-one recommendations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SettingsDep, StoreDep
from api.errors import NotFound
from api.models import Profile, Recommendations
from api.recommend import popular_for_customer
from ecrm import metrics
from ecrm.keys import customer_pid

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}/profile", response_model=Profile, responses={404: {}})
async def profile(customer_id: str, store: StoreDep) -> dict[str, Any]:
    """The live profile: counts, recency/frequency/monetary, recent items, cart, category affinities."""
    found = await store.profile(customer_pid(customer_id))
    if found is None:
        raise NotFound(f"no profile for customer {customer_id!r}")
    return found


@router.get("/{customer_id}/recommendations", response_model=Recommendations)
async def recommendations(
    customer_id: str,
    store: StoreDep,
    settings: SettingsDep,
    n: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> Recommendations:
    """One-to-one recommendations. An unknown customer gets popular items (200, never an error)."""
    n = min(n, settings.recommendations_max_n)
    recs = await popular_for_customer(store, customer_id, n)
    metrics.RECOMMENDATIONS.labels("customer", recs.strategy).inc()
    return Recommendations.model_validate(recs, from_attributes=True)
