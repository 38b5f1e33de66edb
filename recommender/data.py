"""Interaction data in the two shapes the recommender uses.

* :class:`Interactions` is an event-level training log (one row per interaction: user, item, weight, time), with
  integer codes into its ``user_ids`` / ``item_ids``. It is what :meth:`RecommenderBase.fit` takes; the Redis
  stream ``<prefix>:interactions`` (fields p, i, w, t) maps onto it one to one.
* :class:`HistoryBatch` holds the *current* histories of a batch of users, as the live profile stores them: one
  entry per distinct item with its summed weight and its latest time, newest first. A single API request is a
  batch of one; the offline evaluation scores thousands at a time through the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
Int32Array = NDArray[np.int32]
FloatArray = NDArray[np.float32]

HistoryEntry = tuple[str, float, int]
"""One entry of a user's current history: (item id, summed weight, latest time in epoch ms)."""


@dataclass(frozen=True, slots=True)
class Interactions:
    """An event-level interaction log. ``users[k]``, ``items[k]`` are codes into ``user_ids``, ``item_ids``."""

    users: Int32Array
    items: Int32Array
    weights: FloatArray
    ts: IntArray
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.users)
        if not len(self.items) == len(self.weights) == len(self.ts) == n:
            raise ValueError("users, items, weights and ts must have the same length")
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise ValueError("user codes out of range of user_ids")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise ValueError("item codes out of range of item_ids")
        if n and not np.all(np.isfinite(self.weights)):
            raise ValueError("weights must be finite")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, float, int]]) -> Interactions:
        """Build from ``(user_id, item_id, weight, ts_ms)`` tuples; ids are coded in order of appearance."""
        user_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        users: list[int] = []
        items: list[int] = []
        weights: list[float] = []
        ts: list[int] = []
        for user, item, weight, t in records:
            users.append(user_index.setdefault(user, len(user_index)))
            items.append(item_index.setdefault(item, len(item_index)))
            weights.append(weight)
            ts.append(t)
        return cls(
            users=np.asarray(users, dtype=np.int32),
            items=np.asarray(items, dtype=np.int32),
            weights=np.asarray(weights, dtype=np.float32),
            ts=np.asarray(ts, dtype=np.int64),
            user_ids=tuple(user_index),
            item_ids=tuple(item_index),
        )

    def select(self, mask: NDArray[np.bool_]) -> Interactions:
        """The interactions where ``mask`` holds, with the same id spaces."""
        return Interactions(
            self.users[mask], self.items[mask], self.weights[mask], self.ts[mask], self.user_ids, self.item_ids
        )

    def chronological(self) -> IntArray:
        """Positions sorted by user, then time, then position in the log (a stable time order per user)."""
        return np.lexsort((np.arange(len(self)), self.ts, self.users)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class HistoryBatch:
    """Current histories of ``n_rows`` users in CSR layout: row ``r`` is ``indptr[r]:indptr[r + 1]``.

    Within a row the items are distinct and sorted newest first (ties by item code).
    """

    indptr: IntArray
    items: Int32Array
    weights: FloatArray
    ts: IntArray

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def rows(self) -> IntArray:
        """The row of every entry."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def row(self, r: int) -> slice:
        return slice(int(self.indptr[r]), int(self.indptr[r + 1]))

    def take(self, rows: Sequence[int] | IntArray) -> HistoryBatch:
        """A batch of the given rows, in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        lengths = np.diff(self.indptr)[idx]
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        starts = np.repeat(self.indptr[idx], lengths)
        within = np.arange(int(indptr[-1]), dtype=np.int64) - np.repeat(indptr[:-1], lengths)
        pos = starts + within
        return HistoryBatch(indptr, self.items[pos], self.weights[pos], self.ts[pos])


def aggregate(rows: IntArray, items: Int32Array, weights: FloatArray, ts: IntArray, n_rows: int) -> HistoryBatch:
    """Per (row, item): summed weight and latest time, as the live profile keeps them (``items``)."""
    if not len(rows) == len(items) == len(weights) == len(ts):
        raise ValueError("rows, items, weights and ts must have the same length")
    order = np.lexsort((ts, items, rows))
    r, i, w, t = rows[order], items[order], weights[order].astype(np.float64), ts[order]
    last = np.ones(len(r), dtype=bool)
    if len(r):
        last[:-1] = (r[1:] != r[:-1]) | (i[1:] != i[:-1])
    group = np.cumsum(last) - last  # group number of every entry (groups end at ``last``)
    summed = np.bincount(group, weights=w, minlength=int(last.sum())).astype(np.float32)
    r, i, t = r[last], i[last], t[last]
    newest_first = np.lexsort((i, -t, r))
    r, i, t, summed = r[newest_first], i[newest_first], t[newest_first], summed[newest_first]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return HistoryBatch(indptr, i.astype(np.int32), summed, t.astype(np.int64))


def encode(histories: Sequence[Iterable[HistoryEntry]], index: Mapping[str, int]) -> HistoryBatch:
    """Histories of item ids as a batch in model codes. Items the model does not know are left out."""
    if len(histories) == 1:  # a request: the same aggregation in plain Python (a few dozen entries)
        return encode_one(histories[0], index)
    rows: list[int] = []
    items: list[int] = []
    weights: list[float] = []
    ts: list[int] = []
    for r, history in enumerate(histories):
        for item_id, weight, t in history:
            code = index.get(item_id)
            if code is None:
                continue
            rows.append(r)
            items.append(code)
            weights.append(float(weight))
            ts.append(int(t))
    weights_arr = np.asarray(weights, dtype=np.float32)
    if not np.all(np.isfinite(weights_arr)):
        raise ValueError("history weights must be finite")
    return aggregate(
        np.asarray(rows, dtype=np.int64),
        np.asarray(items, dtype=np.int32),
        weights_arr,
        np.asarray(ts, dtype=np.int64),
        len(histories),
    )


def encode_one(history: Iterable[HistoryEntry], index: Mapping[str, int]) -> HistoryBatch:
    """:func:`encode` of one history, equal to the batch path to the bit: per item the weights (as float32) summed
    in float64 in time order (ties: order given), the latest time; then newest first, ties by item code."""
    codes: list[int] = []
    weights_in: list[float] = []
    times: list[int] = []
    get = index.get
    for item_id, weight, t in history:
        code = get(item_id)
        if code is not None:
            codes.append(code)
            weights_in.append(float(weight))
            times.append(int(t))
    weights = np.asarray(weights_in, dtype=np.float32)
    if not np.all(np.isfinite(weights)):
        raise ValueError("history weights must be finite")
    if len(set(codes)) < len(codes):  # an item twice (a live profile has each once): summed as ``aggregate`` does
        codes, weights, times = _summed(codes, weights, times)
    items = np.asarray(codes, dtype=np.int32)
    ts = np.asarray(times, dtype=np.int64)
    order = np.lexsort((items, -ts))  # newest first, ties by item code
    return HistoryBatch(np.asarray([0, items.size], dtype=np.int64), items[order], weights[order], ts[order])


def _summed(codes: list[int], weights: FloatArray, times: list[int]) -> tuple[list[int], FloatArray, list[int]]:
    """Per item the weights summed in float64 in (time, given) order, as ``aggregate``'s stable lexsort adds them,
    and the latest time."""
    sums: dict[int, float] = {}
    latest: dict[int, int] = {}
    values = weights.tolist()
    for k in sorted(range(len(codes)), key=lambda k: (codes[k], times[k])):
        code = codes[k]
        sums[code] = sums.get(code, 0.0) + values[k]
        latest[code] = times[k]  # the group's last entry: its latest time
    kept = list(sums)
    return kept, np.asarray([sums[c] for c in kept], dtype=np.float64).astype(np.float32), [latest[c] for c in kept]


def interactions_batch(interactions: Interactions) -> HistoryBatch:
    """Every user's history (aggregated per item) from an event log; row ``u`` is user code ``u``."""
    return aggregate(
        interactions.users.astype(np.int64),
        interactions.items,
        interactions.weights,
        interactions.ts,
        interactions.n_users,
    )
