"""Pure parts of the recommender with hand-computed values: aggregation, weights, transitions, top-n."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender import Interactions, RecommenderConfig
from recommender.data import aggregate, encode
from recommender.ranking import exclude, ranks_of, top_n
from recommender.sequence import transition_counts, transition_matrix
from recommender.weighting import (
    DAY_MS,
    confidence,
    normalise_rows,
    prune_rows,
    recency_rank,
    row_latest,
    sequence_weights,
)


def test_aggregate_sums_weights_keeps_latest_time_newest_first() -> None:
    rows = np.array([0, 0, 0, 1, 0], dtype=np.int64)
    items = np.array([5, 7, 5, 5, 9], dtype=np.int32)
    weights = np.array([1.0, 3.0, 5.0, 2.0, -1.0], dtype=np.float32)
    ts = np.array([10, 20, 30, 5, 15], dtype=np.int64)
    batch = aggregate(rows, items, weights, ts, n_rows=3)
    assert batch.indptr.tolist() == [0, 3, 4, 4]
    assert batch.items.tolist() == [5, 7, 9, 5]
    assert batch.weights.tolist() == [6.0, 3.0, -1.0, 2.0]
    assert batch.ts.tolist() == [30, 20, 15, 5]
    assert batch.take([1, 0]).items.tolist() == [5, 5, 7, 9]


def test_encode_drops_unknown_items() -> None:
    batch = encode([[("a", 1.0, 5), ("zz", 1.0, 6)], [], [("b", 2.0, 1), ("a", 1.0, 2)]], {"a": 0, "b": 1})
    assert batch.n_rows == 3
    assert batch.indptr.tolist() == [0, 1, 1, 3]
    assert batch.items.tolist() == [0, 0, 1]


def test_confidence_halves_per_half_life_before_the_users_latest_event() -> None:
    batch = aggregate(
        np.array([0, 0, 0, 1], dtype=np.int64),
        np.array([1, 2, 3, 1], dtype=np.int32),
        np.array([4.0, 4.0, -2.0, 1.0], dtype=np.float32),
        np.array([10 * DAY_MS, 9 * DAY_MS, 8 * DAY_MS, 0], dtype=np.int64),
        n_rows=2,
    )
    assert row_latest(batch).tolist() == [10 * DAY_MS, 0]
    np.testing.assert_allclose(confidence(batch, 1.0 * DAY_MS), [4.0, 2.0, 0.0, 1.0])
    np.testing.assert_allclose(confidence(batch, None), [4.0, 4.0, 0.0, 1.0])


def test_recency_rank_shares_ranks_for_equal_times_and_restarts_per_row() -> None:
    batch = aggregate(
        np.array([0, 0, 0, 0, 1, 1], dtype=np.int64),
        np.array([1, 2, 3, 4, 1, 2], dtype=np.int32),
        np.ones(6, dtype=np.float32),
        np.array([50, 50, 40, 10, 7, 3], dtype=np.int64),
        n_rows=2,
    )
    assert recency_rank(batch).tolist() == [0, 0, 1, 2, 0, 1]
    weights = sequence_weights(batch, np.ones(6, dtype=np.float32), recency_decay=0.5, max_history=3)
    assert weights.tolist() == [1.0, 1.0, 0.5, 0.0, 1.0, 0.5]


def test_transition_counts_window_decay_and_repeats() -> None:
    # u1: a a b c (the repeated a collapses); u2: c a
    log = Interactions.from_records(
        [("u1", "a", 1.0, 1), ("u1", "a", 1.0, 2), ("u1", "b", 1.0, 3), ("u1", "c", 1.0, 4)]
        + [("u2", "c", 1.0, 1), ("u2", "a", 1.0, 2), ("u2", "x", 0.0, 3)]
    )
    a, b, c = (log.item_ids.index(i) for i in "abc")
    cfg = RecommenderConfig(transition_window=2, transition_decay=0.5)
    counts = transition_counts(log, cfg).toarray()
    expected = np.zeros_like(counts)
    expected[a, b] = 1.0
    expected[b, c] = 1.0
    expected[a, c] = 0.5
    expected[c, a] = 1.0
    np.testing.assert_allclose(counts, expected)
    backward = transition_counts(log, cfg.model_copy(update={"transition_backward": 0.25})).toarray()
    assert backward[b, a] == 0.25 and backward[c, a] == 1.0 + 0.125
    gap = transition_counts(log, cfg.model_copy(update={"transition_max_gap_hours": 1e-9})).toarray()
    assert gap.sum() == 0.0
    normalised = transition_matrix(log, cfg.model_copy(update={"transition_norm": 1.0})).toarray()
    np.testing.assert_allclose(normalised[a], expected[a] / 1.5, rtol=1e-6)


def test_normalise_and_prune_rows() -> None:
    m = sp.csr_matrix(np.array([[4.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 5.0]], dtype=np.float32))
    np.testing.assert_allclose(normalise_rows(m, 1.0).toarray()[0], [0.5, 0.0, 0.125, 0.375])
    np.testing.assert_allclose(normalise_rows(m, 0.0).toarray(), m.toarray())
    pruned = prune_rows(m, 2).toarray()
    np.testing.assert_array_equal(pruned, [[4.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 5.0]])


def _prune_by_sorting(m: sp.csr_matrix, k: int) -> np.ndarray:
    """The reference: per row, entries sorted by value (descending), then column; the first ``k`` kept."""
    dense = np.zeros(m.shape, dtype=np.float32)
    for r in range(m.shape[0]):
        cols, vals = m.indices[m.indptr[r] : m.indptr[r + 1]], m.data[m.indptr[r] : m.indptr[r + 1]]
        for j in np.lexsort((cols, -vals))[:k]:
            dense[r, cols[j]] = vals[j]
    return dense


@pytest.mark.parametrize("k", [1, 3, 8, 40])
def test_prune_rows_keeps_the_largest_and_breaks_ties_by_lower_column(k: int) -> None:
    rng = np.random.default_rng(k)
    dense = rng.choice(np.array([0, 0, 0, 1, 2, 2, 3, 0.5, -1], dtype=np.float32), size=(30, 50))  # many ties
    m = sp.csr_matrix(dense)
    m.sort_indices()
    np.testing.assert_array_equal(prune_rows(m, k).toarray(), _prune_by_sorting(m, k))
    assert prune_rows(m, k).has_sorted_indices


def test_top_n_orders_by_score_then_code_and_respects_exclusions() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    batch = aggregate(
        np.array([0], dtype=np.int64), np.array([3], dtype=np.int32), np.ones(1, np.float32), np.zeros(1, np.int64), 2
    )
    exclude(scores, batch, exclude_history=True, excluded=[np.array([], np.int64), np.array([4])])
    idx, vals = top_n(scores, 3)
    assert idx.tolist() == [[1, 2, 0], [3, 2, 1]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.5, 0.1])
    allowed = np.array([True, False, False, False, True])
    exclude(scores, batch, exclude_history=False, allowed=allowed)
    idx, vals = top_n(scores, 3)
    assert idx[0, :2].tolist() == [0, 4] and np.isneginf(vals[0, 2])
    assert ranks_of(scores, np.array([0]), np.array([4])).tolist() == [2]
    with pytest.raises(ValueError):
        top_n(scores, -1)


def test_top_n_of_one_row_equals_that_row_ranked_in_a_batch() -> None:
    """A request ranks one row (its own fast path); the same row among others goes the general way: same picks,
    with ties (straddling the cut or not), -inf entries and rows shorter than n."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        width = int(rng.integers(1, 60))
        row = rng.integers(0, 6, width).astype(np.float32)  # few distinct values: many ties
        row[rng.random(width) < 0.3] = -np.inf
        n = int(rng.integers(1, 70))
        batch = np.vstack([row, rng.random(width).astype(np.float32)])  # two rows: never the one-row path
        idx, vals = top_n(row[None, :].copy(), n)
        ref_idx, ref_vals = top_n(batch, n)
        assert idx.tolist() == ref_idx[:1].tolist(), trial
        assert vals.tolist() == ref_vals[:1].tolist(), trial
        assert idx.dtype == np.int64 and vals.dtype == np.float32
