"""How much each event type says about a visitor's interest in an item: the default interaction weights.

They live with the event schema because they are part of what an event means; ``ECRM_EVENT_WEIGHTS`` overrides
them (a JSON object). Negative weights take interest away (a removal from the cart); zero logs nothing.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

DEFAULT_EVENT_WEIGHTS: Final = MappingProxyType(
    {
        "page_view": 0.0,
        "product_view": 1.0,
        "search": 0.0,
        "add_to_cart": 3.0,
        "remove_from_cart": -1.0,
        "purchase": 5.0,
        "recommendation_click": 2.0,
        "recommendation_view": 0.0,
        "item": 0.0,
    }
)
