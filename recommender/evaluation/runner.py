"""The evaluation runner: split, train the engine and the popularity baseline, score every test user in
batches through the models' own request code, and average the metrics."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from recommender.base import RecommenderBase
from recommender.config import RecommenderConfig
from recommender.data import HistoryBatch, IntArray, interactions_batch
from recommender.evaluation.buy_again import BuyAgain
from recommender.evaluation.datasets import Dataset
from recommender.evaluation.metrics import MetricSums
from recommender.evaluation.protocols import Protocol, Split, leave_one_out, time_split
from recommender.model import Engine
from recommender.popularity import Popularity
from recommender.ranking import top_n
from recommender.threads import blas_threads

Scoring = Literal["exact", "candidates", "both"]
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


def make_split(dataset: Dataset, protocol: Protocol, *, validation: bool = False, quantile: float = 0.8) -> Split:
    if protocol == "leave-one-out":
        return leave_one_out(dataset.interactions, validation=validation)
    if protocol == "time-split":
        if validation:
            raise ValueError("validation applies to leave-one-out only")
        return time_split(dataset.interactions, quantile=quantile)
    if protocol == "repeat":
        if validation:
            raise ValueError("validation applies to leave-one-out only")
        return time_split(dataset.interactions, quantile=quantile, repeats=True)
    raise ValueError(f"unknown protocol {protocol!r}")


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
) -> EvaluationReport:
    """Evaluate the engine (``config``, default: the served defaults) and the popularity baseline.

    ``scoring``: ``exact`` ranks every item; ``candidates`` ranks only the retrieved candidates, as a request on
    a large catalogue does (model ``engine-candidates``); ``both`` reports the two side by side."""
    config = config or RecommenderConfig()
    split = make_split(dataset, protocol, validation=validation, quantile=quantile).sample(max_users)
    if split.n_test_users == 0:
        raise ValueError("the split leaves no test users")
    with blas_threads(config.blas_threads):
        histories = interactions_batch(split.train).take(split.test_users)
        models: dict[str, ModelReport] = {}
        candidates: list[tuple[str, RecommenderBase]] = [("engine", Engine(config)), ("popularity", Popularity())]
        repeat = protocol == "repeat"  # the history may be the answer: nothing of it is excluded
        if repeat:
            candidates.append(("buy-again", BuyAgain()))
        for name, model in candidates:
            started = time.perf_counter()
            model.fit(split.train)
            fit_s = time.perf_counter() - started
            if name == "engine" and scoring != "exact":
                assert isinstance(model, Engine)
                forced = model.with_scoring(candidates_min_items=0)  # whatever the catalogue's size
                metrics, score_s = evaluate_model(
                    forced, histories, split, k=k, progress=progress, desc=CANDIDATES, candidates=True,
                    exclude_history=not repeat,
                )  # fmt: skip
                models[CANDIDATES] = ModelReport(metrics, fit_s, score_s)
                if scoring == "candidates":
                    continue
            metrics, score_s = evaluate_model(
                model, histories, split, k=k, progress=progress, desc=name, exclude_history=not repeat
            )
            models[name] = ModelReport(metrics, fit_s, score_s)
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
    )


def _repeat_share(split: Split) -> float:
    """The share of the test items that were already in their user's training history."""
    n_items = split.train.n_items
    train_keys = np.unique(split.train.users.astype(np.int64) * n_items + split.train.items)
    rows = np.repeat(split.test_users, np.diff(split.test_indptr))
    keys = rows * n_items + split.test_items
    return float(np.isin(keys, train_keys).mean()) if keys.size else 0.0
