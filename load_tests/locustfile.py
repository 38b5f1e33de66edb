"""Load test of the eCRM API: shoppers who browse, send events and read their recommendations and profile, and
recommendation widgets that only read. Run it with ``load_tests/run.py`` (starts the stack on loopback, see
README.md), or against a running ``ecrm up``::

    locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8000 -u 20 -r 5 -t 60s

The run follows ``StagedLoad`` (warm-up, ramp, peak, cool-down as shares of ``-t`` and ``-u``) and exits with 1
when a target of ``common/config.py`` is missed (p95 of an endpoint, failure ratio).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from typing import Any

from common.config import load_config
from common.events import Event, Visitor, demo_catalogue, demo_customer
from common.targets import breaches
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment

CONFIG = load_config()
CATALOGUE = demo_catalogue()
EVENTS_URL = "/v1/events"
RECS_NAME = "/v1/customers/[id]/recommendations"
PROFILE_NAME = "/v1/customers/[id]/profile"
_streams = itertools.count()
log = logging.getLogger(__name__)


def user_rng() -> random.Random:
    """A generator per user: reproducible with ``ECRM_LOAD_SEED``, else different every run."""
    return random.Random(None if CONFIG.seed is None else CONFIG.seed * 100_003 + next(_streams))


def recommendations_url(customer_id: str, n: int) -> str:
    return f"/v1/customers/{customer_id}/recommendations?n={n}"


def check_recommendations(js: Any, n: int) -> list[str]:
    """The item ids of a valid recommendations response (raises ``AssertionError`` otherwise)."""
    assert isinstance(js, dict) and js.get("recommendation_id"), "no recommendation_id,"
    items = js.get("items")
    assert isinstance(items, list) and 0 < len(items) <= n, f"expected 1..{n} items,"
    ids = [item["item_id"] for item in items]
    assert len(set(ids)) == len(ids), "duplicate items,"
    return ids


class Shopper(FastHttpUser):
    """A signed-in demo customer: views products (one event per request, as a page tag sends it), sends a whole
    visit as one batch (as a tracking SDK flushes its queue), reads its recommendations and clicks one, and looks
    at its profile."""

    weight = 3
    wait_time = between(0.2, 1.0)
    default_headers = CONFIG.headers  # a server key when the stack has ECRM_API_KEYS (ECRM_LOAD_API_KEY)

    def on_start(self) -> None:
        rng = user_rng()
        self.visitor = Visitor(demo_customer(rng.randrange(CONFIG.customers)), CATALOGUE, rng)

    def send(self, batch: list[Event], name: str) -> None:
        """POST one event (as an object) or a batch (as an array); every event must be accepted."""
        body: Event | list[Event] = batch[0] if len(batch) == 1 else batch
        with self.rest("POST", EVENTS_URL, json=body, name=name) as resp:
            if resp.js is None:
                return  # transport error or not JSON: already counted as a failure
            assert resp.status_code == 202, f"expected 202, got {resp.status_code},"
            assert resp.js["accepted"] == len(batch) and resp.js["rejected"] == 0, f"not all {len(batch)} accepted,"

    @task(6)
    def view_product(self) -> None:
        self.send([self.visitor.product_view()], f"{EVENTS_URL} [one event]")

    @task(2)
    def browse_session(self) -> None:
        self.send(self.visitor.browsing_session(), f"{EVENTS_URL} [batch]")

    @task(4)
    def recommendations(self) -> None:
        n = CONFIG.recommendations_n
        with self.rest("GET", recommendations_url(self.visitor.customer_id, n), name=RECS_NAME) as resp:
            if resp.js is None:
                return
            self.visitor.saw_recommendations(resp.js.get("recommendation_id", ""), check_recommendations(resp.js, n))

    @task(1)
    def click_recommendation(self) -> None:
        click = self.visitor.recommendation_click()
        if click is not None:
            self.send([click], f"{EVENTS_URL} [one event]")

    @task(2)
    def profile(self) -> None:
        customer_id = self.visitor.customer_id
        with self.rest("GET", f"/v1/customers/{customer_id}/profile", name=PROFILE_NAME) as resp:
            if resp.js is None:
                return
            assert resp.js.get("customer_id") == customer_id, "profile of another customer,"
            assert resp.js.get("events_total", 0) >= 1, "profile without events,"


class RecommendationWidget(FastHttpUser):
    """A product page's recommendation widget: asks for a few items for whoever is looking, mostly demo
    customers, sometimes a first-time visitor (who gets popular items)."""

    weight = 1
    wait_time = between(0.1, 0.5)
    default_headers = CONFIG.headers

    def on_start(self) -> None:
        self.rng = user_rng()

    @task
    def recommendations(self) -> None:
        if self.rng.random() < CONFIG.unknown_share:
            customer_id = f"lt-visitor-{uuid.uuid4().hex[:12]}"
        else:
            customer_id = demo_customer(self.rng.randrange(CONFIG.customers))
        n = self.rng.choice((4, 8, 12))
        with self.rest("GET", recommendations_url(customer_id, n), name=RECS_NAME) as resp:
            if resp.js is not None:
                check_recommendations(resp.js, n)


class StagedLoad(LoadTestShape):
    """Warm-up, ramp, peak and cool-down, as shares of the run time (``-t``, 60 s when not given) and of the user
    count (``-u``, the peak); the run stops by itself at the end."""

    use_common_options = True
    DEFAULT_RUN_TIME_S = 60
    # (end of the stage as a share of the run time, users as a share of -u)
    STAGES = ((0.15, 0.25), (0.35, 0.5), (0.85, 1.0), (1.0, 0.25))

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        run_time = float(getattr(options, "run_time", None) or self.DEFAULT_RUN_TIME_S)
        users = int(getattr(options, "num_users", None) or 1)
        spawn_rate = float(getattr(options, "spawn_rate", None) or max(1.0, users / 4))
        elapsed = time.perf_counter() - self.start_time  # get_run_time() is untyped
        for end, share in self.STAGES:
            if elapsed < end * run_time:
                return max(1, round(share * users)), spawn_rate
        return None


@events.quitting.add_listener  # type: ignore[untyped-decorator,unused-ignore]  # locust's EventHook is untyped
def enforce_targets(environment: Environment, **_kwargs: Any) -> None:
    """Exit with 1 when the run missed a target (0 otherwise, even with failures under the allowed ratio)."""
    problems = breaches(environment.stats, CONFIG.targets)
    for problem in problems:
        log.error("target missed: %s", problem)
    if not problems:
        t = CONFIG.targets
        log.info("targets met: p95 <= %g ms per endpoint, failure ratio <= %.2f%%", t.p95_ms, 100 * t.max_fail_ratio)
    environment.process_exit_code = 1 if problems else 0
