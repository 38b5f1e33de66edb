"""Learning the ranking stage from the shop's own log, at every fit (see docs/recommender.md, "Ranking stage").

1. Cut the log at a past time: the newest ``ranker_window`` share of its interactions is the label window.
2. Fit the engine's base model (the blend, no ranker) on the log before the cut-off (on a sample of its users:
   the queried ones and others, ``ranker_train_users`` in all) and count the items as of the cut-off.
3. For each query user (a history before the cut-off and a positive interaction after it): score the history
   through the served code, pick the candidates (:func:`recommender.ranker.select_candidates`), compute their
   features (:func:`recommender.features.features`) and label them with the window after the cut-off.
4. Train LambdaMART on four fifths of the queries; keep it only when it beats the blend on the fifth left out,
   both over every item (repeat purchases) and over new items only.

Too little data (too few interactions or query users) leaves the blend alone, with the reason recorded. The stage
stops gathering queries and adding trees once its time budget (``ranker_time_share`` of the base fit, at least
``ranker_min_seconds``) is spent.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from recommender.config import RecommenderConfig
from recommender.data import FloatArray, IntArray, Interactions, interactions_batch
from recommender.features import NAMES, ItemStats
from recommender.model import Engine, EngineScores
from recommender.ranker import Ranker, RankerParams, ndcg, train

SCORE_CELLS = 8_000_000  # users x items per scored chunk while gathering training rows
VALIDATION_EVERY = 5  # every fifth query validates


def fit_ranker(log: Interactions, cfg: RecommenderConfig, base_s: float) -> tuple[Ranker | None, dict[str, Any]]:
    """The ranker learned from ``log`` and what happened, or None and the reason the blend serves alone."""
    started = time.perf_counter()
    budget = max(cfg.ranker_time_share * base_s, cfg.ranker_min_seconds)
    info: dict[str, Any] = {"used": False, "budget_s": round(budget, 3)}
    if not cfg.ranker:
        return None, info | {"reason": "off in the configuration (ranker: false)"}
    try:
        ranker, more = _fit(log, cfg, budget, started)
    except _TooLittle as exc:
        ranker, more = None, {"reason": f"too little data: {exc}"}
    more["seconds"] = round(time.perf_counter() - started, 3)
    return ranker, info | more


class _TooLittle(Exception):
    pass


def _fit(log: Interactions, cfg: RecommenderConfig, budget: float, started: float) -> tuple[Ranker | None, dict[str, Any]]:
    need = cfg.ranker_min_queries
    if len(log) < 10 * need:
        raise _TooLittle(f"{len(log)} interactions (the ranking stage needs at least {10 * need})")
    cutoff = int(np.quantile(log.ts, 1.0 - cfg.ranker_window))
    before = log.ts < cutoff
    if not before.any() or before.all():
        raise _TooLittle("the log spans too little time for a cut-off")
    past = log.select(before)
    after = ~before & (log.weights > 0)
    n_items = log.n_items
    future = np.unique(log.users[after].astype(np.int64) * n_items + log.items[after])
    has_past = np.bincount(past.users, minlength=log.n_users) > 0
    queries = np.unique(future // n_items)
    queries = queries[has_past[queries]]
    if queries.size < need:
        raise _TooLittle(f"{queries.size} users with a history and a later interaction (need {need})")
    queries = np.random.default_rng(cfg.random_state or 0).permutation(queries)[: cfg.ranker_max_queries]
    base_cfg = RecommenderConfig.from_mapping({**cfg.model_dump(), "ranker": False})
    base = Engine(base_cfg).fit(_sample_users(past, queries, cfg.ranker_train_users, cfg.random_state or 0))
    stats = ItemStats.fit(past)
    ranking = _with_stats(base, stats, cfg)
    rows = _gather(ranking, past, queries, future, n_items, started + 0.6 * budget)
    if rows is None or rows[3].size < need:
        found = 0 if rows is None else rows[3].size
        raise _TooLittle(f"{found} users with a later interaction among their candidates (need {need})")
    x, labels, history, groups, query_ids = rows
    valid = (np.arange(groups.size) % VALIDATION_EVERY) == 0
    row_valid = np.repeat(valid, groups)
    remaining = budget - (time.perf_counter() - started)
    if remaining <= 0:
        return None, {"reason": f"the time budget ({budget:.1f} s) was spent before training", "queries": groups.size}
    params = RankerParams(cfg.ranker_trees, cfg.ranker_leaves, cfg.ranker_learning_rate, seed=cfg.random_state or 0)
    ranker, cut_short = train(x[~row_valid], labels[~row_valid], groups[~valid], params, remaining)
    figures = _validate(ranker, x[row_valid], labels[row_valid], history[row_valid], groups[valid])
    gains = ranker.booster.feature_importance(importance_type="gain")
    top = [NAMES[k] for k in np.argsort(-gains, kind="stable")[:5].tolist() if gains[k] > 0]
    info: dict[str, Any] = {
        "cutoff_ts": cutoff,
        "queries": int(groups.size),
        "rows": int(labels.size),
        "trees": int(ranker.booster.num_trees()),
        "stopped_by_budget": cut_short,
        "validation": figures,
        "top_features": top,
    }
    wins = figures["ranker_all"] >= figures["blend_all"] and figures["ranker_new"] >= figures["blend_new"]
    if not wins:
        return None, info | {"reason": "the ranker did not beat the blend on the validation users: " + _said(figures)}
    ranker.meta = info
    return ranker, info | {"used": True, "reason": "beats the blend on the validation users: " + _said(figures)}


def _said(f: dict[str, float]) -> str:
    return (
        f"NDCG@10 all items {f['ranker_all']:.4f} vs {f['blend_all']:.4f}, "
        f"new items {f['ranker_new']:.4f} vs {f['blend_new']:.4f}"
    )


def _validate(
    ranker: Ranker, x: np.ndarray, labels: IntArray, history: np.ndarray, groups: IntArray
) -> dict[str, float]:
    scores = ranker.scores(x)
    blend = x[:, NAMES.index("blend_score")]
    new = ~history
    new_groups = np.bincount(np.repeat(np.arange(groups.size), groups)[new], minlength=groups.size)
    return {
        "ranker_all": round(ndcg(scores, labels, groups), 6),
        "blend_all": round(ndcg(blend, labels, groups), 6),
        "ranker_new": round(ndcg(scores[new], labels[new], new_groups), 6),
        "blend_new": round(ndcg(blend[new], labels[new], new_groups), 6),
        "users": float(groups.size),
    }


def _with_stats(base: Engine, stats: ItemStats, cfg: RecommenderConfig) -> Engine:
    """The base model with the item counters as of the cut-off, scored as the served model is."""
    from dataclasses import replace

    ranking = Engine(RecommenderConfig.from_mapping({**cfg.model_dump(), "ranker": True}))
    ranking._state = replace(base.state, stats=stats)
    ranking.metrics = {}
    return ranking


def _gather(
    model: Engine, past: Interactions, queries: IntArray, future: IntArray, n_items: int, deadline: float
) -> tuple[np.ndarray, IntArray, np.ndarray, IntArray, IntArray] | None:
    """Features, labels, whether in the history, group sizes and query users, chunk by chunk until ``deadline``."""
    histories = interactions_batch(past)
    step = max(1, min(2048, SCORE_CELLS // max(n_items, 1)))
    xs: list[np.ndarray] = []
    ys: list[IntArray] = []
    hs: list[np.ndarray] = []
    sizes: list[IntArray] = []
    users: list[IntArray] = []
    for start in range(0, queries.size, step):
        if time.perf_counter() > deadline and sizes:
            break
        chunk = queries[start : start + step]
        batch = histories.take(chunk)
        scored = model.score_batch(batch)
        assert isinstance(scored, EngineScores)
        rows, _cols, x = model.candidate_features(scored, batch)
        items = _cols
        keys = chunk[rows].astype(np.int64) * n_items + items
        label = np.isin(keys, future).astype(np.int64)
        positive = np.bincount(rows, weights=label, minlength=chunk.size) > 0
        keep = positive[rows]
        xs.append(x[keep])
        ys.append(label[keep])
        hs.append(~np.isnan(x[keep, NAMES.index("user_item_recency")]))
        sizes.append(np.bincount(rows[keep], minlength=chunk.size)[positive].astype(np.int64))
        users.append(chunk[positive])
    if not sizes:
        return None
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(hs), np.concatenate(sizes), np.concatenate(users)


def _sample_users(log: Interactions, keep: IntArray, total: int, seed: int) -> Interactions:
    """The interactions of the users ``keep`` and of others drawn at random, ``total`` users in all (0: all)."""
    present = np.bincount(log.users, minlength=log.n_users) > 0
    if total <= 0 or int(present.sum()) <= total:
        return log
    chosen = np.zeros(log.n_users, dtype=bool)
    chosen[keep] = True
    others = np.flatnonzero(present & ~chosen)
    extra = max(total - int(chosen.sum()), 0)
    chosen[np.random.default_rng(seed).choice(others, size=min(extra, others.size), replace=False)] = True
    return log.select(chosen[log.users])


__all__ = ["FloatArray", "fit_ranker"]
