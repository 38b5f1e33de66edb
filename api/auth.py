"""Access control: API keys with scopes, checked on every route that needs one.

Keys come from ``ECRM_API_KEYS``, a comma-separated list of ``scope:secret`` (a key of the tenant ``default``) or
``tenant:scope:secret`` (a key of that tenant: every request it sends acts inside that tenant's data, never another's;
:mod:`core.tenants`); a request sends ``Authorization: Bearer <secret>``. Scopes are ordered, each including the ones
below it:

* ``collect`` (a key a shop may put in a web page): anonymous visitors' behavioural events, session
  recommendations, similar items, cart complements without a customer;
* ``server`` (the shop's back end): also events with a ``customer_id`` (which includes the login events that link a
  visitor to a customer), profiles, customer recommendations, a cart with a ``customer_id``;
* ``admin``: also catalogue ``item`` events, segment exports and the administration endpoints.

A presented secret is hashed once and compared with every configured key's hash in constant time
(``hmac.compare_digest``), without stopping at the first match. No key: 401 with ``WWW-Authenticate: Bearer``; a
key without the scope: 403. With ``ECRM_API_KEYS`` unset the API is *open* (every request has every scope): it then
listens on loopback only (:func:`check_bind`), logs a warning and ``/health/ready`` says ``"auth": "open"``; an open
API acts as the tenant ``default``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from hmac import compare_digest
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from api.tenancy import note_tenant
from core.errors import ConfigError, Forbidden, Unauthorized
from core.scopes import Scope, scope_refusal
from core.tenants import DEFAULT_TENANT, TenantError, validate_tenant
from schemas.events import Behaviour, FieldError, Item

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16
# RFC 6750 b64token: what a Bearer credential may contain (no spaces, no commas, so the list stays parseable)
_SECRET = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
OPEN = "open"


@dataclass(frozen=True, slots=True)
class ApiKey:
    scope: Scope
    digest: bytes  # sha256 of the secret: the secret itself is not kept
    key_id: str  # a short fingerprint, safe to log and to key the rate limit by
    tenant: str = DEFAULT_TENANT  # the shop the key acts for


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class KeyRing:
    """The configured keys; empty means the API is open."""

    keys: tuple[ApiKey, ...] = ()

    @property
    def open(self) -> bool:
        return not self.keys

    @property
    def mode(self) -> str:
        """``open`` or ``keys``, as ``/health/ready`` reports it."""
        return OPEN if self.open else "keys"

    def match(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None. Compares with every key, in constant time each."""
        presented = _digest(secret)
        found: ApiKey | None = None
        for key in self.keys:
            if compare_digest(presented, key.digest) and found is None:
                found = key
        return found


def parse_keys(raw: str) -> KeyRing:
    """``scope:secret,tenant:scope:secret`` -> a :class:`KeyRing` (``scope:secret``: a key of the tenant
    ``default``). Raises :class:`ConfigError` naming the bad entry (by position, tenant and scope, never by its
    secret)."""
    entries = [entry.strip() for entry in raw.split(",")]
    if raw.strip() == "":
        return KeyRing()
    keys: list[ApiKey] = []
    seen: set[bytes] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"ECRM_API_KEYS entry {number} of {len(entries)}"
        if not entry:
            raise ConfigError(f"{where} is empty (expected scope:secret or tenant:scope:secret; no trailing comma)")
        parts = entry.split(":")
        if len(parts) > 3:
            raise ConfigError(
                f"{where} has {len(parts) - 1} ':' (expected scope:secret or tenant:scope:secret; "
                "a secret holds no ':')"
            )
        tenant = DEFAULT_TENANT
        if len(parts) == 3:
            try:
                tenant = validate_tenant(parts[0].strip())
            except TenantError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            entry = f"{parts[1]}:{parts[2]}"
            where = f"{where} (tenant {tenant})"
        name, sep, secret = entry.partition(":")
        if not sep:
            raise ConfigError(f"{where} has no scope (expected scope:secret, e.g. server:<secret>)")
        try:
            scope = Scope.named(name)
        except KeyError:
            names = ", ".join(s.label for s in Scope)
            raise ConfigError(f"{where}: unknown scope {name.strip()!r} (expected one of {names})") from None
        secret = secret.strip()
        if not secret:
            raise ConfigError(f"{where} ({scope.label}): the secret is empty")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{where} ({scope.label}): the secret has {len(secret)} characters, at least {MIN_SECRET_LENGTH} "
                "are needed (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not _SECRET.fullmatch(secret):
            raise ConfigError(
                f"{where} ({scope.label}): the secret may only contain letters, digits and - . _ ~ + / "
                "(with = at the end)"
            )
        digest = _digest(secret)
        if digest in seen:
            raise ConfigError(f"{where} ({scope.label}): the same secret is configured twice")
        seen.add(digest)
        keys.append(ApiKey(scope, digest, f"{scope.label}-{digest[:4].hex()}", tenant))
    return KeyRing(tuple(keys))


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1 (names other than localhost are not trusted to be)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuse to serve an open API (no keys) on anything but loopback. Raises :class:`ConfigError` saying why."""
    if keys.open and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host or 'every interface'!r} without access control: ECRM_API_KEYS is not "
            "set, so anyone who reaches the API could write events and read every profile. Set ECRM_API_KEYS "
            "(see docs/deployment.md, 'Access control') or listen on 127.0.0.1"
        )


def warn_if_open(keys: KeyRing) -> None:
    if keys.open:
        log.warning(
            "ECRM_API_KEYS is not set: the API is open (no authentication) and listens on loopback only; "
            "set ECRM_API_KEYS before exposing it"
        )


# --- per request ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the scope of their key (every scope in open mode), the ``source`` written on the events
    they send (the key's scope, or ``open``), what the rate limit counts them by, and the tenant the key acts for
    (``default`` in open mode)."""

    scope: Scope
    source: str
    rate_key: str
    tenant: str = DEFAULT_TENANT

    def allows(self, scope: Scope) -> bool:
        return self.scope >= scope

    def require(self, scope: Scope, what: str) -> None:
        """Raise :class:`Forbidden` unless the caller has ``scope`` (``what`` names the request in the message)."""
        if not self.allows(scope):
            message = f"{what} needs a key with the {scope.label} scope (this key has {self.source})"
            raise Forbidden(message, scope.label)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from ECRM_API_KEYS: `Authorization: Bearer <secret>`. The scope each operation needs "
    "(collect < server < admin) is listed in its security requirement.",
)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def caller(
    request: Request,
    security: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The request's caller, holding every scope the route asks for (401 / 403 otherwise). Found once per request
    (the key's hash is compared once, however many dependencies ask). Its tenant is noted for the request (the
    metrics' label, the tenant's configuration files: :func:`api.tenancy.note_tenant`)."""
    found: Caller | None = getattr(request.state, "caller", None)
    if found is None:
        found = identify(request, credentials)
        request.state.caller = found
        note_tenant(request, found)
    for name in security.scopes:
        scope = Scope.named(name)
        if not found.allows(scope):  # the request's URL is built only for the message
            found.require(scope, f"{request.method} {request.url.path}")
    return found


def identify(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """Who the request's key is (401 without a valid one)."""
    keys: KeyRing = request.app.state.keys
    if keys.open:
        found = Caller(Scope.ADMIN, OPEN, f"client:{client_address(request)}")
    else:
        if credentials is None:
            raise Unauthorized("an API key is required: send Authorization: Bearer <secret>")
        key = keys.match(credentials.credentials)
        if key is None:
            raise Unauthorized("the API key is not valid", invalid_token=True)
        # a collect key is public (it is in the shop's pages): count its senders one by one
        rate_key = f"client:{client_address(request)}" if key.scope == Scope.COLLECT else f"key:{key.key_id}"
        if key.tenant != DEFAULT_TENANT:  # a collect key's senders are counted per shop too
            rate_key = f"{key.tenant}/{rate_key}"
        found = Caller(key.scope, key.scope.label, rate_key, key.tenant)
    return found


AnyCaller = Annotated[Caller, Depends(caller)]  # authenticated, whatever its scope (for dependencies)


CollectCaller = Annotated[Caller, Security(caller, scopes=[Scope.COLLECT.label])]
ServerCaller = Annotated[Caller, Security(caller, scopes=[Scope.SERVER.label])]
AdminCaller = Annotated[Caller, Security(caller, scopes=[Scope.ADMIN.label])]
RequireAdmin = Security(caller, scopes=[Scope.ADMIN.label])  # for a router's ``dependencies``


# --- which events a key may send --------------------------------------------------------------------------------


def event_refusal(event: Behaviour | Item, caller: Caller) -> FieldError | None:
    """Why ``caller`` may not send ``event``, or None when it may."""
    return scope_refusal(event, caller.scope, caller.source)


_AUTH_RESPONSES = {
    "401": {"description": "No API key, or not a valid one (`WWW-Authenticate: Bearer`)"},
    "403": {"description": "The key lacks the scope this operation needs (`WWW-Authenticate` names it)"},
}


def document_scopes(schema: dict[str, Any], open_mode: bool = False) -> dict[str, Any]:
    """Say in each operation's description which scope it needs (Swagger UI shows the lock, not the scope), and
    document its 401 and 403 answers. In open mode (no keys configured) a key is optional: the security
    requirement also lists the empty one, as the running API accepts requests without a key. Idempotent."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            scopes = [s for requirement in operation.get("security", []) for s in requirement.get("ApiKey", [])]
            if not scopes:
                continue
            note = f"**Needs an API key with the `{scopes[0]}` scope** (or a higher one)."
            if note not in operation.get("description", ""):
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            responses = operation.setdefault("responses", {})
            for status, response in _AUTH_RESPONSES.items():
                responses.setdefault(status, dict(response))
            if open_mode and {} not in operation["security"]:
                operation["security"].append({})
    return schema
