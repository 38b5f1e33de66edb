"""``ecrm bench ...``: benchmark scripts that print figures (targets are checked by reading them, not by tests)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated

import typer

from core.settings import Settings


def _progress(as_json: bool) -> Callable[[str], None]:
    """Where progress lines go: stdout, or stderr when stdout carries the JSON figures."""
    return (lambda line: typer.echo(line, err=True)) if as_json else typer.echo


_JSON_OUT: list[str] = []  # figures printed once stdout is restored (see _with_servers)


def _print_json(figures: Mapping[str, object]) -> None:
    _JSON_OUT.append(json.dumps(figures, indent=2))


def _report(figures: Mapping[str, object], lines: Iterable[str], as_json: bool) -> None:
    """The figures of a benchmark: one JSON object (printed once stdout is back), or a blank line and a line each."""
    if as_json:
        _print_json(figures)
        return
    typer.echo("")
    for line in lines:
        typer.echo(line)


JsonOption = Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object (progress on stderr)")]


def ingest(
    events: Annotated[int, typer.Option(help="Events pushed through the worker")] = 100_000,
    load_rate: Annotated[float, typer.Option(help="Steady load for the lag phase (0: half the worker rate)")] = 0.0,
    seconds: Annotated[float, typer.Option(help="Length of the lag phase")] = 20.0,
    with_timers: Annotated[
        bool, typer.Option("--with-timers", help="Keep the worker's retraining and analytics refresh on")
    ] = False,
    train_interactions: Annotated[
        int, typer.Option(help="Size of the training run during the last lag phase (0: no such phase)")
    ] = 1_000_000,
    as_json: JsonOption = False,
) -> None:
    """Worker throughput against a Faust agent that does nothing (target ratio >= 0.8) and a plain aiokafka
    consumer, event-to-profile lag, and the lag while a training runs (target p99 <= 250 ms).

    Uses the embedded broker and Redis unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL name real ones."""
    from benchmarks.ingest import run_ingest_bench

    def run(settings: Settings) -> None:
        figures = run_ingest_bench(
            settings, events, load_rate or None, seconds, _progress(as_json), with_timers, max(train_interactions, 0)
        )
        _report(figures.as_json(), figures.lines(), as_json)

    _with_servers(run, as_json)


NO_CAMPAIGNS_FILE = "/nonexistent/ecrm-bench-no-campaigns.yaml"


def backup(
    profiles: Annotated[int, typer.Option(help="Profiles written, then backed up and restored")] = 100_000,
    events: Annotated[int, typer.Option(help="Events per profile")] = 20,
    as_json: JsonOption = False,
) -> None:
    """How long `ecrm backup` and `ecrm restore` take for N profiles (written as `ecrm bench memory` writes them),
    the file's size and the command's peak memory."""
    from benchmarks.backup import bench_backup

    def run(settings: Settings) -> None:
        figures = bench_backup(settings, max(profiles, 1), max(events, 3), _progress(as_json))
        _report(figures.as_json(), figures.lines(), as_json)

    _with_servers(run, as_json)


def tenant_slots(
    events: Annotated[int, typer.Option(min=1000, help="Events per pass")] = 20_000,
    passes: Annotated[int, typer.Option(min=1, help="Passes of each kind (alternated)")] = 3,
    as_json: JsonOption = False,
) -> None:
    """The store's event rate on a three-node Redis Cluster it starts: the events of one tenant against the same
    events spread over three tenants (their global slots on the three nodes), in one run."""
    from benchmarks.tenant_slots import bench_tenants

    settings = Settings()
    if "ECRM_CAMPAIGNS_FILE" not in os.environ:  # no campaign in the figures
        settings = settings.model_copy(update={"campaigns_file": NO_CAMPAIGNS_FILE})
    figures = bench_tenants(settings, events, passes, _progress(as_json))
    _report(figures.as_json(), figures.lines(), as_json)
    for text in _JSON_OUT:
        typer.echo(text)
    _JSON_OUT.clear()


def _with_servers(run: Callable[[Settings], None], as_json: bool = False) -> None:
    """Run with the embedded broker and Redis unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL name real ones (never a
    running `ecrm up`), and without campaigns unless ECRM_CAMPAIGNS_FILE names a file (``bench campaigns`` brings
    its own)."""
    from runtime.embedded import EmbeddedServer, start_missing

    servers: list[EmbeddedServer] = []
    settings = Settings()
    if "ECRM_CAMPAIGNS_FILE" not in os.environ:  # no campaign in the figures
        settings = settings.model_copy(update={"campaigns_file": NO_CAMPAIGNS_FILE})
    saved = _stdout_to_stderr() if as_json else None  # child processes (workers) print on the inherited stdout
    try:
        run(start_missing(settings, os.environ, servers, _progress(as_json)))
    finally:
        for server in reversed(servers):
            server.stop()
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    for text in _JSON_OUT:
        typer.echo(text)
    _JSON_OUT.clear()


def _stdout_to_stderr() -> int:
    """Point file descriptor 1 at stderr (inherited by child processes); returns a copy of the old one."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


def train(
    interactions: Annotated[int, typer.Option(help="Generated interactions in the training log")] = 1_000_000,
    as_json: JsonOption = False,
) -> None:
    """One training end to end on ~1M generated interactions (targets: 15 s in all, fit 10 s, 64 factors)."""
    from benchmarks.recommender import bench_train

    def run(settings: Settings) -> None:
        result = bench_train(settings, interactions, _progress(as_json))
        if as_json:
            _print_json(
                {
                    "interactions": result.interactions,
                    **{name: round(seconds, 3) for name, seconds in result.timings.items()},
                    "holdout_users": int(result.holdout.get("users", 0)),
                    "holdout_ndcg@10": result.holdout.get("ndcg@10"),
                    "promoted": result.promoted,
                    "reason": result.reason,
                    "load_avg": list(os.getloadavg()),
                }
            )
            return
        typer.echo("")
        typer.echo(f"interactions      {result.interactions}")
        for name, seconds in result.timings.items():
            typer.echo(f"{name:<17} {seconds:8.2f} s")
        typer.echo(f"promoted          {result.promoted} ({result.reason})")

    _with_servers(run, as_json)


def api(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 100_000,
    rps: Annotated[float, typer.Option(help="Steady request rate (0: half the measured max rate)")] = 0.0,
    seconds: Annotated[float, typer.Option(help="Length of the steady load")] = 15.0,
    rules: Annotated[
        bool,
        typer.Option("--rules", help="Instead: the cost of a 20-rule business rules file per request (engine, API)"),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=16, help="API processes (ecrm api --workers)")] = 1,
    exact: Annotated[
        bool, typer.Option("--exact", help="Score every item (the reference without candidate retrieval)")
    ] = False,
    ranker: Annotated[
        str,
        typer.Option(help="The ranking stage: auto (the model's own gate), forced (used everywhere), off (the blend)"),
    ] = "auto",
    stages: Annotated[
        bool,
        typer.Option("--stages", help="Instead: the engine's cost per request stage by stage (in process, µs)"),
    ] = False,
    requests: Annotated[int, typer.Option(help="--stages: requests timed")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """API processes under load: max rates of personal recommendations and of /health/live in one run (their
    ``ratio``), then a steady load at half capacity (``p50_ms``, ``p99_ms``; targets at 100k items: ratio 0.30,
    p99 10 ms; at 1M items p99 25 ms). With ``--rules``: the same load without rules then with a 20-rule file,
    and the engine's cost alone."""
    from benchmarks.recommender import RANKER_MODES, bench_api
    from runtime.embedded import free_port

    if ranker not in RANKER_MODES:
        raise typer.BadParameter(f"--ranker must be one of {', '.join(RANKER_MODES)}, not {ranker!r}")
    if stages:
        from benchmarks.api_stages import bench_stages

        figures_in = bench_stages(items, requests, _progress(as_json))
        _report(figures_in.as_json(), figures_in.lines(), as_json)
        if as_json:
            typer.echo(_JSON_OUT.pop())
        return

    def run(settings: Settings) -> None:
        if rules:
            from dataclasses import asdict

            from benchmarks.rules import bench_rules

            cost = bench_rules(settings, free_port(), items, rps or 1000.0, seconds, _progress(as_json))
            _report(asdict(cost), cost.lines(), as_json)
            return
        echo = _progress(as_json)
        figures = bench_api(settings, free_port(), items, rps, seconds, echo, workers, exact, ranker)
        _report(figures.as_json(), figures.lines(), as_json)

    _with_servers(run, as_json)


def freshness(probes: Annotated[int, typer.Option(help="Clicks measured")] = 40, as_json: JsonOption = False) -> None:
    """Time from a product_view produced to Kafka until the recommendations change (target p99 1 s)."""
    import statistics

    from benchmarks.recommender import bench_freshness
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        lags = sorted(bench_freshness(settings, free_port(), probes, _progress(as_json)))
        p50, p99 = statistics.median(lags) * 1000, statistics.quantiles(lags, n=100, method="inclusive")[98] * 1000
        figures = {"clicks": len(lags), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                   "max_ms": round(lags[-1] * 1000, 1), "target_p99_ms": 1000}  # fmt: skip
        line = f"click -> changed recommendations: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lags[-1] * 1000:.0f} ms"
        _report(figures, [f"{line} ({len(lags)} clicks)"], as_json)

    _with_servers(run, as_json)


def auth(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 5_000,
    rps: Annotated[float, typer.Option(help="Steady request rate per endpoint")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Length of each steady load")] = 10.0,
    rounds: Annotated[int, typer.Option(help="Rounds of off then on (the figures are compared by median)")] = 2,
    as_json: JsonOption = False,
) -> None:
    """The API's max rate and p99 with access control (keys, scopes, rate limit) on against off, in one run."""
    from dataclasses import asdict

    from benchmarks.auth import bench_auth, lines
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        figures = bench_auth(settings, free_port(), items, rps, seconds, max(1, min(rounds, 5)), _progress(as_json))
        _report({"rps": rps, "runs": [asdict(f) for f in figures]}, lines(figures, rps), as_json)

    _with_servers(run, as_json)


def tenants(
    batch: Annotated[int, typer.Option(help="Events per request")] = 100,
    batches: Annotated[int, typer.Option(help="Requests per set-up and round")] = 60,
    rounds: Annotated[int, typer.Option(help="Rounds of the three set-ups (compared by median)")] = 3,
    as_json: JsonOption = False,
) -> None:
    """The collector's rate without quotas, with an events-per-second quota, and with a profile quota reached (its
    Redis look-up on every batch), in one run; and the per-tenant configuration lookup per request (docs/tenants.md)."""
    from dataclasses import asdict

    from benchmarks.tenants import bench_tenants, lines

    def run(settings: Settings) -> None:
        figures = bench_tenants(settings, batch, batches, max(1, min(rounds, 9)), _progress(as_json))
        _report(asdict(figures), lines(figures), as_json)

    _with_servers(run, as_json)


def campaigns(
    items: Annotated[int, typer.Option(help="Catalogue size of the model")] = 10_000,
    rps: Annotated[float, typer.Option(help="Steady request rate in all (half to each API)")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Length of the steady load of each round")] = 15.0,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds, the campaign alternating between the APIs")] = 4,
    as_json: JsonOption = False,
) -> None:
    """The API's p50/p99 with a campaign active against none, in one run: two API processes (one with an A/A
    campaign, one without) under one open loop at the same time."""

    from benchmarks.campaigns import bench_campaigns
    from runtime.embedded import free_port

    def run(settings: Settings) -> None:
        progress = _progress(as_json)
        figures = bench_campaigns(settings, (free_port(), free_port()), items, rps, seconds, rounds, progress)
        _report(figures.as_dict(), figures.lines(), as_json)

    _with_servers(run, as_json)


def hung_redis(
    seconds: Annotated[
        float, typer.Option(min=0.5, max=60, help="How long requests are timed while Redis hangs")
    ] = 3.0,
    as_json: JsonOption = False,
) -> None:
    """How long a recommendation request and /health/ready take when Redis hangs (SIGSTOP), against the request
    deadline (target: the first request within ECRM_REQUEST_DEADLINE_MS + 50 ms). Starts its own Valkey."""
    import logging

    from benchmarks.hung_redis import bench_hung_redis

    logging.disable(logging.ERROR)  # the API logs every Redis failure and the missing broker: expected here
    settings = Settings()
    if "ECRM_CAMPAIGNS_FILE" not in os.environ:
        settings = settings.model_copy(update={"campaigns_file": NO_CAMPAIGNS_FILE})
    figures = bench_hung_redis(settings, seconds, _progress(as_json))
    if as_json:
        typer.echo(json.dumps(figures.as_json(), indent=2))
        return
    _report(figures.as_json(), figures.lines(), as_json)


def memory(
    profiles: Annotated[int, typer.Option(help="Profiles written (the figure is measured at this scale)")] = 100_000,
    events: Annotated[int, typer.Option(help="Events per profile")] = 20,
    items: Annotated[int, typer.Option(help="Distinct items per profile")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Redis bytes per profile for a typical history, through the worker's write path (target <= 0.75 GiB per
    1M profiles at rest, the de-duplication window passed; also within the window), and what dominates."""
    from benchmarks.memory import bench_memory

    def run(settings: Settings) -> None:
        figures = bench_memory(settings, max(profiles, 1), max(events, 3), max(items, 1), _progress(as_json))
        _report(figures.as_json(), figures.lines(), as_json)

    _with_servers(run, as_json)


def analytics_scan(
    keys: Annotated[int, typer.Option(min=1000, help="Keys in Redis in all")] = 1_000_000,
    tenants: Annotated[int, typer.Option(min=1, max=1000, help="Tenants refreshed")] = 10,
    profiles: Annotated[int, typer.Option(min=0, help="Profile hashes among the keys, over the tenants")] = 100_000,
    as_json: JsonOption = False,
) -> None:
    """What the analytics refresh of every tenant costs Redis: each tenant's own SCAN of the keyspace against one
    SCAN for all in one round (SCAN calls and time, Redis CPU, wall), in one run on a Valkey of its own."""
    from benchmarks.analytics_scan import bench_analytics_scan

    figures = bench_analytics_scan(Settings(), keys, tenants, profiles, _progress(as_json))
    if as_json:
        typer.echo(json.dumps(figures.as_json(), indent=2))
        return
    _report(figures.as_json(), figures.lines(), as_json)
