"""``ecrm rules check FILE`` and ``ecrm rules preview``: try a business rules file before it is in force."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from api.degraded import PopularCopy
from api.recommend import RecList, RecommendationService, Recommended
from api.serving import ModelHolder
from core.errors import ServiceUnavailable
from core.keyspace import anonymous_pid, customer_pid
from core.redis import connect
from core.settings import get_settings
from ecrm.commands.errors import error_line, refuse_file
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from merchandising.rules import ACTIONS, PLACEMENTS, RulesError
from merchandising.source import DEFAULT_RULES_PATH, RulesSource, load_rules

app = typer.Typer(help="Business rules (docs/rules.md): check a file, preview its effect.", no_args_is_help=True)


@app.command("check")
def check(path: Annotated[Path, typer.Argument(help="The rules file", show_default=False)]) -> None:
    """Validate a rules file without loading it: exit 0 when valid, 1 with each problem (rule, field, reason)."""
    try:
        rules = load_rules(path)
    except RulesError as exc:
        raise refuse_file(path, exc.problems) from exc
    typer.echo(f"{path}: valid, {len(rules.rules)} rules")
    for rule in rules.rules:
        actions = ", ".join(a for a in ACTIONS if getattr(rule.spec, a) is not None)
        where = ",".join(sorted(rule.placements)) if rule.placements else "every placement"
        typer.echo(f"  {rule.name}: {actions} ({where})")


@app.command("preview")
def preview(
    customer: Annotated[str, typer.Option("--customer", help="The customer (or visitor, for session)")],
    placement: Annotated[str, typer.Option(help=f"One of {', '.join(PLACEMENTS)}")] = "personal",
    file: Annotated[Path | None, typer.Option("--file", help="Rules file (default: ECRM_RULES_FILE)")] = None,
    item: Annotated[list[str] | None, typer.Option("--item", help="Item of a similar or cart placement")] = None,
    n: Annotated[int, typer.Option(min=1, max=100)] = 10,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """The list without rules and with them, side by side, with what each rule did (of a shop: its profiles,
    catalogue and model). Nothing is remembered."""
    if placement not in PLACEMENTS:
        raise typer.BadParameter(f"placement must be one of {', '.join(PLACEMENTS)}")
    settings = get_settings()
    path = file or (Path(settings.rules_file) if settings.rules_file else DEFAULT_RULES_PATH)
    try:
        load_rules(path)
    except RulesError as exc:
        typer.echo(f"{exc}", err=True)
        raise typer.Exit(1) from exc
    if placement in ("similar", "cart") and not item:
        raise typer.BadParameter(f"the {placement} placement needs --item")
    try:
        before, after = asyncio.run(_lists(path, customer, placement, item or [], n, tenant))
    except ServiceUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(render(before, after))


async def _lists(
    path: Path, customer: str, placement: str, items: list[str], n: int, tenant: str = DEFAULT_TENANT
) -> tuple[RecList, RecList]:
    settings = get_settings()
    client = connect(settings)
    holder = ModelHolder(settings, tenant)
    try:
        await holder.refresh()
        from profiles.store import ProfileStore

        store = ProfileStore(client, settings, tenant)
        popular = PopularCopy(store, settings)
        out: list[RecList] = []
        for source in (RulesSource(None), RulesSource(path, 0.0)):
            recs = RecommendationService(store, holder, settings, popular, source)
            if placement in ("personal", "email"):
                pid = customer_pid(customer)
                out.append(await recs.for_profile(pid, n, placement=placement, explain=True, remember=False))
            elif placement == "session":
                pid = anonymous_pid(customer)
                out.append(await recs.for_profile(pid, n, step="session", explain=True, remember=False))
            elif placement == "similar":
                out.append(await recs.similar(items[0], n, explain=True, remember=False))
            else:
                out.append(await recs.cart(items, customer, n, explain=True, remember=False))
        return out[0], out[1]
    finally:
        await holder.client.aclose()
        await client.aclose()


def render(before: RecList, after: RecList) -> str:
    """Two columns, without and with the rules, then what each rule did (pure)."""
    width = 44
    lines = [f"{'#':>3}  {'without rules':<{width}}  with rules", f"{'':>3}  {'-' * width}  {'-' * width}"]
    for i in range(max(len(before.items), len(after.items))):
        left = before.items[i] if i < len(before.items) else None
        right = after.items[i] if i < len(after.items) else None
        a = f"{left.item_id} ({left.reason})" if left else ""
        b = ""
        if right is not None:
            touched = _rules_of(right)
            b = f"{right.item_id} ({right.reason})" + (f" <- {', '.join(touched)}" if touched else "")
        lines.append(f"{i + 1:>3}  {a[:width]:<{width}}  {b}")
    removed = [r.item_id for r in before.items if r.item_id not in {x.item_id for x in after.items}]
    added = [r.item_id for r in after.items if r.item_id not in {x.item_id for x in before.items}]
    lines.append("")
    lines.append(f"removed: {', '.join(removed) or '-'}")
    lines.append(f"added:   {', '.join(added) or '-'}")
    by_rule: dict[str, list[str]] = {}
    for r in after.items:
        for name in _rules_of(r):
            by_rule.setdefault(name, []).append(r.item_id)
    for name, count in after.rules_applied.items():
        shown = by_rule.get(name, [])
        lines.append(f"rule {name}: touched {count} candidate(s); in the list: {', '.join(shown) or '-'}")
    if not after.rules_applied:
        lines.append("no rule changed this list")
    return "\n".join(lines)


def _rules_of(item: Recommended) -> list[str]:
    rules = (item.extra or {}).get("rules")
    return [str(r) for r in rules] if isinstance(rules, list) else []
