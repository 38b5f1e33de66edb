"""The demo shop ``ecrm up`` serves on its own port: a catalogue page, product pages, a cart and a search, built on
the simulator's catalogue and using the engine's tracker and widgets (``GET /tracker.js``) as a real shop would.

It runs on another origin than the API, so the browser exercises CORS (``ECRM_CORS_ORIGINS``) as in production.
Pages are rendered here from the catalogue (every text escaped); everything the visitor does is sent by the
tracker, and every recommendation card is filled by the widget from the API (title, price, image and link come
from the engine's catalogue in Redis). Product images are drawn here (SVG), at the ``image_url`` the simulator
gives each item.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from html import escape
from importlib import resources
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from runtime.simulate import CatalogueItem, SimulationConfig, make_catalogue

PAGE_SIZE = 24
# The widgets' timeout here (the tracker's default is 2.5 s): the demo runs everything on one machine, often busy
MAX_QUERY = 100  # characters of a search the shop looks at
MAX_CART_LOOKUP = 100  # items the cart page asks about at once
SHOP_JS = resources.files("runtime").joinpath("static", "shop.js").read_bytes()
_COLOURS = ["#e76f51", "#2a9d8f", "#e9c46a", "#264653", "#f4a261", "#8ab17d", "#b56576", "#6d597a"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#264653;color:#fff;padding:.8em 1.5em;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header form{margin-left:auto}
main{padding:1em 1.5em;max-width:1100px;margin:auto}
.grid,[data-ecrm-widget],[data-ecrm-cards]{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:1em}
.card,.ecrm-card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;text-decoration:none;color:#222;
display:flex;flex-direction:column;gap:.3em}
.card img,.ecrm-card img{width:100%;aspect-ratio:1;border-radius:4px}
.ecrm-title{font-weight:600}.ecrm-price,.price{color:#2a9d8f}.ecrm-reason{font-size:.8em;color:#777}
.product{display:flex;gap:2em;flex-wrap:wrap}.product img{width:280px;height:280px;border-radius:6px}
button{background:#e76f51;color:#fff;border:0;border-radius:4px;padding:.6em 1.2em;cursor:pointer}
nav a{margin-right:.8em}.fallback{color:#777;font-style:italic}
"""


_BANNER = (
    '<div id="consent" style="background:#e9c46a;padding:.6em 1.5em">This shop records what you view to recommend '
    'products. <button id="consent-accept">Accept</button> <button id="consent-refuse">No, thanks</button></div>'
)


@dataclass(frozen=True)
class Shop:
    """What the pages need: the catalogue (by id and by category), the engine's URL and the collect key."""

    engine_url: str
    collect_key: str
    items: dict[str, CatalogueItem]
    categories: dict[str, list[CatalogueItem]]
    consent: bool = False  # the tag asks for the visitor's consent first (data-consent="required"), with a banner
    name: str = "ecrm demo shop"
    others: tuple[tuple[str, str], ...] = ()  # the demo's other shops (name, URL): the header switches to them

    def tag(self) -> str:
        key = f' data-key="{escape(self.collect_key)}"' if self.collect_key else ""
        consent = ' data-consent="required"' if self.consent else ""
        return f'<script src="{escape(self.engine_url)}/tracker.js"{key}{consent} defer></script>'


def demo_catalogue(cfg: SimulationConfig) -> list[CatalogueItem]:
    """The catalogue ``ecrm simulate`` produces with ``cfg`` (the same seed gives the same items)."""
    return make_catalogue(cfg, random.Random(cfg.seed))


def build_shop(
    engine_url: str,
    collect_key: str = "",
    cfg: SimulationConfig | None = None,
    consent: bool = False,
    name: str = "ecrm demo shop",
    others: tuple[tuple[str, str], ...] = (),
) -> Shop:
    items = demo_catalogue(cfg or SimulationConfig())
    categories: dict[str, list[CatalogueItem]] = {}
    for item in items:
        categories.setdefault(item.category, []).append(item)
    by_id = {i.item_id: i for i in items}
    return Shop(engine_url.rstrip("/"), collect_key, by_id, categories, consent, name, others)


def _switcher(shop: Shop) -> str:
    """Links to the demo's other shops (each a tenant of the engine, on its own origin)."""
    if not shop.others:
        return ""
    links = " ".join(f'<a class="shop-switch" href="{escape(url)}/">{escape(name)}</a>' for name, url in shop.others)
    return f'<span id="shops">Other shop: {links}</span>'


def _page(shop: Shop, title: str, body: str, status: int = 200) -> HTMLResponse:
    nav = " ".join(f'<a href="/?category={quote(c)}">{escape(c)}</a>' for c in sorted(shop.categories))
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)} · {escape(shop.name)}</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style>{shop.tag()}<script src="/shop.js" defer></script></head>
<body><header><a href="/"><strong>{escape(shop.name)}</strong></a><nav>{nav}</nav>{_switcher(shop)}
<a href="/cart" id="cart-link">Cart</a>
<form action="/search"><input name="q" placeholder="Search" maxlength="{MAX_QUERY}"></form></header>
{_BANNER if shop.consent else ""}<main>{body}</main></body></html>"""
    return HTMLResponse(html, status_code=status)


def _card(item: CatalogueItem) -> str:
    return (
        f'<a class="card" href="/p/{quote(item.item_id)}" data-id="{escape(item.item_id)}">'
        f'<img src="{image_path(item.item_id)}" alt=""><span>{escape(item.title)}</span>'
        f'<span class="price">€{item.price:.2f}</span></a>'
    )


def _personal(heading: str) -> str:
    return (
        f'<h2 id="personal-heading">{escape(heading)}</h2>'
        '<div id="personal" data-ecrm-widget="personal" data-n="6" data-timeout-ms="5000"'
        ' data-link="/p/{item_id}">'
        '<p class="fallback">Browse a few products: recommendations for you appear here.</p></div>'
    )


def image_path(item_id: str) -> str:
    return f"/img/{quote(item_id)}.svg"


def shop_app(shop: Shop) -> Starlette:
    """The demo shop's pages, images and a small catalogue look-up for the cart page."""

    async def home(request: Request) -> Response:
        category = request.query_params.get("category", "")
        items = shop.categories.get(category) or list(shop.items.values())
        page = max(0, min(_int(request.query_params.get("page"), 0), len(items) // PAGE_SIZE))
        shown = items[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
        heading = escape(category.title()) if category in shop.categories else "All products"
        more = (
            f'<p><a href="?category={quote(category)}&page={page + 1}">More</a></p>'
            if len(items) > (page + 1) * PAGE_SIZE
            else ""
        )
        body = (
            _personal("Because you viewed ...")
            + f'<h1>{heading}</h1><div class="grid" id="catalogue">{"".join(_card(i) for i in shown)}</div>{more}'
        )
        return _page(shop, heading, body)

    async def product(request: Request) -> Response:
        item = shop.items.get(request.path_params["item_id"])
        if item is None:
            return _page(shop, "Not found", '<h1>No such product</h1><p><a href="/">All products</a></p>', 404)
        ident = escape(item.item_id)
        body = f"""<div class="product" data-ecrm-product="{ident}" data-ecrm-category="{escape(item.category)}"
data-ecrm-price="{item.price}"><img src="{image_path(item.item_id)}" alt="">
<div><h1 id="title">{escape(item.title)}</h1><p class="price">€{item.price:.2f}</p><p>Category:
<a href="/?category={quote(item.category)}">{escape(item.category)}</a></p>
<button id="add" data-item="{ident}" data-price="{item.price}"
data-category="{escape(item.category)}">Add to cart</button>
<p id="added" hidden>Added to your cart.</p></div></div>
<h2>Customers who viewed this also viewed</h2>
<div id="similar" data-ecrm-widget="similar" data-item="{ident}" data-n="6" data-timeout-ms="5000"
data-link="/p/{{item_id}}">
<p class="fallback">More from {escape(item.category)}: <a href="/?category={quote(item.category)}">see all</a></p></div>
{_personal("Because you viewed ...")}"""
        return _page(shop, item.title, body)

    async def cart(_: Request) -> Response:
        body = """<h1>Your cart</h1><ul id="lines"><li class="fallback">Your cart is empty.</li></ul>
<button id="buy" hidden>Buy</button><p id="bought" hidden>Thank you for your order.</p>
<h2>Goes well with your cart</h2>
<div id="cart-recs" data-ecrm-widget="cart" data-n="6" data-timeout-ms="5000" data-link="/p/{item_id}">
<p class="fallback">Add products to your cart to see what goes with them.</p></div>"""
        return _page(shop, "Cart", body)

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:MAX_QUERY]
        words = query.lower().split()
        found = [i for i in shop.items.values() if words and all(w in i.title.lower() for w in words)][:PAGE_SIZE]
        cards = "".join(_card(i) for i in found)
        body = (
            f"<h1>Search: {escape(query)}</h1>"
            f'<div class="grid" id="results" data-query="{escape(query)}">{cards or "Nothing found."}</div>'
        )
        return _page(shop, f"Search {query}", body)

    async def items(request: Request) -> Response:
        ids = request.query_params.get("ids", "").split(",")[:MAX_CART_LOOKUP]
        found = [shop.items[i] for i in ids if i in shop.items]
        return JSONResponse(
            [{"item_id": i.item_id, "title": i.title, "price": i.price, "category": i.category} for i in found]
        )

    async def script(_: Request) -> Response:
        return Response(SHOP_JS, media_type="text/javascript; charset=utf-8")

    async def image(request: Request) -> Response:
        item = shop.items.get(request.path_params["item_id"])
        if item is None:
            return Response(status_code=404)
        return Response(product_svg(item), media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})

    return Starlette(
        routes=[
            Route("/", home),
            Route("/p/{item_id}", product),
            Route("/cart", cart),
            Route("/search", search),
            Route("/items", items),
            Route("/img/{item_id}.svg", image),
            Route("/shop.js", script),
        ]
    )


def product_svg(item: CatalogueItem) -> str:
    """A square picture of the product: its category's colour, its category and number."""
    colour = _COLOURS[sum(map(ord, item.category)) % len(_COLOURS)]
    number = escape(item.item_id.rsplit("-", 1)[-1])
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        f'<rect width="100" height="100" fill="{colour}"/>'
        f'<text x="50" y="45" font-size="12" text-anchor="middle" fill="#fff">{escape(item.category)}</text>'
        f'<text x="50" y="65" font-size="16" text-anchor="middle" fill="#fff">{number}</text></svg>'
    )


def _int(text: str | None, default: int) -> int:
    return int(text) if text is not None and text.isdigit() and len(text) < 6 else default


class ShopServer:
    """The demo shop served by uvicorn on 127.0.0.1 in a thread of the calling process."""

    def __init__(self, shop: Shop, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(shop_app(shop), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="demo-shop", daemon=True)

    def start(self, timeout_s: float = 30.0) -> ShopServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the demo shop did not start on 127.0.0.1:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def collect_key(api_keys: str) -> str:
    """The first ``collect`` key of ``ECRM_API_KEYS`` (what the demo shop puts in its tag); "" when none."""
    for entry in api_keys.split(","):
        scope, _, secret = entry.strip().partition(":")
        if scope.strip() == "collect" and secret.strip():
            return secret.strip()
    return ""


def allow_shop_origin(cors_origins: str, port: int) -> str:
    """``ECRM_CORS_ORIGINS`` with the demo shop's origins added (unchanged when it allows every origin)."""
    current = [o.strip() for o in cors_origins.split(",") if o.strip()]
    if "*" in current:
        return cors_origins
    wanted = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return ",".join([*current, *(o for o in wanted if o not in current)])


def start_demo_shop(engine_url: str, api_keys: str, port: int) -> ShopServer:
    """The demo shop on ``port``, pointing at the engine (with its first collect key when keys are configured)."""
    return ShopServer(build_shop(engine_url, collect_key(api_keys)), port).start()


@dataclass(frozen=True)
class ShopPage:
    """What one demo shop's page needs: its name, its collect key, its simulator (catalogue), its port."""

    name: str
    collect_key: str
    cfg: SimulationConfig
    port: int


def start_demo_shops(engine_url: str, pages: list[ShopPage]) -> list[ShopServer]:
    """One demo shop per page on its own origin (its own visitors' ids and consent), each header linking to the
    others; all stopped when one fails to start."""
    urls = [(page.name, f"http://127.0.0.1:{page.port}") for page in pages]
    started: list[ShopServer] = []
    try:
        for page in pages:
            others = tuple(u for u in urls if u[1] != f"http://127.0.0.1:{page.port}")
            shop = build_shop(engine_url, page.collect_key, page.cfg, name=page.name, others=others)
            started.append(ShopServer(shop, page.port).start())
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started
