"""The one contract every recommender follows (after implicit's ``recommender_base.py``), with the request
functions built on it once for all models.

A subclass implements four things: :meth:`fit`, :meth:`score_batch` (dense scores of a batch of current
histories, plus which history item explains an item's score), :meth:`to_bytes` and :meth:`from_bytes`.
Everything a caller uses is built here on :meth:`score_batch`:

* :meth:`recommend` - one user's request (the API), a batch of one;
* :meth:`rank_batch` / :meth:`masked_scores` - many users at once (the offline evaluation);
* :meth:`similar_items` and :meth:`cart_items`.

So the API and ``ecrm evaluate`` run the same scoring code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
from numpy.typing import NDArray

from recommender.candidates import exclude_candidates
from recommender.data import HistoryBatch, HistoryEntry, IntArray, Interactions, encode
from recommender.errors import NotFittedError
from recommender.ranking import exclude, top_n

FloatMatrix = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item: its score and the history item that contributed most (None: no single one)."""

    item_id: str
    score: float
    reason_item: str | None


class Scored(Protocol):
    """Dense scores of a batch (rows x items) and a way to explain them."""

    @property
    def values(self) -> FloatMatrix: ...

    def reasons(self, row: int, targets: IntArray) -> IntArray:
        """Per target item code, the code of the history item that contributed most, or -1."""
        ...


class CandidateScored(Scored, Protocol):
    """Scores of each row's candidates only: column ``j`` of row ``r`` is item ``codes[r, j]`` (-1: padding)."""

    @property
    def codes(self) -> IntArray | None: ...

    def widened(self, n_items: int) -> Scored:
        """The same scores as a dense rows x items matrix (-inf for the items that were not candidates)."""
        ...


class ItemMask:
    """A filter over a model's items (e.g. one category), built once with :meth:`RecommenderBase.mask`.

    Ranking looks only at the allowed items' columns, so a narrow filter makes a request cheaper, not dearer."""

    __slots__ = ("allowed", "codes")

    def __init__(self, allowed: NDArray[np.bool_]) -> None:
        if allowed.ndim != 1 or allowed.dtype != np.bool_:
            raise ValueError("an item mask is a 1-d boolean array over the model's items")
        self.allowed = allowed
        self.codes: IntArray = np.flatnonzero(allowed).astype(np.int64)


class RecommenderBase(ABC):
    """A trained model: fit on an interaction log, then score any user's current history (fold-in)."""

    _index_cache: tuple[tuple[str, ...], dict[str, int]] | None = None  # (item_ids it was built from, index)

    @abstractmethod
    def fit(self, interactions: Interactions) -> Self:
        """Train on an event-level log; returns the model itself."""

    @property
    @abstractmethod
    def item_ids(self) -> tuple[str, ...]:
        """The catalogue the model knows; item code ``k`` is ``item_ids[k]``."""

    @abstractmethod
    def score_batch(self, batch: HistoryBatch) -> Scored:
        """Scores of every item for every row of ``batch`` (higher is better), nothing excluded."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The model as an npz blob (no pickles)."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, blob: bytes) -> Self:
        """A model from :meth:`to_bytes`; raises ValueError on a corrupt or foreign blob."""

    def score_candidates(self, batch: HistoryBatch, want: int) -> CandidateScored | None:  # noqa: ARG002
        """Scores of each row's retrieved candidates only, enough for lists of ``want`` items after exclusions;
        None (the default) when this model or catalogue is scored in full."""
        return None

    def rerank(self, scored: Scored, batch: HistoryBatch, exclude_history: bool) -> None:  # noqa: B027
        """Re-order the best scores of each row in place, before the exclusions (a learned ranking stage; so an
        exclusion removes an item and moves no other); the default leaves them as they are."""

    # ----- built on the above -----

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def index(self) -> dict[str, int]:
        """Item id -> item code, rebuilt whenever the catalogue changes (a refit, even to as many items)."""
        item_ids = self.item_ids
        cached = self._index_cache
        if cached is None or (cached[0] is not item_ids and cached[0] != item_ids):
            cached = (item_ids, {item: k for k, item in enumerate(item_ids)})
            self._index_cache = cached
        return cached[1]

    def knows_any(self, item_ids: Iterable[str]) -> bool:
        """Whether any of ``item_ids`` is an item of the model (a history of unknown items scores nothing)."""
        index = self.index
        return any(item in index for item in item_ids)

    def codes(self, item_ids: Iterable[str]) -> IntArray:
        """Codes of the known items among ``item_ids`` (unknown ones are left out)."""
        index = self.index
        return np.asarray([index[i] for i in item_ids if i in index], dtype=np.int64)

    def mask(self, item_ids: Iterable[str]) -> ItemMask:
        """A reusable filter that allows only ``item_ids`` (e.g. a category's items)."""
        allowed = np.zeros(self.n_items, dtype=bool)
        allowed[self.codes(item_ids)] = True
        return ItemMask(allowed)

    def encode(self, histories: Sequence[Iterable[HistoryEntry]]) -> HistoryBatch:
        """Histories of (item id, weight, ts ms) as a batch; unknown items are left out."""
        if not self.n_items:
            raise NotFittedError("the model has no items: fit or load it first")
        return encode(histories, self.index)

    def masked_scores(
        self,
        batch: HistoryBatch,
        *,
        exclude_history: bool = True,
        excluded: Sequence[IntArray] | None = None,
        allowed: ItemMask | None = None,
        candidates: int | None = None,
    ) -> Scored:
        """:meth:`score_batch` with excluded items set to -inf (see :func:`recommender.ranking.exclude`).

        ``candidates=k``: only the candidates a request for ``k`` items would score (the others -inf), as served
        on a large catalogue; ValueError when the model has no candidate path for its catalogue."""
        if candidates is None:
            scored = self.score_batch(batch)
        else:
            found = self.score_candidates(batch, candidates + _longest(batch, exclude_history))
            if found is None:
                raise ValueError("this model scores its whole catalogue (no candidate path for it)")
            scored = found.widened(self.n_items)
        self.rerank(scored, batch, exclude_history)
        exclude(
            scored.values,
            batch,
            exclude_history=exclude_history,
            excluded=excluded,
            allowed=None if allowed is None else allowed.allowed,
        )
        return scored

    def rank_batch(
        self,
        batch: HistoryBatch,
        n: int,
        *,
        exclude_history: bool = True,
        excluded: Sequence[IntArray] | None = None,
        allowed: ItemMask | None = None,
        reasons: bool = True,
    ) -> list[list[Recommendation]]:
        """The ``n`` best items per row, best first, with their reason items."""
        _check_n(n)
        if allowed is not None and allowed.allowed.shape != (self.n_items,):
            raise ValueError("the item mask was built for another model")
        ranked = self._rank_candidates(batch, n, exclude_history, excluded, allowed)
        if ranked is not None:
            scored, idx, vals = ranked
            return [self._decode(scored, r, idx[r], vals[r], reasons) for r in range(batch.n_rows)]
        scored = self.masked_scores(batch, exclude_history=exclude_history, excluded=excluded)
        if allowed is None:
            idx, vals = top_n(scored.values, n)
        else:  # rank the allowed columns only (also avoids argpartition on a row of mostly -inf)
            idx, vals = top_n(scored.values[:, allowed.codes], n)
            idx = allowed.codes[idx]
        return [self._decode(scored, r, idx[r], vals[r], reasons) for r in range(batch.n_rows)]

    def _rank_candidates(
        self,
        batch: HistoryBatch,
        n: int,
        exclude_history: bool,
        excluded: Sequence[IntArray] | None,
        allowed: ItemMask | None,
    ) -> tuple[Scored, IntArray, FloatMatrix] | None:
        """The ``n`` best candidates per row, or None: no candidate path, or the exclusions left a row short of
        ``n`` items (a narrow category filter), which the caller then ranks over the whole catalogue."""
        if n == 0 or batch.n_rows == 0:
            return None
        want = n + _longest(batch, exclude_history) + max((len(e) for e in excluded or ()), default=0)
        scored = self.score_candidates(batch, want)
        if scored is None or scored.codes is None:
            return None
        codes = scored.codes
        self.rerank(scored, batch, exclude_history)
        exclude_candidates(
            scored.values,
            codes,
            batch,
            exclude_history=exclude_history,
            excluded=excluded,
            allowed=None if allowed is None else allowed.allowed,
        )
        idx, vals = top_n(scored.values, n)
        if int(np.isfinite(vals).sum(axis=1).min()) < min(n, self.n_items):
            return None
        return scored, np.take_along_axis(codes, idx, axis=1), vals

    def recommend(
        self,
        history: Iterable[HistoryEntry],
        n: int = 10,
        *,
        exclude: Collection[str] = (),
        allowed: ItemMask | Iterable[str] | None = None,
        exclude_history: bool = True,
    ) -> list[Recommendation]:
        """One user's recommendations from the WHOLE current history (the user need not be in training).

        ``exclude``: item ids never to return; ``allowed``: only these items (a category), ideally an
        :class:`ItemMask` built once; ``exclude_history``: leave out items already in the history.
        """
        batch = self.encode([list(history)])
        mask = allowed if allowed is None or isinstance(allowed, ItemMask) else self.mask(allowed)
        excluded = [self.codes(exclude)] if exclude else None
        return self.rank_batch(batch, n, exclude_history=exclude_history, excluded=excluded, allowed=mask)[0]

    def similar_items(self, item_id: str, n: int = 10) -> list[Recommendation]:
        """Items to show next to ``item_id``: the ranking of a history made of that item alone."""
        if item_id not in self.index:
            return []
        return self.recommend([(item_id, 1.0, 0)], n)

    def cart_items(self, item_ids: Iterable[str], n: int = 10) -> list[Recommendation]:
        """Complements for a cart: the cart's items weigh alike (no order), the cart itself is left out."""
        return self.recommend([(item, 1.0, 0) for item in dict.fromkeys(item_ids)], n)

    def _decode(
        self, scored: Scored, row: int, idx: IntArray, vals: FloatMatrix, reasons: bool
    ) -> list[Recommendation]:
        finite = np.isfinite(vals)
        idx, vals = idx[finite], vals[finite]
        why = scored.reasons(row, idx) if reasons and idx.size else np.full(idx.size, -1, dtype=np.int64)
        ids = self.item_ids
        return [
            Recommendation(ids[i], float(s), ids[w] if w >= 0 else None)
            for i, s, w in zip(idx.tolist(), vals.tolist(), why.tolist(), strict=True)
        ]


def _longest(batch: HistoryBatch, exclude_history: bool) -> int:
    """The longest history of the batch when histories are excluded (candidates they use up), else 0."""
    lengths = np.diff(batch.indptr)
    return int(lengths.max()) if exclude_history and lengths.size else 0


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
