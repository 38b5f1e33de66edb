"""The all-in-one local runtime behind ``ecrm up``: embedded servers, topics, a worker, the API and the demo.

Children are started with ``PR_SET_PDEATHSIG`` and stopped in reverse order on Ctrl-C, SIGTERM or when one of
them dies, so no process is left behind. Once the API answers, the addresses are published in a state file
(:mod:`core.runstate`) that the commands of other shells read; it is removed when the stack stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from core import runstate
from core.keyspace import KEY_LAYOUT_VERSION
from core.settings import Settings
from runtime.datadir import DataDir
from runtime.demo_shops import DemoShop
from runtime.embedded import EmbeddedPorts, EmbeddedServer, die_with_parent, free_port, start_missing
from runtime.shop import ShopPage, ShopServer, allow_shop_origin, start_demo_shop, start_demo_shops

Echo = Callable[[str], None]


class StartupError(RuntimeError):
    """A part of the local stack did not come up."""


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that hands ``settings`` to a child process."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            env.pop(f"ECRM_{name.upper()}", None)
        else:
            env[f"ECRM_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def spawn_role(role: list[str], settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``python -m ecrm <role...>`` as a child that dies with this process."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecrm", *role],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
        start_new_session=True,  # Ctrl-C reaches only the parent, which stops the children in order
    )


def wait_ready(url: str, timeout_s: float, procs: list[subprocess.Popen[bytes]], worker: bool = False) -> None:
    """Wait until ``url`` answers 200; with ``worker``, until ``/health/ready`` says ``"worker": true``: the API reads
    and a worker consumes, so an event posted now reaches its profile at once."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise StartupError(f"{proc.args!r} exited with code {proc.returncode}")
        try:
            resp = httpx.get(url, timeout=2.0)
            if resp.status_code == 200 and (not worker or resp.json().get("worker")):
                return
            last = resp.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise StartupError(f"{url} not ready after {timeout_s:.0f}s: {last}")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


@dataclass
class LocalStack:
    """What ``ecrm up`` started, to stop it in reverse order."""

    settings: Settings
    servers: list[EmbeddedServer] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    state_file: Path | None = None
    shop: ShopServer | None = None  # the demo shop (runtime/shop.py), served in a thread of this process
    other_shops: list[ShopServer] = field(default_factory=list)  # the demo's other shops (runtime/demo_shops.py)
    data_dir: DataDir | None = None  # held (locked) until the stack stops

    def publish(self, echo: Echo) -> None:
        """Write the state file that lets the commands of other shells find this stack."""
        state = runstate.RunState(
            pid=os.getpid(),
            kafka_bootstrap=self.settings.kafka_bootstrap,
            redis_url=self.settings.redis_url,
            api_url=api_base(self.settings),
            events_topic=self.settings.events_topic,
            dlq_topic=self.settings.dlq_topic,
            key_prefix=self.settings.key_prefix,
            campaigns_file=self.settings.campaigns_file,
            erasure_log_file=self.settings.erasure_log_file,
            training_log_dir=self.settings.training_log_dir,
        )
        self.state_file = runstate.write_state(state)
        if self.state_file is None:
            echo(f"note: another ecrm up is running; other shells keep finding that one ({runstate.state_path()})")

    def stop(self) -> None:
        for other in self.other_shops:
            other.stop()
        if self.shop is not None:
            self.shop.stop()
        if self.state_file is not None:
            runstate.remove_state(os.getpid())
            self.state_file = None
        for proc in reversed(self.procs):
            stop_process(proc)
        for server in reversed(self.servers):
            server.stop()
        if self.data_dir is not None:
            self.data_dir.release()


def start_stack(
    settings: Settings,
    echo: Echo,
    env: dict[str, str] | None = None,
    ports: EmbeddedPorts | None = None,
    shop: bool = False,
    data_dir: DataDir | None = None,
    shops: Sequence[DemoShop] = (),
) -> LocalStack:
    """Start the embedded servers (unless the environment names real ones; on ``ports`` if given), the topics, a
    worker and the API; with ``shop`` the demo shop on a free port (its origin added to the API's
    ``ECRM_CORS_ORIGINS``); then publish the state file. With ``data_dir`` (opened and locked by the caller; the
    stack releases it when it stops) the embedded Redis keeps its data there, and so do the model files and the
    erasure log. With ``shop`` and several demo ``shops`` (runtime/demo_shops.py), a shop page for each on its own
    port, each with its own collect key, linking to the others."""
    from core.kafka import ensure_topics
    from profiles.migrate import forget_topic_offsets

    env = dict(os.environ) if env is None else env
    stack = LocalStack(settings, data_dir=data_dir)
    try:
        if data_dir is not None:
            settings = with_data_dir(settings, data_dir, env)
        redis_dir = data_dir.redis_dir if data_dir is not None else None
        settings = start_missing(settings, env, stack.servers, echo, ports, redis_dir)
        if data_dir is not None and data_dir.layout < KEY_LAYOUT_VERSION:
            upgrade_data_dir(settings, data_dir, echo)
        if "ECRM_WORKER_METRICS_PORT" not in env:
            settings = settings.model_copy(update={"worker_metrics_port": free_port()})
        if "ECRM_WORKER_WEB_PORT" not in env:
            settings = settings.model_copy(update={"worker_web_port": 0})
        shop_port = free_port() if shop else 0
        other_ports = [free_port() for _ in shops[1:]] if shop else []
        for port in [shop_port, *other_ports] if shop_port else []:
            settings = settings.model_copy(update={"cors_origins": allow_shop_origin(settings.cors_origins, port)})
        stack.settings = settings
        created = ensure_topics(settings)
        if settings.events_topic in created:  # a new topic: offsets Redis may remember are of an older one
            forget_topic_offsets(settings)
        echo(f"topics ready ({', '.join(created) if created else 'already there'})")
        stack.procs.append(spawn_role(["worker"], settings))
        echo(f"worker started (metrics on http://127.0.0.1:{settings.worker_metrics_port}/metrics)")
        stack.procs.append(spawn_role(["api", "--port", str(settings.api_port)], settings))
        wait_ready(f"{api_base(settings)}/health/ready", 60.0, stack.procs, worker=True)
        echo(f"API ready on {api_base(settings)}/docs (the worker is consuming)")
        if shop_port and len(shops) > 1:
            pages = [shop_page(s, p) for s, p in zip(shops, [shop_port, *other_ports], strict=True)]
            first, *others = start_demo_shops(api_base(settings), pages)
            stack.shop, stack.other_shops = first, others
            echo(f"demo shop on {first.url}/ (tracker and widgets: docs/tracker.md)")
            for server, demo_shop in zip(others, shops[1:], strict=True):
                echo(f"second demo shop on {server.url}/ (tenant {demo_shop.tenant}: its own keys, data and model)")
        elif shop_port:
            stack.shop = start_demo_shop(api_base(settings), settings.api_keys, shop_port)
            echo(f"demo shop on {stack.shop.url}/ (tracker and widgets: docs/tracker.md)")
        stack.publish(echo)
    except BaseException:
        stack.stop()
        raise
    return stack


def shop_page(shop: DemoShop, port: int) -> ShopPage:
    """The page of one demo shop: its name, its collect key, its catalogue (the simulator with its seed)."""
    return ShopPage(shop.name, shop.key("collect"), shop.simulation(200, ""), port)


def api_base(settings: Settings) -> str:
    """Where this machine reaches the API: loopback when it listens there or on every interface, else its host."""
    host = settings.api_host
    if host in ("", "0.0.0.0", "::", "127.0.0.1", "localhost"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def upgrade_data_dir(settings: Settings, data_dir: DataDir, echo: Echo) -> None:
    """Upgrade the keys of a data folder an older engine wrote (``ecrm migrate-keys``' code), then note the layout
    in its manifest."""
    from runtime.datadir import MANIFEST, write_manifest
    from runtime.migrate import migrate_deployment

    done = migrate_deployment(settings)
    write_manifest(data_dir.root / MANIFEST)
    older, data_dir.layout = data_dir.layout, KEY_LAYOUT_VERSION
    echo(
        f"data folder upgraded from key layout {older} to {KEY_LAYOUT_VERSION}: {done.folded} older profile keys "
        f"folded into {done.profiles} profile hashes, {done.moved} global keys and {done.markers} markers moved, "
        f"{done.to_tenant} keys moved into the tenant default"
        + (f" ({done.conflicts} left: their new names exist already)" if done.conflicts else "")
    )


def with_data_dir(settings: Settings, data_dir: DataDir, env: dict[str, str]) -> Settings:
    """``settings`` keeping the model files, the erasure log and the training-log store in the data folder (unless
    the environment names other places)."""
    update: dict[str, str] = {}
    if "ECRM_API_MODEL_DIR" not in env:
        update["api_model_dir"] = str(data_dir.models_dir)
    if "ECRM_ERASURE_LOG_FILE" not in env:
        update["erasure_log_file"] = str(data_dir.erasure_log)
    if "ECRM_TRAINING_LOG_DIR" not in env:
        update["training_log_dir"] = str(data_dir.training_log_dir)
    return settings.model_copy(update=update)


def wait_until_stopped(stack: LocalStack, echo: Echo = lambda _: None, max_restarts: int = 5) -> int:
    """Block until Ctrl-C / SIGTERM (returns 0). A child that dies is restarted (a worker that crashed resumes
    from its last committed offsets); after ``max_restarts`` restarts the exit code of the last death is returned."""
    stopping = False
    restarts = 0

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stopping:
            for k, proc in enumerate(stack.procs):
                code = proc.poll()
                if code is None:
                    continue
                if restarts >= max_restarts:
                    return code or 1
                restarts += 1
                role = [str(a) for a in list(proc.args)[3:]]  # type: ignore[arg-type]
                echo(f"{' '.join(role)} exited with code {code}; restarting ({restarts}/{max_restarts})")
                stack.procs[k] = spawn_role(role, stack.settings)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
