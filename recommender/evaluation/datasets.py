"""Loaders of the evaluation formats into an :class:`~recommender.data.Interactions` log.

* ``sequences``: one line per user, ``user item item ...`` in time order; the position is the time.
* ``taobao``: ``user_id,item_id,category_id,behavior,unix_ts`` without a header; behaviours map to the engine's
  event types (``fav`` counts like ``add_to_cart``) and take their weights from the event weights.
* ``events``: the engine's own event JSON lines, validated with :func:`schemas.parse_event` and turned into
  interactions by the worker's own :func:`stream.updates.plan_update`, so weights match the live engine.

A line that cannot be read is skipped and counted in :attr:`Dataset.skipped`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecrm.settings import DEFAULT_EVENT_WEIGHTS
from recommender.data import Interactions
from schemas import InvalidEvent, Item, parse_event
from stream.updates import plan_update

Format = Literal["sequences", "taobao", "events"]
FORMATS: tuple[Format, ...] = ("sequences", "taobao", "events")
TAOBAO_EVENT_TYPES: dict[str, str] = {
    "pv": "product_view",
    "cart": "add_to_cart",
    "fav": "add_to_cart",
    "buy": "purchase",
}

Record = tuple[str, str, float, int]


@dataclass(frozen=True, slots=True)
class Dataset:
    """An interaction log read from a file, and how many lines were skipped as unreadable."""

    name: str
    format: Format
    interactions: Interactions
    skipped: int


class _Counter:
    def __init__(self) -> None:
        self.skipped = 0


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line


def _sequences(path: Path, counter: _Counter) -> Iterator[Record]:
    for line in _lines(path):
        user, *items = line.split()
        if not items:
            counter.skipped += 1
        for position, item in enumerate(items):
            yield user, item, 1.0, position


def _taobao(path: Path, weights: dict[str, float], counter: _Counter) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            record = _taobao_row(row, weights)
            if record is None:
                counter.skipped += 1 if any(field.strip() for field in row) else 0
                continue
            yield record


def _taobao_row(row: list[str], weights: dict[str, float]) -> Record | None:
    if len(row) != 5:
        return None
    user, item, _category, behaviour, ts = (field.strip() for field in row)
    event_type = TAOBAO_EVENT_TYPES.get(behaviour)
    if event_type is None or not user or not item or not ts.isdigit():
        return None
    return user, item, float(weights.get(event_type, 0.0)), int(ts) * 1000


def _events(path: Path, weights: dict[str, float], counter: _Counter) -> Iterator[Record]:
    for line in _lines(path):
        try:
            event = parse_event(line)
        except InvalidEvent:
            counter.skipped += 1
            continue
        if isinstance(event, Item):
            continue
        plan = plan_update(event, weights)
        for item, _category, weight in plan.get("items", []):
            yield str(plan["p"]), str(item), float(weight), int(plan["ts"])


def load_dataset(
    path: Path, fmt: Format, *, event_weights: dict[str, float] | None = None, name: str | None = None
) -> Dataset:
    """Read ``path`` in format ``fmt``; ValueError when the file is missing or holds no interactions."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise ValueError(f"dataset not found: {path}")
    weights = dict(DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights)
    counter = _Counter()
    if fmt == "sequences":
        records = _sequences(path, counter)
    elif fmt == "taobao":
        records = _taobao(path, weights, counter)
    else:
        records = _events(path, weights, counter)
    try:
        interactions = Interactions.from_records(records)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc
    if len(interactions) == 0:
        raise ValueError(f"no interactions read from {path} as {fmt!r} ({counter.skipped} lines skipped)")
    return Dataset(name or path.name, fmt, interactions, counter.skipped)
