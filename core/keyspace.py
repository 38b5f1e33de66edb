"""The Redis keyspace, in one place: every key name the engine reads or writes is built here, including the keys
the Lua scripts touch (they get them as ``KEYS``, never build one).

**Profile ids.** A profile is a known customer or an anonymous visitor: :class:`ProfileId`, written ``c:<id>`` or
``a:<id>`` where a string is stored (the erasures index, the training log, the API's ``profile_id``).
:func:`parse_pid` is the only parser of that form.

**Ids in key names are encoded** (:func:`encode_id`: percent-encoding of everything but letters, digits and
``-._~``), so no id, whatever it holds (``:``, ``{``, ``}``, ``|``, ``%``, a tab, a newline, any unicode), can name
another profile's key or a global key: ``victim:erased`` is ``c:victim%3Aerased``, not ``victim``'s tombstone.

**Tenants.** Every key belongs to one tenant (a shop, :mod:`core.tenants`): :class:`Keys` is the keyspace of one
tenant, and the tenant's name is part of every key's hash tag, so no key of one tenant is a key of another (a tenant
name holds no ``|``, ``{``, ``}`` or ``:``, an encoded id no ``|``) and each tenant has a global slot of its own.

**Hash tags.** All keys of one profile share the hash tag ``{<tenant>|<kind>:<encoded id>}``, so one profile's
updates touch one Redis Cluster slot; an item's keys share ``{<tenant>|<encoded id>}``; every key across profiles
(indexes, rankings, the training log, counters, catalogue sets, models, campaign counters, analytics) of a tenant
shares the tag ``{t:<tenant>}``: one slot per tenant, so the global effects of a chunk of one tenant's events are one
script call (profiles/apply_global.lua), as are a model's promotion and an analytics publication; the tenants'
global slots spread over a cluster's nodes. On a single node the tags change nothing.

| key | type | holds |
|---|---|---|
| ``{p}:p:{T}`` | hash | the whole profile, one key (fields: profiles/layout.py): counts ``n:<type>``, first and
last seen ``fs``, ``ls``, orders ``or``, revenue ``rv``, ..., sessions ``ss`` (count) and ``sl`` (the last one's
digest), items ``i:<item>`` -> ``"<summed weight> <last time>[ <last purchase time>]"`` (ms in base 36), affinities
``a:<category>`` -> forward-decayed affinity (landmark ``aL``), cart lines ``k:<item>`` -> quantity, and their counts
``#i``, ``#a``, ``#k`` |
| ``{p}:p:{T}:seen`` | zset | single node: de-duplication set, ``marker_digest(S, E)`` -> when applied, for the
window ``ECRM_DEDUPE_WINDOW_S``, bounded |
| ``{p}:p:{T}:seen:{S}:{E}`` | string | cluster: de-duplication marker of an event from sender ``S`` (TTL; see (*)) |
| ``{p}:p:{a:V}:alias`` | hash | ``c``: the customer visitor ``V`` last logged in as, ``t``: when (ms) |
| ``{p}:p:{a:V}:handoff`` | hash | cluster: login -> the visitor's profile on its way to the customer (TTL) |
| ``{p}:p:{c:X}:visitors`` | set | the visitors (anonymous ids) who logged in as customer ``X`` |
| ``{p}:p:{T}:merging`` | string | scratch key of a login merge, only inside the script |
| ``{p}:p:{T}:camp`` | hash | per campaign ``c``: ``c`` variant, ``c:t`` first exposure, ``c:rev`` revenue since ... |
| ``{p}:p:{T}:erased`` | string | erasure tombstone: events of this profile up to this time (ms) are not applied |
| ``{p}:p:{T}:served`` | list | the last recommendation lists served (business rules' ``rotate``; TTL) |
| ``{p}:item:{I}`` | hash | catalogue: title, category, price, in_stock, updated |
| ``{p}:item:{I}:seen:{S}:{E}`` | string | de-duplication marker of a catalogue event from sender ``S`` (TTL; (*)) |
| ``{p}:{g}:erasures`` | zset | erased profile id -> erasure time (ms): training and analytics skip them |
| ``{p}:{g}:erasure_log`` | stream | erasures asked for (``c``: the id), append-only; ``ecrm restore`` keeps it |
| ``{p}:{g}:stats:profiles`` | string | how many profile hashes there are (the tenant quota's count; the analytics
refresh sets it right again after expiries) |
| ``{p}:{g}:trending:{era}`` | zset | item -> forward-decayed popularity for that era's landmark |
| ``{p}:{g}:popular`` | zset | item -> all-time weight |
| ``{p}:{g}:shared:{n}`` | hash | browsers' bounds, period ``n``: ``v|pid|item``, ``c|client|item`` -> weight |
| ``{p}:{g}:catalogue`` | set | item ids |
| ``{p}:{g}:out_of_stock`` | set | item ids the catalogue marks as not in stock |
| ``{p}:{g}:category:{C}`` | set | item ids of a category |
| ``{p}:{g}:interactions`` | stream | training log: ``p`` profile id, ``i`` item, ``w`` weight, ``t`` time (ms) |
| ``{p}:{g}:training_log:store`` | string | id of the training-log store on disk that drains the stream |
| ``{p}:{g}:stats:applied`` | string | count of events applied (all workers) |
| ``{p}:{g}:stats:interactions`` | string | count of interactions logged (the retraining trigger) |
| ``{p}:{g}:offsets`` | hash | ``<topic>:<partition>`` -> highest offset applied among the tenant's events of that
partition (on a cluster: whose global effects applied) |
| ``{p}:{g}:refused`` | zset | single node: ``<topic>:<partition>:<offset>`` of events the script refused -> when |
| ``{p}:{g}:worker:consuming`` | string | a worker holds partitions of the events topic (expires 5 s after its beat) |
| ``{p}:{g}:model:current`` | string | the served model version |
| ``{p}:{g}:model:versions`` | list | promoted versions, newest first (rollback history) |
| ``{p}:{g}:model:blob:{v}`` / ``{p}:{g}:model:meta:{v}`` | string | a version's npz bytes / JSON metadata and metrics |
| ``{p}:{g}:model:trained`` | hash | interaction count and time of the last training |
| ``{p}:{g}:model:lock`` | string | held while a training runs |
| ``{p}:{g}:model:baseline`` | string | JSON: the baseline the gate serves instead of the engine (absent: the engine) |
| ``{p}:{g}:camp:{N}`` | hash | a campaign's counters ``<variant>:<count>`` (profiles/campaigns.py ``COUNTS``) |
| ``{p}:{g}:an:state`` | string | JSON state of the last analytics refresh |
| ``{p}:{g}:an:lock`` | string | token of the analytics refresh holding the lock (TTL) |
| ``{p}:{g}:an:snap:{s}`` / ``{p}:{g}:an:snap:{s}:{i}`` | string / list | a segment snapshot's meta / its i-th segment |

(*) on a Redis Cluster a marker holds the event's global record: its origin (``<topic>:<partition>``, offset) and
the operations it did on global keys, so that a redelivery can complete a global call a crash cut off.

``{p}`` is the key prefix (``ECRM_KEY_PREFIX``), ``{g}`` the tenant's global tag ``{t:<tenant>}``, ``T`` a
profile's tag ``<tenant>|<kind>:<encoded id>`` (``V`` and ``X`` stand for ``<tenant>|a:V`` and ``<tenant>|c:X``), ``I``
in ``{p}:item:{I}`` for ``<tenant>|<encoded item id>``; ``E``, ``I``, ``C``, ``V``, ``X``, ``N`` are encoded ids
(``N`` a campaign's name; the fields of ``camp``: docs/campaigns.md), ``S`` the source of an event (the API key scope
that sent it, or ``direct`` for a producer writing to Kafka itself). For example, under the prefix ``ecrm``, the shop
``default``'s customer ``42`` is ``ecrm:p:{default|c:42}``, its item ``sku-1`` ``ecrm:item:{default|sku-1}`` and its
popular items ``ecrm:{t:default}:popular``; the shop ``acme``'s are ``ecrm:p:{acme|c:42}``, ``ecrm:item:{acme|sku-1}``
and ``ecrm:{t:acme}:popular``. Key layouts up to 4 (before tenants) had ``{c:42}``, ``{sku-1}`` and ``{g}``: ``ecrm
migrate-keys`` moves such keys into the tenant ``default`` (:func:`untenanted`), its last pass.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import quote, unquote

from core.tenants import DEFAULT_TENANT, validate_tenant

KEY_LAYOUT_VERSION = 6
"""The version of this key layout, written in backups and data folders (``ecrm migrate-keys`` upgrades the older):
1 before the global hash tag ``{g}`` and the per-profile de-duplication set, 2 with the item times and purchases in
keys apart (``recent``, ``items_ts``, ``bought``), 3 with them in ``items`` beside ``cart``, ``aff`` and ``sess``
(a HyperLogLog), 4 since a profile is one hash (its items, cart, affinities and sessions are fields of it), 5 since
the profiles index ``{g}:profiles`` (a sorted set) gave way to a count (``{g}:stats:profiles``) and a SCAN of the
profile hashes (:meth:`Keys.profile_pattern`), and the per-type counts ``n:<type>`` to one-letter codes
(profiles/layout.py ``TYPE_CODES``), 6 since every key names its tenant."""
TENANTS_LAYOUT_VERSION = KEY_LAYOUT_VERSION
"""The first key layout whose keys name their tenant (older ones are the tenant ``default``'s)."""
CLUSTER_LAYOUT_VERSION = 2
"""The first key layout a Redis Cluster can hold (and upgrade)."""
TRENDING_ERA_HALF_LIVES = 64  # one era spans this many half-lives: stored scores stay within 2**±64
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

ProfileKind = Literal["c", "a"]
LEGACY_PROFILE_SUFFIXES: tuple[str, ...] = ("cart", "aff", "items", "sess", "recent", "items_ts", "bought")
"""A profile's keys older engines wrote beside its hash (layout 3: ``cart``, ``aff``, ``items``, ``sess``; before:
``recent``, ``items_ts``, ``bought``): ``ecrm migrate-keys`` folds them into the hash, erasure deletes them too."""


@lru_cache(maxsize=65_536)
def encode_id(raw: str) -> str:
    """An id made safe for a key name: percent-encoded UTF-8 but for letters, digits and ``-._~`` (injective).
    Memoised (bounded): the worker encodes the same ids many times per batch, and ``quote`` is not cheap."""
    return quote(raw, safe="")


@dataclass(frozen=True, slots=True)
class ProfileId:
    """A customer (``c``) or an anonymous visitor (``a``), with the id the shop sent."""

    kind: ProfileKind
    ident: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.ident}"

    @property
    def customer_id(self) -> str | None:
        return self.ident if self.kind == "c" else None

    @property
    def anonymous_id(self) -> str | None:
        return self.ident if self.kind == "a" else None

    @property
    def tag(self) -> str:
        """The Redis Cluster hash tag body shared by all of this profile's keys."""
        return f"{self.kind}:{encode_id(self.ident)}"


def marker_digest(source: str, event_id: str) -> str:
    """An event's member in a profile's de-duplication set: 72 bits of BLAKE2b of its sender and id, in 12 base64
    characters (a sixth of a marker key's size; a collision among a profile's remembered events: ~2**-58)."""
    raw = hashlib.blake2b(f"{source}\0{event_id}".encode(), digest_size=9).digest()
    return base64.b64encode(raw).decode("ascii")


def customer_pid(customer_id: str) -> str:
    return str(ProfileId("c", customer_id))


def anonymous_pid(anonymous_id: str) -> str:
    return str(ProfileId("a", anonymous_id))


def parse_pid(pid: str | ProfileId) -> ProfileId:
    """The profile of a ``c:<id>`` / ``a:<id>`` string (the only parser of that form). ValueError otherwise."""
    if isinstance(pid, ProfileId):
        return pid
    kind, sep, ident = pid.partition(":")
    if not sep or not ident or kind not in ("c", "a"):
        raise ValueError(f"not a profile id (c:<customer> or a:<visitor>): {pid!r}")
    return ProfileId(kind, ident)  # type: ignore[arg-type]


_LEGACY_GLOBAL = re.compile(
    r"^(erasures|catalogue|out_of_stock|profiles|popular|interactions|stats:(applied|interactions)|worker:consuming"
    r"|model:.+|an:.+|trending:-?[0-9]+|category:[^{}]*|camp:\{[^{}]*\})$"
)


def legacy_global(prefix: str, key: str) -> str | None:
    """The layout-2-to-4 name of a global key written before the global keys moved under the hash tag ``{g}``
    (``ecrm migrate-keys``): ``{g}:...`` (:func:`untenanted` moves it into the tenant ``default`` after),
    None for any other key (pure)."""
    head = f"{prefix}:"
    if not key.startswith(head) or not _LEGACY_GLOBAL.match(rest := key[len(head) :]):
        return None
    if rest.startswith("camp:"):
        rest = f"camp:{rest[6:-1]}"  # a campaign's counters had a tag of their own
    return f"{head}{{g}}:{rest}"


_TAG = r"\{(?:[a-z0-9][a-z0-9-]*\|)?[ca]:[^{}:|]*\}"  # a profile's tag, with its tenant or (layouts up to 4) without
_LEGACY_MARKER = re.compile(rf"^p:({_TAG}):seen:([^:]+):([^:]+)$")


def legacy_marker(prefix: str, key: str) -> tuple[str, str] | None:
    """A single node's de-duplication marker key written before the per-profile set (``ecrm migrate-keys``): the
    profile's set (in the marker's tag: :func:`untenanted` moves it into the tenant ``default`` after) and the event's
    member in it, None for any other key (pure; encoded ids hold no ``:``)."""
    head = f"{prefix}:"
    found = _LEGACY_MARKER.match(key[len(head) :]) if key.startswith(head) else None
    if found is None:
        return None
    tag, source, event_id = found.groups()
    return f"{head}p:{tag}:seen", marker_digest(unquote(source), unquote(event_id))


_PROFILE_HASH = re.compile(rf"^p:{_TAG}$")
_PROFILE_KEY = re.compile(rf"^p:({_TAG}):(" + "|".join(LEGACY_PROFILE_SUFFIXES) + r"|seen)$")


def legacy_profile_key(prefix: str, key: str) -> tuple[str, str] | None:
    """A profile key ``ecrm migrate-keys`` upgrades: an older engine's key beside the profile hash
    (:data:`LEGACY_PROFILE_SUFFIXES`: ``(suffix, the profile hash)``, folded into the hash), or a de-duplication set
    (``("seen", key)``: cut to the window), None for any other key (pure)."""
    head = f"{prefix}:"
    found = _PROFILE_KEY.match(key[len(head) :]) if key.startswith(head) else None
    if found is None:
        return None
    tag, kind = found.groups()
    return (kind, key) if kind == "seen" else (kind, f"{head}p:{tag}")


def is_profile_hash(prefix: str, key: str) -> bool:
    """Whether ``key`` is a profile's hash (``{p}:p:{T}``; pure)."""
    head = f"{prefix}:"
    return key.startswith(head) and _PROFILE_HASH.match(key[len(head) :]) is not None


def profiles_pattern(prefix: str) -> str:
    """The SCAN ``MATCH`` pattern of every tenant's profile hashes under ``prefix`` (one walk of the keyspace for
    several tenants: the analytics refresh round); :meth:`Keys.profile_pattern` is one tenant's. Like it, it matches
    no other key (a profile hash alone ends with its tag's ``}``; a tag without ``|``, of a layout before tenants,
    does not match). :func:`profile_of` reads a matched key back."""
    return f"{prefix}:p:{{*|[ca]:*}}"


def profile_of(prefix: str, key: str) -> tuple[str, ProfileId] | None:
    """The tenant and the profile whose hash is ``key`` (a key :func:`profiles_pattern` or
    :meth:`Keys.profile_pattern` matched), None for any other key, an older layout's (before tenants) among them
    (pure)."""
    if not is_profile_hash(prefix, key):
        return None
    tenant, sep, tag = key[len(prefix) + 4 : -1].partition("|")
    if not sep:
        return None  # an older layout's (before tenants)
    kind, _, encoded = tag.partition(":")
    return tenant, ProfileId("c" if kind == "c" else "a", unquote(encoded))


def legacy_siblings(profile_key: str) -> list[str]:
    """The keys older engines kept beside the profile hash ``profile_key`` (:data:`LEGACY_PROFILE_SUFFIXES`, in
    that order; pure)."""
    return [f"{profile_key}:{suffix}" for suffix in LEGACY_PROFILE_SUFFIXES]


_UNTENANTED = (
    (re.compile(r"^p:\{([ca]:[^{}:|]*)\}((?::.*)?)$"), "p:{{{t}|{0}}}{1}"),
    (re.compile(r"^item:\{([^{}:|]*)\}((?::.*)?)$"), "item:{{{t}|{0}}}{1}"),
    (re.compile(r"^\{g\}:(.+)$"), "{{t:{t}}}:{0}"),
)


def untenanted(prefix: str, key: str, tenant: str = DEFAULT_TENANT) -> str | None:
    """The name in ``tenant``'s keyspace of a key of layout 4 or older (before tenants: a profile's ``p:{c:X}...``,
    an item's ``item:{I}...``, a global ``{g}:...``), None for any other key, a tenant's included (pure; ``ecrm
    migrate-keys`` moves a single-shop deployment into the tenant ``default``)."""
    head = f"{prefix}:"
    if not key.startswith(head):
        return None
    rest = key[len(head) :]
    for pattern, form in _UNTENANTED:
        found = pattern.match(rest)
        if found is not None:
            return head + form.format(*found.groups(), t=tenant)
    return None


_NAME = r"([a-z0-9][a-z0-9-]*)"
_TENANT_OF = re.compile(rf"^(?:p:\{{{_NAME}\|[ca]:|item:\{{{_NAME}\||\{{t:{_NAME}\}}:)")


def tenant_of(prefix: str, key: str) -> str | None:
    """The tenant a key under ``prefix`` belongs to, None for a key of no tenant (an older layout's, another
    prefix's) (pure)."""
    head = f"{prefix}:"
    found = _TENANT_OF.match(key[len(head) :]) if key.startswith(head) else None
    if found is None:
        return None
    return next(g for g in found.groups() if g is not None)


def trending_era(ts_ms: int, half_life_ms: float) -> int:
    """The era of a time: forward-decay landmarks move once per era so that stored scores never overflow."""
    return int(ts_ms // (half_life_ms * TRENDING_ERA_HALF_LIVES))


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one tenant under one prefix. Methods taking a profile accept a :class:`ProfileId` or its string
    form. :class:`core.tenants.TenantError` (a ValueError) for a bad tenant name."""

    prefix: str = "ecrm"
    tenant: str = DEFAULT_TENANT

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"key prefix must be 1-64 letters, digits, '_', '.' or '-': {self.prefix!r}")
        validate_tenant(self.tenant)

    @property
    def _g(self) -> str:
        """The start of every key across profiles: they share the tenant's hash tag ``{t:<tenant>}`` (one Redis
        Cluster slot per tenant)."""
        return f"{self.prefix}:{{t:{self.tenant}}}"

    def owns(self, key: str) -> bool:
        """Whether ``key`` is one of this tenant's keys (pure)."""
        return tenant_of(self.prefix, key) == self.tenant

    @property
    def patterns(self) -> tuple[str, str, str]:
        """SCAN patterns that together match every key of this tenant (tenant names hold no glob character)."""
        return (f"{self.prefix}:p:{{{self.tenant}|*", f"{self.prefix}:item:{{{self.tenant}|*", f"{self._g}:*")

    # ----- one profile (one hash tag) -----

    def _p(self, pid: str | ProfileId) -> str:
        return f"{self.prefix}:p:{{{self.tenant}|{parse_pid(pid).tag}}}"

    def profile(self, pid: str | ProfileId) -> str:
        return self._p(pid)

    def profile_pattern(self) -> str:
        """The SCAN ``MATCH`` pattern of every profile hash (:meth:`profile`), the only spelling of it: it matches
        no other key (an encoded id holds no ``}``, so only a profile's hash ends with its tag's ``}``).
        :meth:`profile_id` reads a matched key back."""
        return f"{self.prefix}:p:{{{self.tenant}|[ca]:*}}"

    def profile_id(self, key: str) -> ProfileId | None:
        """The profile whose hash is ``key`` (a key :meth:`profile_pattern` matched), None for any other key."""
        found = profile_of(self.prefix, key)
        if found is None or found[0] != self.tenant:
            return None  # another tenant's, or an older layout's (before tenants)
        return found[1]

    def legacy(self, pid: str | ProfileId, suffix: str) -> str:
        """A key an older engine wrote beside the profile hash (``suffix`` one of :data:`LEGACY_PROFILE_SUFFIXES`):
        only ``ecrm migrate-keys`` (which folds it into the hash and deletes it) and erasure name it."""
        if suffix not in LEGACY_PROFILE_SUFFIXES:
            raise ValueError(f"not an older profile key: {suffix!r}")
        return f"{self._p(pid)}:{suffix}"

    def legacy_profile_keys(self, pid: str | ProfileId) -> list[str]:
        """A profile's keys only older engines wrote (:data:`LEGACY_PROFILE_SUFFIXES`): erasure deletes them too."""
        return legacy_siblings(self._p(pid))

    def seen(self, pid: str | ProfileId, source: str, event_id: str, own: str | ProfileId | None = None) -> str:
        """De-duplication marker of an event of a profile, in its sender's namespace (``source``): a key of its own,
        holding the event's global record (Redis Cluster). ``own``: the visitor whose event it is, when it lands in
        the customer ``pid`` they logged in as (the customer's own event with the same sender and id is another)."""
        tail = "" if own is None else f":{parse_pid(own).tag}"
        return f"{self._p(pid)}:seen:{encode_id(source)}:{encode_id(event_id)}{tail}"

    def seen_set(self, pid: str | ProfileId) -> str:
        """The de-duplication set of a profile on a single node: :func:`marker_digest` of each event applied to it
        -> when (in 1/1024 ms); entries older than the de-duplication TTL are dropped as it is written."""
        return f"{self._p(pid)}:seen"

    def alias(self, anonymous_id: str) -> str:
        """The customer a visitor logged in as (in the visitor's slot)."""
        return f"{self._p(ProfileId('a', anonymous_id))}:alias"

    def visitors(self, customer_id: str) -> str:
        """The visitors who logged in as a customer (in the customer's slot)."""
        return f"{self._p(ProfileId('c', customer_id))}:visitors"

    def merging(self, pid: str | ProfileId) -> str:
        """A scratch key of a profile's slot, present only inside the script merging a visitor into it."""
        return f"{self._p(pid)}:merging"

    def served(self, pid: str | ProfileId) -> str:
        """The last recommendation lists served to a profile (business rules' ``rotate``; a bounded, TTL'd list)."""
        return f"{self._p(pid)}:served"

    def campaigns(self, pid: str | ProfileId) -> str:
        """A profile's campaign variants and outcomes (in its slot; see docs/campaigns.md)."""
        return f"{self._p(pid)}:camp"

    def erased(self, pid: str | ProfileId) -> str:
        """The erasure tombstone of a profile (in its slot)."""
        return f"{self._p(pid)}:erased"

    @property
    def erasure_log(self) -> str:
        """Every erasure asked for, append-only (a stream: ``c`` the customer id; the entry id holds the time)."""
        return f"{self._g}:erasure_log"

    @property
    def live_only(self) -> tuple[str, ...]:
        """Keys that belong to the running engine, not to its data: a backup leaves them out and a restore keeps
        the live ones (the erasure log, the worker's heartbeat, the training and analytics locks)."""
        return (self.erasure_log, self.worker_consuming, self.model_lock, self.analytics_lock)

    @property
    def erasures(self) -> str:
        return f"{self._g}:erasures"

    # ----- catalogue -----

    def item(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{self.tenant}|{encode_id(item_id)}}}"

    def item_seen(self, item_id: str, source: str, event_id: str) -> str:
        """De-duplication marker of a catalogue event, in its sender's namespace (``source``)."""
        return f"{self.item(item_id)}:seen:{encode_id(source)}:{encode_id(event_id)}"

    def category(self, category: str) -> str:
        return f"{self._g}:category:{encode_id(category)}"

    @property
    def catalogue(self) -> str:
        return f"{self._g}:catalogue"

    @property
    def out_of_stock(self) -> str:
        return f"{self._g}:out_of_stock"

    # ----- across profiles -----

    @property
    def profile_count(self) -> str:
        """How many profile hashes there are: the apply script adds one when it creates a hash and takes one off
        when a login merges a visitor's away, erasure when it deletes one; a hash that expires is taken off by the
        next analytics refresh (which counts them all) or ``ecrm migrate-keys``."""
        return f"{self._g}:stats:profiles"

    @property
    def legacy_profiles_index(self) -> str:
        """Key layout 4's profiles index (a sorted set, profile id -> last seen): ``ecrm migrate-keys`` adds its
        size to :attr:`profile_count` and deletes it."""
        return f"{self._g}:profiles"

    def trending(self, era: int) -> str:
        return f"{self._g}:trending:{era}"

    @property
    def popular(self) -> str:
        return f"{self._g}:popular"

    def shared_counts(self, period: int) -> str:
        """What browsers' (collect) events counted in shared state during ``period`` (per visitor and per client:
        items and weights), for the per-period bounds (expires two periods on)."""
        return f"{self._g}:shared:{period}"

    @property
    def interactions(self) -> str:
        return f"{self._g}:interactions"

    @property
    def training_log_store(self) -> str:
        """The id of the on-disk store that copies the training log out of Redis (only one may drain it)."""
        return f"{self._g}:training_log:store"

    @property
    def applied_count(self) -> str:
        return f"{self._g}:stats:applied"

    @property
    def interactions_count(self) -> str:
        return f"{self._g}:stats:interactions"

    @property
    def applied_offsets(self) -> str:
        """Per ``<topic>:<partition>``, the highest offset applied (single node; on a Redis Cluster: the highest
        offset whose global effects were applied): a redelivered message at or below it is a duplicate."""
        return f"{self._g}:offsets"

    @property
    def refused_offsets(self) -> str:
        """Single node: the messages (``<topic>:<partition>:<offset>``) whose plan the script refused, at or below the
        applied offset of their partition: a redelivery of one is judged again (bounded, pruned by age)."""
        return f"{self._g}:refused"

    def handoff(self, anonymous_id: str) -> str:
        """Redis Cluster only: a visitor's profile on its way into a customer's at a login (in the visitor's slot)."""
        return f"{self._p(ProfileId('a', anonymous_id))}:handoff"

    @property
    def worker_consuming(self) -> str:
        """Set (with a short expiry) by every worker that holds partitions of the events topic."""
        return f"{self._g}:worker:consuming"

    # ----- model versions -----

    @property
    def model_current(self) -> str:
        return f"{self._g}:model:current"

    @property
    def model_versions(self) -> str:
        return f"{self._g}:model:versions"

    def model_blob(self, version: str) -> str:
        return f"{self._g}:model:blob:{encode_id(version)}"

    def model_meta(self, version: str) -> str:
        return f"{self._g}:model:meta:{encode_id(version)}"

    @property
    def model_trained(self) -> str:
        return f"{self._g}:model:trained"

    @property
    def model_lock(self) -> str:
        return f"{self._g}:model:lock"

    @property
    def model_baseline(self) -> str:
        """The baseline the retraining gate serves for personal lists instead of the engine, and why (JSON)."""
        return f"{self._g}:model:baseline"

    # ----- campaigns -----

    def campaign_stats(self, name: str) -> str:
        """A campaign's counters per variant (one hash tag per campaign)."""
        return f"{self._g}:camp:{encode_id(name)}"

    # ----- analytics -----

    @property
    def analytics_state(self) -> str:
        return f"{self._g}:an:state"

    @property
    def analytics_lock(self) -> str:
        return f"{self._g}:an:lock"

    def snapshot(self, sid: str) -> str:
        return f"{self._g}:an:snap:{encode_id(sid)}"

    def snapshot_members(self, sid: str, index: int) -> str:
        return f"{self.snapshot(sid)}:{index}"

    def snapshot_keys(self, sid: str, segments: int) -> list[str]:
        """The meta key of a snapshot and its member lists."""
        return [self.snapshot(sid), *(self.snapshot_members(sid, i) for i in range(segments))]
