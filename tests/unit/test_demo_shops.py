"""The demo's two shops (runtime/demo_shops.py, runtime/shop.py): their keys in ECRM_API_KEYS (the default shop's
without a tenant, the other's with its own), one shop when the user set keys, different histories under the same
ids (their own seeds), and each shop's page carrying its own collect key and a link to the other."""

from __future__ import annotations

from collections import Counter
from itertools import count

import httpx

from core.settings import Settings
from runtime.demo_shops import DEMO_SHOPS, api_keys, demo_shops, key_lines, with_secrets
from runtime.shop import build_shop, shop_app
from runtime.simulate import simulate


def numbered() -> object:
    n = count()
    return lambda: f"secret-{next(n):02d}-{'x' * 12}"


def test_each_shop_has_a_key_of_each_scope_and_only_the_second_names_its_tenant() -> None:
    shops = with_secrets(DEMO_SHOPS, numbered())  # type: ignore[arg-type]
    keys = api_keys(shops).split(",")
    assert keys[:3] == [f"{s}:secret-0{i}-xxxxxxxxxxxx" for i, s in enumerate(("collect", "server", "admin"))]
    assert keys[3:] == [
        f"outlet:{s}:secret-0{i}-xxxxxxxxxxxx" for i, s in zip((3, 4, 5), ("collect", "server", "admin"), strict=True)
    ]
    assert len({shop.key("collect") for shop in with_secrets(DEMO_SHOPS)}) == 2  # random: never the same
    assert key_lines(shops)[1].startswith("  ecrm outlet (tenant outlet): collect secret-03")


def test_the_demo_hosts_two_shops_unless_the_user_set_keys() -> None:
    base = Settings()
    settings, shops = demo_shops(base, {})
    assert [s.tenant for s in shops] == ["default", "outlet"] and settings.tenants == "outlet"
    assert settings.api_keys == api_keys(shops) and all(s.key("collect") for s in shops)
    kept, one = demo_shops(base, {"ECRM_API_KEYS": "collect:" + "c" * 20})
    assert kept is base and [s.tenant for s in one] == ["default"] and one[0].keys is None


def test_the_two_shops_have_the_same_ids_and_different_histories() -> None:
    first, second = (shop.simulation(40, "run") for shop in DEMO_SHOPS)
    assert (first.seed, second.seed) == (7, 23) and second.customers == 24
    views = [Counter(e["item_id"] for e in simulate(cfg) if e["type"] == "product_view") for cfg in (first, second)]
    items = [{e["item_id"] for e in simulate(cfg) if e["type"] == "item"} for cfg in (first, second)]
    assert items[0] == items[1]  # the same catalogue ids ...
    assert views[0].most_common(5) != views[1].most_common(5)  # ... for different shops' histories


async def test_each_shop_page_carries_its_collect_key_and_links_to_the_other() -> None:
    outlet = build_shop(
        "http://e", "pk_outlet_" + "o" * 10, name="ecrm outlet", others=(("ecrm demo shop", "http://127.0.0.1:9"),)
    )
    app = shop_app(outlet)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop") as client:
        page = (await client.get("/")).text
    assert 'data-key="pk_outlet_oooooooooo"' in page and "<strong>ecrm outlet</strong>" in page
    assert '<a class="shop-switch" href="http://127.0.0.1:9/">ecrm demo shop</a>' in page
    assert "shop-switch" not in (await _home(build_shop("http://e", "k" * 20)))


async def _home(shop: object) -> str:
    app = shop_app(shop)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop") as client:
        return (await client.get("/")).text
