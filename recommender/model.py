"""The engine: a collaborative part (ALS, BPR, cosine or BM25, by configuration) blended with a sequential
part (item -> next-item transitions) and a tiny popularity term that orders the rest and serves empty histories.

Scoring one batch of current histories (see :class:`recommender.data.HistoryBatch`):

1. confidence of each history entry: its summed weight, halved per ``half_life_days`` of age before the
   user's latest event; sequence weight: confidence times ``recency_decay ** k`` for the k-th newest time;
2. sequential scores: sequence weights times the transition matrix (sparse rows, summed);
3. collaborative scores: ALS/BPR fold-in of the whole history (least squares) times the item factors, or
   sequence weights times the item-item similarity matrix;
4. each part divided by its row maximum, blended with ``sequence_weight`` and ``collaborative_weight``, plus
   ``popularity_weight`` times the item's share of training users.

The reason item of a recommended item is the history item with the largest share of its score.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recommender.base import Recommendation, RecommenderBase, Scored
from recommender.candidates import (
    FactorIndex,
    SparseRows,
    pad_rows,
    row_cap,
    sparse_rows,
    union_codes,
)
from recommender.config import RecommenderConfig
from recommender.data import FloatArray, HistoryBatch, HistoryEntry, IntArray, Interactions, interactions_batch
from recommender.errors import NotFittedError
from recommender.factors import FactorPart, FloatMatrix, HistorySolve, fit_als, fit_bpr
from recommender.features import NAMES, Candidates, ItemStats, features, reference_now
from recommender.neighbours import fit_similarity
from recommender.ranker import Ranker, select_candidates
from recommender.sequence import transition_matrix
from recommender.serialize import (
    load,
    load_dir,
    pack_csr,
    pack_json,
    pack_strings,
    save,
    unpack_csr,
    unpack_json,
    unpack_strings,
)
from recommender.threads import blas_threads
from recommender.weighting import (
    batch_matrix,
    confidence,
    half_life_ms,
    row_max,
    sequence_weights,
    sparse_block,
    sparse_scores,
)

KIND = "engine"
SCORING_FIELDS = frozenset(
    {
        "collaborative_weight",
        "sequence_weight",
        "popularity_weight",
        "recency_decay",
        "max_history",
        "candidates_min_items",
        "ann_candidates",
        "ann_probe",
        "ranker",
        "ranker_candidates",
        "ranker_trending",
    }
)
POPULAR_CANDIDATES = 1024  # the most popular items kept as candidates of every request (the popularity term)


@dataclass(frozen=True, slots=True)
class TrainingInfo:
    """What a model version was trained on, when and how long it took."""

    algorithm: str
    params: dict[str, Any]
    n_users: int
    n_items: int
    n_interactions: int
    trained_at: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "params": self.params,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "trained_at": self.trained_at,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingInfo:
        try:
            return cls(
                algorithm=str(d["algorithm"]),
                params=dict(d["params"]),
                n_users=int(d["n_users"]),
                n_items=int(d["n_items"]),
                n_interactions=int(d["n_interactions"]),
                trained_at=str(d["trained_at"]),
                duration_s=float(d["duration_s"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid training metadata: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Fitted:
    item_ids: tuple[str, ...]
    popularity: FloatArray
    transitions: sp.csr_matrix
    factors: FactorPart | None
    similarity: sp.csr_matrix | None
    info: TrainingInfo
    ann: FactorIndex | None = None  # the candidate index over the item factors (als, bpr)
    stats: ItemStats | None = None  # item counters of the ranking stage (None: a model from before it)
    ranker: Ranker | None = None  # the learned ranking stage (None: the blend alone, see ranker_info)
    ranker_info: dict[str, Any] | None = None  # whether the ranking stage is used, why, and its figures

    def check(self) -> None:
        n = len(self.item_ids)
        shapes_ok = self.popularity.shape == (n,) and self.transitions.shape == (n, n)
        if self.factors is not None:
            shapes_ok &= self.factors.n_items == n
        if self.ann is not None:
            shapes_ok &= self.ann.n_items == n
        if self.similarity is not None:
            shapes_ok &= self.similarity.shape == (n, n)
        if not shapes_ok:
            raise ValueError("model arrays do not match the number of items")


@dataclass(frozen=True, slots=True)
class EngineScores:
    """Dense scores of a batch plus what :meth:`reasons` needs to attribute them to history items."""

    values: FloatMatrix
    batch: HistoryBatch
    conf: FloatArray
    seq_w: FloatArray
    seq_coef: FloatArray
    col_coef: FloatArray
    state: _Fitted
    config: RecommenderConfig
    codes: IntArray | None = None  # candidate path: the item code of each column (-1: padding)
    solved: HistorySolve | None = None  # a request of one: its fold-in's solved system, reused for the reasons
    seq_values: FloatMatrix | None = None  # candidate path: the sequential part of each cell, as weighted in the blend

    def widened(self, n_items: int) -> EngineScores:
        """Candidate scores as a dense rows x items matrix (-inf where an item was not a candidate)."""
        if self.codes is None:
            return self
        dense = np.full((self.batch.n_rows, n_items), -np.inf, dtype=np.float32)
        rows, cols = np.nonzero(self.codes >= 0)
        dense[rows, self.codes[rows, cols]] = self.values[rows, cols]
        return replace(self, values=dense, codes=None, seq_values=None)

    def sequence_at(self, rows: IntArray, items: IntArray) -> FloatArray:
        """The sequential part of the scores at the cells (rows[k], item items[k]), as weighted in the blend."""
        out = np.zeros(rows.size, dtype=np.float32)
        if self.config.sequence_weight <= 0 or rows.size == 0:
            return out
        bounds = np.searchsorted(rows, np.arange(self.batch.n_rows + 1))
        for r in np.unique(rows).tolist():
            lo, hi = int(bounds[r]), int(bounds[r + 1])
            sl = self.batch.row(r)
            block = sparse_block(self.state.transitions, self.batch.items[sl], items[lo:hi])
            out[lo:hi] = (self.seq_w[sl] @ block) * self.seq_coef[r]
        return out

    def reasons(self, row: int, targets: IntArray) -> IntArray:
        sl = self.batch.row(row)
        history = self.batch.items[sl]
        if history.size == 0:
            return np.full(targets.size, -1, dtype=np.int64)
        contrib = np.zeros((history.size, targets.size), dtype=np.float32)
        seq_w = self.seq_w[sl][:, None]
        if self.config.sequence_weight > 0:
            contrib += seq_w * sparse_block(self.state.transitions, history, targets) * self.seq_coef[row]
        if self.config.collaborative_weight > 0:
            if self.state.factors is not None:
                part = (
                    self.state.factors.explain_solved(self.solved, targets)
                    if self.solved is not None and self.batch.n_rows == 1
                    else self.state.factors.explain(history, self.conf[sl], targets)
                )
            else:
                assert self.state.similarity is not None
                part = seq_w * sparse_block(self.state.similarity, history, targets)
            contrib += part * self.col_coef[row]
        best = contrib.argmax(axis=0)
        found = contrib[best, np.arange(targets.size)] > 0
        return np.where(found, history[best].astype(np.int64), -1)


class Engine(RecommenderBase):
    """The engine model. ``Engine(config).fit(interactions)``, or ``Engine.from_bytes(blob)``."""

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.metrics: dict[str, Any] = {}
        self._state: _Fitted | None = None
        self._popular_top: IntArray | None = None
        self._stage_items: IntArray | None = None
        self._blend_only: Engine | None = None

    @property
    def state(self) -> _Fitted:
        if self._state is None:
            raise NotFittedError("the model has not been fitted or loaded")
        return self._state

    @property
    def info(self) -> TrainingInfo:
        return self.state.info

    @property
    def item_ids(self) -> tuple[str, ...]:
        return () if self._state is None else self._state.item_ids

    # ----- training -----

    def fit(self, interactions: Interactions) -> Self:
        if len(interactions) == 0 or interactions.n_items == 0:
            raise ValueError("cannot fit on an empty interaction log")
        cfg = self.config
        started = time.perf_counter()
        cpu_started = time.process_time()
        with blas_threads(cfg.blas_threads):
            history = interactions_batch(interactions)
            conf = confidence(history, half_life_ms(cfg.half_life_days))
            matrix = batch_matrix(history, conf, interactions.n_items)
            users_per_item = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)
            popularity = users_per_item / max(float(users_per_item.max()), 1.0)
            transitions = transition_matrix(interactions, cfg)
            factors = None
            similarity = None
            ann = None
            if cfg.algorithm == "als":
                factors = fit_als(matrix, cfg)
            elif cfg.algorithm == "bpr":
                factors = fit_bpr(matrix, cfg)
            else:
                similarity = fit_similarity(matrix, cfg)
            if factors is not None:
                ann = FactorIndex.build(factors.index_vectors(), cfg.ann_lists, cfg.random_state or 0)
            base_s = time.process_time() - cpu_started
            stats = ItemStats.fit(interactions)
            from recommender.ranking_stage import fit_ranker  # the stage fits an Engine of its own

            ranker, ranker_info = fit_ranker(interactions, cfg, base_s)
        info = TrainingInfo(
            algorithm=cfg.algorithm,
            params=cfg.model_dump(),
            n_users=int(np.count_nonzero(np.diff(matrix.indptr))),
            n_items=interactions.n_items,
            n_interactions=len(interactions),
            trained_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            duration_s=round(time.perf_counter() - started, 3),
        )
        self._stage_items = None
        self._state = _Fitted(
            interactions.item_ids, popularity, transitions, factors, similarity, info, ann, stats, ranker, ranker_info
        )
        self._popular_top = None
        self.metrics = {}
        return self

    def with_scoring(self, **changes: Any) -> Engine:
        """The same trained model scored with other blend / history settings (no retraining)."""
        unknown = set(changes) - SCORING_FIELDS
        if unknown:
            raise ValueError(f"only scoring settings can change without retraining, not: {sorted(unknown)}")
        other = Engine(RecommenderConfig.from_mapping({**self.config.model_dump(), **changes}))
        other._state = self.state
        other._index_cache = self._index_cache
        return other

    def similar_items(self, item_id: str, n: int = 10) -> list[Recommendation]:
        """As :meth:`RecommenderBase.similar_items`, by the blend: the ranking stage learned customers' histories,
        not one item."""
        return super(Engine, self.blend_only).similar_items(item_id, n)

    def cart_items(self, item_ids: Iterable[str], n: int = 10) -> list[Recommendation]:
        """As :meth:`RecommenderBase.cart_items`, by the blend (a cart is not a history with times)."""
        return super(Engine, self.blend_only).cart_items(item_ids, n)

    @property
    def blend_only(self) -> Engine:
        """This model without its ranking stage (built once)."""
        if not self.uses_ranker:
            return self
        if self._blend_only is None or self._blend_only.state is not self.state:
            self._blend_only = self.with_scoring(ranker=False)
        return self._blend_only

    @property
    def ranker_info(self) -> dict[str, Any]:
        """Whether the learned ranking stage is used and why (``{"used": bool, "reason": str, ...}``)."""
        info = self.state.ranker_info
        if info is None:
            return {"used": False, "reason": "trained before the ranking stage existed"}
        if info.get("used") and not self.config.ranker:
            return {**info, "used": False, "reason": "switched off when scoring (ranker: false)"}
        return info

    @property
    def uses_ranker(self) -> bool:
        state = self.state
        return self.config.ranker and state.ranker is not None and state.stats is not None

    @property
    def stage_items(self) -> IntArray:
        """The most trending and the most popular items: candidates of every re-ranked request."""
        state = self.state
        if state.stats is None or not self.config.ranker:
            return np.zeros(0, dtype=np.int64)
        if self._stage_items is None:
            k = self.config.ranker_trending
            popular = np.lexsort((np.arange(state.popularity.size), -state.popularity))[:k]
            self._stage_items = union_codes([state.stats.top_trending(k), popular.astype(np.int64)])
        return self._stage_items

    # ----- the learned ranking stage -----

    def rerank(self, scored: Scored, batch: HistoryBatch, exclude_history: bool) -> None:
        """Re-order each row's best candidates by the ranker, in place (before the exclusions): the re-ranked
        cells score the ranker's score, every other finite cell keeps its order below them. Lists without the
        user's own items (``exclude_history``) and lists with them are re-ranked where the ranker won each."""
        if not self.uses_ranker or not isinstance(scored, EngineScores) or batch.n_rows == 0:
            return
        if not self.ranker_views.get("new" if exclude_history else "repeat"):
            return
        rows, cols, _, x = self.candidate_features(scored, batch)
        if rows.size == 0:
            return
        ranked = self.state.ranker.scores(x)  # type: ignore[union-attr]
        self.apply_ranked(scored, batch, rows, cols, ranked)

    @staticmethod
    def apply_ranked(scored: EngineScores, batch: HistoryBatch, rows: IntArray, cols: IntArray,
                     ranked: FloatArray) -> None:  # fmt: skip
        """The ranker's scores of the cells (rows, cols) written in place; every other finite cell of a row keeps
        its order below that row's lowest ranker score."""
        values = scored.values
        if batch.n_rows == 1:  # a request: the row's minimum without np.minimum.at
            low = np.asarray([ranked.min() if ranked.size else np.inf], dtype=np.float32)
        else:
            low = np.full(batch.n_rows, np.inf, dtype=np.float32)
            np.minimum.at(low, rows, ranked)
        low[~np.isfinite(low)] = 0.0
        finite = np.isfinite(values)
        below = low[:, None] - 2.0 + 1.0 / (1.0 + np.exp(-np.clip(values, -30, 30)))
        np.copyto(values, below.astype(np.float32), where=finite)
        values[rows, cols] = ranked

    @property
    def ranker_views(self) -> dict[str, bool]:
        """Where the ranker re-orders: ``repeat`` (lists that may hold the user's own items), ``new`` (lists of
        items new to the user); each only where it beat the blend on the validation users."""
        views = (self.state.ranker_info or {}).get("views", {})
        return {k: bool(v) for k, v in views.items()} if isinstance(views, dict) else {}

    def candidate_features(
        self, scored: EngineScores, batch: HistoryBatch
    ) -> tuple[IntArray, IntArray, NDArray[np.bool_], FloatMatrix]:
        """The cells the ranker re-orders (row, column), whether each is a history item, and their features."""
        state, cfg = self.state, self.config
        assert state.stats is not None
        rows, cols, history = select_candidates(
            scored.values, scored.codes, batch, cfg.ranker_candidates, self.stage_items
        )
        items = cols if scored.codes is None else scored.codes[rows, cols]
        blend = scored.values[rows, cols]
        # the candidate path computed the sequential part of every candidate already: read, not recomputed
        seq = scored.sequence_at(rows, items) if scored.seq_values is None else scored.seq_values[rows, cols]
        cands = Candidates(rows, items, blend, seq)
        x = features(state.stats, state.transitions, batch, cands, reference_now(state.stats, batch))
        return rows, cols, history, x

    def explain(
        self, history: Iterable[HistoryEntry], item_ids: Sequence[str], *, exclude_history: bool = True, top: int = 5
    ) -> dict[str, list[dict[str, float | str | None]]]:
        """Per item id (among the re-ranked candidates of this history) the ``top`` features by the size of their
        contribution to the ranker's score: name, value (None: missing) and contribution. {} without a ranker."""
        if not self.uses_ranker or not item_ids or not self.ranker_views.get("new" if exclude_history else "repeat"):
            return {}
        batch = self.encode([list(history)])
        found = self.score_candidates(batch, len(item_ids) + int(np.diff(batch.indptr)[0]))
        scored = found if found is not None else self.score_batch(batch)
        rows, cols, _, x = self.candidate_features(scored, batch)
        items = cols if scored.codes is None else scored.codes[rows, cols]
        wanted = {code: item for item, code in ((i, self.index.get(i)) for i in item_ids) if code is not None}
        at = [k for k, code in enumerate(items.tolist()) if code in wanted]
        if not at:
            return {}
        contrib = self.state.ranker.contributions(x[at])  # type: ignore[union-attr]
        out: dict[str, list[dict[str, float | str | None]]] = {}
        for j, k in enumerate(at):
            order = np.argsort(-np.abs(contrib[j, : len(NAMES)]), kind="stable")[:top]
            out[wanted[int(items[k])]] = [
                {"feature": NAMES[f], "value": _plain(x[k, f]), "contribution": round(float(contrib[j, f]), 6)}
                for f in order.tolist()
            ]
        return out

    # ----- scoring -----

    def score_batch(self, batch: HistoryBatch) -> EngineScores:
        state, cfg = self.state, self.config
        n = len(state.item_ids)
        conf = confidence(batch, half_life_ms(cfg.half_life_days))
        seq_w = sequence_weights(batch, conf, cfg.recency_decay, cfg.max_history)
        total = np.zeros((batch.n_rows, n), dtype=np.float32)
        seq_coef = np.zeros(batch.n_rows, dtype=np.float32)
        col_coef = np.zeros(batch.n_rows, dtype=np.float32)
        solved: HistorySolve | None = None
        if cfg.sequence_weight > 0:
            seq = sparse_scores(batch, seq_w, state.transitions)
            seq_coef = (cfg.sequence_weight / row_max(seq)).astype(np.float32)
            seq *= seq_coef[:, None]
            total = seq
        if cfg.collaborative_weight > 0:
            if state.factors is not None:
                if batch.n_rows == 1:
                    users, solved = state.factors.fold_in_solved(batch.items, conf)
                else:
                    users = state.factors.fold_in(batch_matrix(batch, conf, n))
                col = state.factors.scores(users)
                col_coef = (cfg.collaborative_weight / row_max(col, absolute=True)).astype(np.float32)
            else:
                assert state.similarity is not None
                col = sparse_scores(batch, seq_w, state.similarity)
                col_coef = (cfg.collaborative_weight / row_max(col)).astype(np.float32)
            col *= col_coef[:, None]
            total += col
        if cfg.popularity_weight > 0:
            total += np.float32(cfg.popularity_weight) * state.popularity
        return EngineScores(total, batch, conf, seq_w, seq_coef, col_coef, state, cfg, solved=solved)

    # ----- candidate path (large catalogues) -----

    @property
    def popular_top(self) -> IntArray:
        """Codes of the most popular items, most popular first (candidates of every request)."""
        if self._popular_top is None:
            pop = self.state.popularity
            k = min(POPULAR_CANDIDATES, pop.size)
            top = np.argpartition(-pop, k - 1)[:k] if 0 < k < pop.size else np.arange(pop.size)
            self._popular_top = top[np.lexsort((top, -pop[top]))].astype(np.int64)
        return self._popular_top

    def score_candidates(self, batch: HistoryBatch, want: int) -> EngineScores | None:
        """Exact scores of each row's candidates only: the items its history reaches through the transitions
        (and item-item neighbours), the index's nearest items to its user vector (``ann_candidates + want``), and
        the ``want`` most popular items. None below ``candidates_min_items``, beyond the popular items kept, or
        for a factor model stored without an index: the caller then scores every item."""
        state, cfg = self.state, self.config
        n = len(state.item_ids)
        if n < cfg.candidates_min_items or want > POPULAR_CANDIDATES:
            return None
        if cfg.collaborative_weight > 0 and state.factors is not None and state.ann is None:
            return None
        conf = confidence(batch, half_life_ms(cfg.half_life_days))
        seq_w = sequence_weights(batch, conf, cfg.recency_decay, cfg.max_history)
        seq = sparse_rows(batch, seq_w, state.transitions) if cfg.sequence_weight > 0 else None
        users: FloatMatrix | None = None
        solved: HistorySolve | None = None
        near: IntArray | None = None
        col: SparseRows | None = None
        if cfg.collaborative_weight > 0:
            if state.factors is not None and state.ann is not None:
                if batch.n_rows == 1:  # a request: one solve for the fold-in and the reason items
                    users, solved = state.factors.fold_in_solved(batch.items, conf)
                else:
                    users = state.factors.fold_in(batch_matrix(batch, conf, n))
                near = state.ann.search(state.factors.queries(users), cfg.ann_candidates + want, cfg.ann_probe)
            else:
                assert state.similarity is not None
                col = sparse_rows(batch, seq_w, state.similarity)
        popular = self.popular_top[:want] if cfg.popularity_weight > 0 else np.zeros(0, dtype=np.int64)
        trending = self.stage_items if self.uses_ranker else np.zeros(0, dtype=np.int64)
        seq_coef = np.zeros(batch.n_rows, dtype=np.float32)
        col_coef = np.zeros(batch.n_rows, dtype=np.float32)
        row_codes: list[IntArray] = []
        row_values: list[FloatArray] = []
        row_seq: list[FloatArray] = []
        for r in range(batch.n_rows):
            parts = [popular, trending, batch.items[batch.row(r)].astype(np.int64)]
            for m in (seq, col):
                if m is not None:
                    parts.append(m.columns(r))
            if near is not None:
                parts.append(near[r][near[r] >= 0])
            codes = union_codes(parts)
            values = np.zeros(codes.size, dtype=np.float32)
            if seq is not None:
                part = seq.at(r, codes)
                seq_coef[r] = cfg.sequence_weight / row_cap(part)
                part *= seq_coef[r]
                values += part
                row_seq.append(part)
            else:
                row_seq.append(np.zeros_like(values))
            if users is not None:
                assert state.factors is not None
                part = state.factors.scores_at(users[r], codes)
                col_coef[r] = cfg.collaborative_weight / row_cap(part, absolute=True)
                values += part * col_coef[r]
            elif col is not None:
                part = col.at(r, codes)
                col_coef[r] = cfg.collaborative_weight / row_cap(part)
                values += part * col_coef[r]
            if cfg.popularity_weight > 0:
                values += np.float32(cfg.popularity_weight) * state.popularity[codes]
            row_codes.append(codes)
            row_values.append(values)
        codes_matrix, values_matrix = pad_rows(row_codes, row_values)
        seq_matrix = pad_rows(row_codes, row_seq)[1]
        return EngineScores(values_matrix, batch, conf, seq_w, seq_coef, col_coef, state, cfg, codes_matrix, solved,
                            seq_matrix)  # fmt: skip

    # ----- serialisation -----

    def to_bytes(self) -> bytes:
        state = self.state
        arrays: dict[str, np.ndarray] = {
            "config": pack_json(self.config.model_dump()),
            "info": pack_json(state.info.as_dict()),
            "metrics": pack_json(self.metrics),
            "popularity": state.popularity.astype(np.float32),
            **pack_strings(state.item_ids),
            **pack_csr("transitions", state.transitions),
        }
        if state.factors is not None:
            arrays.update(state.factors.arrays())
        if state.ann is not None:
            arrays["ann_index"] = state.ann.to_array()
        if state.similarity is not None:
            arrays.update(pack_csr("similarity", state.similarity))
        if state.stats is not None:
            arrays.update(state.stats.arrays())
            arrays["ranker_info"] = pack_json(state.ranker_info or {})
        if state.ranker is not None:
            arrays["ranker_model"] = state.ranker.to_array()
        return save(KIND, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Self:
        return cls.from_arrays(load(KIND, blob))

    @classmethod
    def from_dir(cls, path: Path) -> Self:
        """A model from the files :func:`recommender.serialize.unpack_to_dir` wrote, memory-mapped (shared)."""
        return cls.from_arrays(load_dir(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Self:
        """A model from the arrays of its blob (in memory, or memory-mapped: :meth:`from_dir`)."""
        try:
            config = RecommenderConfig.from_mapping(unpack_json(arrays["config"]))
            model = cls(config)
            factors = FactorPart.from_arrays(arrays) if "item_factors" in arrays else None
            similarity = unpack_csr("similarity", arrays) if "similarity_data" in arrays else None
            ann = None
            if factors is not None and "ann_index" in arrays:
                dim = factors.item_factors.shape[1] + (factors.item_bias is not None)
                ann = FactorIndex.from_array(arrays["ann_index"], factors.n_items, dim)
            item_ids = unpack_strings(arrays)
            stats = ItemStats.from_arrays(arrays, len(item_ids)) if "stats_counts" in arrays else None
            ranker_info = unpack_json(arrays["ranker_info"]) if "ranker_info" in arrays else None
            ranker = (
                Ranker.from_array(arrays["ranker_model"], ranker_info or {})
                if stats is not None and "ranker_model" in arrays
                else None
            )
            state = _Fitted(
                item_ids=item_ids,
                popularity=np.array(arrays["popularity"], dtype=np.float32),  # a plain array: no memmap per call
                transitions=unpack_csr("transitions", arrays),
                factors=factors,
                similarity=similarity,
                info=TrainingInfo.from_dict(unpack_json(arrays["info"])),
                ann=ann,
                stats=stats,
                ranker=ranker,
                ranker_info=ranker_info if isinstance(ranker_info, dict) else None,
            )
            metrics = unpack_json(arrays["metrics"])
        except (KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"incomplete or corrupt model blob: {exc}") from exc
        if (factors is None) == (similarity is None) or (factors is None) == config.uses_factors:
            raise ValueError("model blob does not match its algorithm")
        state.check()
        model._state = state
        model.metrics = metrics if isinstance(metrics, dict) else {}
        return model


def _plain(value: np.floating[Any]) -> float | None:
    """A feature value for JSON: None when missing."""
    v = float(value)
    return None if np.isnan(v) else round(v, 6)
