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
        mark |= np.isin(codes, extra)
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


@dataclass
class Ranker:
    """A trained LambdaMART booster and what it was trained on."""

    booster: lgb.Booster
    meta: dict[str, Any] = field(default_factory=dict)

    def scores(self, x: FloatMatrix) -> FloatArray:
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
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
