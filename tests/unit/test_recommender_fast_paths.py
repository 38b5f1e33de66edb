"""The request's fast paths give the reference path's results: the numpy tree evaluator is LightGBM's predict to
the bit, the batched features are the per-request features, one shared factorisation gives the same fold-in and
reasons."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import scipy.sparse as sp

from recommender.candidates import pad_rows, sparse_rows
from recommender.data import HistoryBatch, encode
from recommender.factors import FactorPart
from recommender.features import NAMES, Candidates, _rank_in_row, features, reference_now
from recommender.model import EngineScores
from recommender.ranker import Ranker, RankerParams, Trees, train
from recommender.weighting import confidence, position_in_row, recency_rank, sequence_weights
from tests.unit.test_recommender_ranker import FAST, fitted, staples_log


def _data(seed: int, rows: int = 3000, missing: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES))).astype(np.float32)
    x[:, 3] = np.round(x[:, 3] * 3)  # ties at thresholds
    x[rng.random(x.shape) < missing] = np.nan
    x[rng.random(x.shape) < 0.05] = 0.0
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 5], nan=-1.0) + np.isnan(x[:, 7])
    labels = (signal + rng.normal(size=rows) > 1).astype(np.int64)
    return x, labels, np.full(rows // 30, 30, dtype=np.int64)


@pytest.mark.parametrize(("seed", "missing", "params"), [
    (0, 0.2, RankerParams()),
    (1, 0.0, RankerParams(trees=30, leaves=4)),
    (2, 0.5, RankerParams(trees=60, leaves=31, learning_rate=0.2)),
])  # fmt: skip
def test_the_tree_evaluator_is_lightgbm_predict_to_the_bit(seed: int, missing: float, params: RankerParams) -> None:
    x, labels, groups = _data(seed, missing=missing)
    ranker, _ = train(x, labels, groups, params, budget_s=60)
    trees = Trees.from_booster(ranker.booster)
    assert trees is not None
    probe, _, _ = _data(seed + 100, rows=500, missing=missing)
    probe[:7] = np.nan  # whole rows missing
    probe[7:9] = np.inf
    probe[9:11] = -np.inf
    for rows in (probe, x[:1], x[:160]):
        expected = ranker.booster.predict(rows, num_threads=1)
        assert np.array_equal(trees.predict(rows), expected)
    assert np.array_equal(ranker.scores(probe), ranker.reference_scores(probe))
    assert trees.predict(probe[:0]).shape == (0,)


def test_the_thresholds_are_split_exactly() -> None:
    """A value equal to a split's threshold goes left, the next float above it goes right, as in LightGBM."""
    x, labels, groups = _data(3)
    ranker, _ = train(x, labels, groups, RankerParams(trees=20), budget_s=60)
    trees = Trees.from_booster(ranker.booster)
    assert trees is not None
    at = [t for t in trees.thresholds if t.size]
    probe = np.repeat(x[:40], 3, axis=0).astype(np.float64)
    for k, f in enumerate(f for f, t in enumerate(trees.thresholds) if t.size):
        value = trees.thresholds[f][k % trees.thresholds[f].size]
        probe[k * 3 : k * 3 + 3, f] = [value, np.nextafter(value, np.inf), np.nextafter(value, -np.inf)]
    assert at
    assert np.array_equal(trees.predict(probe), ranker.booster.predict(probe, num_threads=1))


def test_a_booster_the_evaluator_cannot_read_keeps_lightgbm() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, len(NAMES)))
    x[:, 2] = rng.integers(0, 5, 400)
    data = lgb.Dataset(x, label=(x[:, 2] == 3).astype(int), feature_name=list(NAMES), categorical_feature=[2],
                       params={"verbose": -1})  # fmt: skip
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5,
                         "cat_smooth": 1}, data, num_boost_round=5)  # fmt: skip
    assert Trees.from_booster(booster) is None
    ranker = Ranker(booster)
    assert ranker.trees is None
    assert np.array_equal(ranker.scores(x.astype(np.float32)), ranker.reference_scores(x.astype(np.float32)))


def test_the_served_ranker_scores_with_the_trees() -> None:
    model = fitted()
    assert model.state.ranker is not None and model.state.ranker.trees is not None
    again = type(model).from_bytes(model.to_bytes())
    assert again.state.ranker is not None and again.state.ranker.trees is not None
    log = staples_log(seed=2)
    histories = [[(log.item_ids[i], 5.0, int(t))
                  for i, t in zip(log.items[log.users == u][:12], log.ts[log.users == u][:12], strict=True)]
                 for u in range(20)]  # fmt: skip
    reference = type(model).from_bytes(model.to_bytes())
    assert reference.state.ranker is not None
    reference.state.ranker.trees = None  # LightGBM's predict
    for h in histories:
        assert model.recommend(h, 10) == reference.recommend(h, 10)
        assert model.recommend(h, 10, exclude_history=False) == reference.recommend(h, 10, exclude_history=False)


def _history(log: Any, user: int, k: int = 12) -> list[tuple[str, float, int]]:
    at = np.flatnonzero(log.users == user)[-k:]
    return [(log.item_ids[int(i)], float(w), int(t)) for i, w, t in zip(log.items[at], log.weights[at], log.ts[at],
                                                                       strict=True)]  # fmt: skip


def test_one_solve_gives_the_fold_in_and_the_reasons_of_two() -> None:
    """The request's one factorisation (:meth:`FactorPart.solve_history`) gives the user vector of the least-squares
    step (``A u = Y' C p`` solved on its own) and the reason shares of :meth:`FactorPart.explain`."""
    rng = np.random.default_rng(9)
    part = FactorPart((rng.standard_normal((300, 16)) * 0.1).astype(np.float32), None, 0.1, 40.0)
    items = rng.choice(300, 12, replace=False).astype(np.int32)
    conf = (rng.random(12) + 0.1).astype(np.float32)
    conf[[2, 5]] = 0.0
    user, solved = part.fold_in_solved(items, conf)
    assert solved is not None
    c = part.alpha * conf.astype(np.float64)
    y = part.item_factors[items].astype(np.float64)
    a = part._gram + (y.T * np.where(c > 0, c - 1.0, 0.0)) @ y
    np.testing.assert_allclose(user[0], np.linalg.solve(a, y.T @ c), rtol=1e-5, atol=1e-7)
    targets = rng.choice(300, 40, replace=False).astype(np.int64)
    np.testing.assert_allclose(part.explain_solved(solved, targets), part.explain(items, conf, targets), rtol=1e-5,
                               atol=1e-8)  # fmt: skip
    assert part.explain_solved(solved, targets)[[2, 5]].max() == 0.0  # no confidence, no share


def test_a_request_reasons_from_its_fold_in_as_from_a_second_solve() -> None:
    """Reason items through the shared solve are those of the separate solve (the dense path of a batch of two)."""
    model = fitted(candidates_min_items=0)
    log = staples_log(seed=3)
    for user in range(15):
        history = _history(log, user)
        batch = model.encode([history])
        scored = model.score_candidates(batch, 20)
        assert isinstance(scored, EngineScores) and scored.solved is not None and scored.codes is not None
        targets = scored.codes[0][scored.codes[0] >= 0]
        unshared = replace(scored, solved=None)
        assert np.array_equal(scored.reasons(0, targets), unshared.reasons(0, targets))


def test_the_candidate_paths_sequential_part_is_the_recomputed_one() -> None:
    model = fitted(candidates_min_items=0)
    log = staples_log(seed=4)
    for user in range(15):
        batch = model.encode([_history(log, user)])
        scored = model.score_candidates(batch, 20)
        assert isinstance(scored, EngineScores) and scored.seq_values is not None and scored.codes is not None
        rows, cols = np.nonzero(scored.codes >= 0)
        recomputed = scored.sequence_at(rows, scored.codes[rows, cols])
        np.testing.assert_allclose(scored.seq_values[rows, cols], recomputed, rtol=1e-5, atol=1e-7)


def test_features_of_a_request_equal_its_rows_features_in_a_batch() -> None:
    """The one-row fast paths of the features (a request) give the rows of a batch's features exactly."""
    model = fitted()
    state = model.state
    assert state.stats is not None
    log = staples_log(seed=5)
    histories = [_history(log, user) for user in range(6)]
    batch = model.encode(histories)
    scored = model.score_batch(batch)
    assert isinstance(scored, EngineScores)
    rows, cols, _, x = model.candidate_features(scored, batch)
    for r, history in enumerate(histories):
        one = model.encode([history])
        one_scored = model.score_batch(one)
        assert isinstance(one_scored, EngineScores)
        mine = rows == r
        cands = Candidates(np.zeros(int(mine.sum()), dtype=np.int64), cols[mine], scored.values[rows[mine], cols[mine]],
                           scored.sequence_at(rows[mine], cols[mine]))  # fmt: skip
        alone = features(state.stats, state.transitions, one, cands, reference_now(state.stats, one))
        np.testing.assert_array_equal(alone, x[mine])


def test_rank_in_row_one_row_equals_the_general_order() -> None:
    rng = np.random.default_rng(10)
    for _ in range(100):
        n = int(rng.integers(1, 200))
        values = rng.integers(0, 6, n).astype(np.float32)  # many ties
        two = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(3, dtype=np.int64)])
        general = _rank_in_row(two, np.concatenate([values, np.zeros(3, dtype=np.float32)]))[:n]
        assert np.array_equal(_rank_in_row(np.zeros(n, dtype=np.int64), values), general)


def _random_history(rng: np.random.Generator, known: int) -> list[tuple[str, float, int]]:
    """Repeated items, unknown items, ties in time, zero and negative weights, weights float32 rounds."""
    weights = [1.0, 0.1, 0.3, 2.5, -1.0, 0.0, 1e-8, 7.7, 1 / 3]
    return [(f"i{int(rng.integers(0, known + 10))}", float(rng.choice(weights)), int(rng.integers(0, 6)) * 1000)
            for _ in range(int(rng.integers(0, 30)))]  # fmt: skip


def _first_row(batch: HistoryBatch) -> HistoryBatch:
    return batch.take([0])


def test_encoding_one_history_is_the_batch_path_to_the_bit() -> None:
    """A request's history (a batch of one, plain Python) is encoded as the same history in a batch of two."""
    rng = np.random.default_rng(11)
    index = {f"i{k}": k for k in range(40)}
    for _ in range(2000):
        history = _random_history(rng, 40)
        one = encode([history], index)
        two = _first_row(encode([history, [("i1", 1.0, 5)]], index))
        for mine, theirs in zip((one.indptr, one.items, one.weights, one.ts), (two.indptr, two.items, two.weights,
                                                                                two.ts), strict=True):  # fmt: skip
            assert mine.dtype == theirs.dtype
            assert mine.tobytes() == theirs.tobytes()
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="finite"):
            encode([[("i1", 1.0, 0), ("i2", bad, 1)]], index)
        with pytest.raises(ValueError, match="finite"):
            encode([[("i1", 1.0, 0), ("i2", bad, 1)], []], index)


def test_a_requests_weights_and_transition_rows_are_the_batch_paths() -> None:
    """The one-row paths of the recency weights and of the summed transition rows give a batch row's values."""
    rng = np.random.default_rng(12)
    index = {f"i{k}": k for k in range(60)}
    m = sp.random(60, 60, density=0.2, random_state=1, format="csr", dtype=np.float32)
    for _ in range(500):
        history = _random_history(rng, 60)
        one = encode([history], index)
        two = encode([history, [("i1", 1.0, 5), ("i2", 2.0, 4)]], index)
        size = one.items.size
        conf_one, conf_two = confidence(one, 7 * 86_400_000.0), confidence(two, 7 * 86_400_000.0)
        assert conf_one.tobytes() == conf_two[:size].tobytes()
        assert np.array_equal(recency_rank(one), recency_rank(two)[:size])
        assert np.array_equal(position_in_row(one), position_in_row(two)[:size])
        for keep in (1, 3, 50):
            w_one = sequence_weights(one, conf_one, 0.8, keep)
            w_two = sequence_weights(two, conf_two, 0.8, keep)
            assert w_one.tobytes() == w_two[:size].tobytes()
        rows_one, rows_two = sparse_rows(one, w_one, m), sparse_rows(two, w_two, m)
        end = int(rows_two.indptr[1])
        assert np.array_equal(rows_one.indptr, [0, end])
        assert rows_one.indices.tobytes() == rows_two.indices[:end].tobytes()
        assert rows_one.data.tobytes() == rows_two.data[:end].tobytes()


def test_one_row_is_padded_as_in_a_batch() -> None:
    codes, values = np.asarray([3, 5, 9], dtype=np.int64), np.asarray([0.5, -1.0, 2.0], dtype=np.float32)
    one_codes, one_values = pad_rows([codes], [values])
    two_codes, two_values = pad_rows([codes, codes[:1]], [values, values[:1]])
    assert np.array_equal(one_codes, two_codes[:1]) and one_codes.dtype == two_codes.dtype
    assert np.array_equal(one_values, two_values[:1]) and one_values.dtype == two_values.dtype


_: Any = FAST
