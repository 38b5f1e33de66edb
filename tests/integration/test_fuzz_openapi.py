"""The OpenAPI schema fuzzed (schemathesis) against the real app over ASGI, on the real broker and Redis-compatible
server with a seeded shop (catalogue, views, purchases, a trained model, a segment snapshot): once in open mode and
once with API keys, each case sent with a key of a scope drawn at random (a key too weak for the operation must get
a documented 403; a case whose generated Authorization header is left out must get 401).

Every operation gets a bounded number of generated cases, positive (data the schema allows) and negative (data it
forbids), derandomized so that CI runs the same cases each time. Every response is checked: never a 5xx, a
documented status code, content type and headers, a body that matches the documented schema, schema-violating
requests refused, and with keys that no operation ignores authentication. Path parameters are drawn half of the
time from the seeded ids (customers, visitors, items, segments), so that the 200 answers with real data are
checked too, not only the 404s of unknown ids."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as core_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks

from analytics.refresh import make_refresher
from analytics.settings import AnalyticsSettings
from api.main import create_app
from core.kafka import ensure_topics
from core.settings import Settings
from tests.integration.helpers import BROWSER_UA, now_ms, purchase, view
from tests.integration.test_auth import KEYS, SECRETS
from tests.integration.test_degradation import load, shop
from trainer.training import train_once

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))  # per operation and generation mode (positive, negative)
CHECKS = [
    core_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.ignored_auth,
]
EVENTS = "POST /v1/events"
# The collector takes the valid events of a batch and refuses the others by index (202): a batch that breaks the
# schema is not refused as a whole, so the collector gets its own check instead (check_batch_refusals).
WHOLE_REQUEST = [openapi_checks.negative_data_rejection]
CUSTOMERS = ["c0", "c1", "c2", "b:1", "vïctim✓", "a b", "{x}:cart"]
VISITORS = ["v0", "v1", "v:2"]
ITEMS = ["sku-1", "sku-2", "sku-3", "sku-4", "sku-5"]


async def seed(settings: Settings) -> list[str]:
    """A small shop: the catalogue and views of :func:`shop`, purchases of customers with odd ids, visitors; then a
    model and a segment snapshot. Returns the segment names."""
    ts = now_ms() - 60_000
    events = shop()
    for n, customer in enumerate(CUSTOMERS):
        events += [view(customer, ITEMS[(n + k) % 5], ts=ts + k, session_id=f"s{n}") for k in range(3)]
        events += [purchase(customer, [(ITEMS[n % 5], 1 + n, 9.5), (ITEMS[(n + 2) % 5], 1, 20.0)], ts=ts + 10 + n)]
    for n, visitor in enumerate(VISITORS):
        events += [{**view("x", ITEMS[n], ts=ts + n), "customer_id": None, "anonymous_id": visitor}]
    await load(settings, events)
    await asyncio.to_thread(train_once, settings.model_copy(update={"holdout_min_users": 1000}))
    refresher = make_refresher(settings, AnalyticsSettings(analytics_min_customers=1000))
    result = await refresher.refresh(force=True)
    await refresher.store.client.aclose()
    assert result.state is not None
    return [str(segment["name"]) for segment in result.state.summary]


@dataclass
class Fuzzed:
    """What a fuzzing run sent and got: cases by (operation, mode, status), and the distinct failures."""

    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def known_values(segments: list[str]) -> dict[str, list[str]]:
    return {
        "customer_id": CUSTOMERS,
        "anonymous_id": VISITORS,
        "item_id": ITEMS,
        "name": [*segments, segments[0].lower().replace(" ", "-")],
    }


LOOPBACK_HOST = "127.0.0.1"


def fuzz(app: Any, known: dict[str, list[str]], keyed: bool) -> Fuzzed:
    """Every operation of ``app``'s OpenAPI document, :data:`EXAMPLES` cases per generation mode."""
    # a loopback Host: an open API refuses any other (api/guard.py); schemathesis's own is "testserver"
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"host": LOOPBACK_HOST})
    out = Fuzzed()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, known, keyed, out)
    return out


def run_operation(operation: Any, mode: GenerationMode, known: dict[str, list[str]], keyed: bool, out: Fuzzed) -> None:
    label = operation.label

    @hypothesis_settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is recorded as it was met
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def one(case: Any, data: st.DataObject) -> None:
        for name in case.path_parameters or {}:
            if name in known and data.draw(st.booleans(), label=f"known {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(known[name]), label=name)
        headers: dict[str, str] = {}
        header_is_negative = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        if keyed and not header_is_negative:
            (case.headers or {}).pop("Authorization", None)
            scope = data.draw(st.sampled_from(sorted(SECRETS)), label="key scope")
            headers = {"Authorization": f"Bearer {SECRETS[scope]}", "User-Agent": BROWSER_UA}
        response = None
        try:
            response = case.call(headers=headers, base_url=f"http://{LOOPBACK_HOST}")
            if label == EVENTS:
                case.validate_response(response, checks=[c for c in CHECKS if c not in WHOLE_REQUEST], headers=headers)
                check_batch_refusals(case, response)
            else:
                case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failed checks as a FailureGroup
            found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            for failure in found:
                lines = [line[:300] for line in str(failure).strip().splitlines() if line.strip()]
                key = f"{label} [{mode.value}] {type(failure).__name__}: {' | '.join(lines[:6])}"
                out.failures.setdefault(key, case.as_curl_command(headers=headers))
        finally:
            status = response.status_code if response is not None else 0
            out.statuses[(label, mode.value, status)] += 1

    try:
        one()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label  # nothing this operation takes can be made invalid


class BatchAcceptedWhole(AssertionError):
    """A body that breaks the event schema was accepted without a single refusal."""


def check_batch_refusals(case: Any, response: Any) -> None:
    """A body that breaks the schema may be accepted in part (202), never whole: some event is refused by
    index, with its field and reason."""
    if case.meta is None or not case.meta.is_negative_at(ParameterLocation.BODY) or response.status_code != 202:
        return
    body = response.json()
    if body["rejected"] == 0 or not body["errors"]:
        raise BatchAcceptedWhole(f"a schema-violating body was accepted whole: {response.text[:300]}")


@pytest.fixture()
def lifespans() -> Iterator[None]:
    """Schemathesis starts the ASGI app's lifespan (Redis client, producer) once and keeps it: stop it after."""
    yield
    asgi.shutdown_lifespans()


@pytest.mark.parametrize("auth", ["open", "keys"])
def test_the_openapi_schema_fuzzed(settings: Settings, auth: str, lifespans: None) -> None:
    ensure_topics(settings)
    segments = asyncio.run(seed(settings))
    if auth == "keys":
        settings = settings.model_copy(update={"api_keys": KEYS})
    app = create_app(settings)
    fuzzed = fuzz(app, known_values(segments), keyed=auth == "keys")

    by_status = Counter(status for (_, _, status), n in fuzzed.statuses.items() for _ in range(n))
    print(f"\nschemathesis ({auth}): {fuzzed.cases} cases, statuses {dict(sorted(by_status.items()))}")
    assert not fuzzed.failures, "\n\n".join(f"{what}\n  {curl}" for what, curl in fuzzed.failures.items())
    assert not [s for s in by_status if s >= 500 or s == 0], by_status  # 0: the app raised (a 500 from a server)
    # the fuzzing reached the real answers, not only refusals
    reached = {(label, status) for (label, _, status) in fuzzed.statuses}
    assert ("GET /v1/customers/{customer_id}/profile", 200) in reached
    assert ("POST /v1/events", 202) in reached
    assert ("GET /v1/segments/{name}/customers", 200) in reached
    if auth == "keys":
        assert ("GET /v1/segments", 403) in reached and ("GET /v1/customers/{customer_id}/profile", 401) in reached
