"""The rules file: its format (pydantic), its validation with precise errors, and the compiled rules (pure).

A refused file names the rule, the field and the reason: ``rule 'winter-sale': pin.0.position: must be >= 1``.
Compiling turns each condition into a matcher built once at load, so the hot path does set look-ups only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

PLACEMENTS = ("personal", "session", "similar", "cart", "email")
Placement = Literal["personal", "session", "similar", "cart", "email"]
MAX_RULES = 500
MAX_LIST = 10_000  # item ids, categories ... in one condition
MAX_NAME = 100
Scalar = str | int | float


def _as_list(value: Any) -> Any:
    """One value or a list of them."""
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _share(value: Any) -> Any:
    """``0.2`` or ``"20%"``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a percentage") from exc
    return value


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Names = Annotated[list[Name], BeforeValidator(_as_list), Field(min_length=1, max_length=MAX_LIST)]
AttrValues = Annotated[list[Scalar], BeforeValidator(_as_list), Field(min_length=1, max_length=MAX_LIST)]
Factor = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PriceRange(_Model):
    min: float | None = Field(None, ge=0, allow_inf_nan=False)
    max: float | None = Field(None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> PriceRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Where(_Model):
    """Items matching every condition given (an empty condition matches nothing: refused)."""

    category: Names | None = None
    price: PriceRange | None = None
    item_ids: Names | None = None
    attributes: dict[Name, AttrValues] | None = None

    @model_validator(mode="after")
    def _something(self) -> Where:
        if self.category is None and self.price is None and self.item_ids is None and not self.attributes:
            raise ValueError("give at least one of category, price, item_ids, attributes")
        return self


class Scaled(_Model):
    where: Where
    factor: Factor


class PinSpec(_Model):
    item_id: Name
    position: int = Field(ge=1, le=1000)


class Promote(_Model):
    items: Names | None = None
    where: Where | None = None
    share: Annotated[float, BeforeValidator(_share), Field(gt=0, le=1)]
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "promoted"

    @model_validator(mode="after")
    def _a_set(self) -> Promote:
        if self.items is None and self.where is None:
            raise ValueError("give the items to promote: items (ids) or where (a condition)")
        return self


class Rotate(_Model):
    lists: int | None = Field(None, ge=1, le=100, description="Items served in this customer's last N lists")
    hours: float | None = Field(None, gt=0, le=24 * 90, allow_inf_nan=False, description="... or in the last N hours")
    factor: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5

    @model_validator(mode="after")
    def _a_window(self) -> Rotate:
        if self.lists is None and self.hours is None:
            raise ValueError("give lists, hours or both")
        return self


class Upsell(_Model):
    factor: Factor = 1.5


class Rebuy(_Model):
    days: float = Field(ge=0, le=3650, allow_inf_nan=False)
    category: Names | None = None


class RuleSpec(_Model):
    name: Name
    placements: list[Placement] | None = Field(None, min_length=1)
    segment: Names | None = None
    from_: AwareDatetime | None = Field(None, alias="from")
    until: AwareDatetime | None = None
    exclude: Where | None = None
    include_only: Where | None = None
    boost: Scaled | None = None
    bury: Scaled | None = None
    pin: list[PinSpec] | None = Field(None, min_length=1, max_length=100)
    promote: Promote | None = None
    max_per_category: int | None = Field(None, ge=1, le=1000)
    rotate: Rotate | None = None
    upsell: Upsell | None = None
    rebuy: Rebuy | None = None

    @model_validator(mode="after")
    def _valid(self) -> RuleSpec:
        if not any(getattr(self, action) is not None for action in ACTIONS):
            raise ValueError(f"a rule needs at least one action: {', '.join(ACTIONS)}")
        if self.from_ is not None and self.until is not None and self.from_ >= self.until:
            raise ValueError("from must be before until")
        if self.upsell is not None and self.placements is not None and "cart" not in self.placements:
            raise ValueError("upsell applies to the cart placement only: add cart to placements")
        return self


ACTIONS = (
    "exclude",
    "include_only",
    "boost",
    "bury",
    "pin",
    "promote",
    "max_per_category",
    "rotate",
    "upsell",
    "rebuy",
)


class RulesFileSpec(_Model):
    version: Literal[1]
    rules: list[RuleSpec] = Field(default_factory=list, max_length=MAX_RULES)

    @model_validator(mode="after")
    def _unique(self) -> RulesFileSpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        return self


class RulesError(ValueError):
    """A rules file refused: each problem names the rule, the field and the reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


# ----- compiled -----


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """What the rules may look at of an item (from the catalogue; unknown items have no category and no price)."""

    category: str | None = None
    price: float | None = None
    attributes: dict[str, Scalar] = field(default_factory=dict)


Matcher = Callable[[str, ItemInfo], bool]


def _norm(value: Scalar) -> str:
    """Attribute values compare as text, numbers without a trailing .0 (``3`` matches ``3.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _attribute(key: str, wanted: frozenset[str]) -> Matcher:
    def match(_item: str, info: ItemInfo) -> bool:
        value = info.attributes.get(key)
        return value is not None and _norm(value) in wanted

    return match


def compile_where(where: Where) -> Matcher:
    """A matcher for the conditions of ``where`` (all must hold)."""
    checks: list[Matcher] = []
    if where.category is not None:
        cats = frozenset(where.category)
        checks.append(lambda _i, info: info.category in cats)
    if where.item_ids is not None:
        ids = frozenset(where.item_ids)
        checks.append(lambda i, _info: i in ids)
    if where.price is not None:
        low = where.price.min if where.price.min is not None else -math.inf
        high = where.price.max if where.price.max is not None else math.inf
        checks.append(lambda _i, info: info.price is not None and low <= info.price <= high)
    for key, values in (where.attributes or {}).items():
        checks.append(_attribute(key, frozenset(_norm(v) for v in values)))
    if len(checks) == 1:
        return checks[0]
    return lambda item, info: all(check(item, info) for check in checks)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, compiled: its conditions as plain values, its matchers built."""

    name: str
    index: int
    placements: frozenset[str] | None
    segments: frozenset[str] | None
    start_ms: int | None
    end_ms: int | None
    spec: RuleSpec
    exclude: Matcher | None = None
    include_only: Matcher | None = None
    boost: tuple[Matcher, float] | None = None
    bury: tuple[Matcher, float] | None = None
    promote: Matcher | None = None
    promote_ids: tuple[str, ...] = ()
    rebuy_categories: frozenset[str] | None = None

    def applies(self, placement: str, segment: str | None, now_ms: int) -> bool:
        if self.placements is not None and placement not in self.placements:
            return False
        if self.segments is not None and (segment is None or segment.casefold() not in self.segments):
            return False
        if self.start_ms is not None and now_ms < self.start_ms:
            return False
        return self.end_ms is None or now_ms < self.end_ms

    @property
    def needs_catalogue(self) -> bool:
        s = self.spec
        return any(
            x is not None for x in (s.exclude, s.include_only, s.boost, s.bury, s.promote, s.upsell, s.rebuy, s.pin)
        ) or (s.max_per_category is not None)


def _ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def compile_rule(spec: RuleSpec, index: int) -> Rule:
    promote_ids: tuple[str, ...] = ()
    promote: Matcher | None = None
    if spec.promote is not None:
        promote_ids = tuple(dict.fromkeys(spec.promote.items or ()))
        ids = frozenset(promote_ids)
        where = compile_where(spec.promote.where) if spec.promote.where is not None else None
        if where is None:
            promote = lambda i, _info: i in ids  # noqa: E731
        elif not ids:
            promote = where
        else:
            promote = lambda i, info: i in ids or where(i, info)  # noqa: E731
    return Rule(
        name=spec.name,
        index=index,
        placements=frozenset(spec.placements) if spec.placements is not None else None,
        segments=frozenset(s.casefold() for s in spec.segment) if spec.segment is not None else None,
        start_ms=_ms(spec.from_),
        end_ms=_ms(spec.until),
        spec=spec,
        exclude=compile_where(spec.exclude) if spec.exclude is not None else None,
        include_only=compile_where(spec.include_only) if spec.include_only is not None else None,
        boost=(compile_where(spec.boost.where), spec.boost.factor) if spec.boost is not None else None,
        bury=(compile_where(spec.bury.where), spec.bury.factor) if spec.bury is not None else None,
        promote=promote,
        promote_ids=promote_ids,
        rebuy_categories=frozenset(spec.rebuy.category) if spec.rebuy and spec.rebuy.category else None,
    )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The compiled rules of one file, in file order."""

    rules: tuple[Rule, ...] = ()
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def active(self, placement: str, segment: str | None, now_ms: int) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.applies(placement, segment, now_ms))

    def needs_segment(self, placement: str) -> bool:
        return any(r.segments is not None and (r.placements is None or placement in r.placements) for r in self.rules)

    def may_rotate(self) -> bool:
        return any(r.spec.rotate is not None for r in self.rules)


EMPTY = RuleSet()


def _problem(err: Any, raw: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    if len(loc) >= 2 and loc[0] == "rules" and loc[1].isdigit():
        index = int(loc[1])
        rules = raw.get("rules") if isinstance(raw, dict) else None
        name = None
        if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
            name = rules[index].get("name")
        who = f"rule {name!r}" if isinstance(name, str) and name else f"rule #{index + 1}"
        where = ".".join(loc[2:]).replace("from_", "from") or "(rule)"
        return f"{who}: {where}: {msg}"
    return f"{'.'.join(loc) or '(file)'}: {msg}"


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """Validate and compile the text of a rules file (YAML or JSON). Raises :class:`RulesError`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(source, [f"(file): not valid YAML: {exc}"]) from exc
    if raw is None:
        raw = {"version": 1, "rules": []}
    if not isinstance(raw, dict):
        raise RulesError(source, [f"(file): must be a mapping with version and rules, got {type(raw).__name__}"])
    try:
        spec = RulesFileSpec.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(source, [_problem(e, raw) for e in exc.errors(include_url=False)][:20]) from exc
    return RuleSet(tuple(compile_rule(r, i) for i, r in enumerate(spec.rules)), source)
