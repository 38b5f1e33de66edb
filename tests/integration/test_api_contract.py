"""What a user of /docs meets: offline Swagger UI and ReDoc, examples that the API accepts, one error body with
the same status for the same mistake everywhere, limits that equal what the API enforces, and answers that say
when an item or a category is unknown."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from api.routes.events import EXAMPLES
from core.kafka import ensure_topics
from core.settings import Settings
from tests.integration.helpers import api_client, view
from tests.integration.test_serving import demo_events, load
from trainer.training import train_once

pytestmark = pytest.mark.integration


def assert_error_body(body: dict[str, Any]) -> None:
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], list)
    assert all({"field", "reason"} <= set(problem) for problem in body["errors"])


async def test_docs_pages_use_only_the_packaged_assets(settings: Settings) -> None:
    async with api_client(settings) as client:
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            urls = re.findall(r"""(?:url|openapi_url)\s*:\s*['"]([^'"]+)['"]""", html)
            assert assets, f"{page} names no asset"
            assert not [a for a in assets + urls if "//" in a], f"{page} loads from elsewhere: {assets + urls}"
            assert "cdn" not in html.lower()
            for asset in assets:
                resp = await client.get(asset)
                assert resp.status_code == 200 and len(resp.content) > 1000, asset


async def test_every_documented_event_example_is_accepted(settings: Settings) -> None:
    ensure_topics(settings)
    async with api_client(settings) as client:
        doc = (await client.get("/openapi.json")).json()
        media = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        assert set(media["examples"]) == set(EXAMPLES) == {"product_view", "purchase", "batch"}
        assert media["schema"]["anyOf"][0]["discriminator"]["propertyName"] == "type"
        for name, example in media["examples"].items():
            resp = await client.post("/v1/events", json=example["value"])
            sent = len(example["value"]) if isinstance(example["value"], list) else 1
            assert resp.status_code == 202, (name, resp.text)
            assert resp.json()["accepted"] == sent and resp.json()["errors"] == []


async def test_responses_are_typed_with_examples(settings: Settings) -> None:
    async with api_client(settings) as client:
        doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, method in [
        ("/v1/segments", "get"),
        ("/health/ready", "get"),
        ("/v1/customers/{customer_id}/recommendations", "get"),
        ("/v1/customers/{customer_id}/profile", "get"),
        ("/v1/rules", "get"),
    ]:
        ref = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        model = schemas[ref.rsplit("/", 1)[1]]
        assert model.get("examples"), f"{method.upper()} {path}: {ref} has no example"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = str(response["content"]["application/json"]["schema"])
                    assert "ErrorBody" in schema or "CollectResponse" in schema or "Readiness" in schema, (
                        f"{method.upper()} {path} {status}: {schema}"
                    )


async def test_one_error_body_and_one_status_for_malformed_json(settings: Settings) -> None:
    ensure_topics(settings)
    async with api_client(settings) as client:
        headers = {"content-type": "application/json"}
        for path in ("/v1/events", "/v1/recommendations/cart"):
            resp = await client.post(path, content=b'{"type": ', headers=headers)
            assert resp.status_code == 400, (path, resp.text)
            assert_error_body(resp.json())
            assert resp.json()["detail"].startswith("body is not valid JSON")
        invalid = await client.post("/v1/events", json={"type": "product_view", "event_id": "x"})
        assert invalid.status_code == 422
        assert_error_body(invalid.json())
        assert {p["field"] for p in invalid.json()["errors"]} >= {"item_id", "timestamp"}
        missing = await client.get("/v1/customers/nobody/profile")
        assert missing.status_code == 404 and missing.json() == {
            "detail": "no profile for customer 'nobody'",
            "errors": [],
        }
        assert_error_body((await client.get("/no/such/path")).json())


async def test_the_limit_of_n_is_the_one_enforced_and_documented(settings: Settings) -> None:
    limit = settings.recommendations_max_n
    async with api_client(settings) as client:
        doc = (await client.get("/openapi.json")).json()
        params = doc["paths"]["/v1/customers/{customer_id}/recommendations"]["get"]["parameters"]
        assert next(p for p in params if p["name"] == "n")["schema"]["maximum"] == limit
        assert doc["components"]["schemas"]["CartRequest"]["properties"]["n"]["maximum"] == limit
        ok = await client.get("/v1/customers/c1/recommendations", params={"n": limit})
        assert ok.status_code == 200
        over = await client.get("/v1/customers/c1/recommendations", params={"n": limit + 1})
        assert over.status_code == 422
        assert over.json()["errors"] == [
            {"field": "query.n", "reason": f"Input should be less than or equal to {limit}"}
        ]
        cart = await client.post("/v1/recommendations/cart", json={"item_ids": ["sku-1"], "n": limit + 1})
        assert cart.status_code == 422 and cart.json()["errors"][0]["field"] == "body.n"


async def test_unknown_things_are_named_and_the_strategy_is_what_served(settings: Settings) -> None:
    await load(settings, demo_events())
    result = await asyncio.to_thread(train_once, settings)
    assert result.promoted
    await load(settings, [view("stranger", "sku-brand-new")])  # an item the model never saw
    async with api_client(settings) as client:
        stranger = (await client.get("/v1/customers/stranger/recommendations", params={"n": 5})).json()
        assert stranger["strategy"] != "personal" and stranger["items"]
        assert not any(i["reason"].startswith("because you") for i in stranger["items"])
        known = (await client.get("/v1/customers/cust-00001/recommendations", params={"n": 5})).json()
        assert known["strategy"] == "personal" and "note" not in known
        nothing = (await client.get("/v1/items/no-such-item/similar", params={"n": 5})).json()
        assert "no-such-item" in nothing["note"] and "neither in the catalogue" in nothing["note"]
        assert nothing["items"]  # popular items instead, as the note says
        similar = (await client.get("/v1/items/sku-00003/similar", params={"n": 5})).json()
        assert similar["strategy"] == "item-based" and "note" not in similar
        nocat = await client.get("/v1/customers/cust-00001/recommendations", params={"category": "nope"})
        assert nocat.json()["strategy"] == "empty" and nocat.json()["note"] == "no item has the category 'nope'"
