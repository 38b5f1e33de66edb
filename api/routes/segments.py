"""Customer segments: sizes and totals as of the last analytics refresh, and a paginated export per segment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from analytics.cursor import InvalidCursor
from analytics.refresh import observe
from analytics.service import AnalyticsService, NoRefreshYet, UnknownSegment
from api.auth import RequireAdmin
from api.errors import BadRequest, NotFound
from api.models import SegmentsOverview
from api.tenant_services import TenantDep
from core.tenants import DEFAULT_TENANT

router = APIRouter(prefix="/v1/segments", tags=["segments"], dependencies=[RequireAdmin])

MAX_PAGE = 1000


async def _analytics(services: TenantDep) -> AnalyticsService:
    """The caller's tenant's analytics."""
    return services.analytics


AnalyticsDep = Annotated[AnalyticsService, Depends(_analytics)]


class SegmentPage(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "segment": "Champions",
                    "snapshot_id": "1795424400000-3",
                    "refreshed_at": "2026-11-23T10:00:00+00:00",
                    "total": 31,
                    "offset": 0,
                    "customers": [{"customer_id": "cust-00017", "revenue": 320.4, "orders": 6}],
                    "next_cursor": None,
                }
            ]
        }
    }

    segment: str
    snapshot_id: str = Field(description="The refresh this export pages through (fixed for the whole export)")
    refreshed_at: str | None
    total: int = Field(description="Members of the segment in that snapshot")
    offset: int
    customers: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


@router.get("", response_model=SegmentsOverview, responses={200: {"description": "Segments as of the last refresh"}})
async def segments(analytics: AnalyticsDep) -> dict[str, Any]:
    """Each segment with its size and totals (customers, revenue, orders, average lifetime value, engagement)
    as of the last refresh, with the refresh time, the model and the segment rules in force."""
    overview = await analytics.overview()
    state = await analytics.state()
    if state is not None and analytics.store.tenant == DEFAULT_TENANT:  # (the gauges have no tenant label yet)
        observe(state)
    return overview


@router.get("/{name}/customers", response_model=SegmentPage, responses={400: {}, 404: {}})
async def segment_customers(
    name: str,
    analytics: AnalyticsDep,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> SegmentPage:
    """The members of a segment (name or slug, any case), page by page, for a campaign export.

    Pages come from the immutable snapshot of the refresh the export started on, so concurrent updates and
    refreshes neither skip nor repeat anyone. Buyers are listed by revenue (highest first), non-buyers by last
    visit (latest first)."""
    try:
        page = await analytics.page(name, cursor, limit)
    except (UnknownSegment, NoRefreshYet) as exc:
        raise NotFound(str(exc)) from exc
    except InvalidCursor as exc:
        raise BadRequest(str(exc)) from exc
    return SegmentPage(
        segment=page.segment,
        snapshot_id=page.snapshot_id,
        refreshed_at=page.refreshed_at,
        total=page.total,
        offset=page.offset,
        customers=page.rows,
        next_cursor=page.next_cursor,
    )
