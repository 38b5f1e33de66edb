"""The URL patterns file of ``ecrm ingest-log``: which requests are assets, pages, and which become which event.

The file is YAML (see ``config/log_patterns.yaml`` and ``docs/ingestion.md``)::

    version: 1
    assets:   {extensions: [png, css, ...], patterns: ['[?&]flav=(?:rss|atom)']}
    pages:    {extensions: [html, htm, ...]}
    bots:     {empty_user_agent: true, patterns: ['(?i)chef client']}
    rules:
      - name: presentation
        match: '/presentations/(?P<slug>[\\w.-]+)/?'
        event: product_view
        item_id: 'presentation:{slug}'
        category: presentations

Rules are tried in order and the first whose ``match`` regular expression matches the whole request path (or,
with ``target: url``, the path with its query string) wins. The event's fields are templates filled from the named
groups of the match. Every mistake in the file is reported as :class:`PatternError` naming the file, the rule
and the field.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, unquote_plus

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATTERNS_PATH = Path(__file__).resolve().parents[1] / "config" / "log_patterns.yaml"

RuleEvent = Literal["page_view", "product_view", "add_to_cart", "remove_from_cart", "purchase", "search", "ignore"]

TEMPLATE_FIELDS = ("item_id", "category", "quantity", "price", "order_id", "query", "title")

# For each event a rule can produce: (template fields it requires, template fields it may have).
_EVENT_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "page_view": (frozenset(), frozenset({"title"})),
    "product_view": (frozenset({"item_id"}), frozenset({"category", "price"})),
    "add_to_cart": (frozenset({"item_id"}), frozenset({"category", "quantity", "price"})),
    "remove_from_cart": (frozenset({"item_id"}), frozenset({"quantity"})),
    "purchase": (frozenset({"item_id", "order_id"}), frozenset({"category", "quantity", "price"})),
    "search": (frozenset({"query"}), frozenset()),
    "ignore": (frozenset(), frozenset()),
}


class PatternError(ValueError):
    """The patterns file cannot be used: missing, not YAML, or not of the expected shape."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetSpec(_Spec):
    extensions: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)


class PageSpec(_Spec):
    extensions: list[str] = Field(default_factory=lambda: ["html", "htm", "xhtml", "php"])


class BotSpec(_Spec):
    empty_user_agent: bool = True
    patterns: list[str] = Field(default_factory=list)


class RuleSpec(_Spec):
    name: str = Field(min_length=1)
    match: str = Field(min_length=1)
    target: Literal["path", "url"] = "path"
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1)
    event: RuleEvent
    item_id: str | None = None
    category: str | None = None
    quantity: str | None = None
    price: str | None = None
    order_id: str | None = None
    query: str | None = None
    title: str | None = None
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")


class PatternsSpec(_Spec):
    version: Literal[1] = 1
    assets: AssetSpec = Field(default_factory=AssetSpec)
    pages: PageSpec = Field(default_factory=PageSpec)
    bots: BotSpec = Field(default_factory=BotSpec)
    rules: list[RuleSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: a regular expression and the templates of the event it makes."""

    name: str
    regex: re.Pattern[str]
    target: Literal["path", "url"]
    methods: frozenset[str]
    event: str
    templates: dict[str, str]
    currency: str | None = None

    def match(self, method: str, path: str, url: str) -> dict[str, str] | None:
        """The decoded named groups if this rule applies to the request, else None."""
        if method not in self.methods:
            return None
        found = self.regex.fullmatch(url if self.target == "url" else path)
        if found is None:
            return None
        decode = unquote_plus if self.target == "url" else unquote
        return {k: decode(v) for k, v in found.groupdict().items() if v is not None}

    def render(self, groups: dict[str, str]) -> dict[str, str]:
        """The template fields filled from the groups; a field whose groups did not take part is left out."""
        out: dict[str, str] = {}
        for field, template in self.templates.items():
            names = _template_names(template)
            if names <= groups.keys():
                out[field] = template.format_map(groups)
        return out


@dataclass(frozen=True, slots=True)
class LogPatterns:
    """The compiled patterns file."""

    asset_extensions: frozenset[str]
    asset_patterns: tuple[re.Pattern[str], ...]
    page_extensions: frozenset[str]
    empty_user_agent_is_bot: bool
    bot_patterns: tuple[re.Pattern[str], ...]
    rules: tuple[Rule, ...]
    source: str = "<patterns>"

    def is_asset(self, path: str, url: str) -> bool:
        """A static asset (image, style sheet, script, font, feed...) by extension or pattern."""
        ext = extension(path)
        if ext is not None and ext in self.asset_extensions:
            return True
        return any(p.search(url) for p in self.asset_patterns)

    def is_page(self, path: str) -> bool:
        """An HTML page: a path without extension (``/about/``, ``/blog``) or with a page extension."""
        ext = extension(path)
        return ext is None or ext in self.page_extensions

    def is_listed_bot(self, user_agent: str) -> bool:
        return any(p.search(user_agent) for p in self.bot_patterns)

    def first_match(self, method: str, path: str, url: str) -> tuple[Rule, dict[str, str]] | None:
        """The first rule that applies to the request, with its decoded named groups."""
        for rule in self.rules:
            groups = rule.match(method, path, url)
            if groups is not None:
                return rule, groups
        return None


def extension(path: str) -> str | None:
    """The lower-case extension of the last path segment, or None (``/a/b.PNG`` -> ``png``, ``/a/`` -> None)."""
    last = path.rsplit("/", 1)[-1]
    if "." not in last.strip("."):
        return None
    return last.rsplit(".", 1)[-1].lower() or None


def load_patterns(path: Path | None = None) -> LogPatterns:
    """Read and compile a patterns file (the shipped default when ``path`` is None)."""
    path = path or DEFAULT_PATTERNS_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PatternError(f"{path}: cannot read the patterns file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PatternError(f"{path}: the patterns file is not UTF-8 text: {exc}") from exc
    return parse_patterns(text, source=str(path))


def parse_patterns(text: str, source: str = "<patterns>") -> LogPatterns:
    """Parse and compile the YAML text of a patterns file. Raises :class:`PatternError`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PatternError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PatternError(f"{source}: expected a mapping with 'rules' (and optionally assets, pages, bots)")
    try:
        spec = PatternsSpec.model_validate(raw)
    except ValidationError as exc:
        raise PatternError(f"{source}: " + "; ".join(_describe(err, raw) for err in exc.errors())) from exc
    return compile_patterns(spec, source)


def compile_patterns(spec: PatternsSpec, source: str = "<patterns>") -> LogPatterns:
    """Compile a validated spec: regular expressions and template checks. Raises :class:`PatternError`."""
    names = [r.name for r in spec.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PatternError(f"{source}: rule names must be unique; repeated: {', '.join(duplicates)}")
    return LogPatterns(
        asset_extensions=frozenset(e.lower().lstrip(".") for e in spec.assets.extensions),
        asset_patterns=tuple(
            _compile(p, f"{source}: assets.patterns[{i}]") for i, p in enumerate(spec.assets.patterns)
        ),
        page_extensions=frozenset(e.lower().lstrip(".") for e in spec.pages.extensions),
        empty_user_agent_is_bot=spec.bots.empty_user_agent,
        bot_patterns=tuple(_compile(p, f"{source}: bots.patterns[{i}]") for i, p in enumerate(spec.bots.patterns)),
        rules=tuple(_compile_rule(rule, f"{source}: rules[{i}] ({rule.name})") for i, rule in enumerate(spec.rules)),
        source=source,
    )


def _compile_rule(spec: RuleSpec, where: str) -> Rule:
    regex = _compile(spec.match, f"{where}: match")
    templates = {f: getattr(spec, f) for f in TEMPLATE_FIELDS if getattr(spec, f) is not None}
    required, optional = _EVENT_FIELDS[spec.event]
    missing = sorted(required - templates.keys())
    if missing:
        raise PatternError(f"{where}: a {spec.event} rule needs {', '.join(missing)}")
    extra = sorted(templates.keys() - required - optional)
    if extra:
        raise PatternError(f"{where}: {', '.join(extra)} does not apply to a {spec.event} rule")
    if spec.event == "purchase" and spec.currency is None:
        raise PatternError(f"{where}: a purchase rule needs currency (an ISO 4217 code such as EUR)")
    if spec.event != "purchase" and spec.currency is not None:
        raise PatternError(f"{where}: currency applies to purchase rules only")
    for field, template in templates.items():
        _check_template(template, set(regex.groupindex), f"{where}: {field}")
    return Rule(
        name=spec.name,
        regex=regex,
        target=spec.target,
        methods=frozenset(m.upper() for m in spec.methods),
        event=spec.event,
        templates=templates,
        currency=spec.currency,
    )


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PatternError(f"{where}: invalid regular expression {pattern!r}: {exc}") from exc


def _template_names(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(template: str, groups: set[str], where: str) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PatternError(f"{where}: bad template {template!r}: {exc}") from exc
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise PatternError(f"{where}: template {template!r} may only use plain {{group}} placeholders")
        if name not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise PatternError(
                f"{where}: template {template!r} uses {{{name}}}, which is not a named group of match "
                f"(named groups: {known})"
            )


def _describe(err: Any, raw: Any) -> str:
    loc = list(err["loc"])
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules")
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        if isinstance(rule, dict) and rule.get("name"):
            where += f" (rule {rule['name']!r})"
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "invalid_key":
        msg = "keys must be text (YAML reads unquoted on, off, yes, no, true, false as booleans: quote them)"
    return f"{where or '(file)'}: {msg}"
