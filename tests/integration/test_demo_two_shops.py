"""``ecrm up``'s two demo shops (runtime/demo_shops.py): a page for each on its own origin, each with its own collect
key and a link to the other, both origins allowed by the API (CORS); the second shop's history produced with its
tenant in the ``tenant`` header, and the first shop's with the tenant ``default``'s.

The API here runs open (the pages' keys are only what their tags carry)."""

from __future__ import annotations

import httpx
import pytest
from kafka import KafkaConsumer

from core.settings import Settings
from ecrm.commands.runtime import produce_demo
from runtime.demo_shops import DEMO_SHOPS, with_secrets
from runtime.embedded import free_port
from runtime.local import start_stack
from runtime.simulate import SimulationConfig

pytestmark = pytest.mark.integration


def test_two_shop_pages_each_with_its_key_linking_to_the_other_and_both_allowed_by_cors(settings: Settings) -> None:
    settings = settings.model_copy(update={"api_port": free_port()})
    env = {"ECRM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "ECRM_REDIS_URL": settings.redis_url}
    shops = with_secrets(DEMO_SHOPS)
    lines: list[str] = []
    stack = start_stack(settings, lines.append, env=env, shop=True, shops=shops)
    try:
        assert stack.shop is not None and len(stack.other_shops) == 1
        first, second = stack.shop.url, stack.other_shops[0].url
        assert f"second demo shop on {second}/ (tenant outlet: its own keys, data and model)" in lines
        api = f"http://127.0.0.1:{settings.api_port}"
        for url, shop, other in ((first, shops[0], second), (second, shops[1], first)):
            page = httpx.get(f"{url}/", timeout=10).text
            assert f'data-key="{shop.key("collect")}"' in page and f"<strong>{shop.name}</strong>" in page
            assert f'href="{other}/"' in page
            preflight = httpx.options(
                f"{api}/v1/events",
                headers={"Origin": url, "Access-Control-Request-Method": "POST"},
                timeout=10,
            )
            assert preflight.headers.get("access-control-allow-origin") == url
    finally:
        stack.stop()


def test_the_second_shops_history_carries_its_tenant(settings: Settings) -> None:
    tiny = SimulationConfig(customers=2, anonymous_visitors=1, items=5, days=1, seed=DEMO_SHOPS[1].seed)
    sent = produce_demo(settings, tiny, "outlet") + produce_demo(
        settings, SimulationConfig(customers=2, items=5, days=1)
    )
    consumer = KafkaConsumer(
        settings.events_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )  # fmt: skip
    records = []
    for _ in range(30):
        records.extend(consumer)
        if len(records) >= sent:
            break
    consumer.close()
    tenants = [dict(r.headers).get("tenant") for r in records]
    outlet = tenants.count(b"outlet")
    assert len(records) == sent and 0 < outlet < sent and set(tenants) == {b"outlet", b"default"}
