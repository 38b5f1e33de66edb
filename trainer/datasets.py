"""Datasets for offline evaluation in every format ``ecrm evaluate`` reads: the recommender library's own
(``sequences``, ``taobao``) and the engine's event JSON lines (``events``).

``orders`` is a CSV of order lines in the UCI Online Retail layout (header ``InvoiceNo,StockCode,...,Quantity,
InvoiceDate,...,CustomerID``): one purchase interaction per line with a customer and a positive quantity, not a
cancellation (``C`` invoices); the repeat-purchase protocol reads it.

``events`` lines are validated with :func:`schemas.parse_event` and turned into interactions by the worker's own
:func:`profiles.updates.plan_update`, so weights match the live engine; event weights default to the schema's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
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

Format = Literal["sequences", "taobao", "events", "orders"]
FORMATS: tuple[Format, ...] = ("sequences", "taobao", "events", "orders")


def _orders(path: Path, weight: float, counter: Counter) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                customer, invoice = (row.get("CustomerID") or "").strip(), (row.get("InvoiceNo") or "").strip()
                item, quantity = (row.get("StockCode") or "").strip(), float(row.get("Quantity") or 0)
                when = datetime.fromisoformat((row.get("InvoiceDate") or "").strip()).replace(tzinfo=UTC)
            except ValueError:
                counter.skipped += 1
                continue
            if not customer or not item or quantity <= 0 or invoice.upper().startswith("C"):
                continue  # no customer, a return or a cancellation: not a purchase
            yield customer.removesuffix(".0"), item, weight, int(when.timestamp() * 1000)


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
    if fmt == "orders":
        check_file(path)
        counter = Counter()
        return dataset_from_records(path, fmt, _orders(path, float(weights["purchase"]), counter), counter, name)
    if fmt != "events":
        return load_library_format(path, fmt, event_weights=weights, name=name)
    check_file(path)
    counter = Counter()
    return dataset_from_records(path, fmt, _events(path, weights, counter), counter, name)
