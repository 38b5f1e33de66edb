"""Campaigns and experiments (``config/campaigns.yaml``): the file's format, its validation with precise errors,
and the deterministic, sticky assignment of a profile to a variant (pure; see docs/campaigns.md).

A campaign has a name, a goal (``click``, ``purchase`` or ``revenue``), a time window (``from``, ``until``), an
audience (``all`` or a segment), the placements it covers and variants with traffic weights. A variant changes
what is served: a ``strategy`` (the engine's chain, or popularity / trending alone), a ``rules`` set (rules of
``config/rules.yaml`` that apply to this variant's lists only), or nothing at all (``holdout: true``: an empty
list, the shop fills the slot with its default content).

**Assignment** (:func:`bucket`, :meth:`Campaign.assign`): ``sha256(campaign name, unit)`` mapped to [0, 1) and
cut by the cumulative weights. It depends on that campaign's name and weights only, so changing one campaign never
reshuffles another; the engine records the variant at the first exposure, and a visitor who logs in hands the
recorded variant to the customer (docs/campaigns.md, "Stickiness").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from merchandising.rules import PLACEMENTS, Placement

MAX_CAMPAIGNS = 100
MAX_VARIANTS = 10
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Goal = Literal["click", "purchase", "revenue"]
Strategy = Literal["engine", "popularity", "trending"]
STRATEGIES: tuple[str, ...] = ("engine", "popularity", "trending")
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="letters, digits, _ . - (at most 64)")]
_DAY_MS = 86_400_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SegmentAudience(_Model):
    segment: Annotated[str, Field(min_length=1, max_length=100)]


class VariantSpec(_Model):
    name: Name
    weight: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    strategy: Strategy | None = None
    rules: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(None, min_length=1, max_length=50)
    holdout: bool = False

    @model_validator(mode="after")
    def _holdout_alone(self) -> VariantSpec:
        if self.holdout and (self.strategy is not None or self.rules is not None):
            raise ValueError("a holdout variant serves nothing: it takes no strategy and no rules")
        return self


class CampaignSpec(_Model):
    name: Name
    goal: Goal
    from_: AwareDatetime = Field(alias="from")
    until: AwareDatetime
    audience: Literal["all"] | SegmentAudience = "all"
    placements: list[Placement] = Field(min_length=1, max_length=len(PLACEMENTS))
    variants: list[VariantSpec] = Field(min_length=2, max_length=MAX_VARIANTS)
    attribution_days: float = Field(
        7.0, gt=0, le=90, allow_inf_nan=False, description="A purchase within this many days of a click is attributed"
    )
    frequency_cap_days: float = Field(
        7.0, ge=0, le=365, allow_inf_nan=False, description="An export skips customers exported within this many days"
    )
    min_customers: int = Field(
        100, ge=1, le=10_000_000, description="Below this many assigned customers per variant: not enough data yet"
    )

    @model_validator(mode="after")
    def _valid(self) -> CampaignSpec:
        if self.from_ >= self.until:
            raise ValueError("from must be before until")
        names = [v.name for v in self.variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two variants are named {twice[0]!r}")
        if sum(v.holdout for v in self.variants) > 1:
            raise ValueError("at most one variant may be the holdout")
        if len(set(self.placements)) != len(self.placements):
            raise ValueError("a placement is listed twice")
        return self


class CampaignsFileSpec(_Model):
    version: Literal[1]
    campaigns: list[CampaignSpec] = Field(default_factory=list, max_length=MAX_CAMPAIGNS)

    @model_validator(mode="after")
    def _unique(self) -> CampaignsFileSpec:
        seen: set[str] = set()
        for c in self.campaigns:
            if c.name in seen:
                raise ValueError(f"two campaigns are named {c.name!r}")
            seen.add(c.name)
        return self


class CampaignsError(ValueError):
    """A campaigns file refused: each problem names the campaign, the field and the reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


# ----- compiled -----


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    strategy: str  # engine, popularity, trending ("" for the holdout)
    rules: frozenset[str]
    holdout: bool


def bucket(campaign: str, unit: str) -> float:
    """A uniform number in [0, 1) for a unit (a profile id) in a campaign: the first 8 bytes of
    ``sha256(campaign NUL unit)``. Deterministic across processes and versions (no salted ``hash()``)."""
    digest = hashlib.sha256(f"{campaign}\x00{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def campaign_tag(name: str) -> str:
    """8 hex digits naming a campaign inside a recommendation id (see :func:`tagged_id`)."""
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def tagged_id(raw_id: str, campaign: str) -> str:
    """A recommendation id that names the campaign whose list it is: ``<id>-<campaign tag>``. A click that sends it
    back is counted for the campaign (and for the clicking profile's recorded variant, never the id's say-so)."""
    return f"{raw_id}-{campaign_tag(campaign)}"


def tag_of(recommendation_id: str) -> str | None:
    """The campaign tag of a recommendation id, or None for a list outside any campaign."""
    _, sep, tag = recommendation_id.rpartition("-")
    return tag if sep and len(tag) == 8 else None


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    goal: str
    start_ms: int
    end_ms: int
    segment: str | None  # None: everyone
    placements: frozenset[str]
    variants: tuple[Variant, ...]
    attribution_ms: int
    frequency_cap_ms: int
    min_customers: int
    index: int

    @property
    def tag(self) -> str:
        return campaign_tag(self.name)

    @property
    def holdout(self) -> Variant | None:
        return next((v for v in self.variants if v.holdout), None)

    @property
    def control(self) -> Variant:
        """What every variant is compared with: the holdout, else the first variant."""
        return self.holdout or self.variants[0]

    @property
    def weights(self) -> dict[str, float]:
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def running(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms

    def applies(self, placement: str, now_ms: int) -> bool:
        return placement in self.placements and self.running(now_ms)

    def assign(self, unit: str) -> Variant:
        """The variant of a unit (a profile id) by its hash bucket and the weights."""
        x = bucket(self.name, unit) * sum(v.weight for v in self.variants)
        for v in self.variants:
            if x < v.weight:
                return v
            x -= v.weight
        return self.variants[-1]


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _variant(v: VariantSpec) -> Variant:
    return Variant(v.name, v.weight, "" if v.holdout else (v.strategy or "engine"), frozenset(v.rules or ()), v.holdout)


def compile_campaign(spec: CampaignSpec, index: int) -> Campaign:
    return Campaign(
        name=spec.name,
        goal=spec.goal,
        start_ms=_ms(spec.from_),
        end_ms=_ms(spec.until),
        segment=None if isinstance(spec.audience, str) else spec.audience.segment,
        placements=frozenset(spec.placements),
        variants=tuple(_variant(v) for v in spec.variants),
        attribution_ms=int(spec.attribution_days * _DAY_MS),
        frequency_cap_ms=int(spec.frequency_cap_days * _DAY_MS),
        min_customers=spec.min_customers,
        index=index,
    )


@dataclass(frozen=True, slots=True)
class CampaignSet:
    """The compiled campaigns of one file, in file order."""

    campaigns: tuple[Campaign, ...] = ()
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.campaigns]

    def get(self, name: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.name == name), None)

    def for_placement(self, placement: str, now_ms: int) -> tuple[Campaign, ...]:
        """The running campaigns covering a placement, first in the file first (the first whose audience holds a
        profile serves it)."""
        return tuple(c for c in self.campaigns if c.applies(placement, now_ms))

    def by_tag(self) -> dict[str, Campaign]:
        return {c.tag: c for c in self.campaigns}

    def rule_names(self, now_ms: int) -> set[str]:
        """Every rule a variant of a running campaign names (such a rule applies to that variant's lists only)."""
        return {r for c in self.campaigns if c.running(now_ms) for v in c.variants for r in v.rules}


NO_CAMPAIGNS = CampaignSet()


def _problem(err: Any, raw: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    if len(loc) >= 2 and loc[0] == "campaigns" and loc[1].isdigit():
        index = int(loc[1])
        items = raw.get("campaigns") if isinstance(raw, dict) else None
        name = None
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            name = items[index].get("name")
        who = f"campaign {name!r}" if isinstance(name, str) and name else f"campaign #{index + 1}"
        rest = [p for p in loc[2:] if p not in ("literal['all']", "SegmentAudience")]
        where = ".".join(rest).replace("from_", "from") or "(campaign)"
        return f"{who}: {where}: {msg}"
    return f"{'.'.join(loc) or '(file)'}: {msg}"


def parse_campaigns(text: str, source: str = "campaigns") -> CampaignSet:
    """Validate and compile the text of a campaigns file (YAML or JSON). Raises :class:`CampaignsError`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CampaignsError(source, [f"(file): not valid YAML: {exc}"]) from exc
    if raw is None:
        raw = {"version": 1, "campaigns": []}
    if not isinstance(raw, dict):
        raise CampaignsError(
            source, [f"(file): must be a mapping with version and campaigns, got {type(raw).__name__}"]
        )
    try:
        spec = CampaignsFileSpec.model_validate(raw)
    except ValidationError as exc:
        raise CampaignsError(
            source, list(dict.fromkeys(_problem(e, raw) for e in exc.errors(include_url=False)))[:20]
        ) from exc
    return CampaignSet(tuple(compile_campaign(c, i) for i, c in enumerate(spec.campaigns)), source)


def unknown_rules(campaigns: CampaignSet, rule_names: Sequence[str]) -> list[str]:
    """Warnings for variants naming rules the rules file does not have (they then change nothing)."""
    known = set(rule_names)
    out = []
    for c in campaigns.campaigns:
        for v in c.variants:
            for r in sorted(v.rules - known):
                out.append(f"campaign {c.name!r}: variant {v.name!r}: rule {r!r} is not in the rules file")
    return out
