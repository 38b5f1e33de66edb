"""How a profile's item entries are written in Redis (pure): the ``items`` hash holds per item its summed interaction
weight, its last interaction time and, once bought, its last purchase time, as ``"<weight> <time ms>[ <purchase
ms>]"`` (``profiles/apply.lua`` writes them); the recent items are the newest of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class ItemEntry(NamedTuple):
    weight: float
    ts: int  # last interaction (ms); 0: unknown (an older engine's entry until ``ecrm migrate-keys``)
    bought: int | None  # last purchase (ms)


def item_value(weight: float, ts_ms: int, bought_ms: int | None = None) -> str:
    """An entry of ``items`` (the script writes the weight as ``%.17g``, Python's ``repr`` may be shorter: both
    parse to the same float)."""
    w = int(weight) if float(weight).is_integer() and abs(weight) < 2**53 else weight
    return f"{w!r} {int(ts_ms)}" + (f" {int(bought_ms)}" if bought_ms is not None else "")


def parse_item(value: str) -> ItemEntry:
    """An entry of ``items``; an older engine's plain weight has time 0. ValueError for anything else."""
    parts = value.split(" ")
    if len(parts) > 3:
        raise ValueError(f"not an item entry: {value!r}")
    return ItemEntry(float(parts[0]), int(parts[1]) if len(parts) > 1 else 0, int(parts[2]) if len(parts) > 2 else None)


def history(items: Mapping[str, str]) -> list[tuple[str, float, int]]:
    """(item, summed weight, last time), positive weights only, newest first."""
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
