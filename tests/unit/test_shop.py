"""The demo shop's pages (runtime/shop.py): built on the simulator's catalogue, carrying the tracker's tag, every
text escaped; and how ``ecrm up`` wires it (CORS origins, the collect key)."""

from __future__ import annotations

import httpx
import pytest

from runtime.shop import allow_shop_origin, build_shop, collect_key, demo_catalogue, shop_app
from runtime.simulate import SimulationConfig, simulate

ENGINE = "http://127.0.0.1:8123"


def client(**kw: object) -> httpx.AsyncClient:
    shop = build_shop(ENGINE, **kw)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=shop_app(shop)), base_url="http://shop")


def test_the_shop_sells_the_catalogue_the_simulator_produces() -> None:
    cfg = SimulationConfig(customers=3, anonymous_visitors=1)
    produced = {e["item_id"]: e for e in simulate(cfg) if e["type"] == "item"}
    catalogue = demo_catalogue(cfg)
    assert [i.item_id for i in catalogue] == list(produced)
    assert all(produced[i.item_id]["title"] == i.title and produced[i.item_id]["price"] == i.price for i in catalogue)
    assert produced["sku-00007"]["image_url"] == "/img/sku-00007.svg"


async def test_pages_carry_the_tag_the_product_mark_and_the_widgets() -> None:
    async with client(collect_key="k" * 20) as shop:
        home = (await shop.get("/")).text
        assert f'<script src="{ENGINE}/tracker.js" data-key="{"k" * 20}" defer></script>' in home
        assert 'data-ecrm-widget="personal"' in home and home.count('class="card"') == 24
        product = await shop.get("/p/sku-00003")
        assert product.status_code == 200
        assert 'data-ecrm-product="sku-00003"' in product.text
        assert 'data-ecrm-widget="similar" data-item="sku-00003"' in product.text
        assert 'data-ecrm-widget="cart"' in (await shop.get("/cart")).text
        assert (await shop.get("/p/sku-99999")).status_code == 404
        image = await shop.get("/img/sku-00003.svg")
        assert image.headers["content-type"] == "image/svg+xml" and image.text.startswith("<svg")
        assert (await shop.get("/items?ids=sku-00001,nope")).json()[0]["item_id"] == "sku-00001"


async def test_a_shop_asking_for_consent_says_so_in_its_tag() -> None:
    async with client(consent=True) as shop:
        page = (await shop.get("/")).text
    assert 'data-consent="required" defer' in page and 'id="consent-accept"' in page
    async with client() as shop:
        assert "data-consent" not in (await shop.get("/")).text


async def test_what_a_visitor_types_is_escaped() -> None:
    async with client() as shop:
        page = (await shop.get("/search", params={"q": '"><script>alert(1)</script>'})).text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
        assert 'data-query="&quot;&gt;&lt;script&gt;' in page
        assert (await shop.get("/", params={"category": "<b>", "page": "99999999"})).status_code == 200


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        ("", "http://127.0.0.1:9000,http://localhost:9000"),
        ("https://shop.example", "https://shop.example,http://127.0.0.1:9000,http://localhost:9000"),
        ("*", "*"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000,http://localhost:9000"),
    ],
)
def test_ecrm_up_lets_the_shop_call_the_api(origins: str, expected: str) -> None:
    assert allow_shop_origin(origins, 9000) == expected


def test_the_shop_uses_the_first_collect_key() -> None:
    assert collect_key("") == ""
    assert collect_key("server:" + "s" * 20) == ""
    assert collect_key(f"server:{'s' * 20}, collect:{'c' * 20},collect:{'d' * 20}") == "c" * 20
