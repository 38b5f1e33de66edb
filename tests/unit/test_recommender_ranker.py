"""The learned ranking stage: one feature function offline and online, determinism, the time budget, the blob,
the fallback on too little data, explanations, and that it learns a signal the blend misses."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from recommender import Engine, Interactions, RecommenderConfig
from recommender.data import interactions_batch
from recommender.evaluation.metrics import MetricSums
from recommender.evaluation.protocols import time_split
from recommender.features import FEATURES, NAMES
from recommender.model import EngineScores

DAY = 86_400_000
T0 = 1_700_000_000_000
FAST: dict[str, Any] = {"factors": 8, "iterations": 5, "ranker_min_queries": 30, "ranker_trees": 40}


def staples_log(users: int = 300, items: int = 150, days: int = 60, seed: int = 1) -> Interactions:
    """A shop of consumables: every customer re-buys a few staples of their own (the items of most weight), and
    views popular items now and then; the repeat signal dominates what they do next."""
    rng = np.random.default_rng(seed)
    popular = rng.permutation(items)[:15]
    records: list[tuple[str, str, float, int]] = []
    for u in range(users):
        staples = rng.choice(items, size=4, replace=False)
        favourite = rng.dirichlet(np.ones(4) * 0.5)
        for _ in range(int(rng.integers(12, 25))):
            t = T0 + int(rng.integers(0, days * DAY))
            if rng.random() < 0.7:
                item = int(rng.choice(staples, p=favourite))
                records.append((f"u{u}", f"i{item}", 5.0, t))
            else:
                records.append((f"u{u}", f"i{int(rng.choice(popular))}", 1.0, t))
    records.sort(key=lambda r: r[3])
    return Interactions.from_records(records)


@cache
def fitted(**changes: Any) -> Engine:
    return Engine(RecommenderConfig(**{**FAST, **changes})).fit(staples_log())


def ndcg_repeat(model: Engine, log: Interactions) -> float:
    split = time_split(log, quantile=0.8, repeats=True)
    histories = interactions_batch(split.train).take(split.test_users)
    scored = model.masked_scores(histories, exclude_history=False)
    from recommender.ranking import top_n

    top, vals = top_n(scored.values, 10)
    sums = MetricSums(k=10, n_items=model.n_items)
    rows = np.repeat(np.arange(split.n_test_users), np.diff(split.test_indptr))
    best = np.full(split.n_test_users, -np.inf, dtype=np.float32)
    np.maximum.at(best, rows, scored.values[rows, split.test_items])
    ranks = (scored.values >= best[:, None]).sum(axis=1)
    sums.add(top, np.isfinite(vals), split.test_indptr, split.test_items, ranks)
    return sums.result()["ndcg@10"]


def test_the_feature_list_is_declared_once() -> None:
    assert len(NAMES) == len(set(NAMES)) == len(FEATURES)
    assert all(f.description for f in FEATURES)


def test_the_ranker_learns_the_repeat_signal_the_blend_misses() -> None:
    log = staples_log()
    split = time_split(log, quantile=0.8, repeats=True)
    ranked = Engine(RecommenderConfig(**FAST)).fit(split.train)
    assert ranked.ranker_info["used"], ranked.ranker_info
    assert ranked.ranker_views["repeat"]
    blend = ranked.with_scoring(ranker=False)
    with_ranker, without = ndcg_repeat(ranked, log), ndcg_repeat(blend, log)
    assert with_ranker > 1.2 * without, (with_ranker, without)
    assert "user_item_weight" in ranked.ranker_info["top_features"] or "user_weight_share" in str(
        ranked.ranker_info["top_features"]
    )


def test_features_offline_equal_features_online() -> None:
    """The batch of the evaluation (codes from the log) and a request (item ids, weights, times) give the very
    same features and scores for the same user."""
    log = staples_log()
    model = fitted()
    assert model.uses_ranker
    batch = interactions_batch(log).take([3, 7])
    offline = model.score_batch(batch)
    assert isinstance(offline, EngineScores)
    rows_off, cols_off, _, x_off = model.candidate_features(offline, batch)
    ids = log.item_ids
    for r in (0, 1):
        sl = batch.row(r)
        history = [
            (ids[i], float(w), int(t)) for i, w, t in zip(batch.items[sl], batch.weights[sl], batch.ts[sl], strict=True)
        ]
        online_batch = model.encode([history])
        online = model.score_batch(online_batch)
        assert isinstance(online, EngineScores)
        rows_on, cols_on, _, x_on = model.candidate_features(online, online_batch)
        mine = rows_off == r
        np.testing.assert_array_equal(cols_on, cols_off[mine])
        np.testing.assert_allclose(x_on, x_off[mine], rtol=1e-4, atol=1e-5, equal_nan=True)  # fold-in: float32
        recs = model.recommend(history, 5)
        offline_top = model.rank_batch(batch.take([r]), 5, reasons=False)[0]
        assert [x.item_id for x in recs] == [x.item_id for x in offline_top]


def test_two_fits_give_the_same_ranker() -> None:
    log = staples_log(seed=2)
    a = Engine(RecommenderConfig(**FAST, ranker_min_seconds=60)).fit(log)
    b = Engine(RecommenderConfig(**FAST, ranker_min_seconds=60)).fit(log)
    assert a.state.ranker is not None and b.state.ranker is not None
    assert a.state.ranker.booster.model_to_string() == b.state.ranker.booster.model_to_string()
    history = [("i1", 5.0, T0), ("i2", 1.0, T0 + DAY)]
    assert a.recommend(history, 10) == b.recommend(history, 10)


def test_the_time_budget_is_kept() -> None:
    log = staples_log(seed=3)
    spent = Engine(RecommenderConfig(**FAST, ranker_time_share=0.0, ranker_min_seconds=0.0)).fit(log)
    info = spent.ranker_info
    assert not info["used"] and "time budget" in info["reason"], info
    short = Engine(RecommenderConfig(**{**FAST, "ranker_trees": 5000}, ranker_time_share=0.0,
                                     ranker_min_seconds=0.5)).fit(log)  # fmt: skip
    info = short.ranker_info
    assert info["seconds"] < 0.5 + 1.0, info  # one tree and the bookkeeping past the budget at most
    assert info.get("stopped_by_budget") or "time budget" in info["reason"], info


def test_the_blob_keeps_the_ranker() -> None:
    model = fitted()
    again = Engine.from_bytes(model.to_bytes())
    assert again.ranker_info == model.ranker_info and again.uses_ranker
    assert again.state.stats is not None and model.state.stats is not None
    np.testing.assert_array_equal(again.state.stats.counts, model.state.stats.counts)
    history = [("i3", 5.0, T0), ("i9", 1.0, T0 + DAY)]
    assert again.recommend(history, 10) == model.recommend(history, 10)
    assert again.recommend(history, 10, exclude_history=False) == model.recommend(history, 10, exclude_history=False)


def test_too_little_data_serves_the_blend_with_a_reason() -> None:
    log = staples_log(users=8, seed=4)
    model = Engine(RecommenderConfig(**FAST)).fit(log)
    info = model.ranker_info
    assert not info["used"] and info["reason"].startswith("too little data"), info
    assert not model.uses_ranker
    blend = Engine(RecommenderConfig(**FAST, ranker=False)).fit(log)
    history = [("i1", 5.0, T0)]
    assert [r.item_id for r in model.recommend(history, 5)] == [r.item_id for r in blend.recommend(history, 5)]
    assert model.explain(history, ["i2"]) == {}
    assert Engine.from_bytes(model.to_bytes()).ranker_info == info


def test_a_single_query_user_is_too_little_and_fails_nothing() -> None:
    log = staples_log(users=40, seed=5)
    model = Engine(RecommenderConfig(**{**FAST, "ranker_min_queries": 1, "ranker_cutoffs": 1})).fit(
        log.select(np.isin(log.users, [0, 1]) | (log.ts < np.quantile(log.ts, 0.8)))
    )
    assert not model.uses_ranker or model.ranker_info["used"]
    assert model.recommend([("i1", 5.0, T0)], 3)


def test_the_ranker_can_be_switched_off_when_scoring() -> None:
    model = fitted()
    off = model.with_scoring(ranker=False)
    assert not off.uses_ranker and not off.ranker_info["used"]


def test_explain_names_the_top_features_of_an_item() -> None:
    model = fitted()
    history = [("i3", 5.0, T0), ("i9", 1.0, T0 + DAY)]
    recs = model.recommend(history, 5, exclude_history=False)
    explained = model.explain(history, [r.item_id for r in recs], exclude_history=False, top=3)
    assert set(explained) == {r.item_id for r in recs}
    for features in explained.values():
        assert len(features) == 3
        assert all(f["feature"] in NAMES for f in features)
        sizes = [abs(float(f["contribution"])) for f in features]
        assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("candidates_min_items", [0])
def test_the_candidate_path_is_re_ranked_too(candidates_min_items: int) -> None:
    model = fitted()
    history = [("i3", 5.0, T0), ("i9", 1.0, T0 + DAY)]
    exact = model.recommend(history, 5, exclude_history=False)
    via_candidates = model.with_scoring(candidates_min_items=candidates_min_items).recommend(
        history, 5, exclude_history=False
    )
    assert [r.item_id for r in via_candidates] == [r.item_id for r in exact]


def test_item_and_cart_lists_come_from_the_blend() -> None:
    model = fitted()
    assert model.uses_ranker
    blend = model.with_scoring(ranker=False)
    assert model.similar_items("i3", 5) == blend.similar_items("i3", 5)
    assert model.cart_items(["i3", "i9"], 5) == blend.cart_items(["i3", "i9"], 5)
