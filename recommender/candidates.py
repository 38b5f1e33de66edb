"""Candidate retrieval for large catalogues: a request scores a few hundred candidates exactly instead of every
item (see ``docs/recommender.md``, "Candidate retrieval").

* :class:`FactorIndex` - an approximate nearest-neighbour index over the item factors (faiss ``IndexIVFFlat``,
  inner product), built at training time and stored with the model version: about ``sqrt(items)`` lists, each
  holding the items nearest one k-means centroid; a query scans the ``probe`` lists whose centroids score best.
  BPR's item bias is one more dimension (the query's is 1), so the index ranks by the model's own score.
* :func:`sparse_rows` - the weighted sum of a sparse matrix's rows per history (the sequential part, item-item
  neighbours) as CSR, without a dense row over the catalogue.
* :func:`exclude_candidates` - the exclusions of :func:`recommender.ranking.exclude` on rows of candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recommender.data import FloatArray, HistoryBatch, IntArray
from recommender.weighting import gather_rows

FloatMatrix = NDArray[np.float32]
POINTS_PER_LIST = 64  # k-means is trained on at most this many items per list (fast at a million items)


def default_lists(n_items: int) -> int:
    """About ``sqrt(n_items)`` lists, and at least 39 items per list for k-means (faiss warns below that)."""
    return max(1, min(round(math.sqrt(n_items)), n_items // 39))


class FactorIndex:
    """An inverted-file index over item vectors; :meth:`search` returns item codes, best first."""

    def __init__(self, index: faiss.IndexIVFFlat) -> None:
        self.index = index
        self._lists = int(index.nlist)  # read once: an attribute of the SWIG object costs microseconds per request
        self._params: dict[int, faiss.SearchParametersIVF] = {}  # per ``probe``: built once, not per request

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def lists(self) -> int:
        return self._lists

    @classmethod
    def build(cls, vectors: FloatMatrix, lists: int | None = None, seed: int = 0) -> FactorIndex:
        """Train the lists' centroids on the vectors (k-means) and file every vector in its nearest list."""
        n, d = vectors.shape
        if n == 0:
            raise ValueError("cannot index an empty catalogue")
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, lists or default_lists(n), faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = POINTS_PER_LIST
        index.cp.seed = seed
        index.train(data)
        index.add(data)
        return cls(index)

    def search(self, queries: FloatMatrix, k: int, probe: int) -> IntArray:
        """Per query row the codes of (about) the ``k`` items of highest inner product, -1 where fewer were found."""
        if queries.shape[0] == 0 or k <= 0:
            return np.zeros((queries.shape[0], 0), dtype=np.int64)
        nprobe = max(1, min(probe, self.lists))
        params = self._params.get(nprobe)
        if params is None:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            self._params[nprobe] = params
        _, codes = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        return np.asarray(codes, dtype=np.int64)

    def to_array(self) -> NDArray[np.uint8]:
        """The index as bytes (stored in the model blob)."""
        return np.asarray(faiss.serialize_index(self.index), dtype=np.uint8)

    @classmethod
    def from_array(cls, data: NDArray[np.uint8], n_items: int, dim: int) -> FactorIndex:
        """The index stored by :meth:`to_array`; ValueError when it is corrupt or does not fit the model."""
        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"corrupt candidate index in model blob: {exc}") from exc
        if not isinstance(index, faiss.IndexIVFFlat):
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexIVFFlat) or index.ntotal != n_items or index.d != dim:
            raise ValueError("the candidate index in the model blob does not match its item factors")
        return cls(index)


@dataclass(frozen=True, slots=True)
class SparseRows:
    """Rows x items in CSR layout (columns sorted within a row), without scipy's per-object checks."""

    indptr: IntArray
    indices: IntArray
    data: FloatArray

    def columns(self, r: int) -> IntArray:
        return self.indices[self.indptr[r] : self.indptr[r + 1]]

    def at(self, r: int, codes: IntArray) -> FloatArray:
        """Row ``r`` at the columns ``codes`` (sorted, holding every stored column of the row)."""
        out = np.zeros(codes.size, dtype=np.float32)
        lo, hi = self.indptr[r], self.indptr[r + 1]
        out[np.searchsorted(codes, self.indices[lo:hi])] = self.data[lo:hi]
        return out

    def toarray(self, n_items: int) -> FloatMatrix:
        dense = np.zeros((len(self.indptr) - 1, n_items), dtype=np.float32)
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        dense[rows, self.indices] = self.data
        return dense


def sparse_rows(batch: HistoryBatch, weights: FloatArray, m: sp.csr_matrix) -> SparseRows:
    """Per row, the sum of ``m``'s rows of its history items times their ``weights`` (the sparse twin of
    :func:`recommender.weighting.sparse_scores`)."""
    used = weights > 0
    if batch.n_rows == 1:  # a request: the row's columns are the keys (no row * items + column arithmetic)
        at, found, entries = gather_rows(m, batch.items[used])
        keys, where = np.unique(found.astype(np.int64), return_inverse=True)
        summed = np.bincount(where, weights=entries * weights[used].astype(np.float64)[at], minlength=keys.size)
        return SparseRows(np.asarray([0, keys.size], dtype=np.int64), keys, summed.astype(np.float32))
    rows, items, w = batch.rows[used], batch.items[used], weights[used].astype(np.float64)
    owner, cols, vals = gather_rows(m, items)
    n_items = np.int64(m.shape[1])
    keys, inverse = np.unique(rows[owner] * n_items + cols, return_inverse=True)
    sums = np.bincount(inverse, weights=vals * w[owner], minlength=keys.size).astype(np.float32)
    indptr = np.searchsorted(keys // n_items, np.arange(batch.n_rows + 1)).astype(np.int64)
    return SparseRows(indptr, (keys % n_items).astype(np.int64), sums)


def union_codes(parts: Sequence[IntArray]) -> IntArray:
    """The distinct codes of ``parts``, sorted: ``np.unique`` of their concatenation, at less cost per request."""
    codes = np.concatenate(parts)
    codes.sort()
    if codes.size < 2:
        return codes
    keep = np.empty(codes.size, dtype=bool)
    keep[0] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    return codes[keep]


def row_cap(values: FloatArray, absolute: bool = False) -> float:
    """The largest value (or absolute value) of a row's candidates, or 1 where it is not positive."""
    if values.size == 0:
        return 1.0
    top = float(values.max())
    if absolute:
        top = max(top, -float(values.min()))
    return top if top > 0 else 1.0


def pad_rows(codes: Sequence[IntArray], values: Sequence[FloatArray]) -> tuple[IntArray, FloatMatrix]:
    """Rows of different lengths as rows x width matrices, padded with code -1 and score -inf."""
    if len(codes) == 1:  # a request: its row as it is
        return np.asarray(codes[0], dtype=np.int64)[None, :], np.asarray(values[0], dtype=np.float32)[None, :]
    width = max((len(c) for c in codes), default=0)
    out_codes = np.full((len(codes), width), -1, dtype=np.int64)
    out_values = np.full((len(codes), width), -np.inf, dtype=np.float32)
    for r, (c, v) in enumerate(zip(codes, values, strict=True)):
        out_codes[r, : len(c)] = c
        out_values[r, : len(v)] = v
    return out_codes, out_values


def exclude_candidates(
    values: FloatMatrix,
    codes: IntArray,
    batch: HistoryBatch,
    *,
    exclude_history: bool,
    excluded: Sequence[IntArray] | None = None,
    allowed: NDArray[np.bool_] | None = None,
) -> None:
    """Set to -inf, in place: each row's history items, each row's ``excluded`` items, items not ``allowed``."""
    if excluded is not None and len(excluded) != values.shape[0]:
        raise ValueError("excluded must hold one array of item codes per row")
    for r in range(values.shape[0]):
        drop = [batch.items[batch.row(r)]] if exclude_history else []
        if excluded is not None:
            drop.append(np.asarray(excluded[r], dtype=np.int64))
        if drop:
            values[r, members(codes[r], np.concatenate(drop))] = -np.inf
    if allowed is not None:
        values[~allowed[np.maximum(codes, 0)]] = -np.inf


def members(codes: IntArray, items: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Which of ``codes`` are among ``items``: ``np.isin(codes, items)``, by a binary search in the few ``items``
    (a request's history and exclusions) instead of sorting both (pure)."""
    if items.size == 0:
        return np.zeros(codes.shape, dtype=bool)
    pool = np.sort(items.astype(np.int64, copy=False))
    at = np.minimum(np.searchsorted(pool, codes), pool.size - 1)
    found: NDArray[np.bool_] = pool[at] == codes
    return found
