"""One-to-one recommendations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SettingsDep, StoreDep
from api.models import Recommendations
from api.recommend import popular_for_customer
from ecrm import metrics

router = APIRouter(tags=["recommendations"])


@router.get("/v1/customers/{customer_id}/recommendations", response_model=Recommendations)
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
