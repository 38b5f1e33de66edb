"""``GET /tracker.js``: the browser tracker and recommendation widget a shop's pages load (docs/tracker.md).

The script is public (it carries no secret: the shop's ``collect`` key is in its own tag, ``data-key``) and is
served from the package as it is, with an ``ETag`` so browsers revalidate it cheaply."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["tracker"])

TRACKER_GZIP_BUDGET = 6 * 1024  # bytes of tracker.js after gzip -9: the size a page pays (tests/unit/test_tracker.py)
CACHE_CONTROL = "public, max-age=300"  # a new version reaches the pages within five minutes


@lru_cache(maxsize=1)
def tracker_source() -> tuple[bytes, str]:
    """The script and its ETag (read once from the package)."""
    body = resources.files("api").joinpath("static", "tracker.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@router.get(
    "/tracker.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The tracker and widget script"}},
)
async def tracker(request: Request) -> Response:
    """The tracker and recommendation widget: paste `<script src="https://<engine>/tracker.js" data-key="<collect
    key>" defer></script>` into the shop's pages. Needs no key."""
    body, etag = tracker_source()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)
