"""The roles: ``ecrm worker``, ``ecrm api``, ``ecrm simulate`` and the all-in-one ``ecrm up``."""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from tqdm import tqdm

from core.errors import BrokerUnavailable, ConfigError, ServiceUnavailable
from core.kafka import ensure_topics, make_producer, probe_broker, produce_events
from core.redis import probe as probe_redis
from core.runstate import addresses_set, read_state
from core.settings import Settings, get_settings
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from runtime.simulate import SimulationConfig
from runtime.simulate import simulate as simulate_events

if TYPE_CHECKING:
    from runtime.demo_shops import DemoShop


def worker(
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error")] = "warning",
) -> None:
    """Run a stream worker: consumes the events topic and keeps profiles in Redis (scale by adding workers).
    Exits 2 with a one-line error when the broker or Redis does not answer."""
    from stream.worker import run_worker

    settings = get_settings()
    try:
        probe_broker(settings)
        probe_redis(settings)
    except ServiceUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    run_worker(settings, loglevel=loglevel)


def api(
    host: Annotated[str, typer.Option(help="Interface to bind (default: ECRM_API_HOST or 127.0.0.1)")] = "",
    port: Annotated[int, typer.Option(help="Port (default: ECRM_API_PORT or 8000)")] = 0,
    loglevel: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes on the port (about one per core): each maps the shared model files and swaps "
            "versions on its own; /metrics sums them all",
        ),
    ] = 1,
) -> None:
    """Run the HTTP API (collector, profiles, recommendations, health, metrics). Without ECRM_API_KEYS the API is
    open and refuses to listen on anything but loopback. With addresses named (ECRM_KAFKA_BOOTSTRAP, ECRM_REDIS_URL
    or a running `ecrm up`) it starts even while they are away (degraded modes); with none, it exits 2 with a
    one-line error when neither the default broker nor the default Redis answers."""
    import uvicorn

    from api.auth import check_bind, parse_keys
    from api.main import create_app

    settings = get_settings()
    host = host or settings.api_host
    try:
        check_bind(host, parse_keys(settings.api_keys))
        if not located():
            probe_broker(settings)
            probe_redis(settings)
        app = create_app(settings)
    except (ConfigError, ServiceUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if workers == 1:
        uvicorn.run(app, host=host, port=port or settings.api_port, log_level=loglevel, access_log=False)
        return
    from runtime.api_processes import metrics_dir

    with metrics_dir():  # before the processes start: they choose the metrics' storage at import
        uvicorn.run(
            "api.main:app",  # each process builds its app from the environment (the same settings)
            host=host,
            port=port or settings.api_port,
            workers=workers,
            log_level=loglevel,
            access_log=False,
        )


def simulate(
    customers: Annotated[int, typer.Option(help="Known customers")] = 200,
    visitors: Annotated[int, typer.Option(help="Anonymous visitors (some log in)")] = 100,
    items: Annotated[int, typer.Option(help="Catalogue size")] = 500,
    days: Annotated[float, typer.Option(help="Days of history, ending now")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same customers, items and sessions)")] = 7,
    run_id: Annotated[
        str,
        typer.Option(
            help="Part of every event id (default: a new one per run, so a second run adds new events; the same "
            "seed and run id give the same ids, which the worker drops as duplicates)"
        ),
    ] = "",
    out: Annotated[Path | None, typer.Option(help="Write JSON lines here ('-' for stdout) instead of Kafka")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Generate a demo clickstream (power-law popularity, sessions, funnels) of a shop and produce it to Kafka.

    Every event's delivery is checked: when any is not acknowledged the command exits 2, naming how many failed."""
    run_id = run_id or uuid.uuid4().hex[:12]
    cfg = SimulationConfig(
        customers=customers, anonymous_visitors=visitors, items=items, days=days, seed=seed, run_id=run_id
    )
    if out is not None:
        write_lines(cfg, out)
        return
    try:
        count = produce_demo(get_settings(), cfg, tenant)
    except BrokerUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"produced {count} events (run id {run_id})")


def located() -> bool:
    """Whether the broker and Redis were named (a variable, or the state file of a running ``ecrm up``)."""
    return addresses_set() or read_state() is not None


def write_lines(cfg: SimulationConfig, out: Path) -> None:
    stream = sys.stdout.buffer if str(out) == "-" else open(out, "wb")  # noqa: SIM115
    try:
        for event in simulate_events(cfg):
            stream.write(orjson.dumps(event) + b"\n")
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()


def produce_demo(settings: Settings, cfg: SimulationConfig, tenant: str = DEFAULT_TENANT) -> int:
    """The simulator's events produced to Kafka with ``tenant``'s header and partition keys."""
    ensure_topics(settings, timeout_s=settings.producer_timeout_s)
    producer = make_producer(settings)
    try:
        events = tqdm(simulate_events(cfg), desc="demo events", unit="ev", file=sys.stderr, leave=False)
        return produce_events(producer, settings.events_topic, events, tenant=tenant)
    finally:
        producer.close()


def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    kafka_port: Annotated[
        int | None, typer.Option(help="Port of the embedded broker (default: a free one)", show_default=False)
    ] = None,
    redis_port: Annotated[
        int | None, typer.Option(help="Port of the embedded Redis (default: a free one)", show_default=False)
    ] = None,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Do not replay the simulated demo clickstream")] = False,
    customers: Annotated[int, typer.Option(help="Demo customers")] = 200,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="ECRM_DATA_DIR",
            help="Keep the data here (Redis append-only file and snapshots, model files, erasure log): a restart on "
            "the same folder serves what was there. Default: nothing is kept",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface of the API (default: ECRM_API_HOST or 127.0.0.1; others need ECRM_API_KEYS)")
    ] = "",
) -> None:
    """Start everything on 127.0.0.1: embedded broker and Redis (unless ECRM_KAFKA_BOOTSTRAP / ECRM_REDIS_URL
    name real ones), topics, a worker, the API (ECRM_API_HOST, 127.0.0.1 by default; open unless ECRM_API_KEYS is
    set) and the demo clickstream. The other commands, in any shell, find it (a state file in ECRM_RUNTIME_DIR,
    else $XDG_RUNTIME_DIR/ecrm). Ctrl-C or SIGTERM stops it all. With --data-dir the data survives a restart (the
    demo is replayed only into an empty folder)."""
    import os

    from api.auth import check_bind, parse_keys
    from runtime.datadir import DataDirError, open_data_dir
    from runtime.demo import demo_settings
    from runtime.demo_shops import demo_shops
    from runtime.embedded import EmbeddedError, EmbeddedPorts
    from runtime.local import StartupError, start_stack, wait_until_stopped

    settings = Settings().model_copy(update={"api_port": port})  # its own servers, never another up's
    if host:
        settings = settings.model_copy(update={"api_host": host})
    try:
        check_bind(settings.api_host, parse_keys(settings.api_keys))  # before anything starts
        folder = open_data_dir(data_dir) if data_dir is not None else None
    except (ConfigError, DataDirError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    shops: tuple[DemoShop, ...] = ()
    if not no_demo:  # the demo's own campaign (runtime/demo_campaigns.yaml) unless ECRM_CAMPAIGNS_FILE is set; also
        settings = demo_settings(settings, os.environ)  # on a demo folder restarted (its campaign goes on)
        # two shops side by side, each a tenant with its keys (runtime/demo_shops.py), unless ECRM_API_KEYS is set
        settings, shops = demo_shops(settings, os.environ)
    if folder is not None and not folder.fresh and not no_demo:
        typer.echo(f"data folder {folder.root} holds data: the demo is not replayed")
        no_demo = True
    elif folder is not None:
        typer.echo(f"data folder {folder.root} ({'new' if folder.fresh else 'restarted'})")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it like Ctrl-C, during start-up too
    try:
        ports = EmbeddedPorts(kafka_port, redis_port)
        stack = start_stack(settings, typer.echo, ports=ports, shop=not no_demo, data_dir=folder, shops=shops)
    except (StartupError, EmbeddedError, BrokerUnavailable) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:  # start_stack has stopped what it had started
        typer.echo("interrupted during start-up; stopped")
        raise typer.Exit(130) from exc
    code = 0
    try:
        if not no_demo:
            shop_url = stack.shop.url if stack.shop else None
            run_id = uuid.uuid4().hex[:12]
            run_demo(stack.settings, SimulationConfig(customers=customers, run_id=run_id), shop_url)
            run_other_shops(stack.settings, shops, [s.url for s in stack.other_shops], customers, run_id)
        typer.echo("running; press Ctrl-C to stop")
        code = wait_until_stopped(stack, typer.echo)
    except KeyboardInterrupt:
        pass
    except BrokerUnavailable as exc:  # the demo's events were not all delivered
        typer.echo(error_line(exc), err=True)
        code = 2
    finally:
        typer.echo("stopping ...")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        typer.echo("stopped")
    raise typer.Exit(code)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, cfg: SimulationConfig, shop_url: str | None = None) -> None:
    """Produce the demo, then wait for it to be complete (runtime/demo.py) before printing where to look."""
    from runtime import demo

    before = demo.applied_count(settings)
    count = produce_demo(settings, cfg)
    typer.echo(f"demo: {count} simulated events produced; waiting for the worker ...")
    customer = "cust-00000"
    demo.complete(settings, before + count, customer, typer.echo)
    base = f"http://127.0.0.1:{settings.api_port}"
    typer.echo("demo ready. Try:")
    typer.echo(f"  {base}/docs")
    typer.echo(f"  {base}/v1/customers/{customer}/profile")
    typer.echo(f"  {base}/v1/customers/{customer}/recommendations?n=10")
    if shop_url:
        typer.echo(f"  {shop_url}/  (the demo shop: click a few products, see 'Because you viewed ...' change)")
    play_demo_campaign(settings, base, demo.demo_headers(settings.api_keys))


def run_other_shops(
    settings: Settings, shops: Sequence[DemoShop], urls: Sequence[str], customers: int, run_id: str
) -> None:
    """The demo's shops after the first: each one's simulated history (its own seed) produced for its tenant; the
    worker applies it to that tenant and trains its model in turn (fair training, docs/tenants.md). Then every
    shop's keys."""
    if len(shops) < 2:
        return
    from runtime.demo_shops import key_lines

    for shop, url in zip(shops[1:], urls, strict=True):
        count = produce_demo(settings, shop.simulation(customers, run_id), shop.tenant)
        typer.echo(f"demo: {count} simulated events produced for the second shop, {shop.name} (tenant {shop.tenant})")
        typer.echo(f"  {url}/  ({shop.name}: the same item and customer ids, another shop's data and model)")
    typer.echo("demo keys (this run's own; the API listens on loopback only):")
    for line in key_lines(shops):
        typer.echo(line)


def play_demo_campaign(settings: Settings, base: str, headers: dict[str, str], customers: int = 1500) -> None:
    """The running campaign (the demo's, runtime/demo_campaigns.yaml, unless ECRM_CAMPAIGNS_FILE names a file)
    played out (its first variant truly converts better), so the effect report shows a real difference
    (docs/campaigns.md)."""
    import httpx

    from runtime.campaign_play import demo_rates, play
    from runtime.simulate import CampaignPlay

    try:
        name, rates = demo_rates(settings, None, 0.18, 0.10)
    except ValueError as exc:
        typer.echo(f"campaign demo skipped: {exc}")
        return
    behaviour = CampaignPlay(rates, run_id=uuid.uuid4().hex[:12])  # new event ids on every run
    try:
        served, count = play(settings, base, headers, behaviour, customers, typer.echo)
    except httpx.HTTPError as exc:
        typer.echo(f"campaign demo stopped: {exc}")
        return
    typer.echo(f"campaign demo: {len(served)} customers in campaign {name}, {count} events; true rates {rates}")
    typer.echo(f"  {base}/v1/campaigns/{name}/report   (once the worker has applied the events)")
    typer.echo(f"  ecrm campaign report {name}   (from any shell: the commands find this ecrm up)")
