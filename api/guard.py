"""What the API refuses in open mode (no ``ECRM_API_KEYS``), before any route runs: a pure ASGI middleware.

Open mode gives every request every scope, so a web page the operator visits must not be able to use it:

* a body that is not ``application/json`` (415): a page may send a cross-site ``text/plain`` or form POST without
  a CORS preflight, while ``application/json`` needs one, which only ``ECRM_CORS_ORIGINS`` may pass;
* a ``Host`` header other than a loopback name (400): ``localhost``, ``127.0.0.1`` (any 127.x.y.z address) or
  ``[::1]``, with any port, so a name an attacker's DNS points at 127.0.0.1 (DNS rebinding) reaches nothing.

With keys configured neither applies: a request needs a key, and a page cannot send one without a preflight.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import is_loopback

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = frozenset({"application/json"})


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1`` (pure)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_refusal(header: str | None) -> str | None:
    """Why an open API refuses this ``Host`` header, or None (pure)."""
    if header is None or not header.strip():
        return "the request has no Host header; the API is open (no ECRM_API_KEYS) and answers loopback names only"
    name = host_name(header)
    if is_loopback(name):
        return None
    return (
        f"Host {header[:100]!r} is not a loopback name: the API is open (no ECRM_API_KEYS) and answers only "
        "localhost, 127.0.0.1 and [::1] (any port); set ECRM_API_KEYS to serve other names"
    )


def media_type(header: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json`` (pure)."""
    return (header or "").split(";", 1)[0].strip().lower()


def body_refusal(method: str, content_type: str | None) -> str | None:
    """Why an open API refuses a request's body by its content type, or None (pure)."""
    if method.upper() not in BODY_METHODS or media_type(content_type) in JSON_TYPES:
        return None
    sent = media_type(content_type) or "no content type"
    return (
        f"a {method.upper()} body must be sent as application/json (Content-Type), not {sent}: the API is open "
        "(no ECRM_API_KEYS), so it refuses the bodies a web page could send without a CORS preflight"
    )


class OpenModeGuard:
    """Refuses, in open mode, a non-loopback ``Host`` (400) and a body that is not JSON (415)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = host_refusal(headers.get("host"))
        status = 400
        if refusal is None:
            refusal, status = body_refusal(scope["method"], headers.get("content-type")), 415
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"detail": refusal, "errors": []})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
