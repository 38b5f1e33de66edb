"""The roles: ``ecrm worker``, ``ecrm api``, ``ecrm simulate`` and the all-in-one ``ecrm up``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import typer
from tqdm import tqdm

from core.errors import BrokerUnavailable, ConfigError
from core.kafka import ensure_topics, make_producer, produce_events
from core.settings import Settings, get_settings
from runtime.simulate import SimulationConfig
from runtime.simulate import simulate as simulate_events


def worker(
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error")] = "warning",
) -> None:
    """Run a stream worker: consumes the events topic and keeps profiles in Redis (scale by adding workers)."""
    from stream.worker import run_worker

    run_worker(get_settings(), loglevel=loglevel)


def api(
    host: Annotated[str, typer.Option(help="Interface to bind (default: ECRM_API_HOST or 127.0.0.1)")] = "",
    port: Annotated[int, typer.Option(help="Port (default: ECRM_API_PORT or 8000)")] = 0,
    loglevel: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the HTTP API (collector, profiles, recommendations, health, metrics). Without ECRM_API_KEYS the API is
    open and refuses to listen on anything but loopback."""
    import uvicorn

    from api.auth import check_bind, parse_keys
    from api.main import create_app

    settings = get_settings()
    host = host or settings.api_host
    try:
        check_bind(host, parse_keys(settings.api_keys))
        app = create_app(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(app, host=host, port=port or settings.api_port, log_level=loglevel, access_log=False)


def simulate(
    customers: Annotated[int, typer.Option(help="Known customers")] = 200,
    visitors: Annotated[int, typer.Option(help="Anonymous visitors (some log in)")] = 100,
    items: Annotated[int, typer.Option(help="Catalogue size")] = 500,
    days: Annotated[float, typer.Option(help="Days of history, ending now")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same events and event ids)")] = 7,
    out: Annotated[Path | None, typer.Option(help="Write JSON lines here ('-' for stdout) instead of Kafka")] = None,
) -> None:
    """Generate a demo clickstream (power-law popularity, sessions, funnels) and produce it to Kafka.

    Every event's delivery is checked: when any is not acknowledged the command exits 2, naming how many failed."""
    cfg = SimulationConfig(customers=customers, anonymous_visitors=visitors, items=items, days=days, seed=seed)
    if out is not None:
        write_lines(cfg, out)
        return
    try:
        count = produce_demo(get_settings(), cfg)
    except BrokerUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"produced {count} events")


def write_lines(cfg: SimulationConfig, out: Path) -> None:
    stream = sys.stdout.buffer if str(out) == "-" else open(out, "wb")  # noqa: SIM115
    try:
        for event in simulate_events(cfg):
            stream.write(orjson.dumps(event) + b"\n")
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()


def produce_demo(settings: Settings, cfg: SimulationConfig) -> int:
    ensure_topics(settings, timeout_s=settings.producer_timeout_s)
    producer = make_producer(settings)
    try:
        events = tqdm(simulate_events(cfg), desc="demo events", unit="ev", file=sys.stderr, leave=False)
        return produce_events(producer, settings.events_topic, events)
    finally:
        producer.close()


def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Do not replay the simulated demo clickstream")] = False,
    customers: Annotated[int, typer.Option(help="Demo customers")] = 200,
) -> None:
    """Start everything on 127.0.0.1: embedded broker and Redis (unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL
    name real ones), topics, a worker, the API (ECRM_API_HOST, 127.0.0.1 by default; open unless ECRM_API_KEYS is
    set) and the demo clickstream. Ctrl-C stops it all."""
    from runtime.local import StartupError, start_stack, wait_until_stopped

    settings = get_settings().model_copy(update={"api_port": port})
    try:
        stack = start_stack(settings, typer.echo)
    except (StartupError, BrokerUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:  # start_stack has stopped what it had started
        typer.echo("interrupted during start-up; stopped")
        raise typer.Exit(130) from exc
    code = 0
    try:
        if not no_demo:
            run_demo(stack.settings, SimulationConfig(customers=customers))
        typer.echo("running; press Ctrl-C to stop")
        code = wait_until_stopped(stack, typer.echo)
    except KeyboardInterrupt:
        pass
    except BrokerUnavailable as exc:  # the demo's events were not all delivered
        typer.echo(f"error: {exc}", err=True)
        code = 2
    finally:
        typer.echo("stopping ...")
        stack.stop()
        typer.echo("stopped")
    raise typer.Exit(code)


def run_demo(settings: Settings, cfg: SimulationConfig) -> None:
    count = produce_demo(settings, cfg)
    typer.echo(f"demo: {count} simulated events produced; waiting for the worker ...")
    base = f"http://127.0.0.1:{settings.api_port}"
    customer = "cust-00000"
    deadline = time.monotonic() + 60
    headers = demo_headers(settings.api_keys)
    while time.monotonic() < deadline:
        if httpx.get(f"{base}/v1/customers/{customer}/profile", headers=headers, timeout=5).status_code == 200:
            break
        time.sleep(0.5)
    typer.echo("demo ready. Try:")
    typer.echo(f"  {base}/docs")
    typer.echo(f"  {base}/v1/customers/{customer}/profile")
    typer.echo(f"  {base}/v1/customers/{customer}/recommendations?n=10")
    play_demo_campaign(settings, base, headers)


def play_demo_campaign(settings: Settings, base: str, headers: dict[str, str], customers: int = 1500) -> None:
    """The running campaign of config/campaigns.yaml played out (its first variant truly converts better), so the
    effect report shows a real difference (docs/campaigns.md)."""
    from runtime.campaign_play import demo_rates, play
    from runtime.simulate import CampaignPlay

    try:
        name, rates = demo_rates(settings, None, 0.18, 0.10)
    except ValueError as exc:
        typer.echo(f"campaign demo skipped: {exc}")
        return
    try:
        served, count = play(settings, base, headers, CampaignPlay(rates), customers, typer.echo)
    except httpx.HTTPError as exc:
        typer.echo(f"campaign demo stopped: {exc}")
        return
    typer.echo(f"campaign demo: {len(served)} customers in campaign {name}, {count} events; true rates {rates}")
    typer.echo(f"  {base}/v1/campaigns/{name}/report   (once the worker has applied the events)")
    typer.echo(f"  ECRM_REDIS_URL={settings.redis_url} ecrm campaign report {name}")


def demo_headers(api_keys: str) -> dict[str, str]:
    """The Authorization header of a server or admin key when keys are configured (the demo reads a profile)."""
    for entry in api_keys.split(","):
        scope, _, secret = entry.strip().partition(":")
        if scope.strip() in ("server", "admin") and secret.strip():
            return {"Authorization": f"Bearer {secret.strip()}"}
    return {}
