"""The trainer's parts: the holdout check's user sample, the gate (against the served version and every baseline),
the training child's priority."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from core.settings import Settings
from recommender.config import RecommenderConfig
from recommender.data import Interactions
from recommender.evaluation.baselines import global_scores, make_baseline
from stream.retrain import background_child
from trainer.training import (
    ENGINE,
    gate,
    global_list_metrics,
    holdout_cases,
    holdout_metrics,
    holdout_split,
    judge,
    sample_users,
)

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def popular_world(users: int = 400, items: int = 300, per_user: int = 10, seed: int = 1) -> Interactions:
    """No structure but popularity: every user draws items at random from one strongly skewed distribution."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1) ** 1.3
    p /= p.sum()
    records = [
        (f"u{u}", f"i{rng.choice(items, p=p)}", 1.0, T0 + int(t))
        for u in range(users)
        for t in np.sort(rng.integers(0, 30 * DAY_MS, per_user))
    ]
    return Interactions.from_records(records)


def cluster_world(
    users: int = 400, clusters: int = 20, size: int = 10, per_user: int = 10, seed: int = 2
) -> Interactions:
    """Strong collaborative and sequential structure: each user walks through their cluster's items in order; every
    item is about as popular as any other."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(users):
        start = int(rng.integers(size))
        for k, t in enumerate(np.sort(rng.integers(0, 30 * DAY_MS, per_user))):
            records.append((f"u{u}", f"c{u % clusters}-{(start + k) % size}", 1.0, T0 + int(t)))
    return Interactions.from_records(records)


def _log(users: int, per_user: int) -> Interactions:
    records = [
        (f"c:u{u}", f"i{(u + k) % 40}", 1.0, 1_000 + k * users + u) for u in range(users) for k in range(per_user)
    ]
    return Interactions.from_records(records)


def test_sample_keeps_the_judged_users_and_draws_the_rest() -> None:
    log = _log(200, 5)
    keep = np.array([3, 7, 150], dtype=np.int64)
    sample = sample_users(log, keep, 50)
    users = set(np.unique(sample.users).tolist())
    assert len(users) == 50 and {3, 7, 150} <= users
    assert sample.user_ids == log.user_ids and sample.item_ids == log.item_ids
    assert len(sample) == 50 * 5  # every interaction of a drawn user, none of the others


def test_sample_of_zero_or_more_users_than_present_is_the_whole_log() -> None:
    log = _log(30, 3)
    keep = np.array([0], dtype=np.int64)
    assert sample_users(log, keep, 0) is log
    assert sample_users(log, keep, 30) is log


def test_holdout_trains_on_the_sample_and_judges_the_same_users() -> None:
    log = _log(400, 6)
    whole = holdout_split(log, 0.2, max_users=40)
    sampled = holdout_split(log, 0.2, max_users=40, train_users=100)
    assert whole is not None and sampled is not None
    assert np.array_equal(whole.test_users, sampled.test_users)
    assert len(np.unique(sampled.train.users)) == 100 < len(np.unique(whole.train.users))
    assert set(sampled.test_users.tolist()) <= set(np.unique(sampled.train.users).tolist())


def test_the_training_child_runs_at_the_lowest_priority_as_a_batch_job() -> None:
    probe = "import os; print(os.nice(0), os.sched_getscheduler(0) == os.SCHED_BATCH)"
    out = subprocess.run(
        [sys.executable, "-c", probe], preexec_fn=background_child, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["19", "True"]


def test_gate_serves_the_best_baseline_when_it_beats_the_candidate() -> None:
    lost = gate(0.10, 0.09, {"popularity": 0.12, "trending": 0.11}, margin=0.05)
    assert (lost.promote, lost.serve) == (True, "popularity")  # promoted (fresher item lists), popularity serves
    assert "popularity serves the personal lists" in lost.reason
    won = gate(0.13, 0.09, {"popularity": 0.12, "trending": 0.11}, margin=0.05)
    assert (won.promote, won.serve) == (True, ENGINE)
    # a margin over the best baseline: 0.13 < 0.12 * 1.1
    assert gate(0.13, 0.09, {"popularity": 0.12}, margin=0.05, baseline_margin=0.1).serve == "popularity"
    # no hits for anyone: the engine (a tie)
    assert gate(0.0, None, {"popularity": 0.0}, margin=0.05).serve == ENGINE


def test_gate_promotes_a_version_that_beats_the_served_baseline() -> None:
    # below the served version's recorded figure, but better than what the shop sees now: the baseline
    beats = gate(0.08, 0.10, {"popularity": 0.07}, margin=0.05, baseline_served="popularity")
    assert (beats.promote, beats.serve) == (True, ENGINE)
    assert "beats the served baseline" in beats.reason
    # without a baseline served, the served version's figure decides as before
    refused = gate(0.08, 0.10, {"popularity": 0.07}, margin=0.05)
    assert (refused.promote, refused.serve) == (False, ENGINE)
    both_lose = gate(0.08, 0.10, {"popularity": 0.09}, margin=0.05, baseline_served="popularity")
    assert (both_lose.promote, both_lose.serve) == (False, "popularity")


def test_gate_without_enough_data_serves_the_blend_and_says_why() -> None:
    young = gate(None, None, {}, margin=0.05, unjudged_reason="too little recent data: 3 users")
    assert (young.promote, young.serve) == (True, ENGINE)
    assert young.reason.startswith("too little recent data: 3 users") and "blend" in young.reason


def test_popularity_wins_the_gate_on_a_log_without_structure() -> None:
    result = judge(popular_world(), RecommenderConfig(), Settings(holdout_min_users=20), None, None)
    assert result.view == "time-split" and set(result.baselines) == {"popularity", "trending"}
    best = max(figures["ndcg@10"] for figures in result.baselines.values())
    assert result.candidate["ndcg@10"] < best
    assert result.decision.serve in {"popularity", "trending"}
    assert result.decision.serve == max(result.baselines, key=lambda name: result.baselines[name]["ndcg@10"])


def test_the_engine_wins_the_gate_on_a_log_with_collaborative_structure() -> None:
    result = judge(cluster_world(), RecommenderConfig(), Settings(holdout_min_users=20), None, None)
    assert result.decision.serve == ENGINE and result.decision.promote
    best = max(figures["ndcg@10"] for figures in result.baselines.values())
    assert result.candidate["ndcg@10"] > 2 * best


def test_a_re_buy_window_judges_on_every_item_with_the_personal_baselines() -> None:
    settings = Settings(holdout_min_users=20, rebuy_window_days=7)
    result = judge(cluster_world(), RecommenderConfig(), settings, None, None)
    assert result.view == "repeat"
    assert set(result.baselines) == {"popularity", "trending", "buy-again", "recently-viewed"}


def test_a_young_shop_is_not_judged_and_nothing_fails() -> None:
    tiny = Interactions.from_records([("u", "a", 1.0, T0), ("u", "b", 1.0, T0 + 1)])
    result = judge(tiny, RecommenderConfig(), Settings(), None, None)
    assert result.decision.serve == ENGINE and result.decision.promote
    assert result.baselines == {} and "too little data" in result.decision.reason
    few = judge(cluster_world(users=30), RecommenderConfig(), Settings(holdout_min_users=50), None, None)
    assert few.decision.serve == ENGINE and few.baselines == {}
    assert "fewer than ECRM_HOLDOUT_MIN_USERS (50)" in few.decision.reason


def test_the_gate_window_is_the_newest_days_when_set() -> None:
    log = cluster_world()
    settings = Settings(holdout_min_users=20, gate_window_days=3)
    split = holdout_split(log, 0.1, 1000, window_ms=3 * DAY_MS)
    assert split is not None and split.cutoff_ts == int(log.ts.max()) + 1 - 3 * DAY_MS
    assert judge(log, RecommenderConfig(), settings, None, None).candidate["users"] == split.n_test_users


def test_a_list_the_same_for_everyone_is_judged_as_rank_batch_judges_it() -> None:
    log = popular_world()
    split = holdout_split(log, 0.1, 1000)
    assert split is not None
    cases = holdout_cases(split)
    for name in ("popularity", "trending"):
        model = make_baseline(name, 24, served=True).fit(split.train)
        scores = global_scores(model)
        assert scores is not None
        for exclude in (True, False):
            fast = global_list_metrics(scores, model.item_ids, cases, exclude_history=exclude)
            assert fast == holdout_metrics(model, split, exclude_history=exclude, cases=cases)
            assert fast["hr@10"] > 0


def test_the_gate_considers_only_the_baselines_it_may_serve() -> None:
    only_trending = Settings(holdout_min_users=20, gate_baselines=" trending ")
    assert only_trending.gate_baseline_names == ("trending",)
    result = judge(popular_world(), RecommenderConfig(), only_trending, None, None)
    assert set(result.baselines) == {"trending"}
    none = judge(popular_world(), RecommenderConfig(), Settings(holdout_min_users=20, gate_baselines=""), None, None)
    assert none.baselines == {} and none.decision.serve == ENGINE  # popularity would have won: not allowed
    with pytest.raises(ValueError, match="unknown baseline"):
        Settings(gate_baselines="popularity,random")
