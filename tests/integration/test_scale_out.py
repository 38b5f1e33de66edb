"""Scale-out on one host: two workers sharing four partitions and two API processes, on the real embedded broker
and Redis-compatible server. A shop's events go in through both API processes (a batch sent twice, through each
of them, is counted once); one worker is killed with SIGKILL mid-stream, the other takes its partitions over, a
new worker joins; afterwards every profile holds each event exactly once, and either API process reads it."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from core.keyspace import Keys, customer_pid
from core.settings import Settings
from profiles.layout import count_field
from runtime.embedded import free_port
from runtime.local import spawn_role, stop_process, wait_ready
from tests.conftest import wait_for
from tests.integration.helpers import sync_redis, view, wait_committed, worker_metrics

pytestmark = pytest.mark.integration
StartWorker = Callable[[Settings], subprocess.Popen[bytes]]
CUSTOMERS = [f"s{i}" for i in range(40)]
EVENTS = 20_000
BATCH = 500


@pytest.fixture()
def scaled(settings: Settings) -> Settings:
    """Four partitions; no rate limit (one test client posts for a whole shop)."""
    return settings.model_copy(update={"topic_partitions": 4, "rate_limit": ""})


@pytest.fixture()
def two_apis(scaled: Settings) -> Iterator[list[str]]:
    """Two ``ecrm api`` processes on their own ports, ready; stopped at the end."""
    ports = [free_port(), free_port()]
    procs = [spawn_role(["api", "--port", str(port)], scaled) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            wait_ready(f"{url}/health/ready", 60, procs)  # the workers start later, in the test
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)


def post(url: str, events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{url}/v1/events", json=events, timeout=30)
    assert response.status_code == 202 and response.json()["accepted"] == len(events), response.text


def processed_by(port: int) -> float:
    found = worker_metrics(port, "ecrm_events_processed_total")
    return found[0] if found else 0.0


def test_two_workers_four_partitions_two_apis_sigkill(
    scaled: Settings, two_apis: list[str], worker_factory: StartWorker
) -> None:
    r = sync_redis(scaled)
    keys = Keys(scaled.key_prefix)
    ports = [free_port(), free_port()]
    workers = [worker_factory(scaled.model_copy(update={"worker_metrics_port": port})) for port in ports]
    events = [view(CUSTOMERS[i % len(CUSTOMERS)], f"sku-{i % 97}") for i in range(EVENTS)]

    def applied() -> int:
        return int(r.get(keys.applied_count) or 0)

    for n, start in enumerate(range(0, EVENTS, BATCH)):  # through both API processes, in turn
        post(two_apis[n % 2], events[start : start + BATCH])
    post(two_apis[1], events[:BATCH])  # the first batch again, through the other process: a double delivery
    post(two_apis[0], events[BATCH : 2 * BATCH])

    wait_for(lambda: all(processed_by(p) > 0 for p in ports), timeout=120, what="both workers to apply events")
    wait_for(lambda: applied() > EVENTS // 10, timeout=120, what="the workers to be mid-stream")
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait()
    at_kill = applied()
    assert at_kill < EVENTS, f"the kill should land mid-stream, applied {at_kill}"
    worker_factory(scaled)  # a replacement joins the group beside the survivor
    wait_for(lambda: applied() >= EVENTS, timeout=240, what=f"every event applied (at {applied()} of {EVENTS})")
    wait_committed(scaled, EVENTS + 2 * BATCH)  # every record acked: a redelivered duplicate would have landed
    assert applied() == EVENTS
    expected = Counter(e["customer_id"] for e in events)
    for customer in CUSTOMERS:
        assert int(r.hget(keys.profile(customer_pid(customer)), count_field("product_view")) or 0) == expected[customer]
    for url in two_apis:  # either process serves what went in through the other
        profile = httpx.get(f"{url}/v1/customers/{CUSTOMERS[0]}/profile", timeout=10).json()
        assert profile["events_total"] == expected[CUSTOMERS[0]]
    print(f"\nscale-out: 2 workers on 4 partitions, 2 API processes; SIGKILL at {at_kill} of {EVENTS}; lost 0, twice 0")
