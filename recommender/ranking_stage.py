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
``ranker_min_seconds``) is spent; both are CPU seconds of the process, so a machine busy with other work does not
shrink the stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from recommender.config import RecommenderConfig
from recommender.data import IntArray, Interactions, interactions_batch
from recommender.features import NAMES, ItemStats
from recommender.model import Engine, EngineScores
from recommender.ranker import Ranker, RankerParams, ndcg, train, wins

SCORE_CELLS = 8_000_000  # users x items per scored chunk while gathering training rows
EPOCH_2000_MS = 946_684_800_000  # the event schema's timestamp floor (ECRM_TIMESTAMP_FLOOR)
VALIDATION_EVERY = 5  # every fifth query validates
WIN_Z = 1.64  # the ranker serves a kind of list only where it beats the blend by this many standard errors


def fit_ranker(log: Interactions, cfg: RecommenderConfig, base_s: float) -> tuple[Ranker | None, dict[str, Any]]:
    """The ranker learned from ``log`` and what happened, or None and the reason the blend serves alone."""
    started = time.process_time()
    budget = max(cfg.ranker_time_share * base_s, cfg.ranker_min_seconds)
    info: dict[str, Any] = {"used": False, "budget_s": round(budget, 3)}
    if not cfg.ranker:
        return None, info | {"reason": "off in the configuration (ranker: false)", "seconds": 0.0}
    if len(log) and int(log.ts.min()) < EPOCH_2000_MS:
        return None, info | {"reason": "the log has no real times (before 2000-01-01, e.g. positions in a sequence): "
                             "the ranking stage learns from time windows"}  # fmt: skip
    try:
        ranker, more = _fit(log, cfg, budget, started)
    except _TooLittle as exc:
        ranker, more = None, {"reason": f"too little data: {exc}"}
    except lgb.basic.LightGBMError as exc:  # the blend still serves: a ranker is an improvement, not a must
        ranker, more = None, {"reason": f"LightGBM could not learn a ranker: {exc}"}
    more["seconds"] = round(time.process_time() - started, 3)
    return ranker, info | more


class _TooLittle(Exception):
    pass


def _fit(
    log: Interactions, cfg: RecommenderConfig, budget: float, started: float
) -> tuple[Ranker | None, dict[str, Any]]:
    need = cfg.ranker_min_queries
    if len(log) < 10 * need:
        raise _TooLittle(f"{len(log)} interactions (the ranking stage needs at least {10 * need})")
    parts: list[_Rows] = []
    cutoffs: list[int] = []
    deadline = started + 0.45 * budget
    for k in range(cfg.ranker_cutoffs):
        if parts and time.process_time() > deadline:
            break
        lo = 1.0 - (k + 1) * cfg.ranker_window
        if lo <= 0.05:
            break
        cutoff = int(np.quantile(log.ts, lo))
        end = int(np.quantile(log.ts, lo + cfg.ranker_window)) if k else None
        rows = _cutoff_rows(log, cfg, cutoff, end, deadline)
        if rows is not None:
            parts.append(rows)
            cutoffs.append(cutoff)
    found = sum(p.groups.size for p in parts)
    if found < need:
        raise _TooLittle(f"{found} users with a later interaction among their candidates (need {need})")
    x = np.concatenate([p.x for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    history = np.concatenate([p.history for p in parts])
    groups = np.concatenate([p.groups for p in parts])
    valid = (np.arange(groups.size) % VALIDATION_EVERY) == 0
    if valid.all():
        raise _TooLittle(f"{found} users with a later interaction among their candidates: none left to train on")
    row_valid = np.repeat(valid, groups)
    remaining = budget - (time.process_time() - started)
    if remaining <= 0:
        return None, {"reason": f"the time budget ({budget:.1f} s) was spent before training", "queries": found}
    tx, ty, tg = _with_new_groups(x[~row_valid], labels[~row_valid], history[~row_valid], groups[~valid])
    params = RankerParams(cfg.ranker_trees, cfg.ranker_leaves, cfg.ranker_learning_rate, seed=cfg.random_state or 0)
    ranker, cut_short = train(tx, ty, tg, params, remaining)
    figures, views = _validate(ranker, x[row_valid], labels[row_valid], history[row_valid], groups[valid])
    if not cfg.ranker_gate:
        views = {"repeat": True, "new": True}
    gains = ranker.booster.feature_importance(importance_type="gain")
    top = [NAMES[k] for k in np.argsort(-gains, kind="stable")[:5].tolist() if gains[k] > 0]
    info: dict[str, Any] = {
        "cutoffs_ts": cutoffs,
        "queries": found,
        "rows": int(labels.size),
        "trees": int(ranker.booster.num_trees()),
        "stopped_by_budget": cut_short,
        "validation": figures,
        "views": views,
        "top_features": top,
    }
    if not any(views.values()):
        return None, info | {"reason": "the ranker did not beat the blend on the validation users: " + _said(figures)}
    ranker.meta = info
    where = " and ".join(k for k, v in (("lists with the user's own items", views["repeat"]),
                                          ("lists of new items", views["new"])) if v)  # fmt: skip
    return ranker, info | {"used": True, "reason": f"re-ranks {where}: " + _said(figures)}


@dataclass(frozen=True, slots=True)
class _Rows:
    x: np.ndarray
    labels: IntArray
    history: np.ndarray
    groups: IntArray


def _cutoff_rows(
    log: Interactions, cfg: RecommenderConfig, cutoff: int, end: int | None, deadline: float
) -> _Rows | None:
    """The labelled candidate rows of one cut-off (labels: positive interactions from it until ``end``)."""
    before = log.ts < cutoff
    if not before.any() or before.all():
        return None
    past = log.select(before)
    after = ~before & (log.weights > 0)
    if end is not None:
        after &= log.ts < end
    n_items = log.n_items
    future = np.unique(log.users[after].astype(np.int64) * n_items + log.items[after])
    has_past = np.bincount(past.users, minlength=log.n_users) > 0
    queries = np.unique(future // n_items)
    queries = queries[has_past[queries]]
    if queries.size == 0:
        return None
    queries = np.random.default_rng(cfg.random_state or 0).permutation(queries)[: cfg.ranker_max_queries]
    base_cfg = RecommenderConfig.from_mapping({**cfg.model_dump(), "ranker": False})
    base = Engine(base_cfg).fit(_sample_users(past, queries, cfg.ranker_train_users, cfg.random_state or 0))
    ranking = _with_stats(base, ItemStats.fit(past), cfg)
    return _gather(ranking, past, queries, future, n_items, deadline)


def _with_new_groups(
    x: np.ndarray, labels: IntArray, history: np.ndarray, groups: IntArray
) -> tuple[np.ndarray, IntArray, IntArray]:
    """The training groups plus, per group, one of its new items only (when one of them is relevant): the ranker
    learns to order both lists that may hold the user's own items and lists without them."""
    owner = np.repeat(np.arange(groups.size), groups)
    new = ~history
    relevant_new = np.bincount(owner[new], weights=labels[new], minlength=groups.size) > 0
    take = new & relevant_new[owner]
    sizes = np.bincount(owner[take], minlength=groups.size)[relevant_new]
    return (
        np.concatenate([x, x[take]]),
        np.concatenate([labels, labels[take]]),
        np.concatenate([groups, sizes]).astype(np.int64),
    )


def _said(f: dict[str, float]) -> str:
    return (
        f"NDCG@10 all items {f['ranker_all']:.4f} vs {f['blend_all']:.4f}, "
        f"new items {f['ranker_new']:.4f} vs {f['blend_new']:.4f}"
    )


def _validate(
    ranker: Ranker, x: np.ndarray, labels: IntArray, history: np.ndarray, groups: IntArray
) -> tuple[dict[str, float], dict[str, bool]]:
    """NDCG@10 of the ranker and of the blend on the validation groups, over every candidate (lists that may
    hold the user's own items) and over the new items only; and in which of the two the ranker wins clearly."""
    scores = ranker.scores(x)
    blend = x[:, NAMES.index("blend_score")]
    new = ~history
    new_groups = np.bincount(np.repeat(np.arange(groups.size), groups)[new], minlength=groups.size)
    relevant_new = np.bincount(np.repeat(np.arange(groups.size), groups)[new], weights=labels[new],
                               minlength=groups.size) > 0  # fmt: skip
    all_r, all_b = ndcg(scores, labels, groups), ndcg(blend, labels, groups)
    new_r, new_b = ndcg(scores[new], labels[new], new_groups), ndcg(blend[new], labels[new], new_groups)
    figures = {
        "ranker_all": round(float(all_r.mean()), 6),
        "blend_all": round(float(all_b.mean()), 6),
        "ranker_new": round(float(new_r.mean()), 6),
        "blend_new": round(float(new_b.mean()), 6),
        "users": float(groups.size),
        "users_new": float(relevant_new.sum()),
    }
    views = {
        "repeat": bool(wins(all_r, all_b, WIN_Z)),
        "new": bool(wins(new_r[relevant_new], new_b[relevant_new], WIN_Z)),
    }
    return figures, views


def _with_stats(base: Engine, stats: ItemStats, cfg: RecommenderConfig) -> Engine:
    """The base model with the item counters as of the cut-off, scored as the served model is."""
    from dataclasses import replace

    ranking = Engine(RecommenderConfig.from_mapping({**cfg.model_dump(), "ranker": True}))
    ranking._state = replace(base.state, stats=stats)
    ranking.metrics = {}
    return ranking


def _gather(
    model: Engine, past: Interactions, queries: IntArray, future: IntArray, n_items: int, deadline: float
) -> _Rows | None:
    """Features, labels, whether in the history and group sizes, chunk by chunk until ``deadline``."""
    histories = interactions_batch(past)
    step = max(1, min(2048, SCORE_CELLS // max(n_items, 1)))
    xs: list[np.ndarray] = []
    ys: list[IntArray] = []
    hs: list[np.ndarray] = []
    sizes: list[IntArray] = []
    for start in range(0, queries.size, step):
        if time.process_time() > deadline and sizes:
            break
        chunk = queries[start : start + step]
        batch = histories.take(chunk)
        scored = model.score_batch(batch)
        assert isinstance(scored, EngineScores)
        rows, items, history, x = model.candidate_features(scored, batch)
        keys = chunk[rows].astype(np.int64) * n_items + items
        label = np.isin(keys, future).astype(np.int64)
        positive = np.bincount(rows, weights=label, minlength=chunk.size) > 0
        keep = positive[rows]
        xs.append(x[keep])
        ys.append(label[keep])
        hs.append(history[keep])
        sizes.append(np.bincount(rows[keep], minlength=chunk.size)[positive].astype(np.int64))
    if not sizes:
        return None
    return _Rows(np.concatenate(xs), np.concatenate(ys), np.concatenate(hs), np.concatenate(sizes))


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
