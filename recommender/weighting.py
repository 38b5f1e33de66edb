"""Pure weighting functions: confidence with time decay, recency of history entries, sparse matrices.

Time decay is relative to each user's own latest event, both in training and when a request is scored, so the
same history always yields the same weights (no dependence on the wall clock) and training and serving agree.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recommender.data import FloatArray, HistoryBatch, IntArray

DAY_MS = 86_400_000.0


def half_life_ms(half_life_days: float | None) -> float | None:
    return None if half_life_days is None else half_life_days * DAY_MS


def row_latest(batch: HistoryBatch) -> IntArray:
    """The latest time of every row (0 for an empty row)."""
    latest = np.zeros(batch.n_rows, dtype=np.int64)
    nonempty = np.diff(batch.indptr) > 0
    if batch.ts.size:
        latest[nonempty] = np.maximum.reduceat(batch.ts, batch.indptr[:-1][nonempty])
    return latest


def confidence(batch: HistoryBatch, half_life: float | None) -> FloatArray:
    """Summed weight (negative sums count as 0) halved per ``half_life`` ms of age before the row's latest time."""
    w = np.clip(batch.weights, 0.0, None).astype(np.float64)
    if half_life is not None and batch.ts.size:
        latest = batch.ts.max() if batch.n_rows == 1 else np.repeat(row_latest(batch), np.diff(batch.indptr))
        age = (latest - batch.ts).astype(np.float64)
        w = w * np.exp2(-age / half_life)
    return w.astype(np.float32)


def recency_rank(batch: HistoryBatch) -> IntArray:
    """0 for the newest entries of a row, 1 for the next older time, ...; entries at the same time share a rank."""
    n = batch.ts.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if batch.n_rows == 1:  # a request: the count of time changes before each entry
        one = np.zeros(n, dtype=np.int64)
        np.cumsum(batch.ts[1:] != batch.ts[:-1], out=one[1:])
        return one
    starts = np.zeros(n, dtype=bool)
    starts[batch.indptr[:-1][np.diff(batch.indptr) > 0]] = True
    changed = np.ones(n, dtype=bool)
    changed[1:] = batch.ts[1:] != batch.ts[:-1]
    changed[0] = False
    changed &= ~starts
    steps = np.cumsum(changed)
    row_base = np.repeat(steps[batch.indptr[:-1].clip(max=n - 1)], np.diff(batch.indptr))
    rank: IntArray = (steps - row_base).astype(np.int64)
    return rank


def position_in_row(batch: HistoryBatch) -> IntArray:
    """0 for the first (newest) entry of a row, 1 for the next, ..."""
    if batch.n_rows == 1:
        return np.arange(batch.ts.size, dtype=np.int64)
    return np.arange(batch.ts.size, dtype=np.int64) - np.repeat(batch.indptr[:-1], np.diff(batch.indptr))


def sequence_weights(batch: HistoryBatch, conf: FloatArray, recency_decay: float, max_history: int) -> FloatArray:
    """Confidence times ``recency_decay ** rank``, zero beyond the ``max_history`` newest entries of a row."""
    w = conf * np.power(recency_decay, recency_rank(batch)).astype(np.float32)
    if batch.n_rows == 1:  # a request: entries are in row order
        w[max(max_history, 0) :] = 0.0
    else:
        w[position_in_row(batch) >= max_history] = 0.0
    return w.astype(np.float32)


def batch_matrix(batch: HistoryBatch, values: FloatArray, n_items: int) -> sp.csr_matrix:
    """Rows x items CSR matrix of ``values`` at the batch's entries (zeros dropped)."""
    m = sp.csr_matrix(
        (values.astype(np.float32), batch.items.copy(), batch.indptr.copy()), shape=(batch.n_rows, n_items)
    )
    m.eliminate_zeros()  # works in place on the arrays it was given: hence the copies above
    return m


def gather_rows(m: sp.csr_matrix, rows: NDArray[np.integer]) -> tuple[IntArray, NDArray[np.int32], FloatArray]:
    """The stored entries of rows ``rows`` of ``m``: for each, the position in ``rows``, the column and the value."""
    starts = m.indptr[rows].astype(np.int64)
    lengths = m.indptr[rows + 1].astype(np.int64) - starts
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    pos = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - offsets, lengths)
    return owner, m.indices[pos], m.data[pos]


def sparse_scores(batch: HistoryBatch, weights: FloatArray, m: sp.csr_matrix) -> NDArray[np.float32]:
    """Dense rows x items: per row, the sum of ``m``'s rows of its history items times their ``weights``.

    A gather and one ``bincount`` (no sparse-matrix objects), so a request of one costs only its items' rows."""
    n_items = m.shape[1]
    used = weights > 0
    rows, items, w = batch.rows[used], batch.items[used], weights[used].astype(np.float64)
    owner, cols, vals = gather_rows(m, items)
    flat = rows[owner] * n_items + cols
    dense = np.bincount(flat, weights=vals * w[owner], minlength=batch.n_rows * n_items)
    out: NDArray[np.float32] = dense.astype(np.float32).reshape(batch.n_rows, n_items)
    return out


def sparse_block(m: sp.csr_matrix, rows: NDArray[np.integer], cols: IntArray) -> NDArray[np.float32]:
    """``m[rows][:, cols]`` as a dense array (``cols`` distinct), without scipy's fancy indexing."""
    out = np.zeros((len(rows), len(cols)), dtype=np.float32)
    if len(cols) == 0:
        return out
    owner, found, vals = gather_rows(m, rows)
    order = np.argsort(cols)
    sorted_cols = cols[order]
    j = np.searchsorted(sorted_cols, found).clip(max=len(cols) - 1)
    hit = sorted_cols[j] == found
    out[owner[hit], order[j[hit]]] = vals[hit]
    return out


def normalise_rows(m: sp.csr_matrix, power: float) -> sp.csr_matrix:
    """Divide each row by (its sum) ** power; empty rows stay empty."""
    sums = np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    scale = np.zeros_like(sums)
    positive = sums > 0
    scale[positive] = sums[positive] ** -power
    out: sp.csr_matrix = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ m)
    return out


def prune_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of every row (ties: lower column first). Only rows longer than ``k`` are
    touched, each by a partition (linear) instead of one sort of all entries."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    lengths = np.diff(m.indptr)
    if lengths.size == 0 or lengths.max() <= k:
        return m
    keep = np.ones(m.nnz, dtype=bool)
    for r in np.flatnonzero(lengths > k).tolist():
        lo, hi = int(m.indptr[r]), int(m.indptr[r + 1])
        keep[lo:hi] = _top_k(m.data[lo:hi], k)
    indptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, k), out=indptr[1:])
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _top_k(values: FloatArray, k: int) -> NDArray[np.bool_]:
    """Where the ``k`` largest values are (of more than ``k``); ties at the k-th value: the first ones."""
    kth = np.partition(values, values.size - k)[values.size - k]
    chosen: NDArray[np.bool_] = values > kth
    ties = np.flatnonzero(values == kth)[: k - int(chosen.sum())]
    chosen[ties] = True
    return chosen


def drop_diagonal(m: sp.csr_matrix) -> sp.csr_matrix:
    coo = sp.coo_matrix(m)
    off = coo.row != coo.col
    return sp.csr_matrix((coo.data[off], (coo.row[off], coo.col[off])), shape=m.shape)


def row_max(dense: NDArray[np.float32], absolute: bool = False) -> FloatArray:
    """Per row the largest value (or absolute value), or 1 where it is not positive (dividing never flips)."""
    if dense.shape[1] == 0:
        return np.ones(dense.shape[0], dtype=np.float32)
    top = dense.max(axis=1)
    if absolute:
        top = np.maximum(top, -dense.min(axis=1))
    return np.where(top > 0, top, 1.0).astype(np.float32)
