"""Datasets for offline evaluation in every format ``ecrm evaluate`` reads: the recommender library's own
(``sequences``, ``taobao``) and the engine's event JSON lines (``events``).

``events`` lines are validated with :func:`schemas.parse_event` and turned into interactions by the worker's own
:func:`profiles.updates.plan_update`, so weights match the live engine; event weights default to the schema's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from profiles.updates import plan_update
from recommender.evaluation.datasets import (
    Counter,
    Dataset,
    Record,
    check_file,
    dataset_from_records,
    lines,
)
from recommender.evaluation.datasets import load_dataset as load_library_format
from schemas import InvalidEvent, Item, parse_event
from schemas.weights import DEFAULT_EVENT_WEIGHTS

Format = Literal["sequences", "taobao", "events"]
FORMATS: tuple[Format, ...] = ("sequences", "taobao", "events")


def _events(path: Path, weights: Mapping[str, float], counter: Counter) -> Iterator[Record]:
    for line in lines(path):
        try:
            event = parse_event(line)
        except InvalidEvent:
            counter.skipped += 1
            continue
        if isinstance(event, Item):
            continue
        plan = plan_update(event, weights)
        for interaction in plan.interactions:
            yield str(plan.profile), interaction.item_id, interaction.weight, plan.ts


def load_dataset(
    path: Path, fmt: Format, *, event_weights: Mapping[str, float] | None = None, name: str | None = None
) -> Dataset:
    """Read ``path`` in format ``fmt``; ValueError when the file is missing or holds no interactions."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    weights = DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights
    if fmt != "events":
        return load_library_format(path, fmt, event_weights=weights, name=name)
    check_file(path)
    counter = Counter()
    return dataset_from_records(path, fmt, _events(path, weights, counter), counter, name)
