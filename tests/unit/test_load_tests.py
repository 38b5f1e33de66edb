"""The load test sends what the engine accepts. No load is generated: ``load_tests/dryrun.py`` runs the locust
users against a recording client in a child process (importing locust monkey-patches the standard library with
gevent, which must stay out of this test session), and the events it recorded are validated here."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from schemas import parse_event_obj

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load_tests"


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(LOAD_TESTS / "dryrun.py"), "--iterations", "100", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def posted_events(recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bodies = [r["json"] for r in recorded if r["method"] == "POST"]
    return [event for body in bodies for event in (body if isinstance(body, list) else [body])]


def test_every_event_the_load_test_sends_is_valid(recorded: list[dict[str, Any]]) -> None:
    events = posted_events(recorded)
    for event in events:
        parse_event_obj(event)  # raises InvalidEvent naming the field and the reason
    kinds = {e["type"] for e in events}
    assert {"page_view", "product_view", "search", "add_to_cart", "purchase", "recommendation_click"} <= kinds
    assert len({e["event_id"] for e in events}) == len(events), "repeated event ids would be de-duplicated"


def test_requests_are_grouped_by_endpoint_and_batches_fit(recorded: list[dict[str, Any]]) -> None:
    assert {(r["method"], r["name"]) for r in recorded} == {
        ("POST", "/v1/events [one event]"),
        ("POST", "/v1/events [batch]"),
        ("GET", "/v1/customers/[id]/recommendations"),
        ("GET", "/v1/customers/[id]/profile"),
    }
    batches = [r["json"] for r in recorded if r["name"] == "/v1/events [batch]"]
    assert batches and all(1 < len(b) <= Settings().api_max_batch for b in batches)


@dataclass
class Entry:
    name: str
    num_requests: int
    num_failures: int = 0
    p95: int = 10

    def get_response_time_percentile(self, percent: float) -> int:
        assert percent == 0.95
        return self.p95


@dataclass
class Stats:
    total: Entry
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)


def test_targets_decide_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(LOAD_TESTS))
    config = importlib.import_module("common.config")
    breaches = importlib.import_module("common.targets").breaches
    targets = config.Targets(p95_ms=100, max_fail_ratio=0.01)
    fast = Entry("/v1/x", 1000, num_failures=10, p95=90)
    assert breaches(Stats(Entry("Aggregated", 1000, 10, 90), {("/v1/x", "GET"): fast}), targets) == []
    slow = Entry("/v1/y", 100, p95=300)
    missed = breaches(
        Stats(Entry("Aggregated", 1100, 11, 95), {("/v1/x", "GET"): fast, ("/v1/y", "GET"): slow}), targets
    )
    assert missed == ["p95 of GET /v1/y is 300 ms, above 100 ms"]
    assert breaches(Stats(Entry("Aggregated", 100, 2, 10)), targets)[0].startswith("failure ratio 2.00%")
    assert breaches(Stats(Entry("Aggregated", 0)), targets) == ["no request was made"]
    assert config.load_config({"ECRM_LOAD_P95_MS": "80"}).targets.p95_ms == 80
    with pytest.raises(ValueError, match="ECRM_LOAD_MAX_FAIL_RATIO"):
        config.load_config({"ECRM_LOAD_MAX_FAIL_RATIO": "2"})


def test_a_key_for_a_stack_with_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(LOAD_TESTS))
    config = importlib.import_module("common.config")
    assert config.load_config({}).headers is None  # the open `ecrm up`: no header
    keyed = config.load_config({"ECRM_LOAD_API_KEY": " server-secret-0123456789 "})
    assert keyed.headers == {"Authorization": "Bearer server-secret-0123456789"}
