"""One training run (``ecrm train``, or started by the worker): read the interaction log from Redis, fit, check the
new version on a held-out slice of the most recent interactions against the served one, promote or refuse.

Runs in its own process, never inside the Faust event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from core.clock import now_ms
from core.errors import NothingToTrain, TrainingBusy
from core.keyspace import Keys
from core.redis import connect_sync
from core.registry import Registry, new_version_id
from core.settings import Settings
from recommender.base import RecommenderBase
from recommender.config import RecommenderConfig
from recommender.data import HistoryEntry, IntArray, Interactions, interactions_batch
from recommender.evaluation.protocols import Split, time_split
from recommender.model import Engine
from recommender.threads import blas_threads
from trainer.log import read_interactions

Echo = Callable[[str], None]

__all__ = ["NothingToTrain", "TrainingBusy", "TrainingResult", "read_interactions", "train_once"]


@dataclass
class TrainingResult:
    version: str
    promoted: bool
    reason: str
    interactions: int
    holdout: dict[str, float] = field(default_factory=dict)
    current_holdout: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def load_config(settings: Settings) -> RecommenderConfig:
    """The recommender configuration (the file's, else the defaults) with the ranking stage's time share of the
    settings (``ECRM_RANKER_TIME_SHARE``)."""
    config = RecommenderConfig()
    if settings.recommender_config_file:
        from pathlib import Path

        config = RecommenderConfig.from_file(Path(settings.recommender_config_file))
    return RecommenderConfig.from_mapping({**config.model_dump(), "ranker_time_share": settings.ranker_time_share})


def holdout_config(config: RecommenderConfig) -> RecommenderConfig:
    """The holdout check's configuration: its ranking stage keeps to its time share, with no minimum (the check
    fits on a sample; the served version's own stage gets the full budget)."""
    return RecommenderConfig.from_mapping({**config.model_dump(), "ranker_min_seconds": 0.0})


def holdout_split(log: Interactions, fraction: float, max_users: int, train_users: int = 0) -> Split | None:
    """Train before the most recent ``fraction`` of interactions; test on what came after (None: too little).
    With ``train_users`` > 0 the holdout model learns from the judged users and others drawn at random, that many
    users in all: the check then costs a fraction of a fit instead of a whole one (the gate compares figures
    measured the same way, so the sample does not bias the decision)."""
    if len(log) < 20:
        return None
    try:
        split = time_split(log, quantile=1.0 - fraction)
    except ValueError:
        return None
    if not split.n_test_users:
        return None
    split = split.sample(max_users)
    return replace(split, train=sample_users(split.train, split.test_users, train_users))


def sample_users(log: Interactions, keep: IntArray, total: int, seed: int = 0) -> Interactions:
    """The interactions of the users ``keep`` and of others drawn at random, ``total`` users in all (pure; the id
    spaces unchanged; 0 or more users than the log holds: the whole log)."""
    present = np.bincount(log.users, minlength=log.n_users) > 0  # a mask, not a sort of the whole log
    if total <= 0 or int(present.sum()) <= total:
        return log
    kept = np.zeros(log.n_users, dtype=bool)
    kept[keep] = True
    others = np.flatnonzero(present & ~kept)
    extra = max(total - len(keep), 0)
    drawn = np.random.default_rng(seed).choice(others, size=min(extra, len(others)), replace=False)
    chosen = np.zeros(len(log.user_ids), dtype=bool)
    chosen[keep] = True
    chosen[drawn] = True
    return log.select(chosen[log.users])


def holdout_metrics(model: RecommenderBase, split: Split, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of ``model`` on the split, through the serving code (``rank_batch`` on item-id histories)."""
    batch = interactions_batch(split.train)
    ids = split.train.item_ids
    histories: list[list[HistoryEntry]] = []
    relevant: list[set[str]] = []
    for row, user in enumerate(split.test_users.tolist()):
        sl = batch.row(user)
        histories.append(
            [
                (ids[i], float(w), int(t))
                for i, w, t in zip(batch.items[sl], batch.weights[sl], batch.ts[sl], strict=True)
            ]
        )
        lo, hi = split.test_indptr[row], split.test_indptr[row + 1]
        relevant.append({ids[i] for i in split.test_items[lo:hi].tolist()})
    ranked = model.rank_batch(model.encode(histories), k, exclude_history=True, reasons=False)
    hits, ndcg = 0.0, 0.0
    for recs, truth in zip(ranked, relevant, strict=True):
        ranks = [r for r, rec in enumerate(recs) if rec.item_id in truth]
        if ranks:
            hits += 1
            ndcg += 1.0 / math.log2(ranks[0] + 2)
    n = max(len(relevant), 1)
    return {"hr@10": round(hits / n, 6), "ndcg@10": round(ndcg / n, 6), "users": float(len(relevant))}


def decide(candidate: float | None, current: float | None, margin: float) -> tuple[bool, str]:
    """Promote unless the candidate falls more than ``margin`` (a fraction) below the served version (pure)."""
    if current is None:
        return True, "no version served yet"
    if candidate is None:
        return True, "too little recent data to judge (see ECRM_HOLDOUT_MIN_USERS)"
    floor = current * (1.0 - margin)
    if candidate >= floor:
        return True, f"holdout NDCG@10 {candidate:.4f} >= {floor:.4f} (served {current:.4f}, margin {margin:.0%})"
    return False, f"holdout NDCG@10 {candidate:.4f} < {floor:.4f} (served {current:.4f}, margin {margin:.0%})"


def train_once(settings: Settings, echo: Echo = lambda _: None, client: redis.Redis | None = None) -> TrainingResult:
    """Fit, compare on the holdout, promote or refuse. Holds a Redis lock so that one training runs at a time."""
    client = client or connect_sync(settings)
    registry = Registry(client, Keys(settings.key_prefix), settings.model_keep_versions)
    token = new_version_id()
    if not registry.acquire_training_lock(token):
        raise TrainingBusy("another training is running")
    try:
        return _train(settings, client, registry, token, echo)
    finally:
        registry.release_training_lock(token)


def _train(settings: Settings, client: redis.Redis, registry: Registry, version: str, echo: Echo) -> TrainingResult:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    count_at_start = registry.interactions_logged()
    config = load_config(settings)
    log = read_interactions(client, registry.keys)
    timings["load_s"] = time.perf_counter() - started
    if len(log) == 0:
        raise NothingToTrain("no interactions logged yet: nothing to train on")
    echo(f"training on {len(log)} interactions, {log.n_users} users, {log.n_items} items ({config.algorithm})")
    with blas_threads(config.blas_threads):
        t = time.perf_counter()
        split = holdout_split(log, settings.holdout_fraction, settings.holdout_max_users, settings.holdout_train_users)
        timings["split_s"] = time.perf_counter() - t
        candidate_metrics: dict[str, float] = {}
        if split is not None:
            t = time.perf_counter()
            candidate_metrics = holdout_metrics(Engine(holdout_config(config)).fit(split.train), split)
            timings["holdout_s"] = time.perf_counter() - t
        # The served version is judged by the holdout figure it earned when it was trained: scoring it on today's
        # slice would flatter it, since it was trained on most of those interactions.
        current = registry.current()
        current_metrics = dict(registry.info(current).meta.get("holdout", {})) if current is not None else {}
        judged = candidate_metrics.get("users", 0) >= settings.holdout_min_users
        promoted, reason = decide(
            candidate_metrics.get("ndcg@10") if judged else None,
            current_metrics.get("ndcg@10") if current is not None else None,
            settings.promotion_margin,
        )
        result = TrainingResult(version, promoted, reason, len(log), candidate_metrics, current_metrics, timings)
        meta: dict[str, Any] = {
            "version": version,
            "created_at": datetime.now(tz=UTC).isoformat(),
            "interactions": len(log),
            "holdout": candidate_metrics,
            "served_holdout": current_metrics,  # as recorded when the served version was trained
            "served_version": current,
            "decision": reason,
            "promoted": promoted,
            "config": config.model_dump(),
        }
        if promoted:
            t = time.perf_counter()
            model = Engine(config).fit(log)
            timings["fit_s"] = time.perf_counter() - t
            meta["training"] = model.info.as_dict()
            meta["ranker"] = model.ranker_info
            echo(f"ranking stage: {'used' if model.ranker_info.get('used') else 'not used'} — "
                 f"{model.ranker_info.get('reason', '')}")  # fmt: skip
            t = time.perf_counter()
            blob = model.to_bytes()
            registry.promote(version, blob, meta | {"timings": timings, "bytes": len(blob)})
            timings["store_s"] = time.perf_counter() - t
        else:
            registry.record_rejected(version, meta | {"timings": timings})
    registry.record_training(count_at_start, now_ms())
    timings["total_s"] = time.perf_counter() - started
    echo(f"{version}: {'promoted' if promoted else 'refused'} — {reason}")
    return result
