"""Loaders of the evaluation formats into an :class:`~recommender.data.Interactions` log.

* ``sequences``: one line per user, ``user item item ...`` in time order; the position is the time.
* ``taobao``: ``user_id,item_id,category_id,behavior,unix_ts`` without a header; behaviours map to event types
  (``fav`` counts like ``add_to_cart``) and take their weights from the event weights the caller passes.

Other formats plug in through :func:`dataset_from_records` (the engine's own event JSON lines are read by
:mod:`trainer.datasets`, which owns the event schema; this library imports nothing of the application).
A line that cannot be read is skipped and counted in :attr:`Dataset.skipped`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recommender.data import Interactions

Format = Literal["sequences", "taobao"]
FORMATS: tuple[Format, ...] = ("sequences", "taobao")
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
    format: str
    interactions: Interactions
    skipped: int


class Counter:
    """Lines skipped as unreadable by a record reader."""

    def __init__(self) -> None:
        self.skipped = 0


def lines(path: Path) -> Iterator[str]:
    """The non-blank lines of a UTF-8 text file."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line


def _sequences(path: Path, counter: Counter) -> Iterator[Record]:
    for line in lines(path):
        user, *items = line.split()
        if not items:
            counter.skipped += 1
        for position, item in enumerate(items):
            yield user, item, 1.0, position


def _taobao(path: Path, weights: Mapping[str, float], counter: Counter) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            record = _taobao_row(row, weights)
            if record is None:
                counter.skipped += 1 if any(field.strip() for field in row) else 0
                continue
            yield record


def _taobao_row(row: list[str], weights: Mapping[str, float]) -> Record | None:
    if len(row) != 5:
        return None
    user, item, _category, behaviour, ts = (field.strip() for field in row)
    event_type = TAOBAO_EVENT_TYPES.get(behaviour)
    if event_type is None or not user or not item or not ts.isdigit():
        return None
    return user, item, float(weights.get(event_type, 0.0)), int(ts) * 1000


def load_dataset(
    path: Path, fmt: Format, *, event_weights: Mapping[str, float] | None = None, name: str | None = None
) -> Dataset:
    """Read ``path`` in format ``fmt``; ValueError when the file is missing or holds no interactions.
    ``taobao`` needs ``event_weights`` (event type -> weight)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    check_file(path)
    counter = Counter()
    if fmt == "sequences":
        records = _sequences(path, counter)
    else:
        if event_weights is None:
            raise ValueError("the taobao format needs event weights (event type -> weight)")
        records = _taobao(path, event_weights, counter)
    return dataset_from_records(path, fmt, records, counter, name)


def check_file(path: Path) -> None:
    """ValueError unless ``path`` is a readable file."""
    if not path.is_file():
        raise ValueError(f"dataset not found: {path}")


def dataset_from_records(
    path: Path, fmt: str, records: Iterable[Record], counter: Counter, name: str | None = None
) -> Dataset:
    """A :class:`Dataset` of ``(user, item, weight, time)`` records read from ``path`` (any reader)."""
    try:
        interactions = Interactions.from_records(records)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc
    if len(interactions) == 0:
        raise ValueError(f"no interactions read from {path} as {fmt!r} ({counter.skipped} lines skipped)")
    return Dataset(name or path.name, fmt, interactions, counter.skipped)
