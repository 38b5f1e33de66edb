"""The learned ranking stage: a LightGBM LambdaMART model over the features of :mod:`recommender.features`.

* :func:`select_candidates` - which (row, item) pairs of a scored batch the ranker re-orders: the blend's best
  ``k`` items a row has left after its exclusions, the most trending items and the user's own history items
  (when they are not excluded: the re-buy window);
* :class:`Ranker` - the trained booster: scores, per-feature contributions (``explain``), stored as its own text
  (``model_to_string``) in a byte array of the model blob (no pickle);
* :func:`train` - fit on grouped rows (one group per user and cut-off), deterministic (one thread, fixed seed,
  ``deterministic=True``), stopped once its time budget is spent;
* :func:`ndcg` - NDCG@k of any scores over the same groups (the validation that decides whether the ranker is
  used at all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from recommender.candidates import members
from recommender.data import FloatArray, HistoryBatch, IntArray
from recommender.features import NAMES

FloatMatrix = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class RankerParams:
    trees: int = 100
    leaves: int = 15
    learning_rate: float = 0.05
    min_child_samples: int = 20
    seed: int = 0


def select_candidates(values: FloatMatrix, codes: IntArray | None, batch: HistoryBatch, k: int,
                      extra: IntArray) -> tuple[IntArray, IntArray, NDArray[np.bool_]]:  # fmt: skip
    """(row, column) of the cells to re-rank, rows ascending: per row the ``k`` best finite cells outside its
    history, the finite cells of its history and of the ``extra`` item codes (trending, popular). ``codes``: the
    item of each column (candidate path), None when column = item code. Also per cell whether it is a history
    item."""
    n_rows, width = values.shape
    mark = np.zeros((n_rows, width), dtype=bool)
    in_history = np.zeros((n_rows, width), dtype=bool)
    if codes is None:
        in_history[batch.rows, batch.items] = True
        mark[:, extra[extra < width]] = True
    else:
        for r in range(n_rows):
            in_history[r] = members(codes[r], batch.items[batch.row(r)])
        mark |= members(codes, extra)  # np.isin by a binary search in the few extra items
    mark |= in_history
    blend = np.where(in_history, -np.inf, values)
    kk = min(k, width)
    if 0 < kk < width:
        top = np.argpartition(-blend, kk - 1, axis=1)[:, :kk]
        mark[np.repeat(np.arange(n_rows), kk), top.ravel()] = True
    elif kk:
        mark[:] = True
    mark &= np.isfinite(values)
    rows, cols = np.nonzero(mark)
    return rows.astype(np.int64), cols.astype(np.int64), in_history[rows, cols]


class Trees:
    """The booster's trees as numpy tables, evaluated for all rows and all trees at once (no per-call set-up).

    LightGBM's ``predict`` sets up a predictor on every call (a millisecond or two whatever the rows); a request
    ranks ~150 rows. This evaluator gives the same values (QuickScorer's bit vectors, with per-feature prefix
    tables):

    * the leaves of a tree are numbered left to right, one bit each (at most 64 leaves a tree);
    * a split whose test fails (the row goes right) rules out the leaves of its left subtree: its mask clears
      their bits. The leaf a row reaches is the leftmost one that no failed split rules out: the lowest set bit
      of the AND of the masks of the splits that fail;
    * LightGBM's rule at a numerical split (``NumericalDecision``): a NaN counts as 0 unless the split's missing
      type is NaN, where it goes the split's default way; else ``x <= threshold`` goes left. So for a value ``v``
      (not NaN) of a feature, the splits on that feature that fail are those with a threshold below ``v``: a
      prefix of them sorted by threshold. Their per-tree AND is precomputed for every prefix, and for NaN; a row's
      leaves are one ``searchsorted`` per feature, one gather and one AND over the features.

    Leaf values are added tree by tree in float64, as LightGBM adds them, so the scores are LightGBM's to the bit
    (tested against ``booster.predict``). Categorical splits, linear trees, the Zero missing type or more than 64
    leaves in a tree are not used by the stage: :meth:`from_booster` returns None for them (the caller keeps
    LightGBM's predict)."""

    __slots__ = ("base", "leaf_offset", "n_features", "nan_row", "table", "thresholds", "values")

    def __init__(self, dump: dict[str, Any]) -> None:
        infos = dump["tree_info"]
        n_trees = len(infos)
        self.n_features = len(dump["feature_names"])
        values: list[float] = []
        offsets: list[int] = []
        splits: list[tuple[int, int, float, int, bool]] = []  # tree, feature, threshold, left leaves, NaN fails

        def walk(tree_no: int, node: dict[str, Any], first_leaf: int) -> int:
            """Number the leaves of ``node`` from ``first_leaf`` and record its splits; returns its leaf count."""
            if "split_index" not in node:
                values.append(float(node["leaf_value"]))
                return 1
            if node.get("decision_type", "<=") != "<=":
                raise ValueError("a categorical split")
            missing = str(node.get("missing_type", "None"))
            if missing not in ("None", "NaN"):
                raise ValueError(f"missing type {missing}")
            n_left = walk(tree_no, node["left_child"], first_leaf)
            n_right = walk(tree_no, node["right_child"], first_leaf + n_left)
            if first_leaf + n_left + n_right > 64:
                raise ValueError("more than 64 leaves in a tree")
            threshold = float(node["threshold"])
            if abs(threshold) >= AVOID_INF:  # the dump writes an infinite threshold as +-1e300 (AvoidInf)
                threshold = float(np.copysign(np.inf, threshold))
            nan_fails = not node.get("default_left", False) if missing == "NaN" else not 0.0 <= threshold
            splits.append((tree_no, int(node["split_feature"]), threshold, ((1 << n_left) - 1) << first_leaf,
                           bool(nan_fails)))  # fmt: skip
            return n_left + n_right

        for t, info in enumerate(infos):
            offsets.append(len(values))
            walk(t, info["tree_structure"], 0)
        self.values = np.asarray(values, dtype=np.float64)
        self.leaf_offset = np.asarray(offsets, dtype=np.int64)
        leaves = int(np.diff(np.append(self.leaf_offset, len(values))).max(initial=1))
        dtype = np.uint16 if leaves <= 16 else np.uint32 if leaves <= 32 else np.uint64  # less to gather
        everything = (1 << (8 * np.dtype(dtype).itemsize)) - 1
        blocks: list[NDArray[np.unsignedinteger[Any]]] = []
        self.thresholds: list[NDArray[np.float64]] = []
        base: list[int] = []
        nan_row: list[int] = []
        at = 0
        for f in range(self.n_features):
            own = sorted((s for s in splits if s[1] == f), key=lambda s: s[2])
            block = np.full((len(own) + 2, n_trees), everything, dtype=dtype)  # row p: the first p fail
            for p, (tree_no, _, _, left_leaves, nan_fails) in enumerate(own):
                block[p + 1] = block[p]
                block[p + 1, tree_no] &= dtype(everything ^ left_leaves)
                if nan_fails:  # the last row: a NaN
                    block[-1, tree_no] &= dtype(everything ^ left_leaves)
            self.thresholds.append(np.asarray([s[2] for s in own], dtype=np.float64))
            blocks.append(block)
            base.append(at)
            nan_row.append(at + len(own) + 1)
            at += len(own) + 2
        self.table = np.concatenate(blocks) if blocks else np.zeros((0, n_trees), dtype=dtype)
        self.base = np.asarray(base, dtype=np.int64)
        self.nan_row = np.asarray(nan_row, dtype=np.int64)

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> Trees | None:
        """The booster's trees, or None when they use what this evaluator does not (see the class)."""
        dump = booster.dump_model()
        if any(info["tree_structure"].get("leaf_coeff") is not None for info in dump.get("tree_info", [])):
            return None
        try:
            return cls(dump)
        except (KeyError, ValueError):
            return None

    def predict(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """The raw scores of the rows of ``x`` (rows x features), as ``booster.predict(x)``."""
        rows = x.shape[0]
        n_trees = self.leaf_offset.size
        if rows == 0 or n_trees == 0:
            return np.zeros(rows, dtype=np.float64)
        if x.shape[1] != self.n_features:
            raise ValueError(f"{x.shape[1]} features, the trees use {self.n_features}")
        xd = np.array(x.T, dtype=np.float64, order="C")  # features x rows, each feature's values contiguous
        idx = np.empty((self.n_features, rows), dtype=np.int64)
        for f in range(self.n_features):
            idx[f] = np.searchsorted(self.thresholds[f], xd[f], side="left")
        idx += self.base[:, None]
        nan = np.isnan(xd)
        if nan.any():
            idx = np.where(nan, self.nan_row[:, None], idx)
        masks = np.bitwise_and.reduce(self.table[idx], axis=0)  # rows x trees: the leaves still possible
        lowest = masks & (~masks + masks.dtype.type(1))  # the leftmost of them
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1
        leaf_values = self.values[leaf + self.leaf_offset]  # rows x trees
        out: NDArray[np.float64] = np.cumsum(leaf_values, axis=1)[:, -1]  # tree by tree, as LightGBM adds them
        return out


AVOID_INF = 1e300


@dataclass
class Ranker:
    """A trained LambdaMART booster and what it was trained on. Scores come from :class:`Trees` (the same values
    as LightGBM's predict, without its per-call set-up); LightGBM's own predict for the SHAP values of ``explain``."""

    booster: lgb.Booster
    meta: dict[str, Any] = field(default_factory=dict)
    trees: Trees | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.trees is None:
            self.trees = Trees.from_booster(self.booster)

    def scores(self, x: FloatMatrix) -> FloatArray:
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if self.trees is not None:
            return self.trees.predict(x).astype(np.float32)
        return self.reference_scores(x)

    def reference_scores(self, x: FloatMatrix) -> FloatArray:
        """LightGBM's own predict (the reference of :meth:`scores`)."""
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float32)

    def contributions(self, x: FloatMatrix) -> FloatMatrix:
        """Per row each feature's contribution to the score (SHAP values), the last column the expected value."""
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1), dtype=np.float32)

    def to_array(self) -> NDArray[np.uint8]:
        return np.frombuffer(self.booster.model_to_string().encode("utf-8"), dtype=np.uint8)

    @classmethod
    def from_array(cls, data: np.ndarray, meta: dict[str, Any]) -> Ranker:
        try:
            booster = lgb.Booster(model_str=np.asarray(data, dtype=np.uint8).tobytes().decode("utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt ranker in model blob: {exc}") from exc
        if tuple(booster.feature_name()) != NAMES:
            raise ValueError("the ranker in the model blob was trained on other features")
        return cls(booster, meta)


def train(
    x: FloatMatrix, labels: NDArray[np.integer], groups: IntArray, params: RankerParams, budget_s: float
) -> tuple[Ranker, bool]:
    """Fit a LambdaMART ranker on rows grouped by ``groups`` (sizes); stops adding trees once ``budget_s`` seconds
    have passed. Returns the ranker and whether the budget cut it short."""
    started = time.process_time()
    stopped: list[bool] = []

    def out_of_time(env: lgb.callback.CallbackEnv) -> None:
        if time.process_time() - started > budget_s:
            stopped.append(True)
            raise lgb.callback.EarlyStopException(env.iteration, [])

    dataset = lgb.Dataset(x, label=labels, group=groups, feature_name=list(NAMES), free_raw_data=True,
                          params={"verbose": -1, "num_threads": 1})  # fmt: skip
    booster = lgb.train(
        {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": params.leaves,
            "learning_rate": params.learning_rate,
            "min_child_samples": params.min_child_samples,
            "lambdarank_truncation_level": 20,
            "max_bin": 63,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "seed": params.seed,
            "verbose": -1,
        },
        dataset,
        num_boost_round=params.trees,
        callbacks=[out_of_time],
    )
    return Ranker(booster), bool(stopped)


def ndcg(scores: FloatArray, labels: NDArray[np.integer], groups: IntArray, k: int = 10) -> NDArray[np.float64]:
    """NDCG@k of each group (consecutive rows, sizes ``groups``); a group without a relevant row scores 0."""
    out = np.zeros(len(groups), dtype=np.float64)
    start = 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for g, size in enumerate(groups.tolist()):
        s, y = scores[start : start + size], labels[start : start + size]
        start += size
        order = np.lexsort((np.arange(size), -s))[:k]
        gains = (2.0 ** y[order] - 1) @ discounts[: order.size]
        ideal = (2.0 ** np.sort(y)[::-1][:k] - 1) @ discounts[: min(k, size)]
        out[g] = float(gains / ideal) if ideal > 0 else 0.0
    return out


def wins(ranker: NDArray[np.float64], blend: NDArray[np.float64], z: float) -> bool:
    """Whether the ranker's per-group NDCG beats the blend's: the mean paired gain is positive and at least ``z``
    standard errors above zero (a one-sided paired test; few or noisy validation users keep the blend)."""
    if ranker.size < 2:
        return False
    gain = ranker - blend
    stderr = float(gain.std(ddof=1)) / np.sqrt(gain.size)
    return bool(float(gain.mean()) > z * stderr and float(gain.mean()) > 0)
