"""Segment rules: named RFM conditions, tried top to bottom, plus one segment for those who never bought.

The rules come from a YAML file a marketer edits (``config/segments.yaml``, format in ``docs/analytics.md``).
:func:`parse_rules` validates it and reports every problem with the rule, the field and the reason; the rules
must give every one of the 125 score combinations a segment, so no customer is ever left out.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from analytics.rfm import RfmScore
from core.errors import ConfigError

SCORE_MIN, SCORE_MAX = 1, 5


class RulesError(ConfigError):
    """A rules file that cannot be used; ``problems`` lists each one as ``where: why``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid segment rules in {source}: " + "; ".join(problems))


def _as_range(value: Any) -> Any:
    """``3`` means ``[3, 3]``; a two-element list is ``[min, max]``."""
    if isinstance(value, bool):
        raise ValueError("must be a score or a [min, max] pair, not true/false")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"must be a score or a [min, max] pair, got {len(value)} values")
        return tuple(value)
    raise ValueError(f"must be a score or a [min, max] pair, got {value!r}")


class ScoreRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    lo: int
    hi: int

    def holds(self, value: int) -> bool:
        return self.lo <= value <= self.hi


def _range_of(bounds: tuple[int, int]) -> tuple[int, int]:
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"min {lo} is above max {hi}")
    return lo, hi


def _checked(lo_bound: int, hi_bound: int) -> Any:
    def check(value: Any) -> Any:
        lo, hi = _range_of(_as_range(value))
        for v in (lo, hi):
            if not lo_bound <= v <= hi_bound:
                raise ValueError(f"{v} is outside {lo_bound}-{hi_bound}")
        return ScoreRange(lo=lo, hi=hi)

    return BeforeValidator(check)


Score = Annotated[ScoreRange, _checked(SCORE_MIN, SCORE_MAX)]
Total = Annotated[ScoreRange, _checked(3 * SCORE_MIN, 3 * SCORE_MAX)]


class Conditions(BaseModel):
    """Every condition given must hold; none given matches everyone (a catch-all rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: Score | None = None
    f: Score | None = None
    m: Score | None = None
    fm: Score | None = Field(None, description="Mean of F and M, rounded half up")
    total: Total | None = Field(None, description="R + F + M, 3-15")

    def holds(self, s: RfmScore) -> bool:
        checks = ((self.r, s.r), (self.f, s.f), (self.m, s.m), (self.fm, s.fm), (self.total, s.total))
        return all(rng is None or rng.holds(value) for rng, value in checks)


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 '&/.-]*$")]


class SegmentRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Name
    description: str = ""
    when: Conditions = Field(default_factory=Conditions)


class NonBuyers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Name = "Prospects"
    description: str = "Visitors and registered customers who have not bought yet."


class SegmentRules(BaseModel):
    """The whole rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(1, ge=1, le=1)
    segments: list[SegmentRule] = Field(min_length=1)
    non_buyers: NonBuyers = Field(default_factory=NonBuyers)

    @model_validator(mode="after")
    def _consistent(self) -> SegmentRules:
        seen: dict[str, str] = {}
        for name in [rule.name for rule in self.segments] + [self.non_buyers.name]:
            key = slug(name)
            if key in seen:
                raise ValueError(f"segment name {name!r} is used twice (same as {seen[key]!r})")
            seen[key] = name
        missing = uncovered(self.segments)
        if missing:
            shown = ", ".join(f"r={s.r} f={s.f} m={s.m}" for s in missing[:3])
            raise ValueError(
                f"{len(missing)} of 125 score combinations match no rule (e.g. {shown}); "
                "add a catch-all rule (no 'when') at the end"
            )
        return self

    @property
    def names(self) -> list[str]:
        """All segment names, the non-buyers' last."""
        return [rule.name for rule in self.segments] + [self.non_buyers.name]

    def describe(self, name: str) -> str:
        if name == self.non_buyers.name:
            return self.non_buyers.description
        return next((rule.description for rule in self.segments if rule.name == name), "")

    def resolve(self, name_or_slug: str) -> str | None:
        """The segment called ``name_or_slug`` (any case, or its slug), if any."""
        wanted = slug(name_or_slug)
        return next((name for name in self.names if slug(name) == wanted), None)


def slug(name: str) -> str:
    """The URL form of a segment name: ``"Cannot lose them"`` -> ``"cannot-lose-them"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def classify(score: RfmScore, rules: SegmentRules) -> str:
    """The first rule that holds for ``score`` (validated rules always have one)."""
    for rule in rules.segments:
        if rule.when.holds(score):
            return rule.name
    return rules.segments[-1].name


def uncovered(segments: list[SegmentRule]) -> list[RfmScore]:
    """The score combinations no rule matches."""
    grid = range(SCORE_MIN, SCORE_MAX + 1)
    return [
        s
        for s in (RfmScore(r, f, m) for r, f, m in itertools.product(grid, grid, grid))
        if not any(rule.when.holds(s) for rule in segments)
    ]


def parse_rules(text: str, source: str = "<rules>") -> SegmentRules:
    """Parse and validate a rules file. Raises :class:`RulesError` naming each rule, field and reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise RulesError(source, [f"the file must be a mapping with a 'segments' list, got {type(data).__name__}"])
    try:
        return SegmentRules.model_validate(data)
    except ValidationError as exc:
        raise RulesError(source, [_problem(err, data) for err in exc.errors(include_url=False)]) from exc


def _problem(err: Any, data: dict[str, Any]) -> str:
    loc = list(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field" + (" (allowed: r, f, m, fm, total)" if "when" in loc else "")
    where = _where(loc, data)
    return f"{where}: {msg}" if where else msg


def _where(loc: list[Any], data: dict[str, Any]) -> str:
    """``segments[2] ("At risk").when.r`` from a pydantic location."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] == "segments":
            parts[-1] += f"[{part}]" + _rule_name(data, part)
        else:
            parts.append(str(part))
    return ".".join(parts)


def _rule_name(data: dict[str, Any], index: int) -> str:
    rules = data.get("segments")
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        name = rules[index].get("name")
        if isinstance(name, str) and name:
            return f" ({name!r})"
    return ""
