"""``ecrm bench ingest``: throughput and event-to-profile lag of one worker, against a plain aiokafka consumer and
a Faust agent that does nothing.

Five measurements in one run, on the same broker, topic and machine, so the ratios mean something:
1. a plain aiokafka consumer reading the pre-produced topic (the ceiling of the client library);
2. a Faust agent that does nothing (:mod:`benchmarks.noop_agent`) reading the same events with the worker's app
   settings and batching, in its own group (the ceiling of the framework: ``noop_faust_eps``), once before and once
   after the worker, each in a new group: the mean of the two brackets the machine's load during the worker's pass;
3. one worker processing the same events into Redis (events per second, from first to last applied: ``worker_eps``;
   ``ratio`` = worker / no-op agent), with the CPU per event of the worker process and of Redis over that span, and
   of the no-op agent's process over its passes (``*_cpu_us_per_event``: less sensitive to the machine's load than
   the rates);
4. end-to-end lag at a steady load (half the measured worker rate by default): probe events are produced
   between the load and their profile is polled in Redis; lag = visible time - produce time;
5. the same lag while a training runs on a generated log of ``--train-interactions`` interactions, started the way
   the worker starts it (``ecrm train`` as a child process at nice 19 under SCHED_BATCH, one BLAS thread): a
   training must not starve ingest (``lag_p99_with_training_ms``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from aiokafka import AIOKafkaConsumer

from core.kafka import ensure_topics, event_key, make_producer, produce_events
from core.keyspace import Keys
from core.redis import connect_sync
from core.settings import Settings, isolated
from runtime.embedded import die_with_parent
from runtime.local import settings_env, spawn_role, stop_process
from runtime.simulate import SimulationConfig, simulate
from stream.retrain import background_child

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
    noop_faust_eps: float = 0.0
    lag_p50_with_training_ms: float = 0.0
    lag_p99_with_training_ms: float = 0.0
    lag_max_with_training_ms: float = 0.0
    probes_with_training: int = 0
    training_s: float = 0.0
    training_exit: int | None = None
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noop_passes_eps: tuple[float, float] = (0.0, 0.0)  # before and after the worker; noop_faust_eps is their mean
    # CPU per event (microseconds): the worker process, Redis during the worker's pass, the no-op agent's process
    worker_cpu_us: float = 0.0
    redis_cpu_us: float = 0.0
    noop_cpu_us: float = 0.0

    @property
    def worker_own_cpu_us(self) -> float:
        """The worker process's CPU per event beyond a Faust agent's that does nothing: its own work (validation,
        plans, script arguments, the Redis client, acks, metrics)."""
        return max(self.worker_cpu_us - self.noop_cpu_us, 0.0) if self.worker_cpu_us and self.noop_cpu_us else 0.0

    @property
    def ratio(self) -> float:
        """The worker's rate over the no-op Faust agent's (target >= 0.8)."""
        return self.worker_eps / self.noop_faust_eps if self.noop_faust_eps else 0.0

    def lines(self) -> list[str]:
        ratio = self.worker_eps / self.plain_consumer_eps if self.plain_consumer_eps else 0.0
        out = [
            f"events                      {self.events}",
            f"plain aiokafka consumer     {self.plain_consumer_eps:10.0f} events/s",
            f"no-op Faust agent           {self.noop_faust_eps:10.0f} events/s   (mean of "
            f"{self.noop_passes_eps[0]:.0f} before and {self.noop_passes_eps[1]:.0f} after the worker)",
            f"worker (Faust + Redis)      {self.worker_eps:10.0f} events/s   ({ratio:.1%} of the plain consumer, "
            f"{self.ratio:.2f} of the no-op agent)",
            f"CPU per event               worker {self.worker_cpu_us:.0f} us + Redis {self.redis_cpu_us:.0f} us; "
            f"no-op agent {self.noop_cpu_us:.0f} us (the worker's own: {self.worker_own_cpu_us:.0f} us)",
            f"steady load for lag         {self.load_eps:10.0f} events/s",
            f"event-to-profile lag p50    {self.lag_p50_ms:10.1f} ms   ({self.probes} probes)",
            f"event-to-profile lag p99    {self.lag_p99_ms:10.1f} ms",
            f"event-to-profile lag max    {self.lag_max_ms:10.1f} ms",
        ]
        if self.probes_with_training:
            out += [
                f"with a training running     p50 {self.lag_p50_with_training_ms:.1f} ms, "
                f"p99 {self.lag_p99_with_training_ms:.1f} ms, max {self.lag_max_with_training_ms:.1f} ms "
                f"({self.probes_with_training} probes; the training ran {self.training_s:.1f} s, "
                f"exit {self.training_exit})",
            ]
        out.append(f"machine load (1/5/15 min)   {' '.join(f'{x:.2f}' for x in self.load_avg)}")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "plain_consumer_eps": round(self.plain_consumer_eps, 1),
            "noop_faust_eps": round(self.noop_faust_eps, 1),
            "noop_passes_eps": [round(x, 1) for x in self.noop_passes_eps],
            "worker_eps": round(self.worker_eps, 1),
            "ratio": round(self.ratio, 3),
            "worker_cpu_us_per_event": round(self.worker_cpu_us, 1),
            "redis_cpu_us_per_event": round(self.redis_cpu_us, 1),
            "noop_cpu_us_per_event": round(self.noop_cpu_us, 1),
            "worker_own_cpu_us_per_event": round(self.worker_own_cpu_us, 1),
            "load_eps": round(self.load_eps, 1),
            "lag_p50_ms": round(self.lag_p50_ms, 1),
            "lag_p99_ms": round(self.lag_p99_ms, 1),
            "lag_max_ms": round(self.lag_max_ms, 1),
            "probes": self.probes,
            "lag_p50_with_training_ms": round(self.lag_p50_with_training_ms, 1),
            "lag_p99_with_training_ms": round(self.lag_p99_with_training_ms, 1),
            "lag_max_with_training_ms": round(self.lag_max_with_training_ms, 1),
            "probes_with_training": self.probes_with_training,
            "training_s": round(self.training_s, 1),
            "training_exit": self.training_exit,
            "load_avg": list(self.load_avg),
        }


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


@dataclass
class Pass:
    """One pass over the events: its rate, and the CPU spent per event by the process that read them and by Redis
    (0 where it could not be read: a process's CPU is read from /proc, Redis's from ``INFO cpu``)."""

    eps: float
    cpu_us: float = 0.0
    redis_cpu_us: float = 0.0


def worker_rate(settings: Settings, r: redis.Redis, n: int, proc_holder: list[subprocess.Popen[bytes]]) -> Pass:
    keys = Keys(settings.key_prefix)
    proc_holder.append(spawn_role(["worker"], settings))
    return counted_rate(lambda: applied(r, keys), n, "worker", proc_holder[-1].pid, r)


def counted_rate(count: Callable[[], int], n: int, who: str, pid: int, r: redis.Redis) -> Pass:
    """Events per second from the first count seen to ``n`` (the start-up, a group join, is left out), and the CPU
    spent per event over the same span by process ``pid`` and by Redis."""
    while count() == 0:
        time.sleep(0.005)
    started, first, cpu, redis_cpu = time.perf_counter(), count(), process_cpu_s(pid), redis_cpu_s(r)
    while (done := count()) < n:
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"{who} processed only {done} of {n} events in 10 minutes")
        time.sleep(0.01)
    elapsed, per_event_us = time.perf_counter() - started, 1e6 / (n - first)
    return Pass(
        (n - first) / elapsed,
        max(process_cpu_s(pid) - cpu, 0.0) * per_event_us if cpu else 0.0,
        max(redis_cpu_s(r) - redis_cpu, 0.0) * per_event_us if redis_cpu else 0.0,
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0.0 where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def redis_cpu_s(r: redis.Redis) -> float:
    """User + system CPU seconds of the Redis server so far (``INFO cpu``; 0.0 where it does not say)."""
    info = r.info("cpu")
    return float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))


def noop_rate(settings: Settings, r: redis.Redis, n: int) -> Pass:
    """The rate of a Faust agent that does nothing on the same topic (:mod:`benchmarks.noop_agent`)."""
    from benchmarks.noop_agent import noop_count_key

    key = noop_count_key(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.noop_agent"],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
        start_new_session=True,
    )
    try:
        return counted_rate(lambda: int(r.get(key) or 0), n, "the no-op Faust agent", proc.pid, r)
    finally:
        stop_process(proc)


def start_training(settings: Settings) -> subprocess.Popen[bytes]:
    """``ecrm train`` started the way the worker starts it (stream/retrain.py: nice 19, SCHED_BATCH, dies with its
    parent)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecrm", "train"],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=background_child,
    )


def lag_with_training(
    settings: Settings, r: redis.Redis, rate: float, interactions: int, echo: Echo
) -> tuple[list[float], float, int | None]:
    """Write ``interactions`` generated interactions to the training log, start a training, and probe the lag at
    ``rate`` while it runs (at most 120 s). Returns the lags, how long the training ran, and its exit code."""
    from benchmarks.recommender import synthetic_log, write_log

    keys = Keys(settings.key_prefix)
    echo(f"writing {interactions} generated interactions to the training log ...")
    log = synthetic_log(interactions, max(interactions // 20, 100), max(interactions // 50, 100), interleaved=True)
    write_log(r, keys, log, echo)
    started = time.perf_counter()
    proc = start_training(settings)
    try:
        lags = steady_lag(settings, r, rate, 120.0, until=lambda: proc.poll() is not None)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return lags, time.perf_counter() - started, proc.returncode


def steady_lag(
    settings: Settings,
    r: redis.Redis,
    rate: float,
    seconds: float,
    until: Callable[[], bool] | None = None,
) -> list[float]:
    """Produce ``rate`` events/s for ``seconds`` (or until ``until()`` holds); every 50 ms a probe whose profile is
    polled until visible."""
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
    while time.perf_counter() < deadline and not (until is not None and until()):
        cid = f"probe-{uuid.uuid4().hex[:10]}"
        event = {"type": "page_view", "event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000),
                 "customer_id": cid}  # fmt: skip
        sent_at = time.perf_counter()
        produce_events(probe_producer, settings.events_topic, [event])
        while not r.exists(keys.profile(f"c:{cid}")):
            if time.perf_counter() - sent_at > 60:
                raise RuntimeError("a probe event was not visible after 60 s")
            time.sleep(0.001)
        lags.append((time.perf_counter() - sent_at) * 1000)
        time.sleep(0.05)
    stop.set()
    thread.join()
    probe_producer.close()
    return lags


def run_ingest_bench(
    base: Settings,
    n: int,
    load_rate: float | None,
    seconds: float,
    echo: Echo,
    with_timers: bool = False,
    train_interactions: int = 1_000_000,
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
    echo("a Faust agent that does nothing ...")
    noop_before = noop_rate(settings.model_copy(update={"worker_app_id": f"{settings.worker_app_id}-1"}), r, n)
    echo(f"  {noop_before.eps:.0f} events/s")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        echo("one worker (Faust agent + Redis) ...")
        worker = worker_rate(settings, r, n, procs)
        rate = worker.eps
        echo(f"  {rate:.0f} events/s")
        # The no-op agent again after the worker: the machine's load changes between passes, their mean brackets it.
        # The worker stays up, idle (caught up): stopping and starting it would rebalance its group during the lag
        # phase (a member that did not leave in time is dropped only after the session timeout).
        echo("the Faust agent that does nothing, again (the worker idle) ...")
        noop_after = noop_rate(settings.model_copy(update={"worker_app_id": f"{settings.worker_app_id}-2"}), r, n)
        noop = (noop_before.eps + noop_after.eps) / 2
        echo(f"  {noop_after.eps:.0f} events/s; worker at {rate / noop:.2f} of their mean")
        load = load_rate or rate / 2
        echo(f"steady load at {load:.0f} events/s for {seconds:.0f}s with lag probes ...")
        lags = steady_lag(settings, r, load, seconds)
        trained: tuple[list[float], float, int | None] = ([], 0.0, None)
        if train_interactions > 0:
            echo(f"the same load while a training on {train_interactions} interactions runs ...")
            trained = lag_with_training(settings, r, load, train_interactions, echo)
    finally:
        for proc in procs:
            stop_process(proc)
    quantiles = statistics.quantiles(lags, n=100, method="inclusive")
    figures = IngestFigures(n, plain, rate, load, statistics.median(lags), quantiles[98], max(lags), len(lags), noop)
    figures.noop_passes_eps = (noop_before.eps, noop_after.eps)
    figures.worker_cpu_us, figures.redis_cpu_us = worker.cpu_us, worker.redis_cpu_us
    figures.noop_cpu_us = (noop_before.cpu_us + noop_after.cpu_us) / 2
    train_lags, figures.training_s, figures.training_exit = trained
    if len(train_lags) >= 2:
        figures.lag_p50_with_training_ms = statistics.median(train_lags)
        figures.lag_p99_with_training_ms = statistics.quantiles(train_lags, n=100, method="inclusive")[98]
        figures.lag_max_with_training_ms = max(train_lags)
        figures.probes_with_training = len(train_lags)
    figures.load_avg = os.getloadavg()
    return figures
