"""Shared fixtures. Integration tests get a real embedded broker (Tansu) and Redis-compatible server (Valkey),
started once per test session (per pytest-xdist worker) on free loopback ports. See tests/README.md."""

from __future__ import annotations

import fcntl
import functools
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

import runtime.embedded
import runtime.local
from core.kafka import ensure_topics
from core.settings import Settings, isolated
from runtime.embedded import EmbeddedServer, die_with_parent, start_broker, start_redis, start_redis_cluster
from runtime.local import settings_env

REPO = Path(__file__).resolve().parent.parent
NO_CAMPAIGNS = REPO / "tests" / "no-such-campaigns-file.yaml"  # a missing campaigns file: no campaigns
# A running `ecrm up` of the developer must not be found by the commands the tests run (core/runstate.py); each
# pytest process (each xdist worker) has its own directory, removed at the end of its session.
RUNTIME_DIR = os.environ["ECRM_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ecrm-test-runtime-")
DATASETS = Path(os.environ.get("ECRM_DATASETS", REPO.parent / "shared" / "datasets"))

# Ports. The OS hands out a free port from the ephemeral range (32768-60999 on Linux), the same range outgoing
# connections use, and a port handed out is free again until a server binds it: two xdist workers (or two test runs,
# or a client's connection) could get the same one. Each pytest process (each xdist worker) therefore leases a block
# of its own below that range (an exclusive lock on a file, released by the OS when the process ends, even killed)
# and hands its ports out in turn, each checked free by binding it. Servers the code under test starts by itself
# (`ecrm up` without ports) still get theirs from the OS, in the ephemeral range: no overlap.
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 20000, 500, 24  # 20000-31999


def _lease_port_block() -> Iterator[int] | None:
    """The ports of the first block no other process holds (the lock's file stays open for the session)."""
    folder = Path(tempfile.gettempdir()) / f"ecrm-test-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    for block in range(PORT_BLOCKS):
        lock = open(folder / f"block-{block}", "a")  # held open until the process exits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _LEASE.append(lock)
        first = PORT_BASE + PORT_BLOCK * block
        return itertools.cycle(range(first, first + PORT_BLOCK))
    return None  # every block is leased: the OS picks (as outside the tests)


_LEASE: list[TextIO] = []
_PORTS = _lease_port_block()
_os_free_port = runtime.embedded.free_port


def free_port() -> int:
    """A free TCP port on 127.0.0.1 from this process's block (see above)."""
    if _PORTS is None:
        return _os_free_port()
    for _ in range(PORT_BLOCK):
        port = next(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return _os_free_port()


# every free port the suite takes, in the tests and in the code they run in this process (the embedded servers)
runtime.embedded.free_port = free_port
runtime.local.free_port = free_port  # type: ignore[attr-defined]


# Under pytest-xdist the Makefile asks for ``--dist load``: tests are handed out one by one to whichever worker is
# free, so a long module does not hold one worker while the others idle. A module that shares a fixture wider than a
# test (``scope="module"``, ``"class"`` or ``"package"``: a stack started once for the module) goes whole to one
# worker instead, so that fixture is set up once. (pytest-xdist's own ``xdist_group`` marker does not group on
# pytest 9.2: pytest-dev/pytest-xdist#1386.) The scheduler runs in the controller, which does not collect: the
# module's source tells.
_WIDER_FIXTURE = re.compile(r"""scope\s*=\s*["'](?:module|class|package)["']""")


@functools.cache
def shares_a_fixture(module: str) -> bool:
    """Whether the test module at ``module`` (a path from the repository root) declares a fixture wider than a test."""
    path = REPO / module
    return path.is_file() and _WIDER_FIXTURE.search(path.read_text()) is not None


@pytest.hookimpl(optionalhook=True)  # (a hook of pytest-xdist: none without it, `-p no:xdist`)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # pytest-xdist's own scheduling
    from xdist.scheduler import LoadScopeScheduling

    class OneByOneButSharedModulesWhole(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if shares_a_fixture(module) else nodeid

    return OneByOneButSharedModulesWhole(config, log)


def pytest_sessionfinish() -> None:
    shutil.rmtree(RUNTIME_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared real data sets (never copied into the project)."""
    assert DATASETS.is_dir(), f"shared datasets not found at {DATASETS} (set ECRM_DATASETS)"
    return DATASETS


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedServer]:
    server = start_broker()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[list[EmbeddedServer]]:
    """A three-node Valkey Redis Cluster, started once for the tests that ask for it."""
    servers = start_redis_cluster(3)
    yield servers
    for server in servers:
        server.stop()


def on_cluster(settings: Settings, servers: list[EmbeddedServer]) -> Settings:
    """``settings`` on the Redis Cluster (``ECRM_REDIS_CLUSTER``, a node's URL; the key prefix stays the test's)."""
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{servers[1].port}/0", "redis_cluster": True})


@pytest.fixture()
def settings(broker: EmbeddedServer, redis_server: EmbeddedServer, tmp_path: Path) -> Settings:
    """Settings isolated per test: own topics, own Redis key prefix, on the session's embedded servers."""
    base = Settings(
        kafka_bootstrap=f"127.0.0.1:{broker.port}",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
        topic_partitions=2,
        retrain_check_s=3600.0,  # tests that want the worker to retrain ask for it
        model_poll_s=0.1,
        campaigns_file=str(NO_CAMPAIGNS),  # no campaign in tests that do not ask for one
        api_model_dir=str(tmp_path / "models"),  # the API's memory-mapped model files, removed with the test
        training_log_dir=str(tmp_path / "training-log"),  # the trainer's copy of the training log, likewise
        training_log_drain_s=0.0,  # tests that want the worker to drain the training log ask for it
        # the request deadline counts the request's wall time: on this shared, often overloaded machine a request
        # of a test about something else must not answer "degraded" because the host was busy. The deadline's own
        # tests set it (tests/integration/test_degradation.py, ecrm bench hung-redis)
        request_deadline_ms=1000.0,
    )
    return isolated(base)


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """A real worker process (``python -m ecrm worker``) on the test's settings."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecrm", "worker", "--loglevel", "warning"],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def worker_factory(settings: Settings) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """Starts worker processes with given settings (topics created first); stops all of them at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(custom: Settings) -> subprocess.Popen[bytes]:
        ensure_topics(custom)
        proc = start_worker(custom)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_worker(proc)


@pytest.fixture()
def worker(
    settings: Settings, worker_factory: Callable[[Settings], subprocess.Popen[bytes]]
) -> Callable[[], subprocess.Popen[bytes]]:
    """Starts worker processes on the test's settings (topics created first); all stopped at the end."""
    return lambda: worker_factory(settings)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
