"""How a profile's item entries are written in Redis (pure): the ``items`` hash holds per item its summed interaction
weight and its last interaction time as ``"<weight> <time ms>"`` (``profiles/apply.lua`` writes them); the recent
items are the newest of them."""

from __future__ import annotations

from collections.abc import Mapping


def item_value(weight: float, ts_ms: int) -> str:
    """An entry of ``items`` (the script writes the weight as ``%.17g``, Python's ``repr`` may be shorter: both
    parse to the same float)."""
    w = int(weight) if float(weight).is_integer() and abs(weight) < 2**53 else weight
    return f"{w!r} {int(ts_ms)}"


def parse_item(value: str) -> tuple[float, int]:
    """Weight and time of an entry of ``items``; an older engine's plain weight has time 0 (until ``ecrm
    migrate-keys``). ValueError for anything else."""
    weight, sep, ts = value.partition(" ")
    return float(weight), int(ts) if sep else 0


def history(items: Mapping[str, str]) -> list[tuple[str, float, int]]:
    """(item, summed weight, last time), positive weights only, newest first."""
    out = [(item, w, ts) for item, (w, ts) in ((item, parse_item(v)) for item, v in items.items()) if w > 0]
    out.sort(key=lambda entry: -entry[2])
    return out


def recent_items(items: Mapping[str, str], n: int) -> list[tuple[str, float]]:
    """The ``n`` newest items, newest first (ties: the greater id first, as a sorted set's reverse range), as
    ``(item, time)``."""
    rows = sorted(((item, float(parse_item(v)[1])) for item, v in items.items()), key=lambda r: (r[1], r[0]))
    return rows[::-1][:n]
