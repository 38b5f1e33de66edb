"""Prometheus metrics of every role, defined once. Names start with ``ecrm_``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- worker ---
EVENTS_CONSUMED = Counter("ecrm_events_consumed_total", "Events read from Kafka", ["type"])
EVENTS_PROCESSED = Counter("ecrm_events_processed_total", "Events applied to profiles", ["type"])
EVENTS_DUPLICATE = Counter("ecrm_events_duplicate_total", "Redelivered events skipped by de-duplication", ["type"])
EVENTS_DEAD_LETTERED = Counter("ecrm_events_dead_lettered_total", "Events sent to the dead-letter topic", ["type"])
BATCH_SECONDS = Histogram(
    "ecrm_batch_processing_seconds",
    "Time to process one batch (parse, plan, Redis write)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE = Histogram("ecrm_batch_size", "Events per batch", buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000))
EVENT_LAG_SECONDS = Histogram(
    "ecrm_event_to_profile_lag_seconds",
    "Profile write time minus event time",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
STORE_RETRIES = Counter(
    "ecrm_store_retries_total",
    "Redis writes retried after an error, by reason (connection, oom, readonly ...)",
    ["reason"],
)

# --- API ---
API_LATENCY = Histogram(
    "ecrm_api_request_seconds",
    "API request latency",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
EVENTS_COLLECTED = Counter("ecrm_events_collected_total", "Events accepted by the HTTP collector", ["type"])
EVENTS_REJECTED = Counter("ecrm_events_rejected_total", "Events refused by the HTTP collector")
RECOMMENDATIONS = Counter("ecrm_recommendations_total", "Recommendation lists served", ["endpoint", "strategy"])
MODEL_VERSION = Gauge("ecrm_model_info", "Model version served (value 1)", ["version"])

# --- analytics (RFM, segments, lifetime value; set by the refresh job, and by the API when it reads the state) ---
ANALYTICS_SEGMENT_CUSTOMERS = Gauge(
    "ecrm_analytics_segment_customers", "Customers in each segment at the last refresh", ["segment"]
)
ANALYTICS_CUSTOMERS_SCORED = Gauge("ecrm_analytics_customers_scored", "Purchasing customers scored at the last refresh")
ANALYTICS_LAST_REFRESH = Gauge(
    "ecrm_analytics_last_refresh_timestamp_seconds", "Time of the last analytics refresh (Unix seconds)"
)
ANALYTICS_REFRESH_SECONDS = Gauge("ecrm_analytics_refresh_duration_seconds", "Duration of the last analytics refresh")
ANALYTICS_MODEL_FITTED = Gauge(
    "ecrm_analytics_model_fitted", "1 when the last refresh fitted the lifetime-value model, 0 when it could not"
)
ANALYTICS_REFRESH_FAILURES = Counter("ecrm_analytics_refresh_failures_total", "Analytics refreshes that failed")
MODEL_AGE_SECONDS = Gauge("ecrm_model_age_seconds", "Age of the served model version")
MODEL_HOLDOUT_NDCG = Gauge("ecrm_model_holdout_ndcg", "Holdout NDCG@10 of a model version", ["version"])
MODEL_TRAINING_SECONDS = Gauge("ecrm_model_training_seconds", "Training duration of a model version", ["version"])

# --- API degradation (a broker or Redis away, a corrupt model) ---
MODEL_LOAD_FAILURES = Counter(
    "ecrm_model_load_failures_total",
    "Model versions that could not be loaded (corrupt or missing blob) and were skipped",
)
DEGRADED_ITEMS = Gauge(
    "ecrm_degraded_items", "Popular items held in memory to answer recommendations while Redis is away"
)

# --- business rules (merchandising/, config/rules.yaml) ---
RULES_APPLIED = Counter(
    "ecrm_rules_applied_total",
    "Recommendation lists a business rule changed (filtered, re-scored or moved items)",
    ["rule"],
)
RULES_FILE_VALID = Gauge(
    "ecrm_rules_file_valid", "1 when the rules file in force is the file on disk, 0 when its last edit was refused"
)
RULES_IN_FORCE = Gauge("ecrm_rules_in_force", "Business rules loaded from the rules file")
