"""The event schema: the contract between a shop and the engine (see docs/event-schema.md)."""

from schemas.events import (
    EVENT_TYPES,
    AddToCart,
    Event,
    FieldError,
    InvalidEvent,
    Item,
    OrderLine,
    PageView,
    ProductView,
    Purchase,
    RecommendationClick,
    RemoveFromCart,
    Search,
    event_json_schema,
    parse_event,
    parse_event_obj,
)

__all__ = [
    "EVENT_TYPES",
    "AddToCart",
    "Event",
    "FieldError",
    "InvalidEvent",
    "Item",
    "OrderLine",
    "PageView",
    "ProductView",
    "Purchase",
    "RecommendationClick",
    "RemoveFromCart",
    "Search",
    "event_json_schema",
    "parse_event",
    "parse_event_obj",
]
