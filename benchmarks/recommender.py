"""``ecrm bench train``, ``ecrm bench api`` and ``ecrm bench freshness``: the recommender's figures.

* train: about 1M generated interactions in the Redis training log, then one training end to end (data load,
  holdout check, fit, store, promote), with the fit timed alone.
* api: a model over a 100k-item catalogue, ``--workers`` API processes, the max rates of personal
  recommendations and of ``/health/live`` (closed loop) in the same run, then a steady open-loop load at half the
  recommendations' max rate (server-side latency from the ``server-timing`` header). ``--exact`` trains the
  model to score every item (the reference without candidate retrieval).
* freshness: worker + API running; the time from a ``product_view`` produced to Kafka until that customer's
  recommendations change.

Every load targets 127.0.0.1 only and is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import redis

from benchmarks.load import alternating_rates, get, open_loop, pct
from core.keyspace import Keys
from core.redis import connect_sync
from core.registry import Registry
from core.settings import Settings, isolated
from profiles.layout import item_fields, item_value
from runtime.local import spawn_role, stop_process, wait_ready
from trainer.logstore import TrainingLogStore
from trainer.training import TrainingResult, train_once

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SyntheticLog:
    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    ts: np.ndarray


def synthetic_log(n: int, n_users: int, n_items: int, seed: int = 0, interleaved: bool = False) -> SyntheticLog:
    """Power-law item popularity, users with a taste cluster, sessions in time order (numpy, fast). With
    ``interleaved`` the users' interactions are spread over the whole period (as in a shop), so that the most
    recent slice the holdout check judges holds users with a history before it; else one user after another."""
    rng = np.random.default_rng(seed)
    clusters = 50
    user_cluster = rng.integers(0, clusters, n_users)
    users = rng.integers(0, n_users, n)
    if not interleaved:
        users = np.sort(users)
    popular = (rng.zipf(1.3, n) - 1) % n_items
    in_cluster = (
        user_cluster[users] * (n_items // clusters) + rng.integers(0, max(n_items // clusters, 1), n)
    ) % n_items
    items = np.where(rng.random(n) < 0.6, in_cluster, popular)
    items[: min(n, n_items)] = np.arange(min(n, n_items))  # every catalogue item appears at least once
    weights = rng.choice(np.array([1.0, 1.0, 1.0, 3.0, 5.0]), n)
    ts = 1_790_000_000_000 + np.sort(rng.integers(0, 30 * 86_400_000, n))
    return SyntheticLog(users, items, weights, ts)


def write_log(r: redis.Redis, keys: Keys, log: SyntheticLog, echo: Echo) -> None:
    pipe = r.pipeline(transaction=False)
    for k, (u, i, w, t) in enumerate(
        zip(log.users.tolist(), log.items.tolist(), log.weights.tolist(), log.ts.tolist(), strict=True)
    ):
        pipe.xadd(keys.interactions, {"p": f"c:u{u}", "i": f"i{i}", "w": w, "t": t})  # as the worker writes
        if k % 20_000 == 19_999:
            pipe.execute()
            if k % 200_000 == 199_999:
                echo(f"  {k + 1} interactions written")
    pipe.execute()
    r.set(keys.interactions_count, len(log.users))


def bench_train(base: Settings, n: int, echo: Echo) -> TrainingResult:
    settings = isolated(base)
    r = connect_sync(settings)
    keys = Keys(settings.key_prefix)
    echo(f"writing {n} generated interactions to the training log ...")
    write_log(r, keys, synthetic_log(n, n_users=max(n // 20, 100), n_items=max(n // 50, 100), interleaved=True), echo)
    with tempfile.TemporaryDirectory(prefix="ecrm-bench-log-") as folder:
        settings = settings.model_copy(update={"training_log_dir": folder})
        echo("draining the training log to the store on disk, as the worker's timer does between trainings ...")
        started = time.perf_counter()
        TrainingLogStore.of(settings, r).drain(echo)
        drained_s = time.perf_counter() - started
        echo("training (drain of the tail, data load, holdout check, fit, store, promote) ...")
        result = train_once(settings, echo)
    result.timings["drain_before_s"] = drained_s  # not in total_s: the worker's timer drains between trainings
    return result


@dataclass
class ApiFigures:
    requests: int
    errors: int
    seconds: float
    target_rps: float
    server_p50_ms: float
    server_p99_ms: float
    client_p50_ms: float
    client_p99_ms: float
    health_rps: float
    recs_max_rps: float
    model_version: str
    items: int = 0
    workers: int = 1
    scoring: str = "candidates"
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ranker: str = "auto"
    ranker_used: bool | None = None  # whether the served model's ranking stage orders personal lists

    def as_json(self) -> dict[str, object]:
        """``ecrm bench api --json``: the issue's names (latencies server-side, at the steady load)."""
        return {
            "items": self.items,
            "workers": self.workers,
            "scoring": self.scoring,
            "ranker": self.ranker,
            "ranker_used": self.ranker_used,
            "rec_max_rps": round(self.recs_max_rps, 1),
            "live_max_rps": round(self.health_rps, 1),
            "ratio": round(self.recs_max_rps / self.health_rps, 4) if self.health_rps else None,
            "steady_rps": round(self.target_rps, 1),
            "p50_ms": round(self.server_p50_ms, 3),
            "p99_ms": round(self.server_p99_ms, 3),
            "client_p50_ms": round(self.client_p50_ms, 3),
            "client_p99_ms": round(self.client_p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
            "model_version": self.model_version,
            "load_avg": [round(x, 2) for x in self.load_avg],
        }

    def lines(self) -> list[str]:
        rate = self.requests / self.seconds
        return [
            f"model                          {self.model_version} ({self.items} items, {self.scoring} scoring)",
            f"API processes                  {self.workers}",
            f"steady load                    {rate:8.0f} req/s (target {self.target_rps:.0f}), "
            f"{self.requests} requests, {self.errors} errors",
            f"server-side latency p50        {self.server_p50_ms:8.2f} ms",
            f"server-side latency p99        {self.server_p99_ms:8.2f} ms",
            f"client-side latency p50 / p99  {self.client_p50_ms:8.2f} / {self.client_p99_ms:.2f} ms",
            f"max rate, recommendations      {self.recs_max_rps:8.0f} req/s",
            f"max rate, /health/live         {self.health_rps:8.0f} req/s "
            f"(recommendations at {self.recs_max_rps / self.health_rps:.0%} of it)",
        ]


def bench_api(
    base: Settings,
    port: int,
    items: int,
    rps: float,
    seconds: float,
    echo: Echo,
    workers: int = 1,
    exact: bool = False,
    ranker: str = "auto",
) -> ApiFigures:
    """``rps`` 0: the steady load runs at half the measured max rate of recommendations. ``ranker``: ``auto`` (the
    model's own gate decides), ``forced`` (``ranker_gate: false``, ``ranker_min_queries: 10``: the stage orders
    every list; the generated log has too few labelled users for the gate or the default minimum), ``off`` (the
    blend alone)."""
    with tempfile.TemporaryDirectory(prefix="ecrm-bench-") as tmp:
        settings = isolated(base, api_port=port, model_poll_s=1.0, api_model_dir=str(Path(tmp) / "models"))
        lines = [*(["candidates_min_items: 1000000000"] if exact else []), *RANKER_MODES[ranker]]
        if lines:  # exact: the reference, every item scored, as before candidate retrieval
            config = Path(tmp) / "recommender.yaml"
            config.write_text("".join(f"{line}\n" for line in lines))
            settings = settings.model_copy(update={"recommender_config_file": str(config)})
        figures = _bench_api(settings, items, rps, seconds, echo, workers, "exact" if exact else "candidates")
        figures.ranker = ranker
        return figures


RANKER_MODES: dict[str, list[str]] = {
    "auto": [],
    "forced": ["ranker_gate: false", "ranker_min_queries: 10"],  # as benchmarks.api_stages.FORCED
    "off": ["ranker: false"],
}


def _bench_api(
    settings: Settings, items: int, rps: float, seconds: float, echo: Echo, workers: int, scoring: str
) -> ApiFigures:
    port = settings.api_port
    r = connect_sync(settings)
    keys = Keys(settings.key_prefix)
    n = items * 5
    echo(f"training a model over a {items}-item catalogue ({n} generated interactions) ...")
    log = synthetic_log(n, n_users=items // 2, n_items=items, seed=1, interleaved=True)  # users over the period
    write_log(r, keys, log, echo)
    result = train_once(settings.model_copy(update={"holdout_max_users": 200, "gate_baselines": ""}))  # engine path
    stage = Registry(r, keys, keep=100).info(result.version).meta.get("ranker") or {}
    ranker_used = bool(stage.get("used"))
    echo(f"  {result.version} ({result.timings.get('fit_s', 0):.1f}s fit); ranking stage: "
         f"{'used' if ranker_used else 'not used'} ({stage.get('reason')})")  # fmt: skip
    customers = 2000
    pipe = r.pipeline(transaction=False)
    rng = np.random.default_rng(2)
    for c in range(customers):
        hist = rng.integers(0, items, 20)
        entries = {f"i{i}": item_value(1.0, 1_790_000_000_000 + j) for j, i in enumerate(hist.tolist())}
        pipe.hset(keys.profile(f"c:bench{c}"), mapping=item_fields(entries))
    pipe.execute()
    proc = spawn_role(["api", "--port", str(port), "--workers", str(workers)], settings)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(f"{base_url}/health/live", 60, [proc])
        time.sleep(settings.model_poll_s * 2)

        def recs(k: int) -> str:
            return f"{base_url}/v1/customers/bench{k % customers}/recommendations?n=10"

        first = orjson.loads(httpx.get(recs(0), timeout=10).content)
        echo(f"API serves {first['model_version']} ({first['strategy']}); warming up ...")
        asyncio.run(open_loop(get(recs), rps=100, seconds=2))
        echo("max rates first (closed loop, 16 connections, 10s each in alternating 1s slices) ...")
        live = get(lambda _: f"{base_url}/health/live")
        recs_rate, health_rate = asyncio.run(alternating_rates([get(recs), live], 10.0, rounds=10))
        echo(f"  recommendations {recs_rate:.0f} req/s, /health/live {health_rate:.0f} req/s")
        time.sleep(1)
        rps = rps or recs_rate / 2
        echo(f"steady load at {rps:.0f} req/s for {seconds:.0f}s ...")
        server, client, errors = asyncio.run(open_loop(get(recs), rps, seconds))
    finally:
        stop_process(proc)
    return ApiFigures(
        requests=len(server) + errors,
        errors=errors,
        seconds=seconds,
        target_rps=rps,
        server_p50_ms=statistics.median(server),
        server_p99_ms=pct(server, 99),
        client_p50_ms=statistics.median(client),
        client_p99_ms=pct(client, 99),
        health_rps=health_rate,
        recs_max_rps=recs_rate,
        model_version=str(first["model_version"]),
        items=items,
        workers=workers,
        scoring=scoring,
        load_avg=os.getloadavg(),
        ranker_used=ranker_used,
    )


def bench_freshness(base: Settings, port: int, probes: int, echo: Echo) -> list[float]:
    """Seconds from a product_view produced to Kafka until the customer's recommendations change."""
    from core.kafka import ensure_topics, make_producer, produce_events
    from runtime.simulate import SimulationConfig, simulate

    settings = isolated(base, api_port=port, model_poll_s=1.0)
    ensure_topics(settings)
    producer = make_producer(settings)
    cfg = SimulationConfig(customers=500, items=300, seed=5)
    produce_events(producer, settings.events_topic, simulate(cfg))
    procs = [spawn_role(["worker"], settings)]
    try:
        r = connect_sync(settings)
        keys = Keys(settings.key_prefix)
        deadline = time.monotonic() + 120
        while int(r.get(keys.applied_count) or 0) < 1000:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not process the demo events")
            time.sleep(0.2)
        train_once(settings)
        procs.append(spawn_role(["api", "--port", str(port)], settings))
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(f"{base_url}/health/ready", 60, procs)
        time.sleep(2)
        import httpx

        lags: list[float] = []
        with httpx.Client(base_url=base_url, timeout=10) as http:
            for k in range(probes):
                customer = f"cust-{k:05d}"
                before = http.get(f"/v1/customers/{customer}/recommendations").json()["items"]
                event = {"type": "product_view", "event_id": uuid.uuid4().hex, "customer_id": customer,
                         "timestamp": int(time.time() * 1000), "item_id": before[0]["item_id"]}  # fmt: skip
                sent = time.perf_counter()
                produce_events(producer, settings.events_topic, [event])
                while http.get(f"/v1/customers/{customer}/recommendations").json()["items"] == before:
                    if time.perf_counter() - sent > 10:
                        raise RuntimeError(f"{customer}'s recommendations did not change in 10 s")
                    time.sleep(0.005)
                lags.append(time.perf_counter() - sent)
                time.sleep(0.05)
        echo(f"  {len(lags)} probes")
        return lags
    finally:
        producer.close()
        for proc in reversed(procs):
            stop_process(proc)
