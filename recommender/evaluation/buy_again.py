"""The "buy again" baseline of the repeat-purchase protocol: each customer's own most frequent purchases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from recommender.base import FloatMatrix, RecommenderBase
from recommender.data import HistoryBatch, IntArray, Interactions
from recommender.errors import NotFittedError


@dataclass(frozen=True, slots=True)
class BuyAgainScores:
    values: FloatMatrix

    def reasons(self, row: int, targets: IntArray) -> IntArray:  # noqa: ARG002 - part of the Scored protocol
        return targets.astype(np.int64)


class OwnHistory(RecommenderBase):
    """A list made of the customer's own history: fitting only learns the item ids (the scores come from the
    history given at scoring time)."""

    def __init__(self) -> None:
        self._items: tuple[str, ...] | None = None

    @property
    def item_ids(self) -> tuple[str, ...]:
        if self._items is None:
            raise NotFittedError("the model has not been fitted")
        return self._items

    def fit(self, interactions: Interactions) -> Self:
        self._items = interactions.item_ids
        return self


class BuyAgain(OwnHistory):
    """Scores the items of a customer's own history by their summed weight (how often bought), the newest first
    among equals; every other item is not recommended (-inf)."""

    def score_batch(self, batch: HistoryBatch) -> BuyAgainScores:
        values = np.full((batch.n_rows, self.n_items), -np.inf, dtype=np.float32)
        if batch.items.size:
            # recency breaks ties: a fraction below 1 that grows with the purchase time
            ts = batch.ts.astype(np.float64)
            span = max(float(ts.max() - ts.min()), 1.0)
            recency = 0.5 * (ts - ts.min()) / span
            values[batch.rows, batch.items] = (batch.weights + recency).astype(np.float32)
        return BuyAgainScores(values)

    def to_bytes(self) -> bytes:
        raise NotImplementedError("the buy-again baseline is for evaluation only")

    @classmethod
    def from_bytes(cls, blob: bytes) -> Self:
        raise NotImplementedError("the buy-again baseline is for evaluation only")
