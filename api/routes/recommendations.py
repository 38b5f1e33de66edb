"""One-to-one recommendations: personal, session, similar items, cart. Same response shape everywhere."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from api.auth import Caller, CollectCaller, ServerCaller
from api.deps import RecsDep, SettingsDep
from api.models import Recommendations
from api.recommend import RecList
from core import metrics
from core.keyspace import customer_pid
from core.scopes import Scope
from core.settings import Settings

router = APIRouter(tags=["recommendations"])
N = Annotated[int, Query(ge=1, description="How many items: at most ECRM_RECOMMENDATIONS_MAX_N (100 by default)")]


def checked_n(n: int, settings: Settings, where: tuple[str, ...] = ("query", "n")) -> int:
    """``n`` within ECRM_RECOMMENDATIONS_MAX_N, else 422 naming the limit (the OpenAPI document states the same
    maximum, see api/openapi.py)."""
    limit = settings.recommendations_max_n
    if n > limit:
        reason = f"Input should be less than or equal to {limit}"
        raise RequestValidationError([{"loc": where, "msg": reason, "type": "less_than_equal", "input": n}])
    return n


Explain = Annotated[
    bool,
    Query(
        description="Add to each item the raw model score, the final score after the rules, and the rules applied "
        "(needs a `server` key: rule names and scores are the shop's own)"
    ),
]


def check_explain(explain: bool, who: Caller) -> bool:
    """``explain=true`` reveals the rules' names and the scores: a ``server`` key's (403 for a ``collect`` key)."""
    if explain:
        who.require(Scope.SERVER, "explain=true")
    return explain


Attributes = Annotated[
    bool, Query(description="Add to each item its catalogue title, price, category, attributes and image_url")
]


def _respond(endpoint: str, recs: RecList) -> Response:
    """Serialised with orjson from plain dicts: the hot path skips a second validation."""
    metrics.RECOMMENDATIONS.labels(endpoint, recs.strategy).inc()
    body = {
        "recommendation_id": recs.recommendation_id,
        "strategy": recs.strategy,
        "model_version": recs.model_version,
        "items": [
            {"item_id": r.item_id, "score": r.score, "reason": r.reason, **r.extra} if r.extra else
            {"item_id": r.item_id, "score": r.score, "reason": r.reason}
            for r in recs.items
        ],
        "campaign": recs.campaign,
        "variant": recs.variant,
    }  # fmt: skip
    if recs.note is not None:
        body["note"] = recs.note
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/customers/{customer_id}/recommendations", response_model=Recommendations)
async def for_customer(
    customer_id: str,
    recs: RecsDep,
    _: ServerCaller,
    settings: SettingsDep,
    n: N = 10,
    category: Annotated[str | None, Query(description="Only items of this category")] = None,
    explain: Explain = False,
    attributes: Attributes = False,
    placement: Annotated[
        Literal["personal", "email"], Query(description="Whose business rules apply: the site's or an email's")
    ] = "personal",
) -> Response:
    """Personal recommendations from the customer's whole current history (a click a second ago counts).
    An unknown customer gets the fallback chain's popular items (200, never an error). The business rules in force
    (docs/rules.md) apply to every list."""
    n = checked_n(n, settings)
    pid = customer_pid(customer_id)
    result = await recs.for_profile(pid, n, category, placement=placement, explain=explain, attributes=attributes)
    return _respond("customer", result)


@router.get("/v1/sessions/{anonymous_id}/recommendations", response_model=Recommendations)
async def for_session(
    anonymous_id: str,
    recs: RecsDep,
    settings: SettingsDep,
    who: CollectCaller,
    n: N = 10,
    explain: Explain = False,
    attributes: Attributes = False,
) -> Response:
    """For a visitor who is not logged in, from the session's views. With a `server` key, a visitor who logged in
    gets the customer's; a `collect` key gets the visitor's own views only (nothing of a known customer)."""
    n = checked_n(n, settings)
    flags = {"explain": check_explain(explain, who), "attributes": attributes}
    result = await recs.for_visitor(anonymous_id, n, follow_login=who.allows(Scope.SERVER), **flags)
    return _respond("session", result)


@router.get("/v1/items/{item_id}/similar", response_model=Recommendations)
async def similar(
    item_id: str,
    recs: RecsDep,
    settings: SettingsDep,
    who: CollectCaller,
    n: N = 10,
    explain: Explain = False,
    attributes: Attributes = False,
) -> Response:
    """ "Customers who viewed this also viewed": cross-selling on product pages."""
    n = checked_n(n, settings)
    explain = check_explain(explain, who)
    return _respond("similar", await recs.similar(item_id, n, explain=explain, attributes=attributes))


class CartRequest(BaseModel):
    item_ids: list[str] = Field(min_length=1, max_length=500, description="Item ids in the cart")
    customer_id: str | None = Field(None, description="The customer, when known (bought items are left out)")
    n: int = Field(10, ge=1, description="How many items: at most ECRM_RECOMMENDATIONS_MAX_N (100 by default)")


@router.post(
    "/v1/recommendations/cart",
    response_model=Recommendations,
    responses={400: {"description": "The body is not valid JSON"}},
)
async def cart(
    body: CartRequest,
    recs: RecsDep,
    settings: SettingsDep,
    who: CollectCaller,
    explain: Explain = False,
    attributes: Attributes = False,
) -> Response:
    """Complementary items for a cart: up-selling and cross-selling at checkout. A `collect` key may ask without
    a `customer_id`; with one (the customer's purchases are left out) it needs `server`."""
    if body.customer_id is not None:
        who.require(Scope.SERVER, "a cart with a customer_id")
    explain = check_explain(explain, who)
    n = checked_n(body.n, settings, ("body", "n"))
    result = await recs.cart(body.item_ids, body.customer_id, n, explain=explain, attributes=attributes)
    return _respond("cart", result)
