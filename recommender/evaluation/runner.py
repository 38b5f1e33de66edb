"""The evaluation runner: split, train the engine and the baselines a shop would try (popularity, trending, and
where the history may be the answer buy-again and recently viewed), score every test user in batches through the
models' own request code, average the metrics, and name the best baseline with the engine's ratio to it.

"The engine" is whatever :class:`recommender.model.Engine` recommends (its scoring path, a ranking stage included):
nothing here knows how it ranks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from recommender.base import RecommenderBase
from recommender.config import RecommenderConfig
from recommender.data import HistoryBatch, IntArray, Interactions, interactions_batch
from recommender.evaluation.baselines import (
    BASELINES,
    DEFAULT_HALF_LIFE_HOURS,
    baselines_for,
    best_baseline,
    make_baseline,
    ratio,
)
from recommender.evaluation.datasets import Dataset
from recommender.evaluation.metrics import MetricSums
from recommender.evaluation.protocols import (
    VIEWS,
    Protocol,
    Split,
    View,
    Window,
    leave_one_out,
    rolling_windows,
    time_split,
    window_splits,
)
from recommender.model import Engine
from recommender.ranking import top_n
from recommender.threads import blas_threads

Scoring = Literal["exact", "candidates", "both"]
Echo = Callable[[str], None]
ENGINE = "engine"
CANDIDATES = "engine-candidates"
SCORE_CELLS_PER_BATCH = 16_000_000  # users x items per dense score batch (64 MB of float32)


@dataclass(frozen=True, slots=True)
class ModelReport:
    metrics: dict[str, float]
    fit_s: float
    score_s: float

    def as_dict(self) -> dict[str, float]:
        return {**self.metrics, "fit_s": round(self.fit_s, 3), "score_s": round(self.score_s, 3)}


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    dataset: str
    protocol: str
    users: int
    items: int
    train_interactions: int
    skipped_users: int
    skipped_lines: int
    models: dict[str, ModelReport]
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    k: int = 10

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "models": {name: report.as_dict() for name, report in self.models.items()},
            "users": self.users,
            "items": self.items,
            "train_interactions": self.train_interactions,
            "skipped_users": self.skipped_users,
            "skipped_lines": self.skipped_lines,
            "config": self.config,
            **comparison(self.models, self.k),
            **self.extra,
        }


def _best_ranks(values: np.ndarray, indptr: IntArray, relevant: IntArray) -> IntArray:
    """Per row, the full-ranking rank of its best-scored relevant item."""
    rows = np.repeat(np.arange(values.shape[0], dtype=np.int64), np.diff(indptr))
    best = np.full(values.shape[0], -np.inf, dtype=np.float32)
    np.maximum.at(best, rows, values[rows, relevant])
    ranks: IntArray = (values >= best[:, None]).sum(axis=1).astype(np.int64)
    return ranks


def evaluate_model(
    model: RecommenderBase,
    histories: HistoryBatch,
    split: Split,
    *,
    k: int = 10,
    progress: bool = False,
    desc: str = "",
    exclude_history: bool = True,
    candidates: bool = False,
) -> tuple[dict[str, float], float]:
    """Metrics of ``model`` over the split's test users (row r of ``histories`` is test user r) and seconds.
    ``candidates``: through the candidate path a request on a large catalogue takes (retrieval, then exact
    scoring of the candidates; the other items rank last)."""
    started = time.perf_counter()
    sums = MetricSums(k=k, n_items=model.n_items)
    step = max(1, min(4096, SCORE_CELLS_PER_BATCH // max(model.n_items, 1)))
    with tqdm(total=split.n_test_users, desc=desc, unit="user", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, split.n_test_users, step):
            rows = np.arange(start, min(start + step, split.n_test_users))
            batch = histories.take(rows)
            scored = model.masked_scores(batch, exclude_history=exclude_history, candidates=k if candidates else None)
            top, vals = top_n(scored.values, k)
            lo, hi = split.test_indptr[rows[0]], split.test_indptr[rows[-1] + 1]
            indptr = split.test_indptr[rows[0] : rows[-1] + 2] - lo
            relevant = split.test_items[lo:hi]
            sums.add(top, np.isfinite(vals), indptr, relevant, _best_ranks(scored.values, indptr, relevant))
            bar.update(len(rows))
    return sums.result(), time.perf_counter() - started


def comparison(models: dict[str, ModelReport] | dict[str, dict[str, float]], k: int = 10) -> dict[str, Any]:
    """The best baseline by NDCG@k and the engine's ratio to it (NDCG@k and HR@k; None where the baseline scored
    nothing): ``{"best_baseline": name, "engine_ratio": {"ndcg@10": r, "hr@10": r}}``; empty without a baseline
    or an engine."""
    ndcg, hr = f"ndcg@{k}", f"hr@{k}"
    figures = {name: _metrics(m) for name, m in models.items()}
    engine = figures.get(ENGINE) or figures.get(CANDIDATES)
    best = best_baseline({name: f[ndcg] for name, f in figures.items() if name in BASELINES and ndcg in f})
    if engine is None or best is None:
        return {}
    name, value = best
    return {
        "best_baseline": name,
        "engine_ratio": {ndcg: ratio(engine[ndcg], value), hr: ratio(engine[hr], figures[name][hr])},
    }


def _metrics(model: ModelReport | dict[str, float]) -> dict[str, float]:
    return model.metrics if isinstance(model, ModelReport) else model


def make_split(dataset: Dataset, protocol: Protocol, *, validation: bool = False, quantile: float = 0.8) -> Split:
    if protocol == "leave-one-out":
        return leave_one_out(dataset.interactions, validation=validation)
    if validation:
        raise ValueError("validation applies to leave-one-out only")
    if protocol == "time-split":
        return time_split(dataset.interactions, quantile=quantile)
    if protocol == "repeat":
        return time_split(dataset.interactions, quantile=quantile, repeats=True)
    raise ValueError(f"unknown protocol {protocol!r} here (the rolling protocol is evaluate_rolling)")


@dataclass(frozen=True, slots=True)
class Contenders:
    """The engine and the baselines, each fitted on one training log."""

    models: list[tuple[str, RecommenderBase]]
    fit_s: dict[str, float]


def fit_contenders(
    train: Interactions, config: RecommenderConfig, baselines: tuple[str, ...], half_life_hours: float
) -> Contenders:
    """The engine and ``baselines`` fitted on ``train`` (an :class:`~recommender.data.Interactions`)."""
    models: list[tuple[str, RecommenderBase]] = [(ENGINE, Engine(config))]
    models += [(name, make_baseline(name, half_life_hours)) for name in baselines]
    fit_s: dict[str, float] = {}
    for name, model in models:
        started = time.perf_counter()
        model.fit(train)
        fit_s[name] = time.perf_counter() - started
    return Contenders(models, fit_s)


def score_contenders(
    contenders: Contenders,
    split: Split,
    *,
    history_may_answer: bool,
    k: int = 10,
    progress: bool = False,
    scoring: Scoring = "exact",
) -> dict[str, ModelReport]:
    """Every contender's metrics on the split's test users (the personal baselines only when the history may be
    the answer: nothing of it is excluded then)."""
    histories = interactions_batch(split.train).take(split.test_users)
    exclude_history = not history_may_answer
    models: dict[str, ModelReport] = {}
    for name, model in contenders.models:
        if not history_may_answer and name not in baselines_for(False) and name != ENGINE:
            continue
        fit_s = contenders.fit_s[name]
        if name == ENGINE and scoring != "exact":
            assert isinstance(model, Engine)
            forced = model.with_scoring(candidates_min_items=0)  # whatever the catalogue's size
            metrics, score_s = evaluate_model(
                forced, histories, split, k=k, progress=progress, desc=CANDIDATES, candidates=True,
                exclude_history=exclude_history,
            )  # fmt: skip
            models[CANDIDATES] = ModelReport(metrics, fit_s, score_s)
            if scoring == "candidates":
                continue
        metrics, score_s = evaluate_model(
            model, histories, split, k=k, progress=progress, desc=name, exclude_history=exclude_history
        )
        models[name] = ModelReport(metrics, fit_s, score_s)
    return models


def evaluate(
    dataset: Dataset,
    protocol: Protocol,
    config: RecommenderConfig | None = None,
    *,
    max_users: int | None = None,
    validation: bool = False,
    quantile: float = 0.8,
    k: int = 10,
    progress: bool = False,
    scoring: Scoring = "exact",
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
) -> EvaluationReport:
    """Evaluate the engine (``config``, default: the served defaults) against the baselines: popularity and
    trending (``half_life_hours``), and under ``repeat`` buy-again and recently viewed too.

    ``scoring``: ``exact`` ranks every item; ``candidates`` ranks only the retrieved candidates, as a request on
    a large catalogue does (model ``engine-candidates``); ``both`` reports the two side by side."""
    config = config or RecommenderConfig()
    split = make_split(dataset, protocol, validation=validation, quantile=quantile).sample(max_users)
    if split.n_test_users == 0:
        raise ValueError("the split leaves no test users")
    repeat = protocol == "repeat"  # the history may be the answer: nothing of it is excluded
    with blas_threads(config.blas_threads):
        contenders = fit_contenders(split.train, config, baselines_for(repeat), half_life_hours)
        models = score_contenders(contenders, split, history_may_answer=repeat, k=k, progress=progress, scoring=scoring)
    extra: dict[str, Any] = {"validation": validation}
    if split.cutoff_ts is not None:
        extra["cutoff_ts"] = split.cutoff_ts
    if protocol == "repeat":
        extra["repeat_share"] = round(_repeat_share(split), 4)
    return EvaluationReport(
        dataset=dataset.name,
        protocol=protocol,
        users=split.n_test_users,
        items=dataset.interactions.n_items,
        train_interactions=len(split.train),
        skipped_users=split.skipped_users,
        skipped_lines=dataset.skipped,
        models=models,
        config=config.model_dump(),
        extra=extra,
        k=k,
    )


@dataclass(frozen=True, slots=True)
class WindowReport:
    """One window of the rolling protocol: its bounds, training size and, per view, the test users and models."""

    window: Window
    train_interactions: int
    views: dict[View, tuple[int, dict[str, ModelReport]]]  # view -> (test users, model reports)
    k: int = 10

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.index + 1,
            "start_ts": self.window.start,
            "end_ts": self.window.end,
            "train_interactions": self.train_interactions,
            "views": {
                view: {
                    "users": users,
                    "models": {name: report.as_dict() for name, report in models.items()},
                    **comparison(models, self.k),
                }
                for view, (users, models) in self.views.items()
            },
        }


@dataclass(frozen=True, slots=True)
class RollingReport:
    """The rolling protocol: every window, and per view the metrics averaged over the windows it tested."""

    dataset: str
    items: int
    skipped_lines: int
    windows: list[WindowReport]
    config: dict[str, Any] = field(default_factory=dict)
    k: int = 10
    protocol: str = "rolling"

    def averages(self) -> dict[View, dict[str, Any]]:
        """Per view: the windows and users it tested, and each model's metrics averaged over those windows (each
        window counts alike), with the best baseline and the engine's ratio to it."""
        out: dict[View, dict[str, Any]] = {}
        for view in VIEWS:
            tested = [w.views[view] for w in self.windows if view in w.views]
            if not tested:
                continue
            names = list(dict.fromkeys(name for _, models in tested for name in models))
            models: dict[str, dict[str, float]] = {}
            for name in names:
                runs = [m[name].metrics for _, m in tested if name in m]
                models[name] = {metric: round(float(np.mean([r[metric] for r in runs])), 6) for metric in runs[0]}
            out[view] = {
                "windows": len(tested),
                "users": sum(users for users, _ in tested),
                "models": models,
                **comparison(models, self.k),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "items": self.items,
            "skipped_lines": self.skipped_lines,
            "views": self.averages(),
            "windows": [w.as_dict() for w in self.windows],
            "config": self.config,
        }


def evaluate_rolling(
    dataset: Dataset,
    config: RecommenderConfig | None = None,
    *,
    windows: int = 4,
    window_ms: int | None = None,
    quantile: float = 0.8,
    max_users: int | None = None,
    k: int = 10,
    progress: bool = False,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
    echo: Echo | None = None,
) -> RollingReport:
    """The rolling protocol: ``windows`` consecutive windows (``window_ms`` long, default: the newest
    ``1 - quantile`` of the time span cut in equal parts), each predicted by the engine and every baseline trained
    on everything before it, reported in both views (``time-split``: new items; ``repeat``: every item).
    ``echo`` gets one line per window as it starts (the engine's fit per window takes time)."""
    config = config or RecommenderConfig()
    log = dataset.interactions
    bounds = rolling_windows(log, windows=windows, quantile=quantile, window_ms=window_ms)
    if not bounds:
        raise ValueError("no window has interactions before it: the log is too short for the rolling protocol")
    reports: list[WindowReport] = []
    with blas_threads(config.blas_threads):
        for window in bounds:
            splits = window_splits(log, window)
            if splits is None:
                if echo:
                    echo(f"window {window.index + 1}/{len(bounds)}: no interactions in it, skipped")
                continue
            train = splits["time-split"].train
            if echo:
                echo(
                    f"window {window.index + 1}/{len(bounds)} [{_when(window.start)} .. {_when(window.end)}): "
                    f"fitting on {len(train)} interactions"
                )
            contenders = fit_contenders(train, config, baselines_for(True), half_life_hours)
            views: dict[View, tuple[int, dict[str, ModelReport]]] = {}
            for view, split in splits.items():
                split = split.sample(max_users)
                if split.n_test_users == 0:
                    continue
                models = score_contenders(
                    contenders, split, history_may_answer=view == "repeat", k=k, progress=progress
                )
                views[view] = (split.n_test_users, models)
            if views:
                reports.append(WindowReport(window, len(train), views, k))
    if not reports:
        raise ValueError("no window has test users")
    return RollingReport(dataset.name, log.n_items, dataset.skipped, reports, config.model_dump(), k)


def _when(ts: int) -> str:
    """An epoch-ms bound as a UTC time; small values (position-timed data) as they are."""
    if ts < 10**11:  # before 1973 in ms: a position, not a time
        return str(ts)
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _repeat_share(split: Split) -> float:
    """The share of the test items that were already in their user's training history."""
    n_items = split.train.n_items
    train_keys = np.unique(split.train.users.astype(np.int64) * n_items + split.train.items)
    rows = np.repeat(split.test_users, np.diff(split.test_indptr))
    keys = rows * n_items + split.test_items
    return float(np.isin(keys, train_keys).mean()) if keys.size else 0.0
