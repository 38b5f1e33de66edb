"""The contract with the apply script (``apply.lua`` + ``apply_global.lua`` + ``apply_main.lua``): a chunk of plans
as the script's ``KEYS`` and ``ARGV`` (pure).

Every key name comes from :class:`core.keyspace.Keys`; the script only indexes ``KEYS`` (global keys through a map
of names, ``ARGV[14]``). What decides a key at apply time (the customer a visitor logged in as, an item's current
category) was read by the store beforehand (:class:`Lookups`); the script checks that it still holds before each
plan, where it is in the call's slot, and stops where it does not.

On a single node one call does it all (mode ``one``). On a Redis Cluster (``cluster=True``) a call covers the plans
of one profile (or item) slot (mode ``profile``) and gives back each plan's global record; the records then go to
the global slot in one call (mode ``global``, :func:`build_globals`); a login first hands the visitor's profile
over in the visitor's slot (mode ``handoff``, :func:`build_handoffs`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple

import orjson

from core.keyspace import Keys, ProfileId, encode_id, marker_digest, trending_era
from profiles.updates import Plan

SOURCE = "\n".join(
    resources.files("profiles").joinpath(name).read_text()
    for name in ("items.lua", "apply.lua", "apply_global.lua", "apply_main.lua")
)

# The Kafka message of a plan: ("<topic>:<partition>", offset[, when it was produced (ms since the epoch)]).
Origin = tuple[str, int] | tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    """What a login's hand-off step answered (Redis Cluster): the visitor is linked to the customer, the customer
    the link moved from (or ""), the visitor's profile as JSON (or "": nothing to merge)."""

    linked: bool
    previous: str
    data: str


@dataclass(frozen=True, slots=True)
class Lookups:
    """What the store read before a call: visitor -> customer id (absent: no login yet), item -> category; on a
    Redis Cluster also visitor -> erasure time, the visitors' markers that exist and the logins' hand-off answers
    (by :func:`login_name`)."""

    aliases: Mapping[str, str | None] = field(default_factory=dict)
    categories: Mapping[str, str | None] = field(default_factory=dict)
    erased: Mapping[str, int | None] = field(default_factory=dict)
    markers: frozenset[str] = frozenset()
    logins: Mapping[str, LoginAnswer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScriptParams:
    dedupe_ttl_ms: int
    recent_max: int
    affinity_half_life_ms: float
    trending_half_life_ms: float
    era_half_lives: int
    log_maxlen: int
    profile_ttl_ms: int = 0  # 0: profiles never expire
    items_max: int = 500
    categories_max: int = 100
    cart_lines_max: int = 100
    popular_max: int = 100_000
    dedupe_max: int = 10_000  # event ids kept per profile's de-duplication set (single node)
    anonymous_ttl_ms: int = 0  # an anonymous visitor's profile (0: profile_ttl_ms)
    trending_max: int = 10_000  # items kept per trending era
    shared_period_ms: int = 86_400_000  # browsers' events count once per visitor, client and item per period ...
    shared_per_visitor: int = 50  # ... for at most this many items per visitor
    shared_per_client: int = 200  # ... and per client
    catalogue_only: bool = True  # once the catalogue has items, only they enter popular and trending
    dedupe_window_ms: int = 0  # single node: how long event ids are remembered (0: dedupe_ttl_ms)


clock: Callable[[], float] = time.time  # the period's clock (a test replaying history day by day sets its own)


def shared_period(params: ScriptParams, now_ms: float | None = None) -> int:
    """The current period of the browsers' bounds on shared state (by the clock: a browser chooses no period)."""
    return int((clock() * 1000 if now_ms is None else now_ms) // params.shared_period_ms)


def needed_lookups(plans: Sequence[Plan], cluster: bool = False) -> tuple[list[str], list[str]]:
    """The visitors whose alias and the items whose category the store must read before applying ``plans`` (on a
    cluster also the items of interactions without a category: the script cannot read their slot)."""
    visitors = {p.profile.ident for p in plans if p.profile is not None and p.profile.kind == "a"}
    visitors |= {p.login for p in plans if p.login is not None}
    items = {p.catalogue.item_id for p in plans if p.catalogue is not None}
    if cluster:
        items |= {i.item_id for p in plans for i in p.interactions if not i.category and i.weight > 0}
    return sorted(visitors), sorted(items)


def target_of(plan: Plan, found: Lookups) -> ProfileId:
    """The profile a behavioural plan lands in: a visitor's customer once they logged in, else its own."""
    own = plan.profile
    assert own is not None
    if own.kind == "a":
        customer = found.aliases.get(own.ident)
        if customer:
            return ProfileId("c", customer)
    return own


def home_tag(plan: Plan, found: Lookups) -> str:
    """The hash tag of the slot a plan's profile part runs in, within its tenant (its target profile's, or its
    item's: an encoded id, which holds no ``:``, so never a profile's); the key's tag is ``<tenant>|`` and this."""
    if plan.catalogue is not None:
        return encode_id(plan.catalogue.item_id)
    return target_of(plan, found).tag


def login_name(plan: Plan) -> str:
    """A login's name in the visitor's hand-off hash: the event's sender and id."""
    return f"{encode_id(plan.source)}:{encode_id(plan.event_id)}"


class _Names(NamedTuple):
    """The key names of one profile a plan needs (every one from :class:`core.keyspace.Keys`)."""

    profile: str  # the profile's hash: the whole profile (profiles/layout.py)
    seen_set: str
    erased: str
    visitors: str  # a customer's (a visitor's: unused)
    alias: str  # a visitor's (a customer's: unused)
    campaigns: str
    pid: str  # the profile id's string form (``c:<id>`` / ``a:<id>``)


@functools.lru_cache(maxsize=16_384)
def _names(keys: Keys, pid: ProfileId) -> _Names:
    """A profile's key names, memoised (bounded): a visitor's events come in bursts (a session), and building the
    names costs the worker several microseconds per event."""
    return _Names(
        keys.profile(pid),
        keys.seen_set(pid),
        keys.erased(pid),
        keys.visitors(pid.ident),
        keys.alias(pid.ident),
        keys.campaigns(pid),
        str(pid),
    )


class _KeyTable:
    """KEYS, each name once; ``index`` gives its 1-based position; ``gk`` maps global names to positions."""

    def __init__(self, keys: Keys, with_globals: bool) -> None:
        self.names: list[str] = []
        self._at: dict[str, int] = {}
        self.gk: dict[str, int] = {}
        if with_globals:
            for name, key in (
                ("profile_count", keys.profile_count),
                ("popular", keys.popular),
                ("interactions", keys.interactions),
                ("applied", keys.applied_count),
                ("logged", keys.interactions_count),
                ("catalogue", keys.catalogue),
                ("out_of_stock", keys.out_of_stock),
                ("offsets", keys.applied_offsets),
                ("refused", keys.refused_offsets),
            ):
                self.gk[name] = self.index(key)

    def index(self, name: str) -> int:
        at = self._at.get(name)
        if at is None:
            self.names.append(name)
            at = self._at[name] = len(self.names)
        return at

    def named(self, name: str, key: str) -> None:
        """A global key the records name (``tr:<era>``, ``cat:<category>``, ``camp:<campaign>``)."""
        if name not in self.gk:
            self.gk[name] = self.index(key)


def _args(wire: str, params: ScriptParams, mode: str, gk: Mapping[str, int]) -> list[Any]:
    return [
        wire,
        (params.dedupe_window_ms or params.dedupe_ttl_ms) if mode == "one" else params.dedupe_ttl_ms,
        params.recent_max,
        params.affinity_half_life_ms,
        params.trending_half_life_ms,
        params.era_half_lives,
        params.log_maxlen,
        params.profile_ttl_ms,
        params.items_max,
        params.categories_max,
        params.cart_lines_max,
        params.popular_max,
        mode,
        orjson.dumps(gk).decode() if gk else "{}",
        params.dedupe_max,
        params.anonymous_ttl_ms or params.profile_ttl_ms,
        params.trending_max,
        params.shared_period_ms,
        params.shared_per_visitor,
        params.shared_per_client,
        1 if params.catalogue_only else 0,
    ]


def build_call(
    plans: Sequence[Plan],
    found: Lookups,
    keys: Keys,
    params: ScriptParams,
    cluster: bool = False,
    origins: Sequence[Origin | None] | None = None,
) -> tuple[list[str], list[Any]]:
    """``(KEYS, ARGV)`` of one apply call for ``plans``: all effects (single node), or on a Redis Cluster the
    profile part of plans that share one slot, with their ``origins`` (kept in the markers)."""
    table = _KeyTable(keys, with_globals=not cluster)
    ctx = _Context(found, keys, params, table, cluster)
    wire = [ctx.wire(plan, origins[i] if origins else None) for i, plan in enumerate(plans)]
    return table.names, _args(orjson.dumps(wire).decode(), params, "profile" if cluster else "one", table.gk)


def build_globals(records: Sequence[str], keys: Keys, params: ScriptParams) -> tuple[list[str], list[Any]]:
    """``(KEYS, ARGV)`` of the global call (Redis Cluster) for the records the profile calls gave (JSON, in plan
    order)."""
    table = _KeyTable(keys, with_globals=True)
    for rec in records:
        for op in orjson.loads(rec).get("g") or ():
            if op[0] == "t":
                for name in (op[2], op[3]):
                    table.named(name, keys.trending(int(name[3:])))
            elif op[0] == "b":
                table.named(op[5], keys.trending(int(op[5][3:])))
                table.named(op[6], keys.trending(int(op[6][3:])))
                table.named("shared", keys.shared_counts(shared_period(params)))
            elif op[0] == "c":
                table.named(f"camp:{op[1]}", keys.campaign_stats(op[1]))
            elif op[0] == "k":
                for cat in (op[3], op[4]):
                    if cat:
                        table.named(f"cat:{cat}", keys.category(cat))
    wire = "[" + ",".join(records) + "]"
    return table.names, _args(wire, params, "global", table.gk)


def build_handoffs(logins: Sequence[Plan], keys: Keys, params: ScriptParams) -> tuple[list[str], list[Any]]:
    """``(KEYS, ARGV)`` of a login's first step on a Redis Cluster, for logins of visitors sharing one slot."""
    table = _KeyTable(keys, with_globals=False)
    wire = []
    for plan in logins:
        assert plan.login is not None and plan.profile is not None
        visitor = ProfileId("a", plan.login)
        wire.append({
            "alias": table.index(keys.alias(plan.login)),
            "hand": table.index(keys.handoff(plan.login)),
            "customer": plan.profile.ident,
            "ts": plan.ts,
            "by": login_name(plan),
            "src": table.index(keys.profile(visitor)),
            "camp": table.index(keys.campaigns(visitor)),
        })  # fmt: skip
    return table.names, _args(orjson.dumps(wire).decode(), params, "handoff", {})


class _Context:
    """Builds the wire form of plans into one key table."""

    def __init__(self, found: Lookups, keys: Keys, params: ScriptParams, table: _KeyTable, cluster: bool) -> None:
        self.found, self.keys, self.params, self.table, self.cluster = found, keys, params, table, cluster
        self._era_names: dict[int, tuple[str, str]] = {}

    def wire(self, plan: Plan, origin: Origin | None) -> dict[str, Any]:
        out = self._catalogue(plan) if plan.catalogue is not None else self._behaviour(plan)
        if origin is not None:
            out["f"], out["o"] = origin[0], origin[1]
            if len(origin) > 2:
                out["pt"] = origin[2]
        return out

    def _behaviour(self, plan: Plan) -> dict[str, Any]:
        keys, table, found = self.keys, self.table, self.found
        own = plan.profile
        assert own is not None
        target = target_of(plan, found)
        names = _names(keys, target)
        same = own is target or own == target
        own_names = names if same else _names(keys, own)
        here = same or not self.cluster  # the own profile's keys are in this call's slot
        # a browser's purchase is counted apart from the orders: it is a claim
        out: dict[str, Any] = {"t": plan.type if plan.trusted or not plan.bought else "claimed_purchase", "ts": plan.ts}
        if target.kind == "a":
            out["an"] = 1  # an anonymous visitor's profile: its shorter TTL
        if plan.bought and (plan.trusted or target.kind == "a"):
            out["bo"] = 1  # the lines are the profile's bought items (a browser's claim: only a visitor's own)
        if not plan.trusted:  # a browser's claim: bounded in shared state, per visitor and per client
            out["bd"] = plan.client or ""
            if not self.cluster:
                self.table.named("shared", keys.shared_counts(shared_period(self.params)))
        # An event is a duplicate of one with the same sender and id of the same own profile (a visitor's event
        # after their login too: whichever customer it lands in, and wherever a later login moves the visitor).
        if self.cluster:  # a marker key of its own, to hold the event's global record, in the plan's slot
            out["seen"] = table.index(keys.seen(target, plan.source, plan.event_id, None if same else own))
        else:  # a member of the own profile's de-duplication set (here: a single node)
            out["seen"] = table.index(own_names.seen_set)
            out["sd"] = marker_digest(plan.source, plan.event_id)
        alive: list[int] = []
        if not same:
            if not here:
                out["erx"] = found.erased.get(own.ident) or -1
                if keys.seen(own, plan.source, plan.event_id) in found.markers:
                    out["dup"] = 1  # applied to the visitor before they logged in
        if own.kind == "a" and here:
            out["alias"] = table.index(own_names.alias)
            out["expect"] = found.aliases.get(own.ident) or ""
            alive.append(out["alias"])
        if plan.login is not None and own.kind == "c":
            out["login"] = self._login(plan, own.ident)
        out["P"] = table.index(names.profile)
        out["pid"] = names.pid
        out["er"] = sorted({table.index(own_names.erased) if here else 0, table.index(names.erased)} - {0})
        if target.kind == "c":
            alive.append(table.index(names.visitors))
        if plan.campaigns or plan.login is not None:
            out["CK"] = table.index(names.campaigns)
            alive.append(out["CK"])
        if plan.login is not None:
            out["tmp"] = table.index(keys.merging(target))
        if plan.campaigns:
            out["cp"] = [[c.name, c.attribution_ms, 1 if c.clicked else 0, c.served] for c in plan.campaigns]
            if not self.cluster:
                for c in plan.campaigns:
                    table.named(f"camp:{c.name}", keys.campaign_stats(c.name))
        out["alive"] = alive
        if plan.session is not None:
            out["s"] = plan.session
        if plan.interactions:
            out["items"] = [self._interaction(i.item_id, i.category, i.weight, plan.ts) for i in plan.interactions]
        if plan.cart:
            out["cart"] = [[c.item_id, c.delta] for c in plan.cart]
        if plan.revenue is not None:
            out["order"] = plan.revenue
        return out

    def _login(self, plan: Plan, customer: str) -> dict[str, Any]:
        """A login: on a single node the visitor's alias (and who it pointed at), the customer's visitors, the
        visitor's profile keys; on a cluster the answer of the hand-off step."""
        keys, table = self.keys, self.table
        visitor_id = plan.login
        assert visitor_id is not None
        visitor = ProfileId("a", visitor_id)
        base = {"anon": visitor_id, "visitors": table.index(keys.visitors(customer))}
        if self.cluster:
            answer = self.found.logins.get(login_name(plan), LoginAnswer(False, "", ""))
            return {**base, "linked": 1 if answer.linked else 0, "data": answer.data}
        previous = self.found.aliases.get(visitor_id) or ""
        return {
            **base,
            "alias": table.index(keys.alias(visitor_id)),
            "expect": previous,
            "customer": customer,
            "previous": table.index(keys.visitors(previous)) if previous and previous != customer else 0,
            "src": table.index(keys.profile(visitor)),
            "camp": table.index(keys.campaigns(visitor)),
        }

    def _eras(self, era: int) -> tuple[str, str]:
        """The names of an era's trending key and the next one's (put in the key table on a single node)."""
        names = self._era_names.get(era)
        if names is None:
            names = self._era_names[era] = (f"tr:{era}", f"tr:{era + 1}")
            if not self.cluster:
                self.table.named(names[0], self.keys.trending(era))
                self.table.named(names[1], self.keys.trending(era + 1))
        return names

    def _interaction(self, item: str, category: str, weight: float, ts: int) -> list[Any]:
        keys, table = self.keys, self.table
        era = trending_era(ts, self.params.trending_half_life_ms)
        names = self._eras(era)
        if self.cluster:
            category = category or (self.found.categories.get(item) or "")
            item_key = 0
        else:
            item_key = table.index(keys.item(item))
        return [item, category, weight, item_key, era, *names]

    def _catalogue(self, plan: Plan) -> dict[str, Any]:
        keys, table = self.keys, self.table
        update = plan.catalogue
        assert update is not None
        old = self.found.categories.get(update.item_id) or ""
        if not self.cluster:
            table.named(f"cat:{update.category}", keys.category(update.category))
            if old and old != update.category:
                table.named(f"cat:{old}", keys.category(old))
        return {
            "t": plan.type,
            "ts": plan.ts,
            "seen": table.index(keys.item_seen(update.item_id, plan.source, plan.event_id)),
            "item": {
                "key": table.index(keys.item(update.item_id)),
                "id": update.item_id,
                "title": update.title,
                "category": update.category,
                "price": update.price,
                "in_stock": 1 if update.in_stock else 0,
                "attrs": orjson.dumps(dict(update.attributes)).decode() if update.attributes else "",
                "image": update.image_url or "",
                "expect": old,
                "old": old if old != update.category else "",
            },
        }
