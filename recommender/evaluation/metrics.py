"""Ranking metrics at a cut-off k, summed over batches of users (pure numpy).

Per user, with ``hits`` the relevant items among the top k and ``R`` the number of relevant items:

* ``hr@k``: 1 if any hit; ``precision@k``: hits / k; ``recall@k``: hits / R;
* ``ndcg@k``: sum of 1 / log2(position + 1) over hits, divided by its best value for min(R, k) hits;
* ``mrr``: 1 / rank of the best-ranked relevant item in the full ranking (items with the same score count
  as ranked above it);
* ``coverage@k`` (whole run): share of the catalogue that appears in at least one top-k list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from recommender.data import IntArray

METRIC_NAMES = ("hr", "ndcg", "precision", "recall", "mrr", "coverage")


def hit_matrix(top: IntArray, valid: NDArray[np.bool_], indptr: IntArray, relevant: IntArray) -> NDArray[np.bool_]:
    """``hits[u, j]``: the j-th recommended item of user u is relevant to u (``valid`` marks real entries)."""
    rows = top.shape[0]
    user_of_relevant = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
    span = int(max(int(top.max(initial=0)), int(relevant.max(initial=0)))) + 1
    relevant_keys = user_of_relevant * span + relevant
    top_keys = np.arange(rows, dtype=np.int64)[:, None] * span + top
    hits: NDArray[np.bool_] = np.isin(top_keys, relevant_keys) & valid
    return hits


def user_metrics(
    hits: NDArray[np.bool_], n_relevant: IntArray, best_rank: IntArray, k: int
) -> dict[str, NDArray[np.float64]]:
    """Per-user hr, ndcg, precision, recall and reciprocal rank."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    n_hits = hits.sum(axis=1)
    ideal = np.cumsum(discounts)[np.clip(n_relevant, 1, k) - 1]
    return {
        "hr": (n_hits > 0).astype(np.float64),
        "ndcg": (hits[:, :k] * discounts[: hits.shape[1]]).sum(axis=1) / ideal,
        "precision": n_hits / k,
        "recall": n_hits / np.maximum(n_relevant, 1),
        "mrr": 1.0 / np.maximum(best_rank, 1),
    }


@dataclass
class MetricSums:
    """Running sums of per-user metrics and the set of recommended items."""

    k: int
    n_items: int
    users: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    recommended: NDArray[np.bool_] | None = None

    def add(
        self, top: IntArray, valid: NDArray[np.bool_], indptr: IntArray, relevant: IntArray, best_rank: IntArray
    ) -> None:
        hits = hit_matrix(top, valid, indptr, relevant)
        per_user = user_metrics(hits, np.diff(indptr), best_rank, self.k)
        for name, values in per_user.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        if self.recommended is None:
            self.recommended = np.zeros(self.n_items, dtype=bool)
        self.recommended[top[valid]] = True
        self.users += top.shape[0]

    def result(self) -> dict[str, float]:
        """Averages over users, keyed ``hr@k``, ``ndcg@k``, ..., ``mrr``, ``coverage@k``."""
        users = max(self.users, 1)
        k = self.k
        covered = 0 if self.recommended is None else int(self.recommended.sum())
        return {
            f"hr@{k}": self.sums.get("hr", 0.0) / users,
            f"ndcg@{k}": self.sums.get("ndcg", 0.0) / users,
            f"precision@{k}": self.sums.get("precision", 0.0) / users,
            f"recall@{k}": self.sums.get("recall", 0.0) / users,
            "mrr": self.sums.get("mrr", 0.0) / users,
            f"coverage@{k}": covered / max(self.n_items, 1),
        }
