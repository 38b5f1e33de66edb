"""A worker stopped gracefully (SIGTERM) while Redis is unreachable does not ack the batch it could not write: the
next worker, with Redis back, applies every event exactly once.

Redis here is a dedicated Valkey that is shut down with a snapshot and started again from it on the same port, so
what was applied before the outage is still there afterwards."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from core.kafka import make_producer, produce_events
from core.keyspace import Keys, customer_pid
from core.settings import Settings
from profiles.layout import count_field
from runtime.embedded import die_with_parent, free_port, valkey_binary, wait_for_port
from tests.conftest import wait_for
from tests.integration.helpers import now_ms, view, wait_committed

pytestmark = pytest.mark.integration
StartWorker = Callable[[Settings], subprocess.Popen[bytes]]


class RestartableRedis:
    """A Valkey on a fixed port and data directory: ``stop`` saves a snapshot, ``start`` loads it. With ``aof``
    every write is also appended to a log fsynced before the reply (``--appendfsync always``), so that even a
    crash (``kill``) loses nothing acknowledged: ``start`` replays the log."""

    def __init__(self, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ecrm-redis-restart-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.aof = aof

    def start(self) -> None:
        argv = [str(valkey_binary()), "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        argv += ["--dir", str(self.dir), "--dbfilename", "dump.rdb"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        wait_for_port(self.port, 20, self.proc)
        wait_for(lambda: self.client().ping(), timeout=20, what="Valkey to load its snapshot")

    def stop(self) -> None:
        assert self.proc is not None
        try:
            self.client().shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        self.proc.wait(timeout=20)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    yield server
    server.kill()


def store_retries(metrics_port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    lines = [line for line in text.splitlines() if line.startswith('ecrm_store_retries_total{reason="connection"}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_sigterm_while_redis_is_unreachable_leaves_the_batch_for_the_next_worker(
    settings: Settings, worker_factory: StartWorker, restartable_redis: RestartableRedis
) -> None:
    metrics_port = free_port()
    settings = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{restartable_redis.port}/0", "worker_metrics_port": metrics_port}
    )
    keys = Keys(settings.key_prefix)
    customers = [f"g{i}" for i in range(10)]
    ts = now_ms()
    before = [view(customers[i % 10], f"sku-{i}", ts + i) for i in range(100)]
    during = [view(customers[i % 10], f"sku-{i}", ts + 1000 + i) for i in range(200)]

    def applied() -> int:
        return int(restartable_redis.client().get(keys.applied_count) or 0)

    producer = make_producer(settings)
    first = worker_factory(settings)
    produce_events(producer, settings.events_topic, before)
    wait_for(lambda: applied() == len(before), timeout=90, what="the events before the outage")

    restartable_redis.stop()  # Redis unreachable from here on
    produce_events(producer, settings.events_topic, during)
    producer.close()
    wait_for(lambda: store_retries(metrics_port) > 0, timeout=60, what="the worker to retry a batch against Redis")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0  # a graceful stop

    restartable_redis.start()
    assert applied() == len(before)  # nothing of the batch was written during the outage
    worker_factory(settings.model_copy(update={"worker_metrics_port": 0}))
    wait_for(lambda: applied() >= len(before) + len(during), timeout=90, what="the batch left unacked")
    wait_committed(settings, len(before) + len(during))  # every record acked: a duplicate would have landed
    assert applied() == len(before) + len(during)
    expected = Counter(e["customer_id"] for e in before + during)
    client = restartable_redis.client()
    for customer in customers:
        profile = client.hgetall(keys.profile(customer_pid(customer)))
        assert int(profile[count_field("product_view")]) == expected[customer], customer
