"""The simple lists a shop would try before (or instead of) a learned engine, as small pure recommenders with the
engine's interface (:class:`~recommender.base.RecommenderBase`), so ``ecrm evaluate`` and the retraining gate score
them through the same code as the engine:

* ``popularity``: the items most training users interacted with (:class:`recommender.popularity.Popularity`);
* ``trending``: time-decayed popularity at the cut-off (the newest training time): each user who interacted with
  an item counts ``2 ** (-age / half_life)``, the age of their latest interaction with it, ``half_life_hours``
  the engine's ``ECRM_TRENDING_HALF_LIFE_HOURS``;
* ``buy-again``: the customer's own items by how often (summed weight), the newest first among equals
  (:class:`recommender.evaluation.buy_again.BuyAgain`);
* ``recently-viewed``: the customer's own last distinct items, the newest first.

The last two recommend only items of the customer's history, so they are scored only where the history may be the
answer (the ``repeat`` protocol, the rolling protocol's ``repeat`` view, a gate serving re-buys).

``served=True`` (:func:`make_baseline`) gives the lists exactly as the API would serve them, for the retraining
gate: the live ``popular`` and ``trending`` lists in Redis sum event weights (every event counts, a heavy user's
repeated views too), so there ``popularity`` is the all-time weight and ``trending`` its decayed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from recommender.base import FloatMatrix, RecommenderBase
from recommender.data import FloatArray, HistoryBatch, IntArray, Interactions, interactions_batch
from recommender.errors import NotFittedError
from recommender.evaluation.buy_again import BuyAgain, OwnHistory
from recommender.popularity import Popularity

POPULARITY = "popularity"
TRENDING = "trending"
BUY_AGAIN = "buy-again"
RECENTLY_VIEWED = "recently-viewed"
BASELINES: tuple[str, ...] = (POPULARITY, TRENDING, BUY_AGAIN, RECENTLY_VIEWED)
PERSONAL_BASELINES: frozenset[str] = frozenset({BUY_AGAIN, RECENTLY_VIEWED})  # only the customer's own items
DEFAULT_HALF_LIFE_HOURS = 24.0
_HOUR_MS = 3_600_000.0


@dataclass(frozen=True, slots=True)
class _Scores:
    values: FloatMatrix

    def reasons(self, row: int, targets: IntArray) -> IntArray:  # noqa: ARG002 - part of the Scored protocol
        return np.full(targets.size, -1, dtype=np.int64)


class _EvaluationOnly(RecommenderBase):
    """A baseline that is computed where it is served (Redis, the profile), never stored as a model blob."""

    def to_bytes(self) -> bytes:
        raise NotImplementedError(f"the {type(self).__name__} baseline is for evaluation and the gate only")

    @classmethod
    def from_bytes(cls, blob: bytes) -> Self:
        raise NotImplementedError(f"the {cls.__name__} baseline is for evaluation and the gate only")


class Trending(_EvaluationOnly):
    """Scores an item by its time-decayed popularity at the newest training time: each user who interacted with it
    (positive summed weight) counts ``2 ** (-age / half_life)``, the age of their latest interaction with it. With
    ``distinct=False`` each positive interaction counts ``weight * 2 ** (-age / half_life)`` instead (the live
    Redis lists); ``half_life_hours=None``: no decay. Every user gets the same list."""

    def __init__(self, half_life_hours: float | None = DEFAULT_HALF_LIFE_HOURS, *, distinct: bool = True) -> None:
        if half_life_hours is not None and not half_life_hours > 0:
            raise ValueError(f"half_life_hours must be positive, got {half_life_hours}")
        self.half_life_hours = half_life_hours
        self.distinct = distinct
        self._items: tuple[str, ...] | None = None
        self._scores: FloatArray | None = None

    @property
    def item_ids(self) -> tuple[str, ...]:
        if self._items is None:
            raise NotFittedError("the model has not been fitted")
        return self._items

    @property
    def scores(self) -> FloatArray:
        if self._scores is None:
            raise NotFittedError("the model has not been fitted")
        return self._scores

    def fit(self, interactions: Interactions) -> Self:
        if len(interactions) == 0:
            raise ValueError("cannot fit on an empty interaction log")
        if self.distinct:  # one entry per (user, item): summed weight, latest time
            batch = interactions_batch(interactions)
            items, weights, ts = batch.items, (batch.weights > 0).astype(np.float64), batch.ts
        else:
            items, weights, ts = interactions.items, interactions.weights.astype(np.float64), interactions.ts
        positive = weights > 0
        decay = np.ones(int(positive.sum()), dtype=np.float64)
        if self.half_life_hours is not None:
            age_ms = (int(interactions.ts.max()) - ts[positive]).astype(np.float64)
            decay = np.exp2(-age_ms / (self.half_life_hours * _HOUR_MS))
        self._scores = np.bincount(
            items[positive], weights=weights[positive] * decay, minlength=interactions.n_items
        ).astype(np.float32)
        self._items = interactions.item_ids
        return self

    def score_batch(self, batch: HistoryBatch) -> _Scores:
        return _Scores(np.tile(self.scores, (batch.n_rows, 1)))


class RecentlyViewed(_EvaluationOnly, OwnHistory):
    """Scores the items of a customer's own history by recency (the newest highest); every other item -inf."""

    def score_batch(self, batch: HistoryBatch) -> _Scores:
        values = np.full((batch.n_rows, self.n_items), -np.inf, dtype=np.float32)
        if batch.items.size:
            # a row's entries are newest first: the k-th newest scores 1 / (k + 1)
            position = np.arange(batch.items.size, dtype=np.int64) - np.repeat(batch.indptr[:-1], np.diff(batch.indptr))
            values[batch.rows, batch.items] = (1.0 / (position + 1)).astype(np.float32)
        return _Scores(values)


def make_baseline(
    name: str, half_life_hours: float = DEFAULT_HALF_LIFE_HOURS, *, served: bool = False
) -> RecommenderBase:
    """An unfitted baseline by name (ValueError for an unknown one); ``served``: popularity and trending as the
    API's Redis lists rank them (summed event weights, not distinct users)."""
    if name == POPULARITY:
        return Trending(None, distinct=False) if served else Popularity()
    if name == TRENDING:
        return Trending(half_life_hours, distinct=not served)
    if name == BUY_AGAIN:
        return BuyAgain()
    if name == RECENTLY_VIEWED:
        return RecentlyViewed()
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


def global_scores(model: RecommenderBase) -> FloatArray | None:
    """The one score vector of a baseline that gives everyone the same list (popularity, trending); None for the
    personal ones and any other model."""
    if isinstance(model, Trending):
        return model.scores
    if isinstance(model, Popularity):
        return model.counts
    return None


def baselines_for(history_may_answer: bool) -> tuple[str, ...]:
    """The baselines worth scoring: the personal ones only where the customer's history may be the answer."""
    return BASELINES if history_may_answer else tuple(b for b in BASELINES if b not in PERSONAL_BASELINES)


def best_baseline(figures: dict[str, float], names: Sequence[str] = BASELINES) -> tuple[str, float] | None:
    """The baseline with the highest figure among ``names`` (the first named wins a tie); None without any."""
    best: tuple[str, float] | None = None
    for name in names:
        value = figures.get(name)
        if value is not None and (best is None or value > best[1]):
            best = (name, value)
    return best


def ratio(engine: float, baseline: float) -> float | None:
    """``engine / baseline``, None when the baseline scored nothing (no ratio to report)."""
    return round(engine / baseline, 4) if baseline > 0 else None
