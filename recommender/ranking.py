"""Top-n selection and exclusions on dense score rows (numpy, no per-item Python loops)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from recommender.data import HistoryBatch, IntArray

FloatMatrix = NDArray[np.float32]


def exclude(
    scores: FloatMatrix,
    batch: HistoryBatch,
    *,
    exclude_history: bool,
    excluded: Sequence[IntArray] | None = None,
    allowed: NDArray[np.bool_] | None = None,
) -> None:
    """Set to -inf, in place: each row's history items, each row's ``excluded`` items, items not ``allowed``."""
    if exclude_history and batch.items.size:
        scores[batch.rows, batch.items] = -np.inf
    if excluded is not None:
        if len(excluded) != scores.shape[0]:
            raise ValueError("excluded must hold one array of item codes per row")
        lengths = [len(e) for e in excluded]
        if sum(lengths):
            rows = np.repeat(np.arange(len(excluded)), lengths)
            scores[rows, np.concatenate([np.asarray(e, dtype=np.int64) for e in excluded])] = -np.inf
    if allowed is not None:
        if allowed.shape != (scores.shape[1],):
            raise ValueError("allowed must be a boolean mask over all items")
        np.copyto(scores, np.float32(-np.inf), where=~allowed[None, :])


def top_n(scores: FloatMatrix, n: int) -> tuple[IntArray, FloatMatrix]:
    """Per row the codes and scores of the ``n`` best items, best first (ties: lower code first).

    Rows with fewer than ``n`` finite scores end in -inf entries, which callers drop.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    rows, n_items = scores.shape
    k = min(n, n_items)
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64), np.zeros((rows, 0), dtype=np.float32)
    if rows == 1:  # a request: the same selection on one row, without the per-row bookkeeping
        one = _top_of_row(scores[0], k)
        if one is not None:
            return one
    if k < n_items:
        part = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
        _lowest_codes_at_the_cut(scores, part)
    else:
        part = np.broadcast_to(np.arange(n_items), (rows, n_items)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(part_scores, order, axis=1)


def _top_of_row(row: NDArray[np.float32], k: int) -> tuple[IntArray, FloatMatrix] | None:
    """:func:`top_n` of one row (as 1 x k matrices), or None when items tied at the cut straddle it (the general
    path then picks the lowest codes among them)."""
    n_items = row.size
    if k < n_items:
        part = np.argpartition(row, n_items - k)[n_items - k :]
        part_scores = row[part]
        if np.count_nonzero(row >= part_scores.min()) > k:
            return None
    else:
        part = np.arange(n_items)
        part_scores = row
    order = np.lexsort((part, -part_scores))
    return part[order].astype(np.int64)[None, :], part_scores[order][None, :]


def _lowest_codes_at_the_cut(scores: FloatMatrix, part: NDArray[np.intp]) -> None:
    """Make ``argpartition``'s pick ``part`` (rows x k) deterministic, in place: of the items tied at the cut
    (scoring the row's k-th best value), keep those with the lowest codes.

    One vectorised pass finds the rows where the tie straddles the cut (more than k items score at least the
    k-th value); only those rows are re-picked: the items above the cut (all in ``part`` already) plus the
    tied items with the lowest codes.
    """
    k = part.shape[1]
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = part_scores.min(axis=1, keepdims=True)
    straddled = np.flatnonzero(np.count_nonzero(scores >= kth, axis=1) > k)
    if not straddled.size:
        return
    above_rows, above_at = np.nonzero(part_scores[straddled] > kth[straddled])
    tied_rows, tied_codes = np.nonzero(scores[straddled] == kth[straddled])  # row by row, codes ascending
    tied_per_row = np.bincount(tied_rows, minlength=straddled.size)
    place = np.arange(tied_rows.size) - (np.cumsum(tied_per_row) - tied_per_row)[tied_rows]
    first = place < (k - np.bincount(above_rows, minlength=straddled.size))[tied_rows]
    rows = np.concatenate([above_rows, tied_rows[first]])
    codes = np.concatenate([part[straddled[above_rows], above_at], tied_codes[first]])
    part[straddled] = codes[np.argsort(rows, kind="stable")].reshape(straddled.size, k)  # k per row


def ranks_of(scores: FloatMatrix, rows: IntArray, items: IntArray) -> IntArray:
    """1-based rank of ``items[k]`` in row ``rows[k]`` (items scoring the same count as ranked above it)."""
    target = scores[rows, items]
    ranks: IntArray = (scores[rows] >= target[:, None]).sum(axis=1).astype(np.int64)
    return ranks
