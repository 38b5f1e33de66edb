"""The contract with ``apply.lua``: a chunk of plans as the script's ``KEYS`` and ``ARGV`` (pure).

Every key name comes from :class:`core.keyspace.Keys`; the script only indexes ``KEYS``. What decides a key at
apply time (the customer a visitor logged in as, an item's current category) was read by the store beforehand
(:class:`Lookups`); the script checks that it still holds before each plan and stops where it does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.keyspace import Keys, ProfileId, trending_era
from profiles.updates import Plan

# The first KEYS, in the order apply.lua names them.
GLOBAL_KEYS = (
    "profiles",
    "popular",
    "interactions",
    "applied_count",
    "interactions_count",
    "catalogue",
    "out_of_stock",
)


@dataclass(frozen=True, slots=True)
class Lookups:
    """What the store read before a call: visitor -> customer id (absent: no login yet), item -> category."""

    aliases: Mapping[str, str | None] = field(default_factory=dict)
    categories: Mapping[str, str | None] = field(default_factory=dict)


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


def needed_lookups(plans: Sequence[Plan]) -> tuple[list[str], list[str]]:
    """The visitors whose alias and the items whose category the store must read before applying ``plans``."""
    visitors = {p.profile.ident for p in plans if p.profile is not None and p.profile.kind == "a"}
    visitors |= {p.login for p in plans if p.login is not None}
    items = sorted({p.catalogue.item_id for p in plans if p.catalogue is not None})
    return sorted(visitors), items


class _KeyTable:
    """KEYS, each name once; ``index`` gives its 1-based position."""

    def __init__(self, keys: Keys) -> None:
        self.names: list[str] = [getattr(keys, name) for name in GLOBAL_KEYS]
        self._at = {name: i + 1 for i, name in enumerate(self.names)}

    def index(self, name: str) -> int:
        at = self._at.get(name)
        if at is None:
            self.names.append(name)
            at = self._at[name] = len(self.names)
        return at

    def block(self, names: list[str]) -> int:
        """Indexes of a profile's keys (consecutive, so the script adds offsets): the first one."""
        first = [self.index(n) for n in names]
        if first != list(range(first[0], first[0] + len(first))):  # seen before in another order: never
            raise AssertionError("profile keys must be consecutive in KEYS")
        return first[0]


def build_call(plans: Sequence[Plan], found: Lookups, keys: Keys, params: ScriptParams) -> tuple[list[str], list[Any]]:
    """``(KEYS, ARGV)`` of one ``apply.lua`` call for ``plans``."""
    table = _KeyTable(keys)
    wire = [_wire(plan, found, keys, params, table) for plan in plans]
    args: list[Any] = [
        orjson.dumps(wire).decode(),
        params.dedupe_ttl_ms,
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
    ]
    return table.names, args


def _wire(plan: Plan, found: Lookups, keys: Keys, params: ScriptParams, table: _KeyTable) -> dict[str, Any]:
    if plan.catalogue is not None:
        return _wire_catalogue(plan, found, keys, table)
    assert plan.profile is not None
    own = plan.profile
    seen = keys.seen(own, plan.source, plan.event_id)
    out: dict[str, Any] = {"t": plan.type, "ts": plan.ts, "seen": table.index(seen)}
    target = own
    alive: list[int] = []
    if own.kind == "a":
        customer = found.aliases.get(own.ident)
        out["alias"] = table.index(keys.alias(own.ident))
        out["expect"] = customer or ""
        alive.append(out["alias"])
        if customer:
            target = ProfileId("c", customer)
    if plan.login is not None and own.kind == "c":
        out["login"] = _wire_login(plan.login, own.ident, found, keys, table)
    out["P"] = table.block(keys.profile_keys(target))
    out["pid"] = str(target)
    out["er"] = sorted({table.index(keys.erased(own)), table.index(keys.erased(target))})
    if target.kind == "c":
        alive.append(table.index(keys.visitors(target.ident)))
    if plan.campaigns or plan.login is not None:
        out["CK"] = table.index(keys.campaigns(target))
        alive.append(out["CK"])
    if plan.campaigns:
        out["cp"] = [[c.name, table.index(keys.campaign_stats(c.name)), c.attribution_ms, 1 if c.clicked else 0]
                     for c in plan.campaigns]  # fmt: skip
    out["alive"] = alive
    if plan.session is not None:
        out["s"] = plan.session
    if plan.interactions:
        out["items"] = [_wire_interaction(i.item_id, i.category, i.weight, plan.ts, keys, params, table)
                        for i in plan.interactions]  # fmt: skip
    if plan.cart:
        out["cart"] = [[c.item_id, c.delta] for c in plan.cart]
    if plan.revenue is not None:
        out["order"] = plan.revenue
    return out


def _wire_login(visitor_id: str, customer: str, found: Lookups, keys: Keys, table: _KeyTable) -> dict[str, Any]:
    """A login: the visitor's alias (and who it pointed at), the customer's visitors, the visitor's profile keys."""
    visitor = ProfileId("a", visitor_id)
    previous = found.aliases.get(visitor_id) or ""
    return {
        "alias": table.index(keys.alias(visitor_id)),
        "expect": previous,
        "customer": customer,
        "anon": visitor_id,
        "visitors": table.index(keys.visitors(customer)),
        "previous": table.index(keys.visitors(previous)) if previous and previous != customer else 0,
        "src": table.block(keys.profile_keys(visitor)),
        "spid": str(visitor),
        "camp": table.index(keys.campaigns(visitor)),
    }


def _wire_interaction(
    item: str, category: str, weight: float, ts: int, keys: Keys, params: ScriptParams, table: _KeyTable
) -> list[Any]:
    era = trending_era(ts, params.trending_half_life_ms)
    return [
        item,
        category,
        weight,
        table.index(keys.item(item)),
        era,
        table.index(keys.trending(era)),
        table.index(keys.trending(era + 1)),
    ]


def _wire_catalogue(plan: Plan, found: Lookups, keys: Keys, table: _KeyTable) -> dict[str, Any]:
    update = plan.catalogue
    assert update is not None
    old = found.categories.get(update.item_id) or ""
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
            "old_cat": table.index(keys.category(old)) if old and old != update.category else 0,
            "new_cat": table.index(keys.category(update.category)),
        },
    }
