"""``ecrm bench ...``: benchmark scripts that print figures (targets are checked by reading them, not by tests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

import typer

from core.settings import Settings, get_settings


def ingest(
    events: Annotated[int, typer.Option(help="Events pushed through the worker")] = 100_000,
    load_rate: Annotated[float, typer.Option(help="Steady load for the lag phase (0: half the worker rate)")] = 0.0,
    seconds: Annotated[float, typer.Option(help="Length of the lag phase")] = 20.0,
    with_timers: Annotated[
        bool, typer.Option("--with-timers", help="Keep the worker's retraining and analytics refresh on")
    ] = False,
) -> None:
    """Worker throughput and event-to-profile lag, with a plain aiokafka consumer's rate for the ratio.

    Uses the embedded broker and Redis unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL name real ones."""
    from benchmarks.ingest import run_ingest_bench

    def run(settings: Settings) -> None:
        figures = run_ingest_bench(settings, events, load_rate or None, seconds, typer.echo, with_timers)
        typer.echo("")
        for line in figures.lines():
            typer.echo(line)

    _with_servers(run)


NO_CAMPAIGNS_FILE = "/nonexistent/ecrm-bench-no-campaigns.yaml"


def _with_servers(run: Callable[[Settings], None]) -> None:
    """Run with the embedded broker and Redis unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL name real ones, and
    without campaigns unless ECRM_CAMPAIGNS_FILE names a file (``bench campaigns`` brings its own)."""
    from runtime.embedded import EmbeddedServer, start_missing

    servers: list[EmbeddedServer] = []
    settings = get_settings()
    if "ECRM_CAMPAIGNS_FILE" not in os.environ:  # the shipped demo campaign stays out of the figures
        settings = settings.model_copy(update={"campaigns_file": NO_CAMPAIGNS_FILE})
    try:
        run(start_missing(settings, os.environ, servers, typer.echo))
    finally:
        for server in reversed(servers):
            server.stop()


def train(
    interactions: Annotated[int, typer.Option(help="Generated interactions in the training log")] = 1_000_000,
) -> None:
    """One training end to end on ~1M generated interactions (targets: 30 s in all, fit 10 s, 64 factors)."""
    from benchmarks.recommender import bench_train

    def run(settings: Settings) -> None:
        result = bench_train(settings, interactions, typer.echo)
        typer.echo("")
        typer.echo(f"interactions      {result.interactions}")
        for name, seconds in result.timings.items():
            typer.echo(f"{name:<17} {seconds:8.2f} s")
        typer.echo(f"promoted          {result.promoted} ({result.reason})")

    _with_servers(run)


def api(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 100_000,
    rps: Annotated[float, typer.Option(help="Steady request rate")] = 1000.0,
    seconds: Annotated[float, typer.Option(help="Length of the steady load")] = 15.0,
    rules: Annotated[
        bool,
        typer.Option("--rules", help="Instead: the cost of a 20-rule business rules file per request (engine, API)"),
    ] = False,
) -> None:
    """One API process under a steady load of personal recommendations (targets: p50 3 ms, p99 15 ms at 1,000/s).
    With ``--rules``: the same load without rules then with a 20-rule file, and the engine's cost alone."""
    from benchmarks.recommender import bench_api
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        if rules:
            from benchmarks.rules import bench_rules

            cost = bench_rules(settings, free_port(), items, rps, seconds, typer.echo)
            typer.echo("")
            for line in cost.lines():
                typer.echo(line)
            return
        figures = bench_api(settings, free_port(), items, rps, seconds, typer.echo)
        typer.echo("")
        for line in figures.lines():
            typer.echo(line)

    _with_servers(run)


def freshness(probes: Annotated[int, typer.Option(help="Clicks measured")] = 40) -> None:
    """Time from a product_view produced to Kafka until the recommendations change (target p99 1 s)."""
    import statistics

    from benchmarks.recommender import bench_freshness
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        lags = sorted(bench_freshness(settings, free_port(), probes, typer.echo))
        p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
        typer.echo("")
        typer.echo(f"click -> changed recommendations: p50 {statistics.median(lags) * 1000:.0f} ms, "
                   f"p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms ({len(lags)} clicks)")  # fmt: skip

    _with_servers(run)


def auth(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 5_000,
    rps: Annotated[float, typer.Option(help="Steady request rate per endpoint")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Length of each steady load")] = 10.0,
    rounds: Annotated[int, typer.Option(help="Rounds of off then on (the figures are compared by median)")] = 2,
) -> None:
    """The API's max rate and p99 with access control (keys, scopes, rate limit) on against off, in one run."""
    from benchmarks.auth import bench_auth, lines
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        figures = bench_auth(settings, free_port(), items, rps, seconds, max(1, min(rounds, 5)), typer.echo)
        typer.echo("")
        for line in lines(figures, rps):
            typer.echo(line)

    _with_servers(run)


def campaigns(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 10_000,
    rps: Annotated[float, typer.Option(help="Steady request rate in all (half to each API)")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Length of the steady load of each round")] = 15.0,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds, the campaign alternating between the APIs")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON on the last line")] = False,
) -> None:
    """The API's p50/p99 with a campaign active against none, in one run: two API processes (one with an A/A
    campaign, one without) under one open loop at the same time."""
    import json

    from benchmarks.campaigns import bench_campaigns
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        figures = bench_campaigns(settings, (free_port(), free_port()), items, rps, seconds, rounds, typer.echo)
        typer.echo("")
        for line in figures.lines():
            typer.echo(line)
        if as_json:
            typer.echo(json.dumps(figures.as_dict()))

    _with_servers(run)
