"""The scopes of API keys and the scope each event needs: one rule for the collector, which refuses what a key may
not send, and for the worker, which checks again what reaches Kafka with a ``source`` header."""

from __future__ import annotations

from enum import IntEnum

from schemas.events import Behaviour, FieldError, Item


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
