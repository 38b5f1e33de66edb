"""``ecrm bench ingest``: throughput and event-to-profile lag of one worker, against a plain aiokafka consumer.

Three measurements in one run, on the same broker, topic and machine, so the ratios mean something:
1. a plain aiokafka consumer reading the pre-produced topic (the ceiling);
2. one worker processing the same events into Redis (events per second, from first to last applied);
3. end-to-end lag at a steady load (half the measured worker rate by default): probe events are produced
   between the load and their profile is polled in Redis; lag = visible time - produce time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis
from aiokafka import AIOKafkaConsumer

from core.kafka import ensure_topics, event_key, make_producer, produce_events
from core.keyspace import Keys
from core.redis import connect_sync
from core.settings import Settings, isolated
from runtime.local import spawn_role, stop_process
from runtime.simulate import SimulationConfig, simulate

Echo = Callable[[str], None]


@dataclass
class IngestFigures:
    events: int
    plain_consumer_eps: float
    worker_eps: float
    load_eps: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    probes: int

    def lines(self) -> list[str]:
        ratio = self.worker_eps / self.plain_consumer_eps if self.plain_consumer_eps else 0.0
        return [
            f"events                      {self.events}",
            f"plain aiokafka consumer     {self.plain_consumer_eps:10.0f} events/s",
            f"worker (Faust + Redis)      {self.worker_eps:10.0f} events/s   ({ratio:.1%} of the plain consumer)",
            f"steady load for lag         {self.load_eps:10.0f} events/s",
            f"event-to-profile lag p50    {self.lag_p50_ms:10.1f} ms   ({self.probes} probes)",
            f"event-to-profile lag p99    {self.lag_p99_ms:10.1f} ms",
            f"event-to-profile lag max    {self.lag_max_ms:10.1f} ms",
        ]


def generate(n: int) -> list[dict[str, object]]:
    """Behavioural events only (no catalogue), as many as asked, from the simulator."""
    out: list[dict[str, object]] = []
    seed = 1
    while len(out) < n:
        cfg = SimulationConfig(customers=2000, anonymous_visitors=500, items=5000, seed=seed)
        out.extend(e for e in simulate(cfg) if e["type"] != "item")
        seed += 1
    return out[:n]


async def plain_consumer_rate(settings: Settings, n: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"plain-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        count, started = 0, 0.0
        while count < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            got = sum(len(v) for v in batch.values())
            if got and not started:
                started = time.perf_counter()
            count += got
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def applied(r: redis.Redis, keys: Keys) -> int:
    return int(r.get(keys.applied_count) or 0)


def worker_rate(settings: Settings, r: redis.Redis, n: int, proc_holder: list[subprocess.Popen[bytes]]) -> float:
    keys = Keys(settings.key_prefix)
    proc_holder.append(spawn_role(["worker"], settings))
    while applied(r, keys) == 0:
        time.sleep(0.005)
    started, first = time.perf_counter(), applied(r, keys)
    while (done := applied(r, keys)) < n:
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"worker processed only {done} of {n} events in 10 minutes")
        time.sleep(0.01)
    return (n - first) / (time.perf_counter() - started)


def steady_lag(settings: Settings, r: redis.Redis, rate: float, seconds: float) -> list[float]:
    """Produce ``rate`` events/s for ``seconds``; every 50 ms a probe whose profile is polled until visible."""
    keys = Keys(settings.key_prefix)
    stop = threading.Event()
    background = generate(int(rate * seconds) + 1000)

    def load() -> None:
        producer = make_producer(settings)
        interval, sent, t0 = 0.01, 0, time.perf_counter()
        for event in background:
            if stop.is_set():
                break
            event["timestamp"] = int(time.time() * 1000)
            producer.send(settings.events_topic, value=orjson.dumps(event), key=event_key(event))
            sent += 1
            ahead = sent / rate - (time.perf_counter() - t0)
            if ahead > interval:
                producer.flush()
                time.sleep(ahead)
        producer.flush()
        producer.close()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    probe_producer = make_producer(settings)
    lags: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        cid = f"probe-{uuid.uuid4().hex[:10]}"
        event = {"type": "page_view", "event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000),
                 "customer_id": cid}  # fmt: skip
        sent_at = time.perf_counter()
        produce_events(probe_producer, settings.events_topic, [event])
        while not r.exists(keys.profile(f"c:{cid}")):
            if time.perf_counter() - sent_at > 30:
                raise RuntimeError("a probe event was not visible after 30 s")
            time.sleep(0.001)
        lags.append((time.perf_counter() - sent_at) * 1000)
        time.sleep(0.05)
    stop.set()
    thread.join()
    probe_producer.close()
    return lags


def run_ingest_bench(
    base: Settings, n: int, load_rate: float | None, seconds: float, echo: Echo, with_timers: bool = False
) -> IngestFigures:
    settings = isolated(base)
    if not with_timers:
        # The ingest path alone: the worker's retraining and analytics timers off (the worker inherits the
        # environment); with them on, a training started by the worker shares the cores during the lag phase.
        settings = settings.model_copy(update={"retrain_check_s": 1e9})
        os.environ["ECRM_ANALYTICS_INTERVAL_S"] = "0"
    ensure_topics(settings)
    r = connect_sync(settings)
    echo(f"generating and producing {n} events ...")
    producer = make_producer(settings)
    produce_events(producer, settings.events_topic, generate(n))
    producer.close()
    echo("plain aiokafka consumer ...")
    plain = asyncio.run(plain_consumer_rate(settings, n))
    echo(f"  {plain:.0f} events/s")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        echo("one worker (Faust agent + Redis) ...")
        rate = worker_rate(settings, r, n, procs)
        echo(f"  {rate:.0f} events/s")
        load = load_rate or rate / 2
        echo(f"steady load at {load:.0f} events/s for {seconds:.0f}s with lag probes ...")
        lags = steady_lag(settings, r, load, seconds)
    finally:
        for proc in procs:
            stop_process(proc)
    quantiles = statistics.quantiles(lags, n=100, method="inclusive")
    return IngestFigures(n, plain, rate, load, statistics.median(lags), quantiles[98], max(lags), len(lags))
