"""All configuration in one place, read from environment variables prefixed ``ECRM_``.

Every process (worker, API, command-line producers) reads the same :class:`Settings`, so the embedded default
and a production deployment differ only by environment variables.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import runstate
from core.keyspace import PREFIX_PATTERN
from schemas.events import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_FUTURE_S, DEFAULT_TIMESTAMP_FLOOR, EventLimits
from schemas.weights import DEFAULT_EVENT_WEIGHTS

GATE_BASELINES = ("popularity", "trending", "buy-again", "recently-viewed")  # recommender/evaluation/baselines.py


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


class Settings(BaseSettings):
    """Engine configuration. Each field is the environment variable ``ECRM_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="ECRM_", extra="ignore")

    # Infrastructure
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    redis_cluster: bool = Field(
        False, description="ECRM_REDIS_URL names a node of a Redis Cluster: use the cluster client (docs/deployment.md)"
    )
    events_topic: str = "ecrm.events"
    dlq_topic: str = "ecrm.events.dlq"
    topic_partitions: int = Field(4, ge=1)
    topic_replication: int = Field(1, ge=1)
    key_prefix: str = Field(
        "ecrm", pattern=PREFIX_PATTERN.pattern, description="Prefix of every Redis key (letters, digits, _ . -)"
    )

    # Worker
    worker_app_id: str = "ecrm-worker"
    worker_data_dir: str = Field(
        "",
        description="Faust's state directory (no tables are kept there); default: ecrm-faust-<uid>/<app id> in the "
        "temp dir (0700, refused when another user owns it)",
    )
    worker_batch_size: int = Field(500, ge=1, description="Events per Redis pipeline")
    store_chunk_size: int = Field(
        100, ge=1, description="Events per atomic Redis script call: smaller chunks keep Redis free for the API"
    )
    worker_batch_window_s: float = Field(0.01, gt=0, description="Longest wait to fill a batch")
    worker_write_behind: bool = Field(
        True,
        description="Read and validate the next batch while Redis writes the previous one (one write at a time, in "
        "order, each batch acked once written); false: the worker waits for each write before it reads on",
    )
    worker_web_port: int = Field(6066, description="Faust web port (bound to 127.0.0.1; 0 turns it off)")
    worker_metrics_port: int = Field(9101, description="Prometheus port of the worker (0 turns it off)")
    worker_metrics_host: str = Field("127.0.0.1", description="Interface of the worker's metrics server")
    # --- operations (metrics, consumer lag; docs/operations.md) ---
    backfill_after_s: float = Field(
        300.0,
        gt=0,
        description="An event produced more than this many seconds after its own time is back-filled history: its "
        "event-to-profile lag is counted apart (kind=backfill) from live events",
    )
    lag_check_s: float = Field(
        15.0, ge=0, description="How often the worker measures the consumer lag of every partition (0: off)"
    )
    consumer_fetch_max_wait_ms: int = Field(
        50,
        ge=1,
        description="Longest a fetch waits for data. Faust hard-codes 1500; Tansu does not answer a waiting fetch "
        "when data arrives, so this bounds the event-to-profile lag on the embedded broker",
    )
    broker_session_timeout_s: float = Field(6.0, gt=0)
    broker_heartbeat_interval_s: float = Field(1.0, gt=0)
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    recent_items_max: int = Field(50, ge=1)
    affinity_half_life_days: float = Field(30.0, gt=0)
    trending_half_life_hours: float = Field(24.0, gt=0)
    dedupe_ttl_days: float = Field(
        14.0,
        gt=0,
        description="Redis Cluster: how long an event's marker (with its global record: a redelivery must find it) "
        "and a login's hand-off are kept",
    )
    dedupe_window_s: float = Field(
        86_400.0,
        gt=0,
        description="Single node: how long the ids of applied events are remembered (per profile, per catalogue "
        "item), to drop a re-send (a producer's or a browser's retry, an import run again within it) or a "
        "redelivery; a message produced before the window and delivered again is recognised by its partition offset",
    )
    dedupe_max_per_profile: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="Event ids remembered per profile for de-duplication (the newest; single node): re-sends come "
        "within minutes, so only a profile with more events than this within ECRM_DEDUPE_WINDOW_S forgets early",
    )
    interactions_log_maxlen: int = Field(
        5_000_000,
        ge=1000,
        description="Bounded log of interactions for training: the Redis stream's length and the training-log "
        "store's total (its oldest entries go first)",
    )
    training_log_dir: str = Field(
        "",
        description="Folder of the training-log store, the trainer's columnar copy of the interactions on disk "
        "(one sub-folder per key prefix; 0700). Every process that trains or drains must see the same folder "
        "(one shared volume). Default: training-log in ECRM_DATA_DIR when set, else ecrm-training-log-<uid> in "
        "the temp dir",
    )
    training_log_drain_s: float = Field(
        60.0,
        ge=0,
        description="How often the worker drains the training log from Redis into the store (the entries copied "
        "leave Redis; every training drains first too); 0: only trainings drain",
    )

    # Profiles: bounds, sources, erasure (issue 8)
    profile_ttl_days: float = Field(
        730.0,
        ge=0,
        description="A profile (and a visitor's login link) expires after this many days without events (0: never)",
    )
    profile_items_max: int = Field(500, ge=10, description="Items kept per profile (interaction weights, purchases)")
    profile_categories_max: int = Field(100, ge=1, description="Category affinities kept per profile (strongest)")
    cart_lines_max: int = Field(100, ge=1, description="Cart lines per profile: an add beyond it is refused")
    popular_items_max: int = Field(100_000, ge=100, description="Items kept in the all-time popularity ranking")
    anonymous_ttl_days: float = Field(
        30.0,
        ge=0,
        description="An anonymous visitor's profile (one who never logged in) expires after this many days without "
        "events (0: ECRM_PROFILE_TTL_DAYS applies); a login merges it into the customer's, which keeps the longer TTL",
    )

    # What a browser may influence (issue 18): collect-key events are claims about that visitor only
    collect_max_lines: int = Field(
        20, ge=1, le=1000, description="Most lines of a purchase sent with a collect key (more is refused, 422)"
    )
    shared_period_hours: float = Field(
        24.0,
        gt=0,
        description="The period over which a browser's (collect) events count at most once per visitor and item in "
        "trending, popular and the training log",
    )
    shared_items_per_visitor: int = Field(
        50, ge=1, description="Distinct items a visitor's collect events may count for in shared state per period"
    )
    shared_items_per_client: int = Field(
        200,
        ge=1,
        description="Distinct items the collect events of one client (network address) may count for in shared "
        "state per period, whatever visitor ids it sends; each item at most once per client and period",
    )
    trending_items_max: int = Field(
        10_000, ge=100, description="Items kept in each trending era's ranking (the lowest trimmed)"
    )
    serve_uncatalogued: bool = Field(
        False,
        description="Serve items that are not in the catalogue even once the catalogue has items (off: only "
        "catalogue items are served, and only they enter popular and trending)",
    )
    erasure_tombstone_days: float = Field(
        400.0, gt=0, description="How long an erased profile's older events are refused on replay (>= Kafka retention)"
    )
    erasure_log_file: str = Field(
        "",
        description="A file every erasure is also appended to (JSON lines), read by `ecrm restore` besides the log in "
        "Redis; `ecrm up --data-dir DIR` uses DIR/erasures.jsonl. Keep it apart from the backups",
    )

    # Recommender: training, versions, serving
    recommender_config_file: str | None = Field(
        None, description="YAML/JSON file of recommender settings (algorithm, factors, ...); defaults when unset"
    )
    retrain_min_interactions: int = Field(1000, ge=1, description="Retrain after this many new interactions ...")
    retrain_interval_s: float = Field(3600.0, gt=0, description="... or after this many seconds with any new one")
    retrain_check_s: float = Field(5.0, gt=0, description="How often the worker checks whether to retrain")
    training_min_interactions: int = Field(
        100,
        ge=1,
        description="A tenant with fewer interactions logged is not trained by the worker: the popular items serve it",
    )
    training_concurrency: int = Field(
        1, ge=1, description="Trainings the worker runs at once, one per tenant, the longest-due tenant first"
    )
    model_keep_versions: int = Field(5, ge=1, description="Promoted model versions kept for rollback")
    promotion_margin: float = Field(
        0.05, ge=0, le=1, description="A new version is refused if its holdout NDCG@10 is more than this fraction below"
    )
    holdout_fraction: float = Field(0.1, gt=0, lt=1, description="Most recent share of interactions held out")
    holdout_max_users: int = Field(1000, ge=10, description="Users evaluated on the holdout slice")
    holdout_min_users: int = Field(
        50, ge=1, description="Below this many holdout users a version is promoted without judging (noise)"
    )
    holdout_train_users: int = Field(
        10_000,
        ge=0,
        description="Users whose history trains the holdout check's model (the judged users among them; 0: all)",
    )
    ranker_time_share: float = Field(
        0.5,
        ge=0,
        description="The learned ranking stage may take this share of the base model's fit time (at least "
        "ranker_min_seconds of the recommender configuration); 0: that minimum only",
    )
    model_poll_s: float = Field(1.0, gt=0, description="How often an API replica looks for a newly promoted version")
    rebuy_window_days: float = Field(
        0.0, ge=0, description="Bought items come back in recommendations after this many days (0: never)"
    )
    gate_window_days: float = Field(
        0.0,
        ge=0,
        description="The retraining gate judges on the newest this many days (0: the newest ECRM_HOLDOUT_FRACTION)",
    )
    gate_baseline_margin: float = Field(
        0.0,
        ge=0,
        le=10,
        description="The engine serves only if its NDCG@10 beats the best baseline's by this fraction; else the "
        "baseline serves",
    )
    gate_baselines: str = Field(
        ",".join(GATE_BASELINES),
        description="Baselines the retraining gate may serve instead of the engine, comma-separated (empty: none, "
        "the engine always serves)",
    )

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_batch: int = Field(500, ge=1)
    api_max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    recommendations_max_n: int = Field(100, ge=1)

    # Degradation and bounded memory: Redis timeouts, the API without a broker or without Redis, the mask cache
    redis_socket_timeout_s: float = Field(
        2.0, gt=0, description="Longest wait for a Redis reply (every client); then the call fails as unavailable"
    )
    redis_connect_timeout_s: float = Field(1.0, gt=0, description="Longest wait to open a connection to Redis")
    api_produce_timeout_s: float = Field(
        1.0,
        gt=0,
        description="Longest POST /v1/events waits for the broker to take a batch; then 503 with Retry-After",
    )
    request_deadline_ms: float = Field(
        150.0,
        gt=0,
        le=60_000,
        description="One time budget for all the Redis reads of a recommendation request (and of /health/ready): "
        "past it the request answers degraded at once (docs/deployment.md, 'Degraded modes')",
    )
    redis_retry_s: float = Field(
        1.0,
        gt=0,
        description="After Redis failed or missed a request deadline, requests do not try it for this long; then one "
        "request tries again (the API process's breaker)",
    )
    api_degraded_items: int = Field(
        200, ge=1, description="Popular items each API replica keeps in memory to answer while Redis is away"
    )
    api_degraded_refresh_s: float = Field(
        10.0, gt=0, description="How often an API replica refreshes its in-memory copy of the popular items"
    )
    api_model_dir: str = Field(
        "",
        description="Folder where the API processes of a host share model versions as memory-mapped files "
        "(default: ecrm-models-<uid> in the temp dir)",
    )
    api_mask_cache_size: int = Field(
        256, ge=1, description="Category filters an API replica keeps built per model version (least recently used go)"
    )

    # API access control (api/auth.py, api/ratelimit.py; docs/deployment.md "Access control")
    api_keys: str = Field(
        "",
        repr=False,
        description="API keys, comma-separated scope:secret (scopes collect, server, admin); unset: the API is open "
        "and binds loopback only",
    )
    tenants: str = Field(
        "",
        description="Shops this engine hosts besides those ECRM_API_KEYS names (tenant:scope:secret), comma-separated "
        "tenant names (docs/tenants.md); the tenant 'default' is always hosted",
    )
    tenants_dir: str | None = Field(
        None,
        description="Per-tenant configuration: <dir>/<tenant>/rules.yaml, campaigns.yaml, segments.yaml and "
        "tenant.yaml (quotas), each used when present instead of the top-level file; unset: config/tenants of the "
        "installation",
    )
    tenant_events_per_s: int = Field(
        0,
        ge=0,
        description="Events per second one tenant may send to the collector (0: unlimited; tenant.yaml "
        "overrides it per tenant)",
    )
    tenant_profiles_max: int = Field(
        0, ge=0, description="Profiles one tenant may hold: past it, events of new profiles are refused (0: unlimited)"
    )
    tenant_items_max: int = Field(
        0, ge=0, description="Catalogue items one tenant may hold: past it, new items are refused (0: unlimited)"
    )
    tenant_quota_check_s: float = Field(
        5.0, gt=0, description="How long an API replica trusts a tenant's profile and item counts read from Redis"
    )
    cors_origins: str = Field(
        "", description="Origins allowed to call the API from a browser (CORS), comma-separated; none when empty"
    )
    rate_limit: str = Field(
        "1000/second",
        description="Events POST /v1/events takes per client address (collect keys, open mode) or per server/admin "
        "key (a batch counts each of its events), e.g. 1000/second;30000/minute; empty turns it off",
    )
    visitor_rate_limit: str = Field(
        "120/minute",
        description="Events one anonymous_id may send with a collect key, whatever its address (over it: refused by "
        "index and dead-lettered); keep the windows short, its counters are kept per visitor; empty turns it off",
    )

    # Bounded input and safe delivery: limits every entry point checks (schemas/events.py), dead letters, producers
    max_future_s: float = Field(
        DEFAULT_MAX_FUTURE_S, ge=0, description="Timestamps more than this many seconds ahead of now are refused"
    )
    timestamp_floor: datetime = Field(
        DEFAULT_TIMESTAMP_FLOOR,
        description="Timestamps before this time are refused (ISO date or date-time; a time without zone is UTC)",
    )
    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES,
        ge=1024,
        le=900_000,
        description="Largest encoded event (bytes): larger ones get 413 at the collector and are dead-lettered by "
        "the worker. Stays well under Kafka's 1 MB message size",
    )
    dlq_max_original_bytes: int = Field(
        64 * 1024,
        ge=256,
        le=128 * 1024,
        description="A dead-letter record keeps at most this many bytes of the original message (and its size), so "
        "the record stays under Kafka's message size",
    )
    producer_timeout_s: float = Field(
        30.0,
        ge=1,
        description="Command-line producers (importers, simulate): longest wait for the broker to take or "
        "acknowledge a message before it counts as failed",
    )

    # Business rules (merchandising/, config/rules.yaml; docs/rules.md)
    rules_file: str | None = Field(
        None,
        description="Business rules (YAML), re-read when they change; unset: config/rules.yaml of the installation. "
        "A missing file means no rules",
    )
    rules_check_interval_s: float = Field(2.0, ge=0, description="Longest time between checks of the rules file")
    rules_served_lists_max: int = Field(
        20, ge=1, le=100, description="Recommendation lists remembered per profile for the rules' rotate action"
    )
    rules_served_ttl_hours: float = Field(
        168.0, gt=0, description="The lists served to a profile are forgotten this long after the last one"
    )
    rules_catalogue_cache_s: float = Field(
        10.0, ge=0, description="Catalogue entries (category, price, attributes) the rules read stay cached this long"
    )
    rules_catalogue_cache_size: int = Field(
        100_000, ge=1, description="Catalogue entries an API replica keeps cached for the rules"
    )

    # Campaigns and experiments (merchandising/campaigns.py, config/campaigns.yaml; docs/campaigns.md)
    campaigns_file: str | None = Field(
        None,
        description="Campaigns (YAML), re-read when they change; unset: config/campaigns.yaml of the installation. "
        "A missing file means no campaigns",
    )
    campaigns_check_interval_s: float = Field(2.0, ge=0, description="Longest time between checks of the file")
    campaign_metrics_s: float = Field(
        15.0, ge=0, description="How often an API replica reads the campaigns' counters into its gauges (0: off)"
    )

    @field_validator("gate_baselines")
    @classmethod
    def _known_baselines(cls, value: str) -> str:
        unknown = [name for name in _names(value) if name not in GATE_BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; expected some of {', '.join(GATE_BASELINES)}")
        return value

    @property
    def gate_baseline_names(self) -> tuple[str, ...]:
        """The baselines the gate may serve, in the documented order."""
        wanted = set(_names(self.gate_baselines))
        return tuple(name for name in GATE_BASELINES if name in wanted)

    @field_validator("timestamp_floor")
    @classmethod
    def _floor_in_utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    def event_limits(self) -> EventLimits:
        """The schema's limits as configured (the clock's now)."""
        return EventLimits(
            max_future_s=self.max_future_s,
            floor=self.timestamp_floor,
            max_event_bytes=self.max_event_bytes,
            collect_max_lines=self.collect_max_lines,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment. When the environment names neither the broker
    nor Redis, a running ``ecrm up`` is found through its state file (:mod:`core.runstate`)."""
    settings = Settings()
    if runstate.addresses_set():
        return settings
    state = runstate.read_state()
    if state is None:
        return settings
    found = {k: v for k, v in state.addresses().items() if f"ECRM_{k.upper()}" not in os.environ}
    return settings.model_copy(update=found)


def isolated(base: Settings, tag: str | None = None, **extra: object) -> Settings:
    """``base`` with its own topics, key prefix and consumer group (benchmarks and tests share servers)."""
    import uuid

    tag = tag or uuid.uuid4().hex[:8]
    return base.model_copy(
        update={
            "events_topic": f"t{tag}.events",
            "dlq_topic": f"t{tag}.events.dlq",
            "key_prefix": f"t{tag}",
            "worker_app_id": f"t{tag}-worker",
            "worker_web_port": 0,
            "worker_metrics_port": 0,
            **extra,
        }
    )
