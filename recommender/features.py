"""The ranking stage's features: one declared list, one function that computes them.

Every feature of a (user, candidate item) pair is computed by :func:`features` from three things only:

* the model state fitted from the log (:class:`ItemStats`: per-item counters over several windows, a time-decayed
  trending count, the first time each item was seen; the transition matrix; the blend's scores of the candidates);
* the user's current history (item, summed weight, latest time: what the live profile holds);
* ``now`` (:func:`reference_now`: the later of the log's end and the history's newest event).

The trainer computes the features of past cut-offs with it, ``ecrm evaluate`` and the API compute the features of
a request with it, so the three never disagree. Missing values (an item the user never touched) are NaN, which
LightGBM treats as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recommender.data import FloatArray, HistoryBatch, IntArray, Interactions
from recommender.weighting import DAY_MS, row_latest

FloatMatrix = NDArray[np.float32]
WINDOWS_DAYS: tuple[float, ...] = (1.0, 7.0, 30.0)  # item counters over these windows, plus all time
TREND_HALF_LIFE_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class Feature:
    """One ranking feature: its name (the column of the ranker's input) and what it measures."""

    name: str
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("blend_score", "the engine's blended score (sequential + collaborative + popularity), row maximum 1"),
    Feature("blend_rank", "rank of the item among the request's candidates by the blended score (0: best)"),
    Feature("seq_score", "sequential source: transitions from the history, recency-weighted, row maximum 1"),
    Feature("seq_rank", "rank among the candidates by the sequential score"),
    Feature("collab_score", "collaborative source (ALS/BPR fold-in or item-item), weighted as in the blend"),
    Feature("collab_rank", "rank among the candidates by the collaborative score"),
    Feature("last_item_transition", "transition weight from the user's newest item to this item"),
    Feature("pop_1d", "log(1 + interactions with the item in the day before the log's end)"),
    Feature("pop_7d", "log(1 + interactions in the 7 days before the log's end)"),
    Feature("pop_30d", "log(1 + interactions in the 30 days before the log's end)"),
    Feature("pop_all", "log(1 + interactions with the item, all time)"),
    Feature("trend", "log(1 + interactions halved per 7 days of age before the log's end): trending"),
    Feature("pop_rank", "log(1 + the item's rank by all-time interactions)"),
    Feature("trend_rank", "log(1 + the item's rank by the trending count)"),
    Feature("item_age_days", "days since the item's first interaction in the log, at now"),
    Feature("user_item_weight", "the user's summed event weight on the item (0: never touched)"),
    Feature("user_item_days", "days since the user last touched the item (missing: never)"),
    Feature("user_item_recency", "k for the user's k-th newest item (0: the newest; missing: never touched)"),
    Feature("history_items", "distinct items in the user's history"),
    Feature("user_idle_days", "days since the user's newest event, at now"),
    Feature("user_weight_share", "the item's share of the user's summed weight (0: never touched)"),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
COLUMN: dict[str, int] = {name: k for k, name in enumerate(NAMES)}


@dataclass(frozen=True, slots=True)
class ItemStats:
    """Per-item counters fitted from the log (part of the model state and of the model blob)."""

    counts: FloatArray  # items x (len(WINDOWS_DAYS) + 1): interactions per window, the last column all time
    trend: FloatArray  # items: interactions halved per TREND_HALF_LIFE_DAYS of age before ``until``
    first_seen: IntArray  # items: first interaction time (ms)
    until: int  # the log's last time (ms)
    pop_rank: FloatArray  # items: rank by all-time count (0: most)
    trend_rank: FloatArray  # items: rank by trending count (0: most)

    @classmethod
    def fit(cls, log: Interactions) -> ItemStats:
        """The counters of ``log`` as of its last interaction (positive weights count once each)."""
        n = log.n_items
        positive = log.weights > 0
        items, ts = log.items[positive], log.ts[positive]
        until = int(log.ts.max()) if len(log) else 0
        columns = [np.bincount(items[ts >= until - days * DAY_MS], minlength=n) for days in WINDOWS_DAYS]
        columns.append(np.bincount(items, minlength=n))
        age_days = (until - ts).astype(np.float64) / DAY_MS
        trend = np.bincount(items, weights=np.exp2(-age_days / TREND_HALF_LIFE_DAYS), minlength=n)
        first = np.full(n, until, dtype=np.int64)
        np.minimum.at(first, log.items, log.ts)
        counts = np.stack(columns, axis=1).astype(np.float32)
        trend32 = trend.astype(np.float32)  # ranked as stored, so a loaded model ranks the same
        return cls(counts, trend32, first, until, _ranks(counts[:, -1]), _ranks(trend32))

    def top_trending(self, k: int) -> IntArray:
        """Codes of the ``k`` most trending items, most first (ties: lower code first)."""
        order = np.lexsort((np.arange(self.trend.size), -self.trend))
        return order[:k].astype(np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "stats_counts": self.counts,
            "stats_trend": self.trend,
            "stats_first_seen": self.first_seen,
            "stats_until": np.asarray([self.until], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_items: int) -> ItemStats:
        counts = np.asarray(arrays["stats_counts"], dtype=np.float32)
        trend = np.asarray(arrays["stats_trend"], dtype=np.float32)
        first = np.asarray(arrays["stats_first_seen"], dtype=np.int64)
        if counts.shape != (n_items, len(WINDOWS_DAYS) + 1) or trend.shape != (n_items,) or first.shape != (n_items,):
            raise ValueError("the ranking stage's item counters do not match the number of items")
        until = int(arrays["stats_until"][0])
        return cls(counts, trend, first, until, _ranks(counts[:, -1]), _ranks(trend))


def _ranks(values: NDArray[np.number[Any]]) -> FloatArray:
    order = np.lexsort((np.arange(values.size), -values))
    ranks = np.empty(values.size, dtype=np.float32)
    ranks[order] = np.arange(values.size, dtype=np.float32)
    return ranks


def reference_now(stats: ItemStats, batch: HistoryBatch) -> IntArray:
    """Per row, the time the features are computed at: the later of the log's end and the history's newest event
    (no wall clock: a history scores the same offline and online)."""
    return np.maximum(row_latest(batch), stats.until)


@dataclass(frozen=True, slots=True)
class Candidates:
    """The (row, item) pairs to rank, grouped by row, and the blend's scores of them."""

    rows: IntArray  # row of the batch, ascending
    items: IntArray  # item code
    blend: FloatArray  # the blended score
    seq: FloatArray  # its sequential part


def features(
    stats: ItemStats, transitions: sp.csr_matrix, batch: HistoryBatch, cands: Candidates, now: IntArray
) -> FloatMatrix:
    """The features (columns in :data:`NAMES` order) of every candidate pair of ``cands`` (pure)."""
    n = cands.rows.size
    out = np.full((n, len(NAMES)), np.nan, dtype=np.float32)
    if n == 0:
        return out
    rows, items = cands.rows, cands.items
    collab = cands.blend - cands.seq
    for name, values in (("blend", cands.blend), ("seq", cands.seq), ("collab", collab)):
        out[:, COLUMN[f"{name}_score"]] = values
        out[:, COLUMN[f"{name}_rank"]] = _rank_in_row(rows, values)
    out[:, COLUMN["last_item_transition"]] = _last_item_transition(transitions, batch, rows, items)
    logs = np.log1p(stats.counts[items])
    for k, name in enumerate(("pop_1d", "pop_7d", "pop_30d", "pop_all")):
        out[:, COLUMN[name]] = logs[:, k]
    out[:, COLUMN["trend"]] = np.log1p(stats.trend[items])
    out[:, COLUMN["pop_rank"]] = np.log1p(stats.pop_rank[items])
    out[:, COLUMN["trend_rank"]] = np.log1p(stats.trend_rank[items])
    at = now[rows]
    out[:, COLUMN["item_age_days"]] = (at - stats.first_seen[items]) / DAY_MS
    _history_features(out, batch, rows, items, at)
    return out


def _rank_in_row(rows: IntArray, values: FloatArray) -> FloatArray:
    """0 for the best value of each row, 1 for the next ... (rows ascending; ties by position)."""
    if rows.size and rows[0] == rows[-1]:  # one row (a request): the same order by one stable sort
        ranks_one = np.empty(rows.size, dtype=np.float32)
        ranks_one[np.argsort(-values, kind="stable")] = np.arange(rows.size, dtype=np.float32)
        return ranks_one
    order = np.lexsort((np.arange(rows.size), -values, rows))
    starts = np.searchsorted(rows[order], rows[order], side="left")
    ranks = np.empty(rows.size, dtype=np.float32)
    ranks[order] = np.arange(rows.size) - starts
    return ranks


def _last_item_transition(
    transitions: sp.csr_matrix, batch: HistoryBatch, rows: IntArray, items: IntArray
) -> FloatArray:
    """Per pair, the transition weight from its row's newest history item to the item (rows ascending)."""
    out = np.zeros(rows.size, dtype=np.float32)
    lengths = np.diff(batch.indptr)
    bounds = np.searchsorted(rows, np.arange(batch.n_rows + 1))
    indptr, indices, data = transitions.indptr, transitions.indices, transitions.data
    for r in np.flatnonzero((lengths > 0) & (bounds[1:] > bounds[:-1])).tolist():
        src = int(batch.items[batch.indptr[r]])
        lo, hi = int(indptr[src]), int(indptr[src + 1])
        if lo == hi:
            continue
        row_cols = indices[lo:hi]  # sorted within the row
        dst = items[bounds[r] : bounds[r + 1]]
        at = np.searchsorted(row_cols, dst).clip(max=hi - lo - 1)
        out[bounds[r] : bounds[r + 1]] = np.where(row_cols[at] == dst, data[lo:hi][at], 0.0)
    return out


def _history_features(out: FloatMatrix, batch: HistoryBatch, rows: IntArray, items: IntArray, at: IntArray) -> None:
    lengths = np.diff(batch.indptr)
    out[:, COLUMN["history_items"]] = lengths[rows]
    latest = row_latest(batch)
    out[:, COLUMN["user_idle_days"]] = np.where(lengths[rows] > 0, (at - latest[rows]) / DAY_MS, np.nan)
    batch_rows = batch.rows
    if batch.n_rows == 1:  # a request: the keys are the item codes themselves (the same order, fewer steps)
        keys, wanted = batch.items.astype(np.int64), items
    else:
        n_items = np.int64(max(int(items.max(initial=0)), int(batch.items.max(initial=0))) + 1)
        keys, wanted = batch_rows * n_items + batch.items, rows * n_items + items
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.searchsorted(sorted_keys, wanted).clip(max=max(sorted_keys.size - 1, 0))
    found = (sorted_keys[pos] == wanted) if sorted_keys.size else np.zeros(rows.size, dtype=bool)
    entry = order[pos[found]]
    weights = np.zeros(rows.size, dtype=np.float32)
    weights[found] = batch.weights[entry]
    total = np.bincount(batch_rows, weights=np.clip(batch.weights, 0, None), minlength=batch.n_rows)
    out[:, COLUMN["user_item_weight"]] = weights
    out[:, COLUMN["user_weight_share"]] = np.where(total[rows] > 0, weights / np.maximum(total[rows], 1e-9), 0.0)
    days = np.full(rows.size, np.nan, dtype=np.float32)
    days[found] = (at[found] - batch.ts[entry]) / DAY_MS
    out[:, COLUMN["user_item_days"]] = days
    recency = np.full(rows.size, np.nan, dtype=np.float32)
    recency[found] = entry - batch.indptr[rows[found]]
    out[:, COLUMN["user_item_recency"]] = recency
