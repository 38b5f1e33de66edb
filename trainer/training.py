"""One training run (``ecrm train``, or started by the worker): drain the interaction log from Redis into the
training-log store (trainer/logstore.py), read the store and the Redis tail, fit, check the
new version on the newest window of interactions against the served one and against every simple baseline, promote
or refuse, and decide what serves the personal lists: the engine, or the best baseline when it beats the engine.

The gate (:func:`gate`, pure) never lets the shop be served worse than the simple list: when popularity, trending,
buy-again or recently viewed beats the candidate on the newest window, that baseline serves the personal lists
(recorded in the registry, read by every API replica) until a later version beats it. With too little data to
judge (a young shop, the demo) the engine's blend serves, with the reason recorded.

Runs in its own process, never inside the Faust event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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
from core.tenants import DEFAULT_TENANT
from recommender.base import RecommenderBase
from recommender.config import RecommenderConfig
from recommender.data import FloatArray, HistoryEntry, IntArray, Interactions, interactions_batch
from recommender.evaluation.baselines import baselines_for, best_baseline, global_scores, make_baseline
from recommender.evaluation.protocols import Split, time_split
from recommender.model import Engine
from recommender.threads import blas_threads
from trainer.log import read_interactions
from trainer.logstore import TrainingLogStore, read_training_log

Echo = Callable[[str], None]
ENGINE = "engine"
SCORE_CELLS_PER_BATCH = 16_000_000  # users x items scored at once by the holdout check (64 MB of float32)
_DAY_MS = 86_400_000

__all__ = ["NothingToTrain", "TrainingBusy", "TrainingResult", "read_interactions", "read_training_log", "train_once"]


@dataclass
class TrainingResult:
    version: str
    promoted: bool
    reason: str
    interactions: int
    holdout: dict[str, float] = field(default_factory=dict)
    current_holdout: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    serve: str = ENGINE  # what serves the personal lists after this run: the engine or a baseline's name
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # each baseline's figures on the window


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


def holdout_split(
    log: Interactions,
    fraction: float,
    max_users: int,
    train_users: int = 0,
    *,
    window_ms: int | None = None,
    repeats: bool = False,
) -> Split | None:
    """Train before the newest window, test on it (None: too little): the window is the last ``window_ms`` of
    time, or by default the most recent ``fraction`` of interactions. ``repeats``: a user's test items include
    those of their history (a shop serving re-buys). With ``train_users`` > 0 the holdout model learns from the
    judged users and others drawn at random, that many users in all: the check then costs a fraction of a fit
    instead of a whole one (the gate compares figures measured the same way, so the sample does not bias the
    decision)."""
    if len(log) < 20:
        return None
    try:
        if window_ms:
            split = time_split(log, cutoff_ts=int(log.ts.max()) + 1 - window_ms, repeats=repeats)
        else:
            split = time_split(log, quantile=1.0 - fraction, repeats=repeats)
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


@dataclass(frozen=True, slots=True)
class HoldoutCases:
    """The judged users of a split as the API sees them: each one's history (item ids) and the items they took."""

    histories: list[list[HistoryEntry]]
    relevant: list[set[str]]


def holdout_cases(split: Split) -> HoldoutCases:
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
    return HoldoutCases(histories, relevant)


def holdout_metrics(
    model: RecommenderBase,
    split: Split,
    k: int = 10,
    *,
    exclude_history: bool = True,
    cases: HoldoutCases | None = None,
) -> dict[str, float]:
    """HR@k and NDCG@k of ``model`` on the split, through the serving code (``rank_batch`` on item-id histories,
    in batches of at most ``SCORE_CELLS_PER_BATCH`` scores); ``exclude_history=False`` where the history may be
    the answer; ``cases``: the split's :func:`holdout_cases` when already built."""
    cases = cases or holdout_cases(split)
    step = max(1, SCORE_CELLS_PER_BATCH // max(model.n_items, 1))
    ranked = [
        [rec.item_id for rec in recs]
        for start in range(0, len(cases.histories), step)
        for recs in model.rank_batch(
            model.encode(cases.histories[start : start + step]), k, exclude_history=exclude_history, reasons=False
        )
    ]
    return list_metrics(ranked, cases.relevant)


def global_list_metrics(
    scores: FloatArray, item_ids: tuple[str, ...], cases: HoldoutCases, k: int = 10, *, exclude_history: bool = True
) -> dict[str, float]:
    """:func:`holdout_metrics` of a list that is the same for everyone (popularity, trending): one sort, then each
    user's first ``k`` items that are not in their history (the same picks as ``rank_batch``, without a dense
    users x items matrix)."""
    longest = max((len(h) for h in cases.histories), default=0) if exclude_history else 0
    order = np.argsort(-scores, kind="stable")[: k + longest]
    head = [item_ids[i] for i in order.tolist()]
    ranked: list[list[str]] = []
    for history in cases.histories:
        seen = {item for item, _, _ in history} if exclude_history else set()
        picks: list[str] = []
        for item in head:
            if item not in seen:
                picks.append(item)
                if len(picks) == k:
                    break
        ranked.append(picks)
    return list_metrics(ranked, cases.relevant)


def list_metrics(ranked: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    """HR@k and NDCG@k (the first hit's discount) of ranked lists against each user's relevant items."""
    hits, ndcg = 0.0, 0.0
    for recs, truth in zip(ranked, relevant, strict=True):
        ranks = [r for r, item in enumerate(recs) if item in truth]
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


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's verdict: whether the candidate version is promoted, what serves the personal lists (``engine`` or
    a baseline's name), and why."""

    promote: bool
    serve: str
    reason: str


def gate(
    candidate: float | None,
    current: float | None,
    baselines: Mapping[str, float],
    *,
    margin: float,
    baseline_margin: float = 0.0,
    baseline_served: str | None = None,
    unjudged_reason: str | None = None,
) -> GateDecision:
    """Promotion and what serves (pure). ``candidate``: the candidate's NDCG@10 on the newest window (None: too
    little data, ``unjudged_reason`` says why: the engine's blend serves); ``current``: the figure the served
    version earned when it was trained; ``baselines``: each baseline's NDCG@10 on the same window.

    The candidate is promoted as :func:`decide` says. The engine serves the personal lists only when the candidate
    reaches the best baseline's figure times ``1 + baseline_margin``; otherwise that baseline serves. While a
    baseline serves, a candidate that beats it is promoted even if it is below the served version's old figure:
    what the shop sees is the baseline, and the candidate beat that on today's window."""
    if candidate is None:
        reason = unjudged_reason or decide(None, current, margin)[1]
        return GateDecision(True, ENGINE, f"{reason}: promoted as trained, the engine's blend serves")
    promote, why = decide(candidate, current, margin)
    best = best_baseline(dict(baselines))
    if best is None:
        return GateDecision(promote, ENGINE, why)
    name, value = best
    bar = value * (1.0 + baseline_margin)
    versus = f"best baseline {name} {value:.4f}" + (f" (+{baseline_margin:.0%}: {bar:.4f})" if baseline_margin else "")
    if candidate >= bar:
        if not promote and baseline_served is not None:
            return GateDecision(
                True, ENGINE, f"{why}, but it beats the served baseline: {candidate:.4f} >= {versus}; the engine serves"
            )
        return GateDecision(promote, ENGINE, f"{why}; {candidate:.4f} >= {versus}")
    return GateDecision(promote, name, f"{why}; {candidate:.4f} < {versus}: {name} serves the personal lists")


def baseline_figures(
    split: Split, names: tuple[str, ...], half_life_hours: float, *, exclude_history: bool
) -> dict[str, dict[str, float]]:
    """Each baseline fitted on the split's training part and scored on its test users like the candidate, ranked
    as the API would serve it (popularity and trending by summed event weight, as the Redis lists)."""
    cases = holdout_cases(split)
    figures: dict[str, dict[str, float]] = {}
    for name in names:
        model = make_baseline(name, half_life_hours, served=True).fit(split.train)
        scores = global_scores(model)
        if scores is not None:
            figures[name] = global_list_metrics(scores, model.item_ids, cases, exclude_history=exclude_history)
        else:
            figures[name] = holdout_metrics(model, split, exclude_history=exclude_history, cases=cases)
    return figures


def train_once(
    settings: Settings,
    echo: Echo = lambda _: None,
    client: redis.Redis | None = None,
    tenant: str = DEFAULT_TENANT,
) -> TrainingResult:
    """Fit ``tenant``'s model on its training log, compare on the holdout, promote or refuse (its model versions).
    Holds the tenant's Redis lock so that one training of a tenant runs at a time."""
    client = client or connect_sync(settings)
    registry = Registry(client, Keys(settings.key_prefix, tenant), settings.model_keep_versions)
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
    store = TrainingLogStore.of(settings, client, registry.keys.tenant)  # the tenant's own store
    store.drain(echo)  # the Redis tail into the store: what Redis holds stays small
    timings["drain_s"] = time.perf_counter() - started
    log = store.read()
    timings["load_s"] = time.perf_counter() - started - timings["drain_s"]
    if len(log) == 0:
        raise NothingToTrain("no interactions logged yet: nothing to train on")
    echo(f"training on {len(log)} interactions, {log.n_users} users, {log.n_items} items ({config.algorithm})")
    with blas_threads(config.blas_threads):
        # The served version is judged by the holdout figure it earned when it was trained: scoring it on today's
        # slice would flatter it, since it was trained on most of those interactions.
        current = registry.current()
        current_metrics = dict(registry.info(current).meta.get("holdout", {})) if current is not None else {}
        served_baseline = registry.baseline()
        judgement = judge(
            log,
            config,
            settings,
            current_metrics.get("ndcg@10") if current is not None else None,
            served_baseline["baseline"] if served_baseline else None,
            timings,
        )
        decision, candidate_metrics, baselines = judgement.decision, judgement.candidate, judgement.baselines
        repeats = judgement.view == "repeat"
        promoted, reason = decision.promote, decision.reason
        result = TrainingResult(
            version, promoted, reason, len(log), candidate_metrics, current_metrics, timings, decision.serve, baselines
        )
        meta: dict[str, Any] = {
            "version": version,
            "created_at": datetime.now(tz=UTC).isoformat(),
            "interactions": len(log),
            "holdout": candidate_metrics,
            "served_holdout": current_metrics,  # as recorded when the served version was trained
            "served_version": current,
            "decision": reason,
            "promoted": promoted,
            "gate": {
                "serve": decision.serve,
                "view": "repeat" if repeats else "time-split",
                "window_days": settings.gate_window_days or None,
                "baselines": baselines,
            },
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
        if decision.serve == ENGINE:
            registry.clear_baseline()
        else:
            registry.serve_baseline(
                {
                    "baseline": decision.serve,
                    "reason": reason,
                    "decided_by": version,
                    "figures": baselines.get(decision.serve, {}),
                    "engine": candidate_metrics,
                }
            )
    registry.record_training(count_at_start, now_ms())
    timings["total_s"] = time.perf_counter() - started
    echo(f"{version}: {'promoted' if promoted else 'refused'} — {reason}")
    if decision.serve != ENGINE:
        echo(f"the {decision.serve} baseline serves the personal lists until a version beats it")
    return result


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the gate saw on the newest window and what it decided."""

    decision: GateDecision
    candidate: dict[str, float]  # the candidate's hr@10, ndcg@10 and users on the window ({}: no window)
    baselines: dict[str, dict[str, float]]  # each baseline's figures there ({}: not judged)
    view: str  # "time-split" (new items only, as the API serves) or "repeat" (with a re-buy window)


def judge(
    log: Interactions,
    config: RecommenderConfig,
    settings: Settings,
    current: float | None,
    baseline_served: str | None,
    timings: dict[str, float] | None = None,
) -> Judgement:
    """The gate on the log's newest window (no Redis): the candidate (``Engine(config)``, whatever ranks inside it)
    fitted before the window and scored on it, every baseline likewise, then :func:`gate`. ``current``: the served
    version's recorded NDCG@10; ``baseline_served``: the baseline serving now, if any."""
    timings = timings if timings is not None else {}
    repeats = settings.rebuy_window_days > 0  # bought items come back: the history may be the answer
    window_ms = round(settings.gate_window_days * _DAY_MS) if settings.gate_window_days > 0 else None
    t = time.perf_counter()
    split = holdout_split(
        log,
        settings.holdout_fraction,
        settings.holdout_max_users,
        settings.holdout_train_users,
        window_ms=window_ms,
        repeats=repeats,
    )
    timings["split_s"] = time.perf_counter() - t
    candidate: dict[str, float] = {}
    if split is not None:
        t = time.perf_counter()
        candidate = holdout_metrics(Engine(holdout_config(config)).fit(split.train), split, exclude_history=not repeats)
        timings["holdout_s"] = time.perf_counter() - t
    users = int(candidate.get("users", 0))
    judged = split is not None and users >= settings.holdout_min_users
    baselines: dict[str, dict[str, float]] = {}
    if judged and split is not None:
        t = time.perf_counter()
        names = tuple(name for name in baselines_for(repeats) if name in settings.gate_baseline_names)
        baselines = baseline_figures(split, names, settings.trending_half_life_hours, exclude_history=not repeats)
        timings["baselines_s"] = time.perf_counter() - t
    decision = gate(
        candidate.get("ndcg@10") if judged else None,
        current,
        {name: figures["ndcg@10"] for name, figures in baselines.items()},
        margin=settings.promotion_margin,
        baseline_margin=settings.gate_baseline_margin,
        baseline_served=baseline_served,
        unjudged_reason=None if judged else unjudged(split, users, settings.holdout_min_users),
    )
    return Judgement(decision, candidate, baselines, "repeat" if repeats else "time-split")


def unjudged(split: Split | None, users: int, min_users: int) -> str:
    """Why the newest window cannot judge the candidate (a young or quiet shop)."""
    if split is None:
        return (
            "too little data to judge: fewer than 20 interactions, or no user with a history before the newest "
            "window acts in it"
        )
    return (
        f"too little recent data to judge: {users} users in the newest window, fewer than "
        f"ECRM_HOLDOUT_MIN_USERS ({min_users})"
    )
