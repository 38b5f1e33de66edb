"""Event models: one tagged union on ``type`` (pydantic v2).

Every event has an ``event_id`` (the basis of de-duplication) and a ``timestamp`` (ISO-8601 with a zone, or epoch
milliseconds). Behavioural events name the visitor by ``customer_id`` and/or ``anonymous_id``; catalogue (``item``)
events name an item instead. Unknown fields are refused, so a typo is reported rather than ignored, and a raw IP
address is never accepted or stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

MIN_EPOCH_MS = 946_684_800_000  # 2000-01-01: smaller numbers are almost surely seconds, not milliseconds
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01


def _coerce_timestamp(value: Any) -> Any:
    """Accept epoch milliseconds (int) as well as ISO-8601 strings; refuse epoch seconds with a clear reason."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 string with a zone or epoch milliseconds")
    if isinstance(value, int | float):
        if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
            raise ValueError(
                f"epoch milliseconds out of range ({value}); expected milliseconds between 2000 and 2100 "
                "(seconds must be multiplied by 1000)"
            )
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_coerce_timestamp)]
Id = Annotated[str, Field(min_length=1, max_length=256)]
OptText = Annotated[str | None, Field(default=None, max_length=4096)]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)

    event_id: Id
    timestamp: Timestamp
    session_id: Id | None = None
    url: OptText = None
    referrer: OptText = None
    user_agent: OptText = None

    @property
    def ts_ms(self) -> int:
        """Event time as epoch milliseconds."""
        return int(self.timestamp.timestamp() * 1000)


class _Behaviour(_Base):
    customer_id: Id | None = None
    anonymous_id: Id | None = None

    @model_validator(mode="after")
    def _one_identity(self) -> _Behaviour:
        if self.customer_id is None and self.anonymous_id is None:
            raise ValueError("customer_id or anonymous_id is required (at least one)")
        return self

    @property
    def kafka_key(self) -> str:
        """The partitioning key: the customer when known, else the anonymous visitor."""
        return self.customer_id or self.anonymous_id or ""


class PageView(_Behaviour):
    type: Literal["page_view"]
    title: OptText = None


class ProductView(_Behaviour):
    type: Literal["product_view"]
    item_id: Id
    category: Id | None = None
    price: Annotated[float | None, Field(default=None, ge=0)] = None


class Search(_Behaviour):
    type: Literal["search"]
    query: Annotated[str, Field(min_length=1, max_length=1024)]
    results: Annotated[list[Id], Field(default_factory=list, max_length=1000)]


class AddToCart(_Behaviour):
    type: Literal["add_to_cart"]
    item_id: Id
    quantity: Annotated[int, Field(default=1, gt=0, le=100_000)] = 1
    category: Id | None = None
    price: Annotated[float | None, Field(default=None, ge=0)] = None


class RemoveFromCart(_Behaviour):
    type: Literal["remove_from_cart"]
    item_id: Id
    quantity: Annotated[int | None, Field(default=None, gt=0, le=100_000, description="None removes all")] = None


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)

    item_id: Id
    quantity: Annotated[int, Field(gt=0, le=1_000_000)]
    unit_price: Annotated[float, Field(ge=0)]
    category: Id | None = None


class Purchase(_Behaviour):
    type: Literal["purchase"]
    order_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=10_000)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]

    @property
    def revenue(self) -> float:
        return sum(line.quantity * line.unit_price for line in self.lines)


class RecommendationClick(_Behaviour):
    type: Literal["recommendation_click"]
    recommendation_id: Id
    item_id: Id


class Item(_Base):
    """A catalogue entry (no visitor): created or updated by the shop."""

    type: Literal["item"]
    item_id: Id
    title: Annotated[str, Field(min_length=1, max_length=1024)]
    category: Id
    price: Annotated[float, Field(ge=0)]
    in_stock: bool = True

    @property
    def kafka_key(self) -> str:
        return self.item_id


Behaviour = PageView | ProductView | Search | AddToCart | RemoveFromCart | Purchase | RecommendationClick
Event = Annotated[Behaviour | Item, Field(discriminator="type")]
EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "recommendation_click",
    "item",
)

_ADAPTER: TypeAdapter[Behaviour | Item] = TypeAdapter(Event)  # type: ignore[arg-type,unused-ignore]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an event was refused: the field path (dotted) and why."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class InvalidEvent(ValueError):
    """An event that does not match the schema. ``errors`` says which field and why."""

    def __init__(self, errors: list[FieldError], event_id: str | None = None) -> None:
        self.errors = errors
        self.event_id = event_id
        where = f"event {event_id!r}" if event_id else "event"
        super().__init__(f"invalid {where}: " + "; ".join(f"{e.field}: {e.reason}" for e in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError, obj: Any) -> InvalidEvent:
        errors = [_field_error(err) for err in exc.errors(include_url=False)]
        event_id = obj.get("event_id") if isinstance(obj, dict) else None
        return cls(errors, event_id=str(event_id) if event_id is not None else None)


def _field_error(err: Any) -> FieldError:
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        return FieldError("type", f"must be one of {', '.join(EVENT_TYPES)}")
    # the first element of a tagged-union location is the tag itself: drop it
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = (
            "unknown field (raw IP addresses are never accepted)"
            if loc[-1:] in (["ip"], ["ip_address"])
            else ("unknown field")
        )
    return FieldError(".".join(loc) or "(event)", msg)


def parse_event_obj(obj: Any) -> Behaviour | Item:
    """Validate an already-decoded JSON value. Raises :class:`InvalidEvent`."""
    if not isinstance(obj, dict):
        raise InvalidEvent([FieldError("(event)", f"must be a JSON object, got {type(obj).__name__}")])
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise InvalidEvent.from_validation(exc, obj) from exc


def parse_event(raw: bytes | str) -> Behaviour | Item:
    """Decode and validate one JSON event. Raises :class:`InvalidEvent`."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent([FieldError("(event)", f"not valid JSON: {exc}")]) from exc
    return parse_event_obj(obj)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one event (the tagged union)."""
    return _ADAPTER.json_schema()
