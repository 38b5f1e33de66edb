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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from core import runstate
from core.settings import Settings
from runtime.embedded import EmbeddedPorts, EmbeddedServer, die_with_parent, free_port, start_missing
from runtime.shop import ShopServer, allow_shop_origin, start_demo_shop

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

    def publish(self, echo: Echo) -> None:
        """Write the state file that lets the commands of other shells find this stack."""
        state = runstate.RunState(
            pid=os.getpid(),
            kafka_bootstrap=self.settings.kafka_bootstrap,
            redis_url=self.settings.redis_url,
            api_url=f"http://127.0.0.1:{self.settings.api_port}",
            events_topic=self.settings.events_topic,
            dlq_topic=self.settings.dlq_topic,
            key_prefix=self.settings.key_prefix,
        )
        self.state_file = runstate.write_state(state)
        if self.state_file is None:
            echo(f"note: another ecrm up is running; other shells keep finding that one ({runstate.state_path()})")

    def stop(self) -> None:
        if self.shop is not None:
            self.shop.stop()
        if self.state_file is not None:
            runstate.remove_state(os.getpid())
            self.state_file = None
        for proc in reversed(self.procs):
            stop_process(proc)
        for server in reversed(self.servers):
            server.stop()


def start_stack(
    settings: Settings,
    echo: Echo,
    env: dict[str, str] | None = None,
    ports: EmbeddedPorts | None = None,
    shop: bool = False,
) -> LocalStack:
    """Start the embedded servers (unless the environment names real ones; on ``ports`` if given), the topics, a
    worker and the API; with ``shop`` the demo shop on a free port (its origin added to the API's
    ``ECRM_CORS_ORIGINS``); then publish the state file."""
    from core.kafka import ensure_topics
    from profiles.migrate import forget_topic_offsets

    env = dict(os.environ) if env is None else env
    stack = LocalStack(settings)
    try:
        settings = start_missing(settings, env, stack.servers, echo, ports)
        if "ECRM_WORKER_METRICS_PORT" not in env:
            settings = settings.model_copy(update={"worker_metrics_port": free_port()})
        if "ECRM_WORKER_WEB_PORT" not in env:
            settings = settings.model_copy(update={"worker_web_port": 0})
        shop_port = free_port() if shop else 0
        if shop_port:
            settings = settings.model_copy(update={"cors_origins": allow_shop_origin(settings.cors_origins, shop_port)})
        stack.settings = settings
        created = ensure_topics(settings)
        if settings.events_topic in created:  # a new topic: offsets Redis may remember are of an older one
            forget_topic_offsets(settings)
        echo(f"topics ready ({', '.join(created) if created else 'already there'})")
        stack.procs.append(spawn_role(["worker"], settings))
        echo(f"worker started (metrics on http://127.0.0.1:{settings.worker_metrics_port}/metrics)")
        stack.procs.append(spawn_role(["api", "--port", str(settings.api_port)], settings))
        wait_ready(f"http://127.0.0.1:{settings.api_port}/health/ready", 60.0, stack.procs, worker=True)
        echo(f"API ready on http://127.0.0.1:{settings.api_port}/docs (the worker is consuming)")
        if shop_port:
            stack.shop = start_demo_shop(f"http://127.0.0.1:{settings.api_port}", settings.api_keys, shop_port)
            echo(f"demo shop on {stack.shop.url}/ (tracker and widgets: docs/tracker.md)")
        stack.publish(echo)
    except BaseException:
        stack.stop()
        raise
    return stack


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
