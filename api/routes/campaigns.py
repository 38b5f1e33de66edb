"""Campaigns and experiments (``config/campaigns.yaml``, docs/campaigns.md): what is running, the effect report,
and the e-mail export. Admin keys only (like segments and rules)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from api.auth import RequireAdmin
from api.campaigns import CampaignService, ExportResult
from api.tenant_services import TenantDep

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], dependencies=[RequireAdmin])


async def _service(services: TenantDep) -> CampaignService:
    """The caller's tenant's campaigns (its counters, exposures, audiences)."""
    return services.campaigns


ServiceDep = Annotated[CampaignService, Depends(_service)]


@router.get("")
async def campaigns(service: ServiceDep) -> dict[str, Any]:
    """The campaigns of the file with their variants and whether each is running. ``valid`` is false and ``error``
    names the campaign, the field and the reason when the last edit of the file was refused (the previous
    campaigns, listed, stay in force); ``warnings`` name variants' rules the rules file does not have."""
    return service.listing()


@router.get("/{name}/report", responses={404: {"description": "No campaign of that name in the file"}})
async def report(name: str, service: ServiceDep) -> dict[str, Any]:
    """The effect report: per variant the customers assigned and exposed, impressions, clicks, CTR, converting
    customers, conversion rate, revenue, revenue per customer; each variant against the holdout (else the first
    variant): difference and relative lift with a 95% interval and a p-value (the method named); the
    sample-ratio-mismatch check; a verdict."""
    return await service.report(name)


class ExportRequest(BaseModel):
    segment: str = Field(min_length=1, max_length=100, description="A segment of the last analytics refresh")
    n: int = Field(6, ge=1, le=100, description="Recommendations per customer")
    limit: int = Field(10_000, ge=1, le=100_000, description="Most customers in this export")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula: one starting with ``= + - @``, a tab or a carriage return
    gets a leading ``'`` (OWASP's CSV injection advice; pure)."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def export_csv(result: ExportResult) -> str:
    """One row per customer: customer_id, campaign, variant, recommendation_id, item_ids (space-separated); a cell
    that a spreadsheet would read as a formula is escaped (:func:`csv_cell`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["customer_id", "campaign", "variant", "recommendation_id", "item_ids"])
    for row in result.rows:
        cells = [row["customer_id"], row["campaign"], row["variant"], row["recommendation_id"],
                 " ".join(row["item_ids"])]  # fmt: skip
        writer.writerow([csv_cell(str(cell)) for cell in cells])
    return out.getvalue()


@router.post(
    "/{name}/export",
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"},
        400: {"description": "The campaign does not cover the email placement, or is not running"},
        404: {"description": "No such campaign or segment, or no analytics refresh yet"},
    },
)
async def export(
    name: str,
    body: ExportRequest,
    service: ServiceDep,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
) -> Response:
    """The e-mail list of a campaign for one segment: per customer the variant and the top-n recommendations with
    a `recommendation_id` of its own (send it back in `recommendation_click` events from the e-mail). Customers
    exported to this campaign within its `frequency_cap_days` are skipped; holdout customers are assigned and not
    listed. The same as `ecrm campaign export NAME --segment S --csv FILE`."""
    result = await service.export(name, body.segment, body.n, body.limit)
    if format == "csv":
        return Response(export_csv(result), media_type="text/csv")
    payload = {
        "campaign": result.campaign,
        "segment": result.segment,
        "exported": len(result.rows),
        "skipped_capped": result.skipped_capped,
        "skipped_holdout": result.skipped_holdout,
        "truncated": result.truncated,
        "rows": result.rows,
    }
    return Response(orjson.dumps(payload), media_type="application/json")
