"""Event models: one tagged union on ``type`` (pydantic v2).

Every event has an ``event_id`` (the basis of de-duplication) and a ``timestamp`` (ISO-8601 with a zone, or epoch
milliseconds). Behavioural events name the visitor by ``customer_id`` and/or ``anonymous_id``; catalogue (``item``)
events name an item instead. Unknown fields are refused, so a typo is reported rather than ignored, and a raw IP
address is never accepted or stored.

Input is bounded here, in the one place every entry point validates with (the collector, the importers and the
worker): ids have a length bound and no control characters; timestamps lie between a floor and a few minutes
ahead of now (:class:`EventLimits`, injected through pydantic's validation context so tests fix "now"); money and
quantities are finite and capped, as are the lines of a purchase, its line totals and its revenue, every string,
and the encoded size of an event. Each refusal names the field and why.
"""

from __future__ import annotations

import math
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

# --- Limits ----------------------------------------------------------------------------------------------------
# Fixed caps: part of the contract, shown in the JSON Schema (docs/event-schema.md lists them).
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 4096  # url, referrer, user_agent
MAX_TITLE_LENGTH = 1024  # titles and search queries
MAX_SEARCH_RESULTS = 1000
MAX_SHOWN_ITEMS = 100  # items of one recommendation_view (an impression of a list)
MAX_CART_QUANTITY = 100_000
MAX_LINE_QUANTITY = 1_000_000
MAX_LINES = 1000  # lines per purchase
MAX_PRICE = 1_000_000.0  # a unit price, in the event's currency
MAX_LINE_TOTAL = 10_000_000.0  # quantity x unit price of one purchase line
MAX_REVENUE = 100_000_000.0  # the sum of a purchase's lines: no profile's revenue can overflow
MAX_ERRORS = 20  # refusal reasons kept per event (the rest are counted)
MAX_FIELD_PATH = 200  # characters of a reported field path (an unknown field's name may be any length)
MAX_ATTRIBUTES = 50  # catalogue attributes per item
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_TEXT = 256
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01: a number beyond cannot be a date

# Limits that depend on the deployment and on the clock: :class:`EventLimits` (ECRM_MAX_FUTURE_S,
# ECRM_TIMESTAMP_FLOOR, ECRM_MAX_EVENT_BYTES in core/settings.py).
DEFAULT_MAX_FUTURE_S = 300.0
DEFAULT_TIMESTAMP_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_EVENT_BYTES = 128 * 1024
LIMITS_CONTEXT_KEY = "event_limits"


@dataclass(frozen=True, slots=True)
class EventLimits:
    """The limits that depend on the deployment and on the clock.

    ``now`` fixes the present (tests); None reads the clock at each validation. Passed to pydantic as the
    validation context (:meth:`context`), so every entry point checks the same way.
    """

    max_future_s: float = DEFAULT_MAX_FUTURE_S
    floor: datetime = DEFAULT_TIMESTAMP_FLOOR
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    now: datetime | None = None
    collect_max_lines: int = 20  # lines of a purchase sent with a collect key (core.scopes.claim_refusal)
    # Derived once (validation reads them for every event): the floor in epoch milliseconds, the pydantic context.
    floor_ms: float = field(init=False, repr=False, compare=False)
    _context: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.floor.tzinfo is None:
            raise ValueError("EventLimits.floor must carry a time zone")
        object.__setattr__(self, "floor_ms", self.floor.timestamp() * 1000)
        object.__setattr__(self, "_context", {LIMITS_CONTEXT_KEY: self})

    def current_time(self) -> datetime:
        return self.now if self.now is not None else datetime.fromtimestamp(time.time(), tz=UTC)

    def too_far_ahead(self, value: datetime) -> bool:
        """Whether ``value`` lies more than ``max_future_s`` ahead of now."""
        if self.now is None:  # the clock: compared as epoch seconds (no datetime built per event)
            return value.timestamp() > time.time() + self.max_future_s
        return value > self.now + timedelta(seconds=self.max_future_s)

    def context(self) -> dict[str, Any]:
        return self._context


DEFAULT_LIMITS = EventLimits()


def _limits(info: ValidationInfo) -> EventLimits:
    context = info.context
    found = context.get(LIMITS_CONTEXT_KEY) if isinstance(context, dict) else None
    return found if isinstance(found, EventLimits) else DEFAULT_LIMITS


# --- Timestamps --------------------------------------------------------------------------------------------------


def _timestamp(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> datetime:
    """Epoch milliseconds or an ISO-8601 string with a zone (pydantic's ``AwareDatetime``: ``handler``), within
    the limits. One validator for both steps: it runs for every event."""
    limits = _limits(info)
    number = isinstance(value, int | float)  # bool too: refused there with the reason
    return _check_timestamp(_coerce_timestamp(value, limits) if number else handler(value), limits)


def _coerce_timestamp(value: Any, limits: EventLimits) -> Any:
    """Accept epoch milliseconds (int) as well as ISO-8601 strings; refuse epoch seconds with a clear reason."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 string with a zone or epoch milliseconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of epoch milliseconds")
        floor, floor_ms = limits.floor, limits.floor_ms
        if value < floor_ms:
            hint = (
                "; this looks like epoch seconds: multiply by 1000" if floor_ms <= value * 1000 <= MAX_EPOCH_MS else ""
            )
            raise ValueError(
                f"epoch milliseconds {value} lie before the oldest accepted time {floor.isoformat()} "
                f"(ECRM_TIMESTAMP_FLOOR){hint}"
            )
        if value > MAX_EPOCH_MS:
            raise ValueError(f"epoch milliseconds out of range ({value}); expected milliseconds before 2100")
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    return value


def _check_timestamp(value: datetime, limits: EventLimits) -> datetime:
    """Not before the floor, not more than ``max_future_s`` ahead of now (ISO strings and numbers alike)."""
    if value < limits.floor:
        raise ValueError(
            f"{value.isoformat()} lies before the oldest accepted time {limits.floor.isoformat()} "
            "(ECRM_TIMESTAMP_FLOOR)"
        )
    if limits.too_far_ahead(value):
        ahead = (value - limits.current_time()).total_seconds()
        raise ValueError(
            f"{value.isoformat()} lies {ahead:,.0f} s in the future; at most {limits.max_future_s:g} s ahead of "
            "the current time is accepted (ECRM_MAX_FUTURE_S)"
        )
    return value


# --- Ids and text ------------------------------------------------------------------------------------------------

# Control and format characters, surrogates, line and paragraph separators: never in an id (they break logs,
# key names and exports, or hide one id behind another that looks the same).
_REFUSED_IN_IDS = {
    "Cc": "control",
    "Cf": "format",
    "Cs": "surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
_CONTROL_NAMES = {"\t": "TAB", "\n": "LINE FEED (newline)", "\r": "CARRIAGE RETURN", "\x00": "NUL", "\x7f": "DELETE"}


def describe_char(char: str) -> str:
    """``U+0009 (TAB)``: a character named for a person reading the reason."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "") or "unnamed"
    return f"U+{ord(char):04X} ({name})"


def _check_id(value: Any) -> Any:
    """Refuse control and format characters anywhere in an id, before surrounding whitespace is stripped (so a
    leading tab or a trailing newline is refused too, at its position in what was sent)."""
    if not isinstance(value, str) or value.isprintable():  # fast path: no C* or Z* character but the space
        return value
    for position, char in enumerate(value):
        kind = _REFUSED_IN_IDS.get(unicodedata.category(char))
        if kind is not None:
            raise ValueError(f"{kind} character {describe_char(char)} at position {position} is not allowed in an id")
    return value


_TIMESTAMP_JSON_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time", "description": "ISO-8601 with a zone"},
        {"type": "number", "description": "epoch milliseconds"},
    ]
}
Timestamp = Annotated[
    AwareDatetime,
    WrapValidator(_timestamp),
    WithJsonSchema(_TIMESTAMP_JSON_SCHEMA),
]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), BeforeValidator(_check_id)]
OptText = Annotated[str | None, Field(default=None, max_length=MAX_TEXT_LENGTH)]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE_LENGTH)]
Money = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


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
    title: Annotated[str | None, Field(default=None, max_length=MAX_TITLE_LENGTH)] = None


class ProductView(_Behaviour):
    type: Literal["product_view"]
    item_id: Id
    category: Id | None = None
    price: Money | None = None


class Search(_Behaviour):
    type: Literal["search"]
    query: Title
    results: Annotated[list[Id], Field(default_factory=list, max_length=MAX_SEARCH_RESULTS)]


class AddToCart(_Behaviour):
    type: Literal["add_to_cart"]
    item_id: Id
    quantity: Annotated[int, Field(default=1, gt=0, le=MAX_CART_QUANTITY)] = 1
    category: Id | None = None
    price: Money | None = None


class RemoveFromCart(_Behaviour):
    type: Literal["remove_from_cart"]
    item_id: Id
    quantity: Annotated[int | None, Field(default=None, gt=0, le=MAX_CART_QUANTITY, description="None removes all")] = (
        None
    )


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)

    item_id: Id
    quantity: Annotated[int, Field(gt=0, le=MAX_LINE_QUANTITY)]
    unit_price: Money
    category: Id | None = None

    @model_validator(mode="after")
    def _bounded_total(self) -> OrderLine:
        if self.total > MAX_LINE_TOTAL:
            raise ValueError(
                f"line total {self.total:,.2f} (quantity x unit_price) exceeds the limit of {MAX_LINE_TOTAL:,.0f}"
            )
        return self

    @property
    def total(self) -> float:
        return self.quantity * self.unit_price


class Purchase(_Behaviour):
    type: Literal["purchase"]
    order_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_LINES)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]

    @field_validator("lines")
    @classmethod
    def _bounded_revenue(cls, lines: list[OrderLine]) -> list[OrderLine]:
        revenue = sum(line.total for line in lines)
        if revenue > MAX_REVENUE:
            raise ValueError(f"purchase revenue {revenue:,.2f} exceeds the limit of {MAX_REVENUE:,.0f}")
        return lines

    @property
    def revenue(self) -> float:
        return sum(line.total for line in self.lines)


class RecommendationClick(_Behaviour):
    type: Literal["recommendation_click"]
    recommendation_id: Id
    item_id: Id


class RecommendationView(_Behaviour):
    """An impression: a recommendation list was shown to the visitor (the widget sends it once per list)."""

    type: Literal["recommendation_view"]
    recommendation_id: Id
    item_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_SHOWN_ITEMS, description="Items shown, in order")]


AttributeKey = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_KEY), BeforeValidator(_check_id)]
AttributeValue = Annotated[str, Field(max_length=MAX_ATTRIBUTE_TEXT)] | Annotated[float, Field(allow_inf_nan=False)]


def _no_bool(value: Any) -> Any:
    """Attribute values are strings or numbers (a JSON true/false is refused, not read as 1/0)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError(f"attribute {str(key)[:MAX_ATTRIBUTE_KEY]!r} must be a string or a number")
    return value


class Item(_Base):
    """A catalogue entry (no visitor): created or updated by the shop. ``attributes`` (free-form, bounded: at most
    50, keys of 64 characters, text values of 256) and ``image_url`` are stored with the item, usable in business
    rules and returned with recommendations on request (``attributes=true``)."""

    type: Literal["item"]
    item_id: Id
    title: Title
    category: Id
    price: Money
    in_stock: bool = True
    attributes: Annotated[
        Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] | None,
        BeforeValidator(_no_bool),
    ] = None
    image_url: OptText = None

    @property
    def kafka_key(self) -> str:
        return self.item_id


Behaviour = (
    PageView | ProductView | Search | AddToCart | RemoveFromCart | Purchase | RecommendationClick | RecommendationView
)
Event = Annotated[Behaviour | Item, Field(discriminator="type")]
EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "recommendation_click",
    "recommendation_view",
    "item",
)

_ADAPTER: TypeAdapter[Behaviour | Item] = TypeAdapter(Event)  # type: ignore[arg-type,unused-ignore]
_VALIDATOR = _ADAPTER.validator  # called directly: the adapter's Python wrapper costs a microsecond per event


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an event was refused: the field path (dotted) and why."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class InvalidEvent(ValueError):
    """An event that does not match the schema. ``errors`` says which field and why (at most :data:`MAX_ERRORS`,
    the last one counting the rest)."""

    def __init__(self, errors: list[FieldError], event_id: str | None = None) -> None:
        if len(errors) > MAX_ERRORS:
            more = len(errors) - (MAX_ERRORS - 1)
            errors = [*errors[: MAX_ERRORS - 1], FieldError("(event)", f"and {more} more errors")]
        self.errors = errors
        self.event_id = event_id
        where = f"event {event_id!r}" if event_id else "event"
        super().__init__(f"invalid {where}: " + "; ".join(f"{e.field}: {e.reason}" for e in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError, obj: Any) -> InvalidEvent:
        errors = [_field_error(err) for err in exc.errors(include_url=False)]
        return cls(errors, event_id=reported_event_id(obj))


class EventTooLarge(InvalidEvent):
    """An event whose encoded size exceeds ``EventLimits.max_event_bytes`` (HTTP 413 at the collector)."""


def reported_event_id(obj: Any) -> str | None:
    """The ``event_id`` of a refused event as it is reported back (cut to the id length bound)."""
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    if event_id is None or isinstance(event_id, dict | list):
        return None
    return _cut(str(event_id), MAX_ID_LENGTH)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    return FieldError(_cut(".".join(loc), MAX_FIELD_PATH) or "(event)", msg)


def check_size(size: int, limits: EventLimits | None = None, event_id: str | None = None) -> None:
    """Raise :class:`EventTooLarge` when an encoded event of ``size`` bytes exceeds the limit."""
    limit = (limits or DEFAULT_LIMITS).max_event_bytes
    if size > limit:
        reason = f"event of {size:,} bytes exceeds the limit of {limit:,} bytes (ECRM_MAX_EVENT_BYTES)"
        raise EventTooLarge([FieldError("(event)", reason)], event_id=event_id)


# --- The fast path -------------------------------------------------------------------------------------------
# The worker validates every event; pydantic's Python validators (ids, timestamps, the identity rule) cost it about
# as much as the rest of its own work per event. The common shapes of the common types are checked here in plain
# Python and built as the model pydantic would return (equal, the same fields set); anything else, and every event
# the fast path is not sure of, goes to pydantic, which alone refuses: every error message stays pydantic's.
# tests/unit/test_schemas_fast.py proves the two equal on generated and adversarial events.

_ID, _OPT_ID, _TEXT, _OPT_TITLE, _TITLE, _MONEY, _QTY, _OPT_QTY, _IDS, _TYPE, _TIME = range(11)
_NULLABLE = frozenset({_OPT_ID, _TEXT, _OPT_TITLE, _MONEY, _OPT_QTY})
_COMMON_FIELDS = {
    "type": _TYPE,
    "event_id": _ID,
    "timestamp": _TIME,
    "session_id": _OPT_ID,
    "url": _TEXT,
    "referrer": _TEXT,
    "user_agent": _TEXT,
    "customer_id": _OPT_ID,
    "anonymous_id": _OPT_ID,
}
_FAST_SHAPES: dict[str, tuple[type[BaseModel], dict[str, int]]] = {
    "page_view": (PageView, {"title": _OPT_TITLE}),
    "product_view": (ProductView, {"item_id": _ID, "category": _OPT_ID, "price": _MONEY}),
    "add_to_cart": (AddToCart, {"item_id": _ID, "quantity": _QTY, "category": _OPT_ID, "price": _MONEY}),
    "remove_from_cart": (RemoveFromCart, {"item_id": _ID, "quantity": _OPT_QTY}),
    "recommendation_click": (RecommendationClick, {"recommendation_id": _ID, "item_id": _ID}),
    "search": (Search, {"query": _TITLE, "results": _IDS}),
}
# type -> (model, field -> kind, the required fields, every field in the model's order with its default)
_FAST: dict[str, tuple[type[BaseModel], dict[str, int], frozenset[str], dict[str, Any]]] = {
    _type: (
        _model,
        {**_COMMON_FIELDS, **_own},
        frozenset(n for n, f in _model.model_fields.items() if f.is_required()),
        {n: f.get_default(call_default_factory=True) for n, f in _model.model_fields.items()},
    )
    for _type, (_model, _own) in _FAST_SHAPES.items()
}


def fast_event(obj: dict[str, Any], limits: EventLimits) -> Behaviour | None:
    """The event pydantic would return for ``obj`` when it is of a common shape and plainly valid; None otherwise
    (then pydantic decides, and words any refusal). Never refuses anything itself.

    "Plainly valid": every field known to the type; ids printable (no control or format character), with nothing
    to strip, 1-256 characters; texts with nothing to strip within their bounds; numbers of the field's JSON type
    within their bounds; the timestamp in epoch milliseconds, more than a second inside the accepted range; a
    customer or a visitor named."""
    shape = _FAST.get(obj.get("type"))  # type: ignore[arg-type]
    if shape is None:
        return None
    model, kinds, required, defaults = shape
    for name in required:
        if name not in obj:
            return None
    money: list[str] = []
    for name, value in obj.items():
        kind = kinds.get(name)
        if kind is None:  # an unknown field
            return None
        if value is None:
            if kind in _NULLABLE:
                continue
            return None
        if kind <= _OPT_ID:  # an id (``str.strip`` returns the string itself when there is nothing to strip)
            if type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH or value.strip() is not value:
                return None
            if not value.isprintable():
                return None
        elif kind <= _TITLE:
            if type(value) is not str or value.strip() is not value:
                return None
            if len(value) > (MAX_TEXT_LENGTH if kind == _TEXT else MAX_TITLE_LENGTH) or (kind == _TITLE and not value):
                return None
        elif kind == _MONEY:
            if not (type(value) is float or type(value) is int) or not 0 <= value <= MAX_PRICE:
                return None
            money.append(name)
        elif kind <= _OPT_QTY:
            if type(value) is not int or not 0 < value <= MAX_CART_QUANTITY:
                return None
        elif kind == _IDS:
            if type(value) is not list or len(value) > MAX_SEARCH_RESULTS:
                return None
            for one in value:
                if type(one) is not str or not 0 < len(one) <= MAX_ID_LENGTH or one.strip() is not one:
                    return None
                if not one.isprintable():
                    return None
        elif kind == _TIME:
            if type(value) is not int or not limits.floor_ms + 1000 <= value <= MAX_EPOCH_MS:
                return None
            if limits.now is not None or value / 1000.0 + 1.0 >= time.time() + limits.max_future_s:
                return None
    if obj.get("customer_id") is None and obj.get("anonymous_id") is None:
        return None  # the identity rule
    fields = defaults.copy()  # the model's order; the keys of ``obj`` are all in it, so update keeps that order
    fields.update(obj)
    fields["timestamp"] = datetime.fromtimestamp(obj["timestamp"] / 1000.0, UTC)  # as _coerce_timestamp builds it
    for name in money:
        fields[name] = float(obj[name])
    if "results" in fields:  # a search's: a list of its own, as pydantic builds
        fields["results"] = list(obj.get("results") or ())
    event = object.__new__(model)
    # What ``BaseModel.model_construct`` sets, without its per-field loop: the fields in the model's order, the
    # names given (``model_fields_set``), no extra and no private attributes (these models declare none).
    object.__setattr__(event, "__dict__", fields)
    object.__setattr__(event, "__pydantic_fields_set__", set(obj))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event  # type: ignore[return-value]


def parse_event_obj(obj: Any, limits: EventLimits | None = None) -> Behaviour | Item:
    """Validate an already-decoded JSON value against the schema and ``limits`` (default: :data:`DEFAULT_LIMITS`,
    the clock's now). Raises :class:`InvalidEvent`. The size is not checked here: see :func:`encode_event`."""
    if not isinstance(obj, dict):
        raise InvalidEvent([FieldError("(event)", f"must be a JSON object, got {type(obj).__name__}")])
    fast = fast_event(obj, limits or DEFAULT_LIMITS)
    if fast is not None:
        return fast
    try:
        event: Behaviour | Item = _VALIDATOR.validate_python(obj, context=(limits or DEFAULT_LIMITS).context())
        return event
    except ValidationError as exc:
        raise InvalidEvent.from_validation(exc, obj) from exc


def encode_event(obj: Any, limits: EventLimits | None = None) -> tuple[Behaviour | Item, bytes]:
    """Validate a decoded event and encode it as the JSON produced to Kafka, refusing it when the encoding is
    over the size limit (:class:`EventTooLarge`) or the event invalid (:class:`InvalidEvent`)."""
    try:
        raw = orjson.dumps(obj)
    except TypeError as exc:  # orjson.JSONEncodeError: a value JSON cannot hold
        raise InvalidEvent([FieldError("(event)", f"cannot be encoded as JSON: {exc}")]) from exc
    check_size(len(raw), limits, reported_event_id(obj))
    return parse_event_obj(obj, limits), raw


def parse_event(raw: bytes | str, limits: EventLimits | None = None) -> Behaviour | Item:
    """Decode and validate one JSON event (its size included). Raises :class:`InvalidEvent`."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        check_size(size, limits)
        raise InvalidEvent([FieldError("(event)", f"not valid JSON: {exc}")]) from exc
    if size > (limits or DEFAULT_LIMITS).max_event_bytes:
        check_size(size, limits, reported_event_id(obj))  # the event id, when there is one, is reported
    return parse_event_obj(obj, limits)


class _EventJsonSchema(GenerateJsonSchema):
    """The events' JSON Schema as they are validated: a text field of a model that reads numbers as their text
    (``coerce_numbers_to_str``: a shop's numeric customer id) also takes a JSON number, unless a ``pattern`` would
    refuse any number's text anyway (``currency``)."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        if self._config.coerce_numbers_to_str and "pattern" not in json_schema:
            return {"anyOf": [json_schema, {"type": "number"}]}
        return json_schema


def event_json_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON Schema of one event (the tagged union); ``ref_template`` places the models elsewhere (the
    OpenAPI document keeps them in ``#/components/schemas/{model}``)."""
    return _ADAPTER.json_schema(ref_template=ref_template, schema_generator=_EventJsonSchema)
