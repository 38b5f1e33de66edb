"""The learned ranking stage end to end: trained by ``train_once`` from the log in Redis, stored with the version
(its reason in the metadata), served by the API, and explained with ``explain=true``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.keyspace import Keys
from core.registry import Registry
from core.settings import Settings
from recommender.features import NAMES
from tests.integration.helpers import api_client, apply, now_ms, purchase, sync_redis, view
from trainer.training import train_once

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def staples_shop(customers: int = 160, seed: int = 7) -> list[dict[str, Any]]:
    """Customers who re-buy a few staples of their own over 60 days and view popular items now and then."""
    rng = np.random.default_rng(seed)
    start = now_ms() - 60 * DAY_MS
    popular = [f"sku-{i}" for i in range(10)]
    events: list[dict[str, Any]] = []
    for c in range(customers):
        customer = "shopper" if c == 0 else f"c{c}"
        staples = [f"sku-{int(i)}" for i in rng.choice(np.arange(10, 90), size=4, replace=False)]
        for _ in range(int(rng.integers(10, 18))):
            ts = start + int(rng.integers(0, 59 * DAY_MS))
            if rng.random() < 0.7:
                events.append(purchase(customer, [(staples[int(rng.integers(0, 4))], 1, 5.0)], ts))
            else:
                events.append(view(customer, popular[int(rng.integers(0, 10))], ts))
    return events


async def test_the_ranker_is_trained_stored_served_and_explained(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "recommender.yaml"
    config.write_text("factors: 8\niterations: 5\nranker_min_queries: 20\nranker_trees: 40\n")
    settings = settings.model_copy(  # bought items come back; the engine served (no baseline gate: on a shop of
        # re-bought staples buy-again may win the newest window, and this test is about the ranker being served)
        update={"recommender_config_file": str(config), "rebuy_window_days": 0.0001, "gate_baselines": ""}
    )
    await apply(settings, staples_shop())
    lines: list[str] = []
    result = train_once(settings, echo=lines.append)
    assert result.promoted
    registry = Registry(sync_redis(settings), Keys(settings.key_prefix), settings.model_keep_versions)
    ranker = registry.info(result.version).meta["ranker"]
    assert ranker["used"] and ranker["views"]["repeat"], ranker
    assert any(line.startswith("ranking stage: used") for line in lines), lines
    async with api_client(settings) as client:
        response = await client.get("/v1/customers/shopper/recommendations", params={"n": 5, "explain": "true"})
        assert response.status_code == 200
        body = response.json()
        assert body["strategy"] == "personal" and body["model_version"] == result.version
        explained = [item["ranker"] for item in body["items"] if item.get("ranker")]
        assert explained, body
        for features in explained:
            assert 1 <= len(features) <= 5
            assert all(f["feature"] in NAMES for f in features)
        plain = (await client.get("/v1/customers/shopper/recommendations", params={"n": 5})).json()
        assert [i["item_id"] for i in plain["items"]] == [i["item_id"] for i in body["items"]]
        assert "ranker" not in plain["items"][0]
