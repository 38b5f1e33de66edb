"""How a profile is written in Redis (pure): one hash per profile (``{p}:p:{T}``, core/keyspace.py), whose fields
are told apart by their start. This module and ``profiles/items.lua`` (the same format on the Lua side, shared by
``apply.lua`` and ``ecrm migrate-keys``) are the one place that format is defined.

| field | value |
|---|---|
| ``n:<code>`` | events of that type (its one-letter code, :data:`TYPE_CODES`; a type without one: ``n:<type>``) |
| ``fs``, ``ls``, ``fp``, ``lp`` | times (ms): first and last seen, first and last purchase |
| ``or``, ``rv`` | trusted purchases: count (orders) and sum (revenue) |
| ``mv`` | visitors merged in at a login |
| ``aL`` | the landmark (ms) of the forward-decayed affinities |
| ``ss`` | sessions counted (see below) |
| ``sl`` | digest of the last session id (its SHA-1's first 28 bits, in decimal: a 4-byte integer in the listpack) |
| ``i:<item>`` | ``"<summed weight> <last interaction>[ <last purchase>]"``, times in ms written in base 36 (8 digits
against 13 in decimal: :func:`item_value`; recommender input; the newest are the recent items) |
| ``a:<category>`` | forward-decayed affinity (``%.6g``) at landmark ``aL`` |
| ``k:<item>`` | cart quantity |
| ``#i``, ``#a``, ``#k`` | how many ``i:``, ``a:``, ``k:`` fields there are (bounds checked without reading them) |

No other field starts with ``i:``, ``a:``, ``k:`` or ``#``, so an id after a prefix (the id as the shop sent it)
cannot be taken for another field. The names are short because every profile holds them (two letters against
``first_purchase``'s fourteen: ~55 bytes a profile); the API's JSON keeps the long names. Key layout 3 wrote the
long names (:data:`LEGACY_NAMES`): the apply script renames them the first time it writes such a profile, ``ecrm
migrate-keys`` renames them all, and the readers (:func:`split`, the analytics) take either until then. Key layout 4
wrote the counts under the type's name (``n:product_view``): they move to the code's field the same ways
(:func:`event_counts` and the analytics read both meanwhile).

**Sessions** are counted, not remembered: an event whose session id differs from the profile's last one (``sl``)
counts one more session. A visitor who comes back to an older session id after another one counts it again (an
overcount, against the exact HyperLogLog of layout 3 that cost ~135 bytes a profile); at a login the visitor's count
adds to the customer's. A profile migrated from layout 3 has its HyperLogLog's count and no ``sl`` yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

ITEM, AFFINITY, CART = "i:", "a:", "k:"
ITEMS_COUNT, AFFINITIES_COUNT, CART_COUNT = "#i", "#a", "#k"
SESSIONS, LAST_SESSION = "ss", "sl"
COUNTS = "n:"  # n:<type>
FIRST_SEEN, LAST_SEEN, FIRST_PURCHASE, LAST_PURCHASE = "fs", "ls", "fp", "lp"
ORDERS, REVENUE, MERGED_VISITORS, AFF_LANDMARK = "or", "rv", "mv", "aL"
SCALARS = (FIRST_SEEN, LAST_SEEN, FIRST_PURCHASE, LAST_PURCHASE, ORDERS, REVENUE, MERGED_VISITORS, AFF_LANDMARK,
           SESSIONS, LAST_SESSION)  # fmt: skip
LEGACY_NAMES = {  # key layout 3's name -> the field's name now (items.lua LEGACY_NAMES: the same pairs)
    "first_seen": FIRST_SEEN,
    "last_seen": LAST_SEEN,
    "first_purchase": FIRST_PURCHASE,
    "last_purchase": LAST_PURCHASE,
    "orders": ORDERS,
    "revenue": REVENUE,
    "merged_visitors": MERGED_VISITORS,
    "aff_L": AFF_LANDMARK,
}

TYPE_CODES = {  # event type -> the one-letter code of its count field n:<code> (items.lua TYPE_CODES: the same pairs)
    "page_view": "g",
    "product_view": "v",
    "search": "s",
    "add_to_cart": "a",
    "remove_from_cart": "r",
    "purchase": "p",
    "claimed_purchase": "q",
    "recommendation_click": "c",
    "recommendation_view": "w",
}
_TYPE_OF_CODE = {code: kind for kind, code in TYPE_CODES.items()}


def count_field(kind: str) -> str:
    """The field counting the events of type ``kind`` (``n:<code>``; a type without a code: ``n:<type>``)."""
    return COUNTS + TYPE_CODES.get(kind, kind)


def event_counts(scalars: Mapping[str, str]) -> dict[str, int]:
    """Event type -> count from a profile's fields (a code's field and key layout 4's ``n:<type>`` added up)."""
    out: dict[str, int] = {}
    for name, value in scalars.items():
        if name.startswith(COUNTS):
            kind = _TYPE_OF_CODE.get(name[2:], name[2:])
            out[kind] = out.get(kind, 0) + int(value)
    return out


class ItemEntry(NamedTuple):
    weight: float
    ts: int  # last interaction (ms); 0: unknown (an older engine's entry until ``ecrm migrate-keys``)
    bought: int | None  # last purchase (ms)


@dataclass(frozen=True, slots=True)
class ProfileHash:
    """A profile's hash split by kind of field (ids without their prefix)."""

    scalars: dict[str, str] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)
    affinity: dict[str, str] = field(default_factory=dict)
    cart: dict[str, str] = field(default_factory=dict)

    @property
    def sessions(self) -> int:
        return int(self.scalars.get(SESSIONS, 0))


def split(h: Mapping[str, str]) -> ProfileHash:
    """The fields of a profile's hash (an HGETALL) by kind: items, affinities, cart lines and the rest (a layout-3
    profile's long names as their names now: :data:`LEGACY_NAMES`)."""
    out = ProfileHash()
    by_prefix = {ITEM: out.items, AFFINITY: out.affinity, CART: out.cart}
    for name, value in h.items():
        into = by_prefix.get(name[:2])
        if into is not None:
            into[name[2:]] = value
        elif name[:1] != "#":
            out.scalars[LEGACY_NAMES.get(name, name)] = value
    return out


def item_field(item: str) -> str:
    """The field of an item's entry."""
    return ITEM + item


def item_fields(entries: Mapping[str, str]) -> dict[str, str]:
    """Item entries (item -> :func:`item_value`) as the hash fields that hold them, with their count (to write a
    profile's items with one HSET where there were none)."""
    return {**{ITEM + item: v for item, v in entries.items()}, ITEMS_COUNT: str(len(entries))}


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(ms: int) -> str:
    """A time (ms, >= 0) in base 36, as the script writes it in an item's entry."""
    n, out = max(int(ms), 0), ""
    while True:
        n, d = divmod(n, 36)
        out = _B36[d] + out
        if n == 0:
            return out


def _time(text: str) -> int:
    if not text or text[0] in "+-_ " or not text.isascii():
        raise ValueError(f"not a base-36 time: {text!r}")
    return int(text, 36)


def item_value(weight: float, ts_ms: int, bought_ms: int | None = None) -> str:
    """An item's entry (the weight as the shortest text that reads back the same, as the script writes it; times
    in base 36)."""
    w = int(weight) if float(weight).is_integer() and abs(weight) < 2**53 else weight
    return f"{w!r} {b36(ts_ms)}" + (f" {b36(bought_ms)}" if bought_ms is not None else "")


def parse_item(value: str) -> ItemEntry:
    """An item's entry; an older engine's plain weight has time 0. ValueError for anything else."""
    parts = value.split(" ")
    if len(parts) > 3:
        raise ValueError(f"not an item entry: {value!r}")
    return ItemEntry(float(parts[0]), _time(parts[1]) if len(parts) > 1 else 0,
                     _time(parts[2]) if len(parts) > 2 else None)  # fmt: skip


def history(items: Mapping[str, str]) -> list[tuple[str, float, int]]:
    """(item, summed weight, last time), positive weights only, newest first (``items``: item -> entry)."""
    out = [(item, e.weight, e.ts) for item, e in ((item, parse_item(v)) for item, v in items.items()) if e.weight > 0]
    out.sort(key=lambda entry: -entry[2])
    return out


def bought(items: Mapping[str, str]) -> dict[str, int]:
    """Item -> last purchase time (ms) of the items bought."""
    return {item: e.bought for item, e in ((item, parse_item(v)) for item, v in items.items()) if e.bought is not None}


def recent_items(items: Mapping[str, str], n: int) -> list[tuple[str, float]]:
    """The ``n`` newest items, newest first (ties: the greater id first, as a sorted set's reverse range), as
    ``(item, time)``."""
    rows = sorted(((item, float(parse_item(v).ts)) for item, v in items.items()), key=lambda r: (r[1], r[0]))
    return rows[::-1][:n]
