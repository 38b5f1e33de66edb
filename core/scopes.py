"""The scopes of API keys and the scope each event needs: one rule for the collector, which refuses what a key may
not send, and for the worker, which checks again what reaches Kafka with a ``source`` header."""

from __future__ import annotations

from enum import IntEnum

from schemas.events import Behaviour, FieldError, Item, Purchase


class Scope(IntEnum):
    """What a key may do; a higher scope includes the lower ones."""

    COLLECT = 1
    SERVER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def named(cls, name: str) -> Scope:
        """The scope called ``name`` (``collect``, ``server``, ``admin``). Raises ``KeyError``."""
        return cls[name.strip().upper()]


def event_scope(event: Behaviour | Item) -> tuple[Scope, str]:
    """The scope an event needs, and the field that decides it (pure)."""
    if isinstance(event, Item):
        return Scope.ADMIN, "type"
    if event.customer_id is not None:
        return Scope.SERVER, "customer_id"
    return Scope.COLLECT, "type"


def scope_refusal(event: Behaviour | Item, scope: Scope, sender: str) -> FieldError | None:
    """Why a ``sender`` holding ``scope`` may not send ``event``, or None when it may (pure)."""
    needed, field = event_scope(event)
    if scope >= needed:
        return None
    what = "an item (catalogue) event" if isinstance(event, Item) else "an event with a customer_id"
    return FieldError(field, f"forbidden: {what} needs a key with the {needed.label} scope (this key has {sender})")


# --- what a source is trusted with (issue 18: a browser's word stays a browser's word) ----------------------------

COLLECT_SOURCE = "collect"
# Sources whose events are the shop's facts: a back-end key (``server``, ``admin``), the open demo (``open``: no keys,
# admin rights, loopback only) and producers writing to Kafka themselves (``direct``: the importers, ``ecrm
# simulate``). Money, orders, RFM, lifetime value and campaign conversions count only their events.
TRUSTED_SOURCES = frozenset({"server", "admin", "open", "direct"})


def trusted(source: str) -> bool:
    """Whether events from ``source`` are facts (money, orders, conversions), not a visitor's claims (pure)."""
    return source in TRUSTED_SOURCES


def claim_refusal(event: Behaviour | Item, source: str, max_lines: int) -> FieldError | None:
    """Why a browser (``collect``) may not send ``event`` although its scope allows the type: a purchase with more
    than ``max_lines`` lines (pure). Such a purchase never adds money anyway (the shop's server confirms orders), so
    a long one only weighs on what the visitor's profile keeps."""
    if source != COLLECT_SOURCE or not isinstance(event, Purchase) or len(event.lines) <= max_lines:
        return None
    return FieldError(
        "lines",
        f"a purchase sent with a collect key has at most {max_lines} lines (ECRM_COLLECT_MAX_LINES), this one "
        f"{len(event.lines)}; orders count from the shop's server (a server key), see docs/tracker.md",
    )
