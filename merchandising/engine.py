"""Apply the rules in force to one list of candidates (pure: everything it needs is passed in).

The order, documented in docs/rules.md:

1. the built-in exclusions have already run (bought within the re-buy window, out of stock, the cart ...);
2. ``exclude`` and ``include_only`` remove candidates (every active rule; several ``include_only`` all hold);
3. scores: a candidate's *normalised* score is its rank in the model's order mapped to (0, 1]
   (``(L - i) / L`` for the i-th of L candidates), then multiplied by each matching ``boost`` factor, divided by
   each matching ``bury`` factor, multiplied by ``rotate``'s factor for an item served lately and by ``upsell``'s
   factor for a pricier item of a cart category; the list is sorted by that final score (stable);
4. ``max_per_category``: items over the cap (the smallest cap of the active rules) move behind the others and are
   used only when the list would be short otherwise;
5. ``promote``: each promotion takes ``ceil(share x n)`` slots for its best-scored items (candidates first, then
   the listed ids in file order); promoted items win over the category cap;
6. ``pin``: pinned items take their positions last, over everything else, unless an exclusion or the built-in
   exclusions (stock, bought) forbid them; two pins on one position: the rule first in the file gets it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from merchandising.rules import ItemInfo, Rule

_NO_INFO = ItemInfo()


@dataclass(frozen=True, slots=True)
class Candidate:
    item_id: str
    score: float
    reason: str


@dataclass(slots=True)
class Ranked:
    """One item of the final list: the model's score, the final (normalised, adjusted) score, the rules applied."""

    item_id: str
    model_score: float | None
    final_score: float
    reason: str
    rules: list[str] = field(default_factory=list)
    fixed: bool = False  # pinned or promoted: kept when the list is cut to n


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules may need of a request besides the candidates (all optional)."""

    now_ms: int
    info: Mapping[str, ItemInfo] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()  # built-in exclusions and out-of-stock items (pins, promotions)
    served: Sequence[tuple[int, frozenset[str]]] = ()  # this profile's last lists, newest first
    cart_prices: Mapping[str, float] = field(default_factory=dict)  # cart category -> highest cart price in it


@dataclass(slots=True)
class Outcome:
    items: list[Ranked]
    applied: dict[str, int]  # rule -> items it touched in this list


def _touch(item: Ranked, rule: Rule, applied: dict[str, int]) -> None:
    if rule.name not in item.rules:
        item.rules.append(rule.name)
    applied[rule.name] = applied.get(rule.name, 0) + 1


def _filtered_out(item_id: str, info: ItemInfo, rules: Sequence[Rule]) -> Rule | None:
    for rule in rules:
        if rule.exclude is not None and rule.exclude(item_id, info):
            return rule
        if rule.include_only is not None and not rule.include_only(item_id, info):
            return rule
    return None


def _recently_served(rule: Rule, ctx: Context) -> frozenset[str]:
    spec = rule.spec.rotate
    assert spec is not None
    out: set[str] = set()
    since = ctx.now_ms - int(spec.hours * 3_600_000) if spec.hours is not None else None
    for index, (ts, items) in enumerate(ctx.served):
        if (spec.lists is not None and index < spec.lists) or (since is not None and ts >= since):
            out |= items
    return frozenset(out)


def _upsell(item_id: str, info: ItemInfo, ctx: Context) -> bool:
    if info.category is None or info.price is None:
        return False
    top = ctx.cart_prices.get(info.category)
    return top is not None and info.price > top and item_id not in ctx.blocked


def apply_rules(rules: Sequence[Rule], candidates: Sequence[Candidate], n: int, ctx: Context) -> Outcome:
    """The final list of at most ``n`` items (see the module's docstring for the order)."""
    applied: dict[str, int] = {}
    info = ctx.info
    filters = [r for r in rules if r.exclude is not None or r.include_only is not None]
    scorers = [r for r in rules if r.boost or r.bury or r.spec.rotate or r.spec.upsell]
    rotated = {r.name: _recently_served(r, ctx) for r in scorers if r.spec.rotate is not None}
    total = len(candidates)
    kept: list[Ranked] = []
    for i, cand in enumerate(candidates):
        meta = info.get(cand.item_id, _NO_INFO)
        out = _filtered_out(cand.item_id, meta, filters) if filters else None
        if out is not None:
            applied[out.name] = applied.get(out.name, 0) + 1
            continue
        item = Ranked(cand.item_id, cand.score, (total - i) / total, cand.reason)
        for rule in scorers:
            factor = 1.0
            if rule.boost is not None and rule.boost[0](cand.item_id, meta):
                factor *= rule.boost[1]
            if rule.bury is not None and rule.bury[0](cand.item_id, meta):
                factor /= rule.bury[1]
            if rule.spec.rotate is not None and cand.item_id in rotated[rule.name]:
                factor *= rule.spec.rotate.factor
            if rule.spec.upsell is not None and _upsell(cand.item_id, meta, ctx):
                factor *= rule.spec.upsell.factor
            if factor != 1.0:
                item.final_score *= factor
                _touch(item, rule, applied)
        kept.append(item)
    if scorers:
        kept.sort(key=lambda r: -r.final_score)
    kept = _cap(kept, rules, ctx, applied)
    kept = _promote(kept, rules, n, ctx, filters, applied)
    kept = _pin(kept, rules, ctx, filters, applied)
    return Outcome(_cut(kept, n), applied)


def _cut(items: list[Ranked], n: int) -> list[Ranked]:
    """The first ``n`` items, pinned and promoted ones kept first: the organic items at the end make room."""
    protected = [r.fixed for r in items]
    room = n - sum(protected)
    out: list[Ranked] = []
    for item, keep in zip(items, protected, strict=True):
        if keep:
            out.append(item)
        elif room > 0:
            out.append(item)
            room -= 1
    return out[:n]


def _cap(items: list[Ranked], rules: Sequence[Rule], ctx: Context, applied: dict[str, int]) -> list[Ranked]:
    capping = [r for r in rules if r.spec.max_per_category is not None]
    if not capping:
        return items
    rule = min(capping, key=lambda r: (r.spec.max_per_category or 0, r.index))
    cap = rule.spec.max_per_category or 0
    counts: dict[str, int] = {}
    within: list[Ranked] = []
    over: list[Ranked] = []
    for item in items:
        cat = ctx.info.get(item.item_id, _NO_INFO).category
        if cat is None:
            within.append(item)
            continue
        counts[cat] = counts.get(cat, 0) + 1
        if counts[cat] <= cap:
            within.append(item)
        else:
            _touch(item, rule, applied)
            over.append(item)
    return within + over


def _allowed_extra(item_id: str, ctx: Context, filters: Sequence[Rule]) -> bool:
    """May an item that is not a candidate be added (a pin, a listed promotion)?"""
    if item_id in ctx.blocked:
        return False
    return _filtered_out(item_id, ctx.info.get(item_id, _NO_INFO), filters) is None


def _promote(
    items: list[Ranked], rules: Sequence[Rule], n: int, ctx: Context, filters: Sequence[Rule], applied: dict[str, int]
) -> list[Ranked]:
    promoting = [r for r in rules if r.promote is not None]
    if not promoting:
        return items
    chosen: dict[str, Ranked] = {}
    for rule in promoting:
        spec = rule.spec.promote
        assert spec is not None and rule.promote is not None
        slots = math.ceil(spec.share * n)
        match = rule.promote
        pool = [r for r in items if r.item_id not in chosen and match(r.item_id, ctx.info.get(r.item_id, _NO_INFO))]
        present = {r.item_id for r in items}
        extras = [
            Ranked(i, None, 0.0, spec.reason)
            for i in rule.promote_ids
            if i not in present and i not in chosen and _allowed_extra(i, ctx, filters)
        ]
        for item in (pool + extras)[:slots]:
            item.reason = f"{spec.reason} ({rule.name})"
            item.fixed = True
            _touch(item, rule, applied)
            chosen[item.item_id] = item
    rest = [r for r in items if r.item_id not in chosen]
    head = rest[: max(0, n - len(chosen))]
    scored = sorted([*head, *(c for c in chosen.values() if c.model_score is not None)], key=lambda r: -r.final_score)
    tail = [c for c in chosen.values() if c.model_score is None]
    return scored + tail + rest[len(head) :]


def _pin(
    items: list[Ranked], rules: Sequence[Rule], ctx: Context, filters: Sequence[Rule], applied: dict[str, int]
) -> list[Ranked]:
    pins: list[tuple[int, int, str, Rule]] = []
    taken: set[str] = set()
    for rule in rules:
        for order, pin in enumerate(rule.spec.pin or ()):
            if pin.item_id not in taken:
                pins.append((pin.position, rule.index * 1000 + order, pin.item_id, rule))
                taken.add(pin.item_id)
    if not pins:
        return items
    by_id = {r.item_id: r for r in items}
    out = [r for r in items if r.item_id not in taken]
    last = 0
    for position, _, item_id, rule in sorted(pins):
        existing = by_id.get(item_id)
        if existing is None and not _allowed_extra(item_id, ctx, filters):
            continue
        if existing is None and item_id in ctx.blocked:
            continue
        item = existing or Ranked(item_id, None, 0.0, "")
        item.reason = f"pinned ({rule.name})"
        item.fixed = True
        _touch(item, rule, applied)
        at = max(position, last + 1)
        out.insert(min(at - 1, len(out)), item)
        last = at
    return out


_DAY_MS = 86_400_000


def excluded_purchases(
    bought: Mapping[str, int],
    now_ms: int,
    default_days: float,
    rules: Sequence[Rule] = (),
    categories: Mapping[str, str] | None = None,
) -> set[str]:
    """Bought items still inside their re-buy window (pure). The window of an item is that of the first active
    ``rebuy`` rule naming its category, else of the first ``rebuy`` rule without a category, else ``default_days``
    (``ECRM_REBUY_WINDOW_DAYS``); 0 days means never again."""
    default: float | None = None
    per_category: dict[str, float] = {}
    for rule in rules:
        spec = rule.spec.rebuy
        if spec is None:
            continue
        if rule.rebuy_categories is None:
            default = spec.days if default is None else default
        else:
            for cat in rule.rebuy_categories:
                per_category.setdefault(cat, spec.days)
    window = default_days if default is None else default
    cats = categories or {}
    out: set[str] = set()
    for item, ts in bought.items():
        category = cats.get(item)
        days = window if category is None else per_category.get(category, window)
        if days <= 0 or now_ms - ts < days * _DAY_MS:
            out.add(item)
    return out
