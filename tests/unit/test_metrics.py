"""Metrics that tell the truth: each role's own registry, counters at 0 from the start, the lag and outcome rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest

from api.auth import Caller
from api.collector import Collector
from core import metrics
from core.errors import BrokerUnavailable
from core.redis import _TRANSIENT_CLASSES, _TRANSIENT_CODES
from core.scopes import Scope
from core.settings import Settings
from schemas.events import EVENT_TYPES
from stream.lag import lag_per_partition
from stream.processing import lag_kind
from stream.retrain import training_outcome

WORKER_ONLY = ("ecrm_events_consumed_total", "ecrm_consumer_lag", "ecrm_analytics_model_fitted", "ecrm_training_runs")
API_ONLY = ("ecrm_api_request_seconds", "ecrm_model_age_seconds", "ecrm_events_collected_total")


def test_each_role_exposes_only_its_own_metrics_and_the_process_metrics() -> None:
    api = generate_latest(metrics.API_REGISTRY).decode()
    worker = generate_latest(metrics.WORKER_REGISTRY).decode()
    for name in WORKER_ONLY:
        assert name not in api and f"# HELP {name}" in worker
    for name in API_ONLY:
        assert name not in worker and f"# HELP {name}" in api
    assert "process_cpu_seconds_total" in api and "process_cpu_seconds_total" in worker


def test_labelled_counters_exist_at_zero_before_their_first_increment() -> None:
    worker = generate_latest(metrics.WORKER_REGISTRY).decode()
    api = generate_latest(metrics.API_REGISTRY).decode()
    for event_type in (*EVENT_TYPES, "unknown"):
        assert f'ecrm_events_dead_lettered_total{{type="{event_type}"}}' in worker
        assert f'ecrm_events_duplicate_total{{type="{event_type}"}}' in worker
    for outcome in ("promoted", "refused", "failed"):
        assert f'ecrm_training_runs_total{{outcome="{outcome}",tenant="default"}}' in worker
    assert 'ecrm_event_to_profile_lag_seconds_count{kind="live"}' in worker
    assert 'ecrm_api_dependency_errors_total{dependency="redis"}' in api
    assert 'ecrm_events_collected_total{tenant="default",type="purchase"}' in api


def test_every_redis_retry_reason_is_known_to_the_metrics() -> None:
    reasons = {reason for _, reason in _TRANSIENT_CLASSES} | set(_TRANSIENT_CODES.values())
    assert reasons <= set(metrics.STORE_REASONS)


def test_consumer_lag_per_partition() -> None:
    assert lag_per_partition({0: 10, 1: 5, 2: 7}, {0: 4, 1: 5}) == {0: 6, 1: 0, 2: 7}
    assert lag_per_partition({0: 3}, {0: -1}) == {0: 3}  # -1: nothing committed
    assert lag_per_partition({0: 3}, {0: 9}) == {0: 0}  # end offsets read before a commit


def test_live_and_backfilled_events_are_told_apart_by_the_record_time() -> None:
    assert lag_kind(1_000_000, 1_000_500, 300_000) == "live"
    assert lag_kind(1_000_000, 1_000_000 + 300_001, 300_000) == "backfill"
    assert lag_kind(1_000_000, None, 300_000) == "live"


def test_training_outcomes_from_the_exit_code() -> None:
    assert [training_outcome(c) for c in (0, 1, 2, -9)] == ["promoted", "refused", "failed", "failed"]


class FakeProducer:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(OSError("broker gone"))
        else:
            future.set_result(None)
        return future


def collected(event_type: str) -> float:
    return metrics.EVENTS_COLLECTED.labels(event_type, "default")._value.get()  # type: ignore[no-any-return]


async def test_events_count_as_collected_only_once_the_broker_acknowledged_them() -> None:
    collector = Collector(Settings())
    body = b'{"type":"search","event_id":"m1","timestamp":"2026-11-23T10:00:00Z","anonymous_id":"a1","query":"x"}'
    before = collected("search")
    collector.producer = FakeProducer(fail=True)  # type: ignore[assignment]
    with pytest.raises(BrokerUnavailable):
        await collector.collect(body, Caller(Scope.COLLECT, "collect", "t"))
    assert collected("search") == before
    collector.producer = FakeProducer(fail=False)  # type: ignore[assignment]
    assert (await collector.collect(body, Caller(Scope.COLLECT, "collect", "t"))).accepted == 1
    assert collected("search") == before + 1


def test_the_api_says_which_baseline_the_gate_serves_from_the_start() -> None:
    api = generate_latest(metrics.API_REGISTRY).decode()
    worker = generate_latest(metrics.WORKER_REGISTRY).decode()
    for baseline in ("popularity", "trending", "buy-again", "recently-viewed"):
        assert f'ecrm_model_baseline_served{{baseline="{baseline}"}} ' in api  # 0 until a gate serves it
    assert "ecrm_model_baseline_served" not in worker


def test_observe_many_counts_as_one_observe_each() -> None:
    """The worker's lag histogram is filled once per chunk (core.metrics.observe_many): the same buckets, count and
    sum as one ``observe`` per event, on a bound exactly, under the first bound, past the last one."""
    from prometheus_client import CollectorRegistry, Histogram

    from core.metrics import observe_many

    registry = CollectorRegistry()
    buckets = (0.005, 0.01, 0.1, 1.0, 60.0)
    one = Histogram("one_each", "per value", ["kind"], buckets=buckets, registry=registry)
    many = Histogram("all_at_once", "per chunk", ["kind"], buckets=buckets, registry=registry)
    values = [0.0, 0.005, 0.0050001, 0.01, 0.05, 0.1, 0.99, 1.0, 59.9, 60.0, 61.0, 1e9, 0.003, 0.003]
    for value in values:
        one.labels("live").observe(value)
    observe_many(many.labels("live"), values)
    observe_many(many.labels("backfill"), [])

    def samples(name: str) -> dict[str, float]:
        return {
            f"{s.name.removeprefix(name)}{s.labels.get('le', '')}": s.value
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if s.labels.get("kind") == "live" and not s.name.endswith("_created")
        }

    got, want = samples("all_at_once"), samples("one_each")
    assert got.keys() == want.keys() and len(want) == len(buckets) + 3  # the buckets, +Inf, count, sum
    assert {k: v for k, v in got.items() if k != "_sum"} == {k: v for k, v in want.items() if k != "_sum"}
    assert got["_bucket0.005"] == 4 and got["_bucket+Inf"] == len(values)
    assert abs(got["_sum"] - want["_sum"]) <= 1e-6 * want["_sum"]
