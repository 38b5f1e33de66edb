"""``GET /tracker.js``: the script's size budget, its contract names, and how it is served (no key needed)."""

from __future__ import annotations

import gzip
import re

import httpx
import pytest

from api.main import create_app
from api.routes.tracker import TRACKER_GZIP_BUDGET, tracker_source
from core.settings import Settings

KEYS = "collect:" + "c" * 20 + ",server:" + "s" * 20


def test_the_tracker_stays_within_its_gzipped_size_budget() -> None:
    body, _ = tracker_source()
    size = len(gzip.compress(body, compresslevel=9))
    print(f"tracker.js: {len(body):,} bytes, {size:,} gzipped (budget {TRACKER_GZIP_BUDGET:,})")
    assert size <= TRACKER_GZIP_BUDGET


def test_the_tracker_is_dependency_free_and_keeps_the_contract_names() -> None:
    text = tracker_source()[0].decode()
    assert not re.search(r"\bimport\b|\brequire\(|https?://", text.split("*/", 1)[1])  # nothing loaded from elsewhere
    for name in ("data-ecrm-product", "data-ecrm-widget", "data-ecrm-item", "data-item", "data-n", "recommendation_id",
                 "keepalive: true", '"Content-Type": "application/json"', "anonymousId", "track:",
                 "consent"):  # fmt: skip
        assert name in text, name
    assert "sendBeacon" not in text and "text/plain" not in text, "every batch is JSON with its content type"
    for kind in ("personal", "similar", "cart", "session"):
        assert f'"{kind}"' in text, kind


@pytest.mark.parametrize("keys", ["", KEYS])
async def test_tracker_js_is_served_without_a_key_and_revalidated_by_etag(keys: str) -> None:
    app = create_app(Settings(api_keys=keys))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        first = await client.get("/tracker.js")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/javascript")
        assert first.content == tracker_source()[0]
        assert "max-age" in first.headers["cache-control"]
        again = await client.get("/tracker.js", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert (await client.get("/tracker.js", headers={"If-None-Match": '"other"'})).status_code == 200


async def test_the_tracker_is_documented_in_the_openapi_document() -> None:
    app = create_app(Settings())
    operation = app.openapi()["paths"]["/tracker.js"]["get"]
    assert "data-key" in operation["description"] and "security" not in operation
