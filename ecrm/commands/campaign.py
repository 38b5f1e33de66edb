"""``ecrm campaign``: check a campaigns file, list the campaigns, read a campaign's effect report, export an
e-mail list (docs/campaigns.md). Reads Redis directly: no API needs to run."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from api.campaigns import ExportResult, standalone
from api.routes.campaigns import export_csv
from core.errors import BadRequest, NotFound, ServiceUnavailable
from core.settings import get_settings
from ecrm.commands.errors import refuse_file
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from merchandising.campaign_source import load_campaigns
from merchandising.campaigns import CampaignsError

app = typer.Typer(help="Campaigns and experiments (docs/campaigns.md).", no_args_is_help=True)


@app.command("check")
def check(path: Annotated[Path, typer.Argument(help="The campaigns file", show_default=False)]) -> None:
    """Validate a campaigns file: exit 0 when valid, 1 with each problem (campaign, field, reason)."""
    try:
        campaigns = load_campaigns(path)
    except CampaignsError as exc:
        raise refuse_file(path, exc.problems) from exc
    typer.echo(f"{path}: valid, {len(campaigns.campaigns)} campaigns")
    for c in campaigns.campaigns:
        shares = ", ".join(f"{v.name} {w:.0%}" for v, w in zip(c.variants, c.weights.values(), strict=True))
        typer.echo(f"  {c.name}: goal {c.goal}, {', '.join(sorted(c.placements))}; {shares}")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (NotFound, BadRequest) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ServiceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _report(name: str, tenant: str) -> dict[str, Any]:
    async with standalone(get_settings(), tenant) as service:
        return await service.report(name)


@app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="The campaign", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="The report as JSON (as GET /v1/campaigns/NAME/report)")
    ] = False,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """The effect report of a campaign in a shop: per variant the counts and rates, each variant against the
    holdout (or the first variant) with 95% intervals and p-values, the sample-ratio-mismatch check and a
    verdict."""
    result = _run(_report(name, tenant))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(render(result))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _interval(m: dict[str, Any], fmt: Any) -> str:
    ci = m.get("ci")
    if m.get("difference") is None or not ci:
        return "-"
    rel = m.get("relative_lift")
    rci = m.get("relative_ci") or [None, None]
    lift = "" if rel is None else f"; lift {_pct(rel)} [{_pct(rci[0])}, {_pct(rci[1])}]"
    return f"{fmt(m['difference'])} [{fmt(ci[0])}, {fmt(ci[1])}], p={_num(m['p_value'], 4)}{lift}"


def render(r: dict[str, Any]) -> str:
    """The report as text (pure)."""
    c = r["campaign"]
    lines = [f"campaign {c['name']} (goal: {r['goal']}, {c['from']} .. {c['until']}, "
             f"{'running' if c['running'] else 'not running'})", ""]  # fmt: skip
    head = f"{'variant':<16}{'assigned':>9}{'exposed':>9}{'impr.':>8}{'clicks':>8}{'CTR':>8}{'conv.':>7}" \
           f"{'conv.rate':>10}{'revenue':>11}{'rev/cust':>9}"  # fmt: skip
    lines.append(head)
    for v in r["variants"]:
        label = v["variant"] + (" (holdout)" if v["holdout"] and v["variant"] != "holdout" else "")
        lines.append(
            f"{label:<16}{v['assigned']:>9}{v['exposed']:>9}"
            f"{v['impressions']:>8}{v['clicks']:>8}{_pct(v['ctr']):>8}{v['converting_customers']:>7}"
            f"{_pct(v['conversion_rate']):>10}{v['revenue']:>11.2f}{_num(v['revenue_per_customer']):>9}"
        )
    lines.append("")
    for cmp in r["comparisons"]:
        lines.append(f"{cmp['variant']} vs {cmp['against']}:")
        lines.append(f"  conversion rate       {_interval(cmp['conversion_rate'], _pct)}")
        lines.append(f"  click rate            {_interval(cmp['click_rate'], _pct)}")
        lines.append(f"  revenue per customer  {_interval(cmp['revenue_per_customer'], _num)}")
    srm = r["sample_ratio_mismatch"]
    flag = "MISMATCH" if srm["flagged"] else "ok"
    lines.append(f"split vs weights: {flag} (chi-square p={_num(srm['p_value'], 4)})")
    lines.append(f"verdict: {r['verdict']}")
    for what, rule in r.get("counting", {}).items():
        lines.append(f"counting {what}: {rule}")
    return "\n".join(lines)


async def _export(name: str, segment: str, n: int, limit: int, tenant: str) -> ExportResult:
    async with standalone(get_settings(), tenant) as service:
        return await service.export(name, segment, n, limit)


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="The campaign (its placements must include email)", show_default=False)],
    segment: Annotated[str, typer.Option("--segment", help="A segment of the last analytics refresh")],
    csv_file: Annotated[Path, typer.Option("--csv", help="The CSV file to write", dir_okay=False)],
    n: Annotated[int, typer.Option(min=1, max=100, help="Recommendations per customer")] = 6,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Most customers")] = 100_000,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Per customer of a segment: the top-n recommendations with a recommendation_id of its own (clicks from the
    e-mail are attributed). Customers exported to the campaign within its frequency cap are skipped."""
    result = _run(_export(name, segment, n, limit, tenant))
    csv_file.write_text(export_csv(result), encoding="utf-8")
    typer.echo(
        f"{csv_file}: {len(result.rows)} customers; skipped {result.skipped_capped} within the frequency cap, "
        f"{result.skipped_holdout} in the holdout" + (" (limit reached)" if result.truncated else "")
    )


@app.command("simulate")
def simulate(
    customers: Annotated[int, typer.Option(min=10, max=100_000, help="Simulated customers served")] = 2000,
    better: Annotated[
        str | None, typer.Option(help="The variant that truly converts better (default: the first)")
    ] = None,
    rate: Annotated[float, typer.Option(min=0, max=1, help="Its true conversion rate")] = 0.18,
    base_rate: Annotated[float, typer.Option(min=0, max=1, help="The other variants' true rate")] = 0.10,
    seed: Annotated[int, typer.Option(help="Random seed (new seed, new customers)")] = 11,
    url: Annotated[str | None, typer.Option(help="The API (default: 127.0.0.1 on ECRM_API_PORT)")] = None,
) -> None:
    """Play the running campaign of the personal placement against a running engine: simulated customers get
    their recommendations from the API, then click and buy through Kafka, one variant truly converting better.
    Then read `ecrm campaign report NAME` (once the worker has applied the events)."""
    from runtime.campaign_play import demo_rates, play
    from runtime.demo import demo_headers
    from runtime.simulate import CampaignPlay

    settings = get_settings()
    try:
        name, rates = demo_rates(settings, better, rate, base_rate)
    except (ValueError, CampaignsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    base = url or f"http://127.0.0.1:{settings.api_port}"
    try:
        behaviour = CampaignPlay(rates, seed=seed, run_id=uuid.uuid4().hex[:12])  # new event ids on every run
        served, count = play(settings, base, demo_headers(settings.api_keys), behaviour, customers, typer.echo)
    except (httpx.HTTPError, ServiceUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"campaign {name}: {len(served)} customers served, {count} events produced; true rates {rates}")
    typer.echo(f"  ecrm campaign report {name}")
