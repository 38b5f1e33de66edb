"""Matrix factorisation parts (ALS, BPR) on implicit, with a least-squares fold-in of whole user histories.

Only item factors are kept. A user vector is computed per request from the user's whole current history, so a
user need not have been in training:

* ALS: implicit's own ``recalculate_user`` (the ALS least-squares step with the model's regularisation and
  alpha), which reproduces the trained user factors;
* BPR: the confidence-weighted mean of the history's item factors (BPR factors are not fitted to a squared
  loss, so a least-squares fold-in ranks almost at random; the mean does as well as the trained user factors).
  BPR's last factor column is an item bias, added to the scores of users with a non-zero vector.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.recommender_base import ModelFitError as ImplicitFitError
from numpy.typing import NDArray

from recommender.config import RecommenderConfig
from recommender.errors import ModelFitError

FloatMatrix = NDArray[np.float32]
FoldIn = Literal["least_squares", "mean"]
FOLD_INS: tuple[FoldIn, ...] = ("least_squares", "mean")


def _solver(item_factors: FloatMatrix, regularization: float, alpha: float) -> AlternatingLeastSquares:
    with warnings.catch_warnings():  # implicit warns once about BLAS threads; the caller pins them
        warnings.simplefilter("ignore", RuntimeWarning)
        solver = AlternatingLeastSquares(
            factors=item_factors.shape[1], regularization=regularization, alpha=alpha, num_threads=1
        )
    solver.item_factors = item_factors
    return solver


@dataclass(frozen=True, slots=True)
class HistorySolve:
    """One history's least-squares system solved once (:meth:`FactorPart.solve_history`)."""

    used: NDArray[np.bool_]  # per history entry: positive confidence (the others add nothing)
    c: NDArray[np.float64]  # alpha * confidence of the used entries
    solved: NDArray[np.float64]  # factors x used entries: A^-1 y_i

    def user(self) -> FloatMatrix:
        """The user vector ``A^-1 sum_i c_i y_i``."""
        return (self.solved @ self.c).astype(np.float32)


class FactorPart:
    """Item factors (items x factors, float32), an optional item bias and the fold-in solver."""

    def __init__(
        self,
        item_factors: FloatMatrix,
        item_bias: FloatMatrix | None,
        regularization: float,
        alpha: float,
        fold_in: FoldIn = "least_squares",
    ) -> None:
        if item_factors.ndim != 2:
            raise ValueError("item factors must be a 2-d array")
        if item_bias is not None and item_bias.shape != (item_factors.shape[0],):
            raise ValueError("item bias must have one value per item")
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.item_bias = None if item_bias is None else np.ascontiguousarray(item_bias, dtype=np.float32)
        self.regularization = regularization
        self.alpha = alpha
        self.fold_in_mode: FoldIn = fold_in
        self._solver = _solver(self.item_factors, regularization, alpha)
        # YtY + reg I in float64, computed once here, not on every request (the fold-in and :meth:`explain` add to
        # a copy of it)
        dim = self.item_factors.shape[1]
        self._gram = np.asarray(self._solver.YtY, dtype=np.float64) + regularization * np.eye(dim)

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def fold_in(self, conf: sp.csr_matrix) -> FloatMatrix:
        """User vectors (rows x factors) from rows x items confidences."""
        rows = conf.shape[0]
        if rows == 0:
            return np.zeros((0, self.item_factors.shape[1]), dtype=np.float32)
        if self.fold_in_mode == "mean":
            totals = np.asarray(conf.sum(axis=1), dtype=np.float32).reshape(rows, 1)
            sums = np.asarray(conf @ self.item_factors, dtype=np.float32)
            means: FloatMatrix = (sums / np.maximum(totals, np.float32(1e-12))).astype(np.float32)
            return means
        if rows == 1:  # a request: the same least squares without implicit's per-call sparse-matrix work
            lo, hi = conf.indptr[0], conf.indptr[1]
            return self._least_squares(conf.indices[lo:hi], conf.data[lo:hi]).reshape(1, -1)
        users = self._solver.recalculate_user(np.arange(rows), sp.csr_matrix(conf, dtype=np.float32))
        return np.asarray(users, dtype=np.float32).reshape(rows, -1)

    def fold_in_one(self, items: NDArray[np.int32], conf: NDArray[np.float32]) -> FloatMatrix:
        """One user vector (1 x factors) from one history's items and confidences (zeros left out), as
        :meth:`fold_in` of that one row, without building a sparse matrix (a request)."""
        return self.fold_in_solved(items, conf)[0]

    def fold_in_solved(
        self, items: NDArray[np.int32], conf: NDArray[np.float32]
    ) -> tuple[FloatMatrix, HistorySolve | None]:
        """:meth:`fold_in_one`, and the history's solved system that :meth:`explain_solved` reuses for the reason
        items (None for the mean fold-in or negative confidences)."""
        negative = conf.size > 0 and float(conf.min()) < 0  # zeros add nothing either way
        if self.fold_in_mode == "mean" or negative:
            keep = conf != 0
            kept_items, kept = items[keep], conf[keep].astype(np.float32)
            if self.fold_in_mode == "mean":
                sums = sp.csr_matrix((kept, kept_items, [0, kept_items.size]), shape=(1, self.n_items))
                return self.fold_in(sums), None
            return self._least_squares(kept_items, kept).reshape(1, -1), None
        solved = self.solve_history(items, conf)
        return solved.user().reshape(1, -1), solved

    def solve_history(self, items: NDArray[np.int32], conf: NDArray[np.float32]) -> HistorySolve:
        """The one factorisation of a request: ``A^-1 y_i`` for each history item of positive confidence, with
        ``A = YtY + reg I + sum_i (c_i - 1) y_i y_i'`` (``c = alpha * conf``; ``YtY + reg I`` computed once per model
        load). The fold-in is ``u = sum_i c_i A^-1 y_i`` (:meth:`HistorySolve.user`) and item ``i``'s share of
        target ``t``'s score is ``c_i y_t . A^-1 y_i`` (:meth:`explain_solved`): both from one solve."""
        c = self.alpha * np.clip(conf, 0.0, None).astype(np.float64)
        used = c > 0
        y = self.item_factors[items[used]].astype(np.float64)
        a = self._gram.copy()
        a += (y.T * (c[used] - 1.0)) @ y
        solved = np.linalg.solve(a, y.T) if y.shape[0] else np.zeros((a.shape[0], 0), dtype=np.float64)
        return HistorySolve(used, c[used], np.asarray(solved, dtype=np.float64))

    def explain_solved(self, solved: HistorySolve, targets: NDArray[np.int64]) -> FloatMatrix:
        """:meth:`explain` from the history's solved system (no second factorisation)."""
        out = np.zeros((solved.used.size, targets.size), dtype=np.float64)
        out[solved.used] = (self.item_factors[targets].astype(np.float64) @ solved.solved).T * solved.c[:, None]
        return out.astype(np.float32)

    def _least_squares(self, items: NDArray[np.int32], conf: NDArray[np.float32]) -> FloatMatrix:
        """implicit's ALS user step for one user: ``(YtY + reg I + Y' (C - I) Y) u = Y' C p`` with
        ``C = alpha * conf`` on the user's items (``p`` = 1 there; a negative confidence is a negative preference)."""
        if conf.size and float(conf.min()) >= 0:  # as a request computes it (:meth:`solve_history`)
            return self.solve_history(items, conf).user()
        c = self.alpha * conf.astype(np.float64)
        y = self.item_factors[items].astype(np.float64)
        a = self._gram.copy()
        a += (y.T * (np.abs(c) - 1.0)) @ y
        b = y.T @ np.where(c > 0, np.abs(c), 0.0)
        return np.linalg.solve(a, b).astype(np.float32)

    def scores(self, users: FloatMatrix) -> FloatMatrix:
        """Scores (rows x items) of user vectors; the item bias only for users with a non-zero vector, so an
        empty or unknown history scores 0 everywhere (and popularity alone orders it)."""
        out: FloatMatrix = users @ self.item_factors.T  # no transposed copy: the factors may be memory-mapped
        if self.item_bias is not None:
            out[users.any(axis=1)] += self.item_bias
        return out

    def scores_at(self, user: FloatMatrix, codes: NDArray[np.int64]) -> FloatMatrix:
        """One user vector's scores of the items ``codes`` only (the same values as :meth:`scores`)."""
        out: FloatMatrix = self.item_factors[codes] @ user
        if self.item_bias is not None and user.any():
            out += self.item_bias[codes]
        return out

    def index_vectors(self) -> FloatMatrix:
        """The vectors a nearest-neighbour index holds: the item factors, and the item bias as one more column."""
        if self.item_bias is None:
            return self.item_factors
        return np.hstack([self.item_factors, np.reshape(self.item_bias, (-1, 1))]).astype(np.float32)

    def queries(self, users: FloatMatrix) -> FloatMatrix:
        """User vectors as index queries: with a bias column, 1 where the vector is not zero (as :meth:`scores`)."""
        if self.item_bias is None:
            return users
        ones = np.reshape(users.any(axis=1), (-1, 1)).astype(np.float32)
        return np.hstack([users, ones]).astype(np.float32)

    def explain(self, history: NDArray[np.int32], conf: NDArray[np.float32], targets: NDArray[np.int64]) -> FloatMatrix:
        """Share of each history item in each target's score (history x targets): the fold-in is linear in the
        confidences, ``u = A^-1 sum_i c_i y_i``, so item ``i`` adds ``c_i y_t . A^-1 y_i`` to target ``t``."""
        if self.fold_in_mode == "mean":
            c_mean = np.clip(conf, 0.0, None).astype(np.float64)
            dots = self.item_factors[history].astype(np.float64) @ self.item_factors[targets].T.astype(np.float64)
            return (dots * (c_mean / max(float(c_mean.sum()), 1e-12))[:, None]).astype(np.float32)
        c = (self.alpha * np.clip(conf, 0.0, None)).astype(np.float64)
        used = c > 0
        y_hist = self.item_factors[history].astype(np.float64)
        a = self._gram.copy()
        a += (y_hist[used].T * (c[used] - 1.0)) @ y_hist[used]
        solved = np.linalg.solve(a, y_hist.T)
        out = (self.item_factors[targets].astype(np.float64) @ solved).T * c[:, None]
        return out.astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "item_factors": self.item_factors,
            "factor_params": np.asarray(
                [self.regularization, self.alpha, FOLD_INS.index(self.fold_in_mode)], dtype=np.float64
            ),
        }
        if self.item_bias is not None:
            out["item_bias"] = self.item_bias
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FactorPart:
        params = [float(x) for x in arrays["factor_params"]]
        if len(params) != 3 or params[2] not in (0.0, 1.0):
            raise ValueError("invalid factor parameters in model blob")
        bias = arrays.get("item_bias")
        return cls(arrays["item_factors"], bias, params[0], params[1], FOLD_INS[int(params[2])])


def _check_finite(factors: FloatMatrix, algorithm: str) -> None:
    if not np.all(np.isfinite(factors)):
        raise ModelFitError(f"{algorithm} produced NaN or infinite factors")


def _fit_item_factors(model: Any, matrix: sp.csr_matrix, name: str) -> FloatMatrix:
    """Fit an implicit model on ``matrix``; its finite item factors, or :class:`ModelFitError`."""
    try:
        model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
    except ImplicitFitError as exc:
        raise ModelFitError(f"{name}: {exc}") from exc
    factors = np.asarray(model.item_factors, dtype=np.float32)
    _check_finite(factors, name)
    return factors


def fit_als(matrix: sp.csr_matrix, config: RecommenderConfig) -> FactorPart:
    """ALS on a users x items confidence matrix (implicit scales it by ``alpha``)."""
    model = AlternatingLeastSquares(
        factors=config.factors,
        regularization=config.regularization,
        alpha=config.alpha,
        iterations=config.iterations,
        num_threads=config.num_threads,
        random_state=config.random_state,
        dtype=np.float32,
    )
    factors = _fit_item_factors(model, matrix, "ALS")
    return FactorPart(factors, None, config.regularization, config.alpha)


def fit_bpr(matrix: sp.csr_matrix, config: RecommenderConfig) -> FactorPart:
    """BPR on the positive entries of a users x items matrix; the last factor column is the item bias."""
    model = BayesianPersonalizedRanking(
        factors=config.factors,
        learning_rate=config.learning_rate,
        regularization=config.regularization,
        iterations=config.iterations,
        num_threads=config.num_threads,
        random_state=config.random_state,
        dtype=np.float32,
    )
    factors = _fit_item_factors(model, matrix, "BPR")
    return FactorPart(factors[:, :-1], factors[:, -1], config.regularization, config.alpha, "mean")
