"""``ecrm up``'s demo shop: served on its own origin next to the API, which lets that origin call it (CORS)."""

from __future__ import annotations

import socket

import httpx
import pytest

from core.settings import Settings
from runtime.embedded import free_port
from runtime.local import start_stack

pytestmark = pytest.mark.integration


def test_the_local_stack_serves_the_demo_shop_whose_origin_may_call_the_api(settings: Settings) -> None:
    settings = settings.model_copy(update={"api_port": free_port()})
    env = {"ECRM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "ECRM_REDIS_URL": settings.redis_url}
    lines: list[str] = []
    stack = start_stack(settings, lines.append, env=env, shop=True)
    try:
        assert stack.shop is not None
        shop, api = stack.shop.url, f"http://127.0.0.1:{settings.api_port}"
        assert f"demo shop on {shop}/ (tracker and widgets: docs/tracker.md)" in lines
        page = httpx.get(f"{shop}/p/sku-00001", timeout=10)
        assert page.status_code == 200 and f'<script src="{api}/tracker.js" defer></script>' in page.text
        assert httpx.get(f"{api}/tracker.js", timeout=10).status_code == 200
        preflight = httpx.options(
            f"{api}/v1/events",
            headers={
                "Origin": shop,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
            timeout=10,
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == shop
        stranger = httpx.options(
            f"{api}/v1/events",
            headers={"Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert "access-control-allow-origin" not in stranger.headers
    finally:
        stack.stop()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", stack.shop.port)) != 0  # the shop stopped with the stack
