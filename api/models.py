"""Response models of the API (the request side is the event schema in schemas/)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """One thing wrong with a request: where (``field``) and why (``reason``)."""

    field: str = Field(description="Where: an event field (`lines.0.quantity`), or `query.n`, `body` ...")
    reason: str
    index: int | None = Field(None, description="POST /v1/events: the position of the event in the batch")
    event_id: str | None = Field(None, description="POST /v1/events: the refused event's id, when it has one")
    status: int | None = Field(
        None, description="POST /v1/events: the HTTP status of this refusal (413 too large, 422 invalid, 403 scope)"
    )


class ErrorBody(BaseModel):
    """The one error body of every endpoint: a sentence, and what was wrong field by field (empty when the request
    is refused as a whole: no key, not JSON, Redis away ...). ``POST /v1/events`` adds its counts."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "detail": "invalid request: query.n: Input should be less than or equal to 100",
                    "errors": [{"field": "query.n", "reason": "Input should be less than or equal to 100"}],
                },
                {"detail": "no profile for customer 'cust-404'", "errors": []},
            ]
        }
    }

    detail: str
    errors: list[Problem] = Field(default_factory=list)


class FieldProblem(Problem):
    """A refused event of a batch (``index``, ``event_id`` and ``status`` always set)."""

    index: int = Field(description="Position of the event in the batch (0 for a single event)")
    event_id: str | None
    status: int = Field(422, description="HTTP status of this refusal: 413 over the size limit, 422 invalid")


class CollectResponse(BaseModel):
    """What the collector did with a batch; on a 4xx it is also the error body (``detail`` and ``errors``)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"detail": "2 events accepted", "accepted": 2, "rejected": 0, "errors": []},
                {
                    "detail": "1 event accepted, 1 refused",
                    "accepted": 1,
                    "rejected": 1,
                    "errors": [
                        {
                            "index": 1,
                            "event_id": "e2",
                            "field": "item_id",
                            "reason": "Field required",
                            "status": 422,
                        }
                    ],
                },
            ]
        }
    }

    detail: str
    accepted: int
    rejected: int
    errors: list[FieldProblem]


class RankerFeature(BaseModel):
    feature: str = Field(description="The feature's name (docs/recommender.md, the ranking stage's features)")
    value: float | None = Field(description="Its value for this customer and item (null: missing)")
    contribution: float = Field(description="What it added to the ranker's score (SHAP value)")


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="The model's (or the fallback step's) score; 0 for an item a rule added")
    reason: str = Field(description="Why it is there; names the rule for a pinned or promoted item")
    model_score: float | None = Field(None, description="explain=true: the raw score (null: added by a rule)")
    final_score: float | None = Field(None, description="explain=true: the normalised score after the rules")
    rules: list[str] | None = Field(None, description="explain=true: the rules that touched the item")
    ranker: list[RankerFeature] | None = Field(
        None,
        description="explain=true: the learned ranking stage's top features of the item, largest contribution "
        "first (null: the stage did not order it)",
    )
    attributes: dict[str, str | int | float] | None = Field(None, description="attributes=true: catalogue attributes")
    image_url: str | None = Field(None, description="attributes=true: the catalogue image")
    title: str | None = Field(None, description="attributes=true: the catalogue title")
    price: float | None = Field(None, description="attributes=true: the catalogue price")
    category: str | None = Field(None, description="attributes=true: the catalogue category")


class Recommendations(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "recommendation_id": "3f0c9a7e2b1d4c5e8f6a7b8c9d0e1f2a",
                    "strategy": "personal",
                    "model_version": "v20261123T100000-3",
                    "items": [
                        {"item_id": "sku-00042", "score": 0.81, "reason": "because you viewed sku-00001"},
                        {"item_id": "sku-00007", "score": 0.64, "reason": "because you bought sku-00003"},
                    ],
                },
                {
                    "recommendation_id": "9b8a7c6d5e4f40312a1b2c3d4e5f6a7b",
                    "strategy": "trending",
                    "model_version": "v20261123T100000-3",
                    "items": [{"item_id": "sku-00000", "score": 12.5, "reason": "trending"}],
                    "note": "item 'sku-nope' is neither in the catalogue nor known to the model",
                },
            ]
        }
    }

    recommendation_id: str = Field(description="Unique id: send it back in recommendation_click events")
    strategy: str = Field(
        description="Which step of the fallback chain served the list; `baseline:<name>` (popularity, trending, "
        "buy-again, recently-viewed) when the retraining gate found that baseline better than the engine on the "
        "newest window; `degraded` when Redis was away and the list comes from the replica's in-memory copy of the "
        "popular items"
    )
    model_version: str
    items: list[RecommendedItem]
    campaign: str | None = Field(
        None, description="The campaign this list was served under (config/campaigns.yaml); null outside any"
    )
    variant: str | None = Field(
        None,
        description="The profile's variant in that campaign; a holdout variant gets an empty list (strategy "
        "`holdout`): show the shop's default content",
    )
    note: str | None = Field(
        None, description="Present when the request named something unknown (an item, a category): what was done"
    )


class Profile(BaseModel):
    model_config = {
        "extra": "allow",
        "json_schema_extra": {
            "examples": [
                {
                    "profile_id": "c:cust-00000",
                    "customer_id": "cust-00000",
                    "anonymous_id": None,
                    "first_seen": "2026-10-24T08:12:00+00:00",
                    "last_seen": "2026-11-23T10:00:00+00:00",
                    "event_counts": {"page_view": 12, "product_view": 30, "add_to_cart": 4, "purchase": 2},
                    "events_total": 48,
                    "sessions": 6,
                    "rfm": {"recency_days": 1.5, "frequency": 2, "monetary": 61.8, "rfm_score": "545"},
                    "orders": 2,
                    "revenue": 61.8,
                    "first_purchase": "2026-11-02T17:40:00+00:00",
                    "last_purchase": "2026-11-21T19:03:00+00:00",
                    "recent_items": [{"item_id": "sku-00001", "type": "product_view", "ts": 1795424400000}],
                    "cart": [{"item_id": "sku-00001", "quantity": 1}],
                    "category_affinity": {"skincare": 0.72, "makeup": 0.18},
                    "merged_visitors": 1,
                    "segment": "Champions",
                    "lifetime_value": 84.2,
                    "churn_risk": 0.12,
                }
            ]
        },
    }

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


class Liveness(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{"status": "ok"}]}}

    status: str = Field(description="Always `ok`: the process answers")


class Readiness(BaseModel):
    """What the API can do now (200 while reads work; 503 when Redis is away)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "status": "ok",
                    "reads": True,
                    "writes": True,
                    "redis": True,
                    "kafka": True,
                    "worker": True,
                    "auth": "open",
                    "rules": "ok",
                }
            ]
        }
    }

    status: str = Field(description="`ok`, `degraded` (reads only: the broker is away) or `unavailable` (no Redis)")
    reads: bool = Field(description="Redis answers: profiles and recommendations can be read")
    writes: bool = Field(description="The broker takes events: POST /v1/events works")
    redis: bool
    kafka: bool
    worker: bool = Field(
        description="A stream worker holds the events topic's partitions (its heartbeat is fresh): an event posted "
        "now reaches its profile within about a second. `ecrm up` prints its URLs only once this is true"
    )
    auth: str = Field(description="`keys` (API keys required) or `open` (no keys configured, loopback only)")
    rules: str = Field(description="`refused` when the last edit of the business rules file was refused, else `ok`")


class SegmentsOverview(BaseModel):
    """Segment sizes and totals as of the last analytics refresh (``message`` says why there is none yet)."""

    model_config = {
        "extra": "allow",
        "json_schema_extra": {
            "examples": [
                {
                    "refreshed_at": "2026-11-23T10:00:00+00:00",
                    "snapshot_id": "1795424400000-3",
                    "refresh_duration_s": 0.21,
                    "profiles": 300,
                    "customers_scored": 200,
                    "breakpoints": {"recency_days": [3.0, 8.0, 15.0, 24.0]},
                    "model": {"lifetime_value": "fitted"},
                    "rules": {"path": "config/segments.yaml", "loaded_at": None, "error": None, "segments": []},
                    "segments": [{"name": "Champions", "customers": 31, "revenue": 4120.5}],
                }
            ]
        },
    }

    refreshed_at: str | None = Field(description="Time of the refresh these figures come from (null: none yet)")
    message: str | None = Field(None, description="Why there are no figures yet")
    snapshot_id: str | None = None
    refresh_duration_s: float | None = None
    profiles: int | None = None
    customers_scored: int | None = None
    breakpoints: dict[str, Any] | None = None
    model: dict[str, Any] | None = Field(None, description="The lifetime-value model: fitted, or why not")
    rules: dict[str, Any] = Field(description="The segment rules in force: file, load time, refusal, names")
    segments: list[dict[str, Any]] = Field(description="Each segment: name, customers and totals")


class RuleInfo(BaseModel):
    model_config = {"populate_by_name": True}

    name: str
    placements: list[str] | None
    segments: list[str] | None
    from_: str | None = Field(alias="from")
    until: str | None
    actions: list[str]


class RulesOverview(BaseModel):
    """The business rules in force (``valid`` false and ``error`` set when the last edit was refused)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "path": "config/rules.yaml",
                    "valid": True,
                    "error": None,
                    "loaded_at": "2026-11-23T10:00:00+00:00",
                    "rules": [
                        {
                            "name": "hide-out-of-season",
                            "placements": ["personal"],
                            "segments": None,
                            "from": None,
                            "until": None,
                            "actions": ["filter"],
                        }
                    ],
                }
            ]
        }
    }

    path: str | None
    valid: bool
    error: str | None
    loaded_at: str | None
    rules: list[RuleInfo]
