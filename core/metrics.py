"""Prometheus metrics of every role, defined once. Names start with ``ecrm_``.

Each role exposes only its own metrics (so that a panel never mixes a role's real value with another role's 0):

- the API serves the default registry (:data:`API_REGISTRY`) on ``/metrics``;
- the stream worker serves :data:`WORKER_REGISTRY` on ``ECRM_WORKER_METRICS_PORT`` (it also hosts the analytics
  refresh, the retraining trigger and the consumer-lag check, so their metrics are the worker's).

Both carry the process metrics (CPU, memory, open files) and the Python platform info.

Several API processes on one host (``ecrm api --workers N``) share one ``/metrics``: prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``ecrm api`` before the processes start). Counters and
histograms are summed over the processes, dead ones included (nothing counted is lost when a process restarts);
each API gauge says how its processes' values combine (``multiprocess_mode``: the largest or the smallest of the
live processes). The per-process metrics (CPU, memory) are not exposed in that mode. Labelled counters are
created at 0 for every known label value (:func:`zero`), so that ``rate()`` and ``increase()`` see their first
increment.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

from core.settings import GATE_BASELINES
from core.tenants import DEFAULT_TENANT
from schemas.events import EVENT_TYPES

API_REGISTRY = REGISTRY  # the default registry: the process and platform collectors are already in it
WORKER_REGISTRY = CollectorRegistry()
ProcessCollector(registry=WORKER_REGISTRY)
PlatformCollector(registry=WORKER_REGISTRY)

TYPES: tuple[str, ...] = (*EVENT_TYPES, "unknown")  # "unknown": a message whose type could not be read
STORE_REASONS: tuple[str, ...] = (
    "connection",
    "timeout",
    "oom",
    "readonly",
    "loading",
    "masterdown",
    "tryagain",
    "clusterdown",
    "busy",
    "noscript",
)
LAG_KINDS: tuple[str, ...] = ("live", "backfill")
TRAINING_OUTCOMES: tuple[str, ...] = ("promoted", "refused", "failed")
DEPENDENCIES: tuple[str, ...] = ("redis", "kafka")


OTHER_TENANT = "other"
"""The ``tenant`` label of every tenant the engine was not configured with (``ECRM_TENANTS``, ``ECRM_API_KEYS``):
the label's values stay bounded by the configuration, whatever names reach a metric."""
NO_TENANT = "none"
"""The ``tenant`` label of a request no key was checked for (``/metrics``, ``/health``, a 401)."""
_tenants: frozenset[str] = frozenset({DEFAULT_TENANT})


def tenant_label(tenant: str) -> str:
    """The ``tenant`` label of a metric: the tenant when it is configured (:func:`host_tenants`), else ``other``."""
    return tenant if tenant in _tenants else OTHER_TENANT


def host_tenants(tenants: Iterable[str]) -> tuple[str, ...]:
    """Label metrics with these tenants (and ``default``); every tenant-labelled counter is created at 0 for each
    (and ``other``), so that ``rate()`` sees its first increment. Returns the labels."""
    global _tenants
    _tenants = frozenset((DEFAULT_TENANT, *tenants))
    labels = (*sorted(_tenants), OTHER_TENANT)
    zero(EVENTS_COLLECTED, EVENT_TYPES, labels)
    zero(EVENTS_REJECTED, labels)
    zero(COLLECTOR_REFUSED, COLLECTOR_REASONS, labels)
    zero(TRAINING_RUNS, TRAINING_OUTCOMES, labels)
    return labels


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every ``a`` of ``amounts`` (a labelled child), in one update per bucket: the
    worker observes every event's lag, and one ``observe`` per event cost it about a microsecond of a batch's
    work. The same counts as the single observations (the sum too, up to float rounding); where the histogram
    does not keep the fields of prometheus-client's own (another version), one ``observe`` each."""
    bounds: list[float] | None = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    summed = 0.0
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bucket whose bound is >= amount, as observe picks
        summed += amount
    total.inc(summed)
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


def zero(metric: Counter, *values: Iterable[str]) -> None:
    """Create every combination of the given label values at 0 (one iterable per label, in label order)."""
    combos: list[tuple[str, ...]] = [()]
    for options in values:
        combos = [(*combo, value) for combo in combos for value in options]
    for combo in combos:
        metric.labels(*combo)


# --- worker ---
W = WORKER_REGISTRY
EVENTS_CONSUMED = Counter("ecrm_events_consumed_total", "Events read from Kafka", ["type"], registry=W)
EVENTS_PROCESSED = Counter("ecrm_events_processed_total", "Events applied to profiles", ["type"], registry=W)
EVENTS_DUPLICATE = Counter(
    "ecrm_events_duplicate_total", "Redelivered events skipped by de-duplication", ["type"], registry=W
)
EVENTS_DEAD_LETTERED = Counter(
    "ecrm_events_dead_lettered_total", "Events sent to the dead-letter topic", ["type"], registry=W
)
for _counter in (EVENTS_CONSUMED, EVENTS_PROCESSED, EVENTS_DUPLICATE, EVENTS_DEAD_LETTERED):
    zero(_counter, TYPES)
BATCH_SECONDS = Histogram(
    "ecrm_batch_processing_seconds",
    "Time to process one batch (parse, plan, Redis write)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=W,
)
BATCH_SIZE = Histogram(
    "ecrm_batch_size", "Events per batch", buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000), registry=W
)
EVENT_LAG_SECONDS = Histogram(
    "ecrm_event_to_profile_lag_seconds",
    "Profile write time minus event time; kind=live for events produced within ECRM_BACKFILL_AFTER_S of their "
    "time, kind=backfill for history produced later (imports, replays)",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0),
    registry=W,
)
for _kind in LAG_KINDS:
    EVENT_LAG_SECONDS.labels(_kind)
STORE_RETRIES = Counter(
    "ecrm_store_retries_total",
    "Redis writes retried after an error, by reason (connection, oom, readonly ...)",
    ["reason"],
    registry=W,
)
zero(STORE_RETRIES, STORE_REASONS)
CONSUMER_LAG = Gauge(
    "ecrm_consumer_lag",
    "Messages behind the head of each partition: end offset minus the consumer group's committed offset",
    ["topic", "partition"],
    registry=W,
)
CONSUMER_LAG_CHECKED = Gauge(
    "ecrm_consumer_lag_checked_timestamp_seconds", "Time of the last successful consumer-lag check", registry=W
)
TRAINING_RUNS = Counter(
    "ecrm_training_runs_total",
    "Trainings started by the worker, by tenant and outcome: promoted, refused (by the holdout gate) or failed",
    ["outcome", "tenant"],
    registry=W,
)
zero(TRAINING_RUNS, TRAINING_OUTCOMES, (DEFAULT_TENANT,))
TRAINING_WAITING = Gauge(
    "ecrm_training_waiting_tenants",
    "Tenants due for a training that wait for a slot (ECRM_TRAINING_CONCURRENCY trainings at once)",
    registry=W,
)
TRAINING_OVERDUE = Gauge(
    "ecrm_training_overdue_seconds",
    "How long a tenant has been due for a training without one starting (0: not due, or training)",
    ["tenant"],
    registry=W,
)

# --- analytics (RFM, segments, lifetime value): set by the worker's refresh job, and from Redis at its start ---
ANALYTICS_SEGMENT_CUSTOMERS = Gauge(
    "ecrm_analytics_segment_customers", "Customers in each segment at the last refresh", ["segment"], registry=W
)
ANALYTICS_CUSTOMERS_SCORED = Gauge(
    "ecrm_analytics_customers_scored", "Purchasing customers scored at the last refresh", registry=W
)
ANALYTICS_LAST_REFRESH = Gauge(
    "ecrm_analytics_last_refresh_timestamp_seconds",
    "Time of the last analytics refresh (Unix seconds; 0 until one is known)",
    registry=W,
)
ANALYTICS_REFRESH_SECONDS = Gauge(
    "ecrm_analytics_refresh_duration_seconds", "Duration of the last analytics refresh", registry=W
)
ANALYTICS_MODEL_FITTED = Gauge(
    "ecrm_analytics_model_fitted",
    "1 when the last refresh fitted the lifetime-value model, 0 when it could not",
    registry=W,
)
ANALYTICS_REFRESH_FAILURES = Counter(
    "ecrm_analytics_refresh_failures_total", "Analytics refreshes that failed", registry=W
)

# --- API ---
API_LATENCY = Histogram(
    "ecrm_api_request_seconds",
    "API request latency, by the caller's tenant (none: no key was checked)",
    ["route", "method", "status", "tenant"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
EVENTS_COLLECTED = Counter(
    "ecrm_events_collected_total",
    "Events accepted by the HTTP collector and acknowledged by the broker",
    ["type", "tenant"],
)
zero(EVENTS_COLLECTED, EVENT_TYPES, (DEFAULT_TENANT,))
EVENTS_REJECTED = Counter("ecrm_events_rejected_total", "Events refused by the HTTP collector", ["tenant"])
zero(EVENTS_REJECTED, (DEFAULT_TENANT,))
COLLECTOR_REASONS: tuple[str, ...] = ("rate_limit", "visitor_rate_limit", "bot", "quota")
COLLECTOR_REFUSED = Counter(
    "ecrm_collector_refused_total",
    "Events refused by the collector's abuse limits: rate_limit (a sender over ECRM_RATE_LIMIT, 429), "
    "visitor_rate_limit (an anonymous_id over ECRM_VISITOR_RATE_LIMIT), bot (a collect key's request from a bot), "
    "quota (over its tenant's quota of events per second, profiles or items; docs/tenants.md)",
    ["reason", "tenant"],
)
zero(COLLECTOR_REFUSED, COLLECTOR_REASONS, (DEFAULT_TENANT,))
TENANT_USAGE = Gauge(
    "ecrm_tenant_usage",
    "A tenant's profiles and catalogue items as the collector's quota check last read them from Redis",
    ["tenant", "kind"],
    multiprocess_mode="livemax",
)
RECOMMENDATIONS = Counter("ecrm_recommendations_total", "Recommendation lists served", ["endpoint", "strategy"])
MODEL_VERSION = Gauge(
    "ecrm_model_info", "Model version served to a tenant (value 1)", ["version", "tenant"], multiprocess_mode="livemax"
)
MODEL_AGE_SECONDS = Gauge(
    "ecrm_model_age_seconds",
    "Age of the model version served to a tenant (0 while none is served; several API processes: the oldest)",
    ["tenant"],
    multiprocess_mode="livemax",
)
MODEL_HOLDOUT_NDCG = Gauge(
    "ecrm_model_holdout_ndcg", "Holdout NDCG@10 of a model version", ["version"], multiprocess_mode="livemax"
)
MODEL_BASELINE_SERVED = Gauge(
    "ecrm_model_baseline_served",
    "1 for the baseline the retraining gate serves for personal lists because it beat the engine on the newest window "
    "(all 0: the engine serves)",
    ["baseline"],
    multiprocess_mode="livemax",
)
for _baseline in GATE_BASELINES:
    MODEL_BASELINE_SERVED.labels(_baseline).set(0)
MODEL_TRAINING_SECONDS = Gauge(
    "ecrm_model_training_seconds", "Training duration of a model version", ["version"], multiprocess_mode="livemax"
)
DEPENDENCY_ERRORS = Counter(
    "ecrm_api_dependency_errors_total",
    "Requests of the API that met an unavailable dependency (redis: a read or write failed; kafka: a produce failed)",
    ["dependency"],
)
zero(DEPENDENCY_ERRORS, DEPENDENCIES)

# --- API degradation (a broker or Redis away, a corrupt model) ---
MODEL_LOAD_FAILURES = Counter(
    "ecrm_model_load_failures_total",
    "Model versions that could not be loaded (corrupt or missing blob) and were skipped",
)
DEGRADED_ITEMS = Gauge(
    "ecrm_degraded_items",
    "Popular items held in memory to answer recommendations while Redis is away (several processes: the fewest)",
    multiprocess_mode="livemin",
)

# --- business rules (merchandising/, config/rules.yaml) ---
RULES_APPLIED = Counter(
    "ecrm_rules_applied_total",
    "Recommendation lists a business rule changed (filtered, re-scored or moved items)",
    ["rule"],
)
RULES_FILE_VALID = Gauge(
    "ecrm_rules_file_valid",
    "1 when the rules file in force is the file on disk, 0 when its last edit was refused; tenant: whose file "
    "(default: the top-level file, which every tenant without its own uses)",
    ["tenant"],
    multiprocess_mode="livemin",
)
RULES_IN_FORCE = Gauge(
    "ecrm_rules_in_force", "Business rules loaded from the rules file", ["tenant"], multiprocess_mode="livemax"
)

# --- campaigns and experiments (merchandising/campaigns.py, config/campaigns.yaml; docs/campaigns.md) ---
CAMPAIGNS_FILE_VALID = Gauge(
    "ecrm_campaigns_file_valid",
    "1 when the campaigns in force are the file on disk, 0 when its last edit was refused; tenant: whose file "
    "(default: the top-level file)",
    ["tenant"],
    multiprocess_mode="livemin",
)
CAMPAIGN_LISTS = Counter(
    "ecrm_campaign_lists_total",
    "Recommendation lists served under a campaign (a holdout's empty lists included), by campaign and variant",
    ["campaign", "variant"],
)
CAMPAIGN_CUSTOMERS = Gauge(
    "ecrm_campaign_customers",
    "Profiles of a campaign's variant: assigned, exposed (shown items), clicked, converted (read from Redis)",
    ["campaign", "variant", "kind"],
    multiprocess_mode="livemax",
)
CAMPAIGN_EVENTS = Gauge(
    "ecrm_campaign_events",
    "Counts of a variant: impressions, clicks, orders, attributed_orders (read from Redis)",
    ["campaign", "variant", "kind"],
    multiprocess_mode="livemax",
)
CAMPAIGN_EXPOSURES_DROPPED = Counter(
    "ecrm_campaign_exposures_dropped_total",
    "Campaign exposures not recorded: the replica's queue was full or Redis failed (the lists were still served)",
)


# --- several API processes (prometheus-client multiprocess mode) ---
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_FILE = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The folder the API processes write their metrics to, or None when this is a single process."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def forget_dead_processes(folder: Path) -> None:
    """Drop the live gauges of processes that are gone (a restarted worker); their counts stay."""
    pids = {int(m.group(1)) for p in folder.glob("*.db") if (m := _PID_FILE.search(p.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


@cache
def _worker_names() -> frozenset[str]:
    """The names of the worker's metrics: all defined above, so collected once, not on every scrape (a collect
    also runs the process collector)."""
    return frozenset(m.name for m in WORKER_REGISTRY.collect())


class _ApiOnly:
    """The processes' merged metrics without the worker's (their modules are imported, so their files exist)."""

    def __init__(self, folder: Path) -> None:
        self.merged = multiprocess.MultiProcessCollector(None, str(folder))  # type: ignore[no-untyped-call]
        self.worker = _worker_names()

    def collect(self) -> Iterator[Metric]:
        return (m for m in self.merged.collect() if m.name not in self.worker)  # type: ignore[no-untyped-call]


def api_exposition() -> bytes:
    """The API's ``/metrics`` body: this process's metrics, or all API processes' merged in multiprocess mode."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(API_REGISTRY)
    forget_dead_processes(folder)
    registry = CollectorRegistry()
    registry.register(_ApiOnly(folder))
    return generate_latest(registry)
