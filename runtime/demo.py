"""The demo of ``ecrm up`` made complete before its URLs are printed: every demo event applied by the worker, the
analytics refreshed (RFM scores, segments, lifetime value and churn risk in every profile) and a first model
trained and served, so the first page a newcomer opens shows a finished profile and personal recommendations.

Each step says what it did; a step that cannot finish in time says so, and the engine keeps computing it
(the worker's analytics timer and its retraining) instead of the start failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from analytics.refresh import Outcome, make_refresher
from analytics.settings import AnalyticsSettings
from core.errors import NothingToTrain, TrainingBusy
from core.keyspace import Keys
from core.redis import connect_sync
from core.registry import Registry
from core.settings import Settings
from trainer.training import train_once

Echo = Callable[[str], None]
DEMO_CAMPAIGNS = Path(__file__).resolve().with_name("demo_campaigns.yaml")


def demo_settings(settings: Settings, env: Mapping[str, str]) -> Settings:
    """The demo's own settings over ``settings``: its campaign (``runtime/demo_campaigns.yaml``) unless
    ``ECRM_CAMPAIGNS_FILE`` names a file. The shipped ``config/campaigns.yaml`` runs no campaign (pure)."""
    if "ECRM_CAMPAIGNS_FILE" in env:
        return settings
    return settings.model_copy(update={"campaigns_file": str(DEMO_CAMPAIGNS)})


def applied_count(settings: Settings) -> int:
    """Events applied by the workers so far (all of them, all runs)."""
    client = connect_sync(settings)
    try:
        return int(client.get(Keys(settings.key_prefix).applied_count) or 0)
    finally:
        client.close()


def wait_applied(settings: Settings, target: int, timeout_s: float, echo: Echo) -> bool:
    """Wait until the applied count reaches ``target``; False (and a note) when it did not in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if applied_count(settings) >= target:
            return True
        time.sleep(0.2)
    echo("demo: the worker is still applying the demo events; profiles fill in as it goes")
    return False


def refresh_analytics(settings: Settings, echo: Echo) -> None:
    """One analytics refresh now (segments, RFM breakpoints, lifetime-value model)."""
    refresher = make_refresher(settings, AnalyticsSettings())

    async def run() -> str:
        try:
            result = await refresher.refresh(force=True)
        finally:
            await refresher.store.client.aclose()
        if result.outcome is Outcome.LOCKED:
            return "the worker is refreshing the analytics now"
        return result.message

    echo(f"analytics: {asyncio.run(run())}")


def train_first_model(settings: Settings, echo: Echo, timeout_s: float = 120.0) -> None:
    """Train and serve a first model (or wait for the one the worker is training)."""
    try:
        result = train_once(settings)
    except TrainingBusy:
        echo("model: the worker is training one now; waiting for it ...")
        registry = Registry(connect_sync(settings), Keys(settings.key_prefix), settings.model_keep_versions)
        deadline = time.monotonic() + timeout_s
        while registry.current() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        current = registry.current()
        echo(f"model: serving {current}" if current else "model: not ready yet; popularity serves meanwhile")
        return
    except NothingToTrain:
        echo("model: no interactions to train on yet; popularity serves meanwhile")
        return
    state = "serving" if result.promoted else f"not promoted ({result.reason})"
    echo(f"model: {result.version} trained on {result.interactions} interactions, {state}")


def wait_served(base_url: str, customer: str, headers: dict[str, str], timeout_s: float) -> bool:
    """Wait until the API serves a trained model (it looks for a new version every ``ECRM_MODEL_POLL_S``)."""
    deadline = time.monotonic() + timeout_s
    url = f"{base_url}/v1/customers/{customer}/recommendations"
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(url, params={"n": 1}, headers=headers, timeout=5)
            if resp.status_code == 200 and resp.json().get("model_version") != "popularity":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def demo_headers(api_keys: str) -> dict[str, str]:
    """The Authorization header of a server or admin key when keys are configured (the demo reads a profile)."""
    for entry in api_keys.split(","):
        scope, _, secret = entry.strip().partition(":")
        if scope.strip() in ("server", "admin") and secret.strip():
            return {"Authorization": f"Bearer {secret.strip()}"}
    return {}


def complete(settings: Settings, target: int, customer: str, echo: Echo, timeout_s: float = 120.0) -> None:
    """Every step above, in order; then wait for the API to serve the model."""
    if wait_applied(settings, target, timeout_s, echo):
        echo("demo: every event applied")
    refresh_analytics(settings, echo)
    train_first_model(settings, echo)
    base = f"http://127.0.0.1:{settings.api_port}"
    if not wait_served(base, customer, demo_headers(settings.api_keys), 10 + 3 * settings.model_poll_s):
        echo("model: the API has not loaded it yet; it serves popular items until it does")
