"""The popularity baseline: every user gets the items most training users interacted with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from recommender.base import FloatMatrix, RecommenderBase
from recommender.data import FloatArray, HistoryBatch, IntArray, Interactions
from recommender.errors import NotFittedError
from recommender.serialize import load, pack_strings, save, unpack_strings

KIND = "popularity"


@dataclass(frozen=True, slots=True)
class PopularityScores:
    values: FloatMatrix

    def reasons(self, row: int, targets: IntArray) -> IntArray:  # noqa: ARG002 - part of the Scored protocol
        return np.full(targets.size, -1, dtype=np.int64)


class Popularity(RecommenderBase):
    """Scores an item by the number of distinct training users who interacted with it (positive weight)."""

    def __init__(self) -> None:
        self._items: tuple[str, ...] = ()
        self._counts: FloatArray | None = None

    @property
    def item_ids(self) -> tuple[str, ...]:
        return self._items

    @property
    def counts(self) -> FloatArray:
        if self._counts is None:
            raise NotFittedError("the model has not been fitted or loaded")
        return self._counts

    def fit(self, interactions: Interactions) -> Self:
        if len(interactions) == 0:
            raise ValueError("cannot fit on an empty interaction log")
        positive = interactions.weights > 0
        pairs = np.unique(
            interactions.users[positive].astype(np.int64) * interactions.n_items + interactions.items[positive]
        )
        self._counts = np.bincount(pairs % interactions.n_items, minlength=interactions.n_items).astype(np.float32)
        self._items = interactions.item_ids
        return self

    def score_batch(self, batch: HistoryBatch) -> PopularityScores:
        return PopularityScores(np.tile(self.counts, (batch.n_rows, 1)))

    def to_bytes(self) -> bytes:
        return save(KIND, {"counts": self.counts, **pack_strings(self._items)})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Self:
        arrays = load(KIND, blob)
        model = cls()
        try:
            model._items = unpack_strings(arrays)
            model._counts = arrays["counts"].astype(np.float32)
        except (KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"incomplete or corrupt model blob: {exc}") from exc
        if model._counts.shape != (len(model._items),):
            raise ValueError("model arrays do not match the number of items")
        return model
