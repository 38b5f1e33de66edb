"""``ecrm bench api --stages``: where each microsecond of a personal recommendation goes inside the engine.

The model of ``ecrm bench api`` (its generated log: ``items * 5`` interactions over ``items`` items, here with the
users' interactions spread over the whole period), fitted in process with the ranking stage forced on (``ranker_gate:
false``, ``ranker_min_queries: 10``: a random log has few users to learn from), then the request the API makes
(``recommend(history, n + 10)`` of a 20-item history, reason items included) timed stage by stage with the engine's
own functions, in the order a request runs them, next to ``recommend`` timed whole (with and without the stage) and
LightGBM's own predict of the same rows. No Redis, no HTTP: what is left of a request's cost (the ``ecrm bench api``
rates) is the web server, the Redis round trips and the service's own Python.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.recommender import synthetic_log
from recommender.base import _longest
from recommender.candidates import exclude_candidates, sparse_rows
from recommender.config import RecommenderConfig
from recommender.data import HistoryEntry, Interactions
from recommender.features import Candidates, features, reference_now
from recommender.model import Engine, EngineScores
from recommender.ranker import select_candidates
from recommender.ranking import top_n
from recommender.threads import pin_blas_threads
from recommender.weighting import confidence, half_life_ms, sequence_weights

Echo = Callable[[str], None]
HISTORY = 20  # items per history, as the bench's customers
# the stage used everywhere, learned from the few labelled users a generated log has (a random log has little to
# learn; a stage's cost per request is that of its size: trees, leaves, candidates)
FORCED = {"ranker_gate": False, "ranker_min_queries": 10}


@dataclass
class StageFigures:
    items: int
    requests: int
    ranker: bool
    stages_us: dict[str, float] = field(default_factory=dict)  # median per request
    recommend_us: float = 0.0  # recommend() timed whole, median
    recommend_blend_us: float = 0.0  # the same model without the stage
    predict_lightgbm_us: float = 0.0  # LightGBM's own predict of the same rows (the reference the trees replace)
    rows_ranked: float = 0.0
    retrieval_us: dict[str, float] = field(default_factory=dict)  # "retrieve + score candidates", part by part

    def as_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "requests": self.requests,
            "ranker": self.ranker,
            "stages_us": {k: round(v, 1) for k, v in self.stages_us.items()},
            "stages_sum_us": round(sum(self.stages_us.values()), 1),
            "retrieval_parts_us": {k: round(v, 1) for k, v in self.retrieval_us.items()},
            "recommend_us": round(self.recommend_us, 1),
            "recommend_without_stage_us": round(self.recommend_blend_us, 1),
            "lightgbm_predict_us": round(self.predict_lightgbm_us, 1),
            "rows_ranked": round(self.rows_ranked, 1),
        }

    def lines(self) -> list[str]:
        out = [f"engine per request, {self.items} items, median of {self.requests} requests (µs)"]
        out += [f"  {name:<28} {us:8.1f}" for name, us in self.stages_us.items()]
        out += [f"  {'sum of the stages':<28} {sum(self.stages_us.values()):8.1f}", "retrieval, part by part (µs)"]
        out += [f"  {name:<28} {us:8.1f}" for name, us in self.retrieval_us.items()]
        out += [
            f"recommend() whole              {self.recommend_us:8.1f}",
            f"recommend() without the stage  {self.recommend_blend_us:8.1f}",
            f"LightGBM predict, same rows    {self.predict_lightgbm_us:8.1f} ({self.rows_ranked:.0f} rows)",
        ]
        return out


def stage_model(items: int, echo: Echo) -> Engine:
    """The ``bench api`` model, fitted in process with the stage used everywhere."""
    n = items * 5
    log = synthetic_log(n, n_users=items // 2, n_items=items, seed=1, interleaved=True)
    interactions = Interactions(
        users=log.users.astype(np.int32),
        items=log.items.astype(np.int32),
        weights=log.weights.astype(np.float32),
        ts=log.ts.astype(np.int64),
        user_ids=tuple(f"c:u{u}" for u in range(items // 2)),
        item_ids=tuple(f"i{i}" for i in range(items)),
    )
    echo(f"fitting the engine on {n} generated interactions over {items} items (ranking stage forced on) ...")
    started = time.perf_counter()
    model = Engine(RecommenderConfig(**FORCED, random_state=0)).fit(interactions)
    info = model.ranker_info
    echo(f"  {time.perf_counter() - started:.1f} s; ranking stage: {info.get('reason')} ({info.get('trees')} trees)")
    return model


def histories(items: int, count: int) -> list[list[HistoryEntry]]:
    """The bench's customers: 20 random items each, weight 1, one millisecond apart."""
    rng = np.random.default_rng(2)
    return [
        [(f"i{i}", 1.0, 1_790_000_000_000 + j) for j, i in enumerate(rng.integers(0, items, HISTORY).tolist())]
        for _ in range(count)
    ]


def bench_stages(items: int, requests: int, echo: Echo, n: int = 20) -> StageFigures:
    model = stage_model(items, echo)
    pin_blas_threads(1)  # as an API process serves (api/main.py): one BLAS and OpenMP thread (faiss's search)
    hist = histories(items, 3 * requests + 50)  # each timed call its own history: no call warms another's rows
    figures = StageFigures(items, requests, model.uses_ranker)
    blend = model.with_scoring(ranker=False)
    for h in hist[:50]:  # warm caches (index, popular items, stage items)
        model.recommend(h, n)
        blend.recommend(h, n)
    samples: dict[str, list[float]] = {}
    whole: list[float] = []
    whole_blend: list[float] = []
    lgb_times: list[float] = []
    rows_ranked: list[int] = []
    ranker = model.state.ranker
    for k in range(requests):
        h = hist[50 + 3 * k]
        t0 = time.perf_counter()
        model.recommend(hist[51 + 3 * k], n)
        whole.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        blend.recommend(hist[52 + 3 * k], n)
        whole_blend.append(time.perf_counter() - t0)
        for name, seconds in _one_request(model, h, n).items():
            samples.setdefault(name, []).append(seconds)
        if ranker is not None:
            x = _ranked_rows(model, h, n)
            rows_ranked.append(x.shape[0])
            t0 = time.perf_counter()
            ranker.booster.predict(x, num_threads=1)
            lgb_times.append(time.perf_counter() - t0)
    parts: dict[str, list[float]] = {}
    for h in histories(items, requests + 1)[1:]:  # the retrieval's own parts, on histories of their own
        for name, seconds in _retrieval_parts(model, h, n).items():
            parts.setdefault(name, []).append(seconds)
    figures.stages_us = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    figures.retrieval_us = {k: statistics.median(v) * 1e6 for k, v in parts.items()}
    figures.recommend_us = statistics.median(whole) * 1e6
    figures.recommend_blend_us = statistics.median(whole_blend) * 1e6
    figures.predict_lightgbm_us = statistics.median(lgb_times) * 1e6 if lgb_times else 0.0
    figures.rows_ranked = statistics.mean(rows_ranked) if rows_ranked else 0.0
    return figures


def _ranked_rows(model: Engine, history: list[HistoryEntry], n: int) -> np.ndarray:
    batch = model.encode([history])
    scored = model.score_candidates(batch, n + _longest(batch, True))
    assert isinstance(scored, EngineScores)
    return model.candidate_features(scored, batch)[3]


def _one_request(model: Engine, history: list[HistoryEntry], n: int) -> dict[str, float]:
    """``model.recommend(history, n)`` on the candidate path, stage by stage (the same calls, in order)."""
    out: dict[str, float] = {}
    clock = time.perf_counter
    t = clock()

    def lap(name: str) -> None:
        nonlocal t
        now = clock()
        out[name] = now - t
        t = now

    batch = model.encode([history])
    lap("encode history")
    want = n + _longest(batch, True)
    scored = model.score_candidates(batch, want)
    assert isinstance(scored, EngineScores) and scored.codes is not None
    lap("retrieve + score candidates")
    if model.uses_ranker and model.ranker_views.get("new"):
        state, cfg = model.state, model.config
        assert state.stats is not None and state.ranker is not None
        rows, cols, _ = select_candidates(scored.values, scored.codes, batch, cfg.ranker_candidates, model.stage_items)
        lap("stage: choose candidates")
        items = scored.codes[rows, cols]
        blend = scored.values[rows, cols]
        seq = scored.sequence_at(rows, items) if scored.seq_values is None else scored.seq_values[rows, cols]
        lap("stage: sequential part")
        x = features(state.stats, state.transitions, batch, Candidates(rows, items, blend, seq),
                     reference_now(state.stats, batch))  # fmt: skip
        lap("stage: features")
        ranked = state.ranker.scores(x)
        lap("stage: ranker scores")
        model.apply_ranked(scored, batch, rows, cols, ranked)
        lap("stage: re-order")
    exclude_candidates(scored.values, scored.codes, batch, exclude_history=True)
    idx, vals = top_n(scored.values, n)
    lap("exclusions + top n")
    codes = np.take_along_axis(scored.codes, idx, axis=1)
    model._decode(scored, 0, codes[0], vals[0], True)
    lap("reason items + decode")
    return out


def _retrieval_parts(model: Engine, history: list[HistoryEntry], n: int) -> dict[str, float]:
    """The parts of :meth:`Engine.score_candidates` for a request of one (the same calls), then the rest of it."""
    state, cfg = model.state, model.config
    assert state.factors is not None and state.ann is not None
    batch = model.encode([history])
    want = n + _longest(batch, True)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    conf = confidence(batch, half_life_ms(cfg.half_life_days))
    seq_w = sequence_weights(batch, conf, cfg.recency_decay, cfg.max_history)
    t1 = time.perf_counter()
    sparse_rows(batch, seq_w, state.transitions)
    t2 = time.perf_counter()
    users, _ = state.factors.fold_in_solved(batch.items, conf)
    t3 = time.perf_counter()
    state.ann.search(state.factors.queries(users), cfg.ann_candidates + want, cfg.ann_probe)
    t4 = time.perf_counter()
    model.score_candidates(batch, want)
    t5 = time.perf_counter()
    out["confidence, recency"] = t1 - t0
    out["transitions of the history"] = t2 - t1
    out["fold-in (one solve)"] = t3 - t2
    out["factor index search"] = t4 - t3
    out["whole (warm: parts above again)"] = t5 - t4
    return out
