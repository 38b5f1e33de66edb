"""Response models of the API (the request side is the event schema in schemas/)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldProblem(BaseModel):
    index: int = Field(description="Position of the event in the batch (0 for a single event)")
    event_id: str | None
    field: str
    reason: str
    status: int = Field(422, description="HTTP status of this refusal: 413 over the size limit, 422 invalid")


class Detail(BaseModel):
    """An error answered for the request as a whole (a body that is not JSON, too large, no key, ...)."""

    detail: str


class CollectResponse(BaseModel):
    accepted: int
    rejected: int
    errors: list[FieldProblem]


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="The model's (or the fallback step's) score; 0 for an item a rule added")
    reason: str = Field(description="Why it is there; names the rule for a pinned or promoted item")
    model_score: float | None = Field(None, description="explain=true: the raw score (null: added by a rule)")
    final_score: float | None = Field(None, description="explain=true: the normalised score after the rules")
    rules: list[str] | None = Field(None, description="explain=true: the rules that touched the item")
    attributes: dict[str, str | int | float] | None = Field(None, description="attributes=true: catalogue attributes")
    image_url: str | None = Field(None, description="attributes=true: the catalogue image")
    title: str | None = Field(None, description="attributes=true: the catalogue title")
    price: float | None = Field(None, description="attributes=true: the catalogue price")
    category: str | None = Field(None, description="attributes=true: the catalogue category")


class Recommendations(BaseModel):
    recommendation_id: str = Field(description="Unique id: send it back in recommendation_click events")
    strategy: str = Field(
        description="Which step of the fallback chain served the list; `degraded` when Redis was away and the list "
        "comes from the replica's in-memory copy of the popular items"
    )
    model_version: str
    items: list[RecommendedItem]


class Profile(BaseModel):
    model_config = {"extra": "allow"}

    profile_id: str
    customer_id: str | None
    anonymous_id: str | None
    first_seen: str | None
    last_seen: str | None
    event_counts: dict[str, int]
    events_total: int
    sessions: int
    rfm: dict[str, Any]
    orders: int
    revenue: float
    first_purchase: str | None
    last_purchase: str | None
    recent_items: list[dict[str, Any]]
    cart: list[dict[str, Any]]
    category_affinity: dict[str, float]
    merged_visitors: int
