"""Figures for the recommender (not tests): synthetic data of a chosen size, training time, request latency.

``synthetic_interactions`` draws users who walk a catalogue: each next item is either a near neighbour of the
previous one (a sequential pattern) or a popular item (a power law), with view/cart/purchase weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recommender.base import RecommenderBase
from recommender.data import HistoryEntry, Interactions, interactions_batch

_WEIGHTS = np.array([1.0, 3.0, 5.0], dtype=np.float32)


def synthetic_interactions(n_users: int, n_items: int, per_user: int, seed: int = 0) -> Interactions:
    """``n_users * per_user`` interactions over ``n_items`` items (vectorised; ~1 s per million)."""
    if min(n_users, n_items, per_user) < 1:
        raise ValueError("n_users, n_items and per_user must be at least 1")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.power(np.arange(1, n_items + 1, dtype=np.float64) + 10.0, 0.9)
    popularity /= popularity.sum()
    shuffle = rng.permutation(n_items)
    steps = np.empty((n_users, per_user), dtype=np.int64)
    steps[:, 0] = shuffle[rng.choice(n_items, size=n_users, p=popularity)]
    for k in range(1, per_user):
        near = (steps[:, k - 1] + rng.integers(1, 4, size=n_users)) % n_items
        popular = shuffle[rng.choice(n_items, size=n_users, p=popularity)]
        steps[:, k] = np.where(rng.random(n_users) < 0.6, near, popular)
    start = 1_700_000_000_000 + rng.integers(0, 30 * 86_400_000, size=(n_users, 1))
    ts = start + np.cumsum(rng.integers(1_000, 600_000, size=(n_users, per_user)), axis=1)
    kinds = rng.choice(3, size=(n_users, per_user), p=[0.85, 0.1, 0.05])
    return Interactions(
        users=np.repeat(np.arange(n_users, dtype=np.int32), per_user),
        items=steps.ravel().astype(np.int32),
        weights=_WEIGHTS[kinds.ravel()],
        ts=ts.ravel().astype(np.int64),
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"sku{i}" for i in range(n_items)),
    )


def histories(interactions: Interactions, count: int, seed: int = 0) -> list[list[HistoryEntry]]:
    """The current histories (as the live profile holds them) of ``count`` random users of the log."""
    batch = interactions_batch(interactions)
    users = np.random.default_rng(seed).choice(interactions.n_users, size=count, replace=False)
    ids = interactions.item_ids
    out: list[list[HistoryEntry]] = []
    for user in users.tolist():
        sl = batch.row(user)
        items, weights, times = batch.items[sl].tolist(), batch.weights[sl].tolist(), batch.ts[sl].tolist()
        out.append([(ids[i], float(w), int(t)) for i, w, t in zip(items, weights, times, strict=True)])
    return out


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-request latency of :meth:`RecommenderBase.recommend`, in milliseconds."""

    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
        }


def request_latency(model: RecommenderBase, requests: list[list[HistoryEntry]], n: int = 10) -> Latency:
    """Time one ``recommend`` call (with reason items) per history, after one warm-up call."""
    if not requests:
        raise ValueError("no requests to time")
    model.recommend(requests[0], n)
    times = np.empty(len(requests), dtype=np.float64)
    for k, history in enumerate(requests):
        started = time.perf_counter()
        model.recommend(history, n)
        times[k] = (time.perf_counter() - started) * 1000.0
    p50, p95, p99 = np.percentile(times, [50, 95, 99]).tolist()
    return Latency(len(requests), round(p50, 3), round(p95, 3), round(p99, 3), round(float(times.mean()), 3))
