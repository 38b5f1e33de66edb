"""The sequential part: item -> next-item transitions.

For every user's events in time order (repeats of the same item in a row collapsed), each pair ``(a, b)`` with
``b`` up to ``transition_window`` events after ``a`` counts ``transition_decay ** (distance - 1)``. Rows are
divided by (row sum) ** ``transition_norm`` (0: raw counts, 1: transition probabilities) so that items that are
followed by everything do not drown the rest, and only the ``transition_neighbours`` strongest are kept.
A request's sequential score is the recency-weighted sum of its history items' rows: a sparse row lookup.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.config import RecommenderConfig
from recommender.data import Int32Array, IntArray, Interactions
from recommender.weighting import normalise_rows, prune_rows

_HOUR_MS = 3_600_000.0


def _collapsed_sequence(interactions: Interactions) -> tuple[Int32Array, Int32Array, IntArray]:
    """Users, items and times of the positive events in time order, repeats of an item in a row dropped (codes as
    int32: the count matrix takes them without a conversion)."""
    order = interactions.chronological()
    order = order[interactions.weights[order] > 0]
    users = interactions.users[order].astype(np.int32)
    items = interactions.items[order].astype(np.int32)
    ts = interactions.ts[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
    return users[~repeat], items[~repeat], ts[~repeat]


def transition_counts(interactions: Interactions, config: RecommenderConfig) -> sp.csr_matrix:
    """Distance-decayed counts of ``a`` followed by ``b`` (plus reversed pairs times ``transition_backward``)."""
    users, items, ts = _collapsed_sequence(interactions)
    max_gap = None if config.transition_max_gap_hours is None else config.transition_max_gap_hours * _HOUR_MS
    sources: list[Int32Array] = []
    targets: list[Int32Array] = []
    values: list[np.ndarray] = []
    for k in range(1, config.transition_window + 1):
        if k >= len(items):
            break
        pair = (users[:-k] == users[k:]) & (items[:-k] != items[k:])
        if max_gap is not None:
            pair &= (ts[k:] - ts[:-k]) <= max_gap
        src, dst = items[:-k][pair], items[k:][pair]
        weight = config.transition_decay ** (k - 1)
        sources.append(src)
        targets.append(dst)
        values.append(np.full(len(src), weight, dtype=np.float32))
        if config.transition_backward > 0:
            sources.append(dst)
            targets.append(src)
            values.append(np.full(len(src), weight * config.transition_backward, dtype=np.float32))
    n = interactions.n_items
    if not sources:
        return sp.csr_matrix((n, n), dtype=np.float32)
    counts = sp.coo_matrix(
        (np.concatenate(values), (np.concatenate(sources), np.concatenate(targets))), shape=(n, n)
    ).tocsr()
    counts.sum_duplicates()
    return counts


def transition_matrix(interactions: Interactions, config: RecommenderConfig) -> sp.csr_matrix:
    """The normalised, pruned transition matrix (items x items, float32)."""
    counts = transition_counts(interactions, config)
    normalised = normalise_rows(counts, config.transition_norm)
    pruned = prune_rows(normalised, config.transition_neighbours)
    return sp.csr_matrix(pruned, dtype=np.float32)
