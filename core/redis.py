"""The Redis adapter: clients, and the one place where redis-py's errors become the engine's (:mod:`core.errors`).

Errors are classified by exception class, not by message text (redis-py strips the error code from the message
of the classes it knows): a state of the server (connection lost, timeout, out of memory, a read-only replica
after a failover, the master link down, a cluster slot moving, the dataset loading, a busy script) is
:class:`~core.errors.StoreUnavailable` and is retried; a refusal of the data itself is
:class:`~core.errors.StoreRefused`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

from core.errors import StoreRefused, StoreUnavailable
from core.settings import Settings

# Most specific first: several are subclasses of ResponseError or ConnectionError.
_TRANSIENT_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (rx.OutOfMemoryError, "oom"),
    (rx.ReadOnlyError, "readonly"),
    (rx.BusyLoadingError, "loading"),
    (rx.MasterDownError, "masterdown"),
    (rx.TryAgainError, "tryagain"),
    (rx.ClusterDownError, "clusterdown"),
    (rx.NoScriptError, "noscript"),
    (rx.TimeoutError, "timeout"),
    (rx.ConnectionError, "connection"),
    (OSError, "connection"),
)
# Error codes redis-py has no class for (or, in older versions, did not map) stay in the message of a plain
# ResponseError, unstripped: their first word is the code.
_TRANSIENT_CODES = {
    "OOM": "oom",
    "READONLY": "readonly",
    "LOADING": "loading",
    "MASTERDOWN": "masterdown",
    "TRYAGAIN": "tryagain",
    "CLUSTERDOWN": "clusterdown",
    "BUSY": "busy",
    "NOSCRIPT": "noscript",
}


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is a passing state of the server (``"oom"``, ``"readonly"`` ...), or None for a refusal of the
    data (pure)."""
    for cls, reason in _TRANSIENT_CLASSES:
        if isinstance(exc, cls):
            return reason
    if isinstance(exc, rx.ResponseError):
        code = str(exc).split(" ", 1)[0]
        return _TRANSIENT_CODES.get(code)
    if isinstance(exc, rx.RedisError) and not isinstance(exc, rx.DataError):
        return "connection"  # a protocol or client error: the connection is in doubt
    return None


def map_error(exc: BaseException, what: str) -> StoreUnavailable | StoreRefused:
    """The engine's exception for a redis-py (or socket) error raised while doing ``what``."""
    reason = transient_reason(exc)
    if reason is None:
        return StoreRefused(f"{what}: Redis refused it: {exc}")
    return StoreUnavailable(f"{what}: Redis unavailable ({reason}): {exc}", reason)


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Map the redis-py and socket errors raised inside the block (sync or awaited) to the engine's."""
    try:
        yield
    except (rx.RedisError, OSError) as exc:
        raise map_error(exc, what) from exc


def timeouts(settings: Settings) -> dict[str, float]:
    """The explicit timeouts every client gets: a Redis that does not answer fails the call as
    :class:`~core.errors.StoreUnavailable` (``timeout``) instead of hanging it (pure)."""
    return {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
    }


def connect(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client that decodes strings (the cluster client with ``ECRM_REDIS_CLUSTER``)."""
    return _async_client(settings, decode_responses=True)


def connect_bytes(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client that returns bytes (model blobs)."""
    return _async_client(settings, decode_responses=False)


def connect_sync(settings: Settings, decode_responses: bool = False) -> redis.Redis:
    """A blocking Redis client, returning bytes unless asked to decode (the trainer, the command line, benches)."""
    if settings.redis_cluster:
        # The cluster client routes each command to the node holding its keys' slot; it offers the calls the engine
        # makes of a client (commands, scripts, non-transactional pipelines, scans), not a node's own class.
        cluster = redis.RedisCluster.from_url(
            settings.redis_url, decode_responses=decode_responses, **timeouts(settings)
        )
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(settings.redis_url, decode_responses=decode_responses, **timeouts(settings))


def probe(settings: Settings) -> None:
    """Raise :class:`~core.errors.StoreUnavailable` within the connect timeout when Redis does not answer a PING."""
    client = connect_sync(settings)
    try:
        with redis_errors("reaching Redis"):
            client.ping()
    finally:
        client.close()


def _async_client(settings: Settings, decode_responses: bool) -> aioredis.Redis:
    if settings.redis_cluster:
        cluster = aioredis.RedisCluster.from_url(
            settings.redis_url, decode_responses=decode_responses, **timeouts(settings)
        )
        return cast(aioredis.Redis, cluster)
    client = aioredis.Redis.from_url(
        settings.redis_url, decode_responses=decode_responses, health_check_interval=30, **timeouts(settings)
    )
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return client


@functools.cache
def _hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (plain, TLS or Unix socket) packing commands with hiredis, as redis-py's blocking client already
    does when hiredis is installed; its asyncio client packs in Python, which costs the worker several microseconds
    per event (a script call carries hundreds of keys). The bytes sent are the same."""

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        encoder = self.encoder
        if (
            encoder.encoding.lower().replace("-", "") != "utf8"
            or encoder.encoding_errors != "strict"
            or any(isinstance(arg, bool | memoryview | bytearray) for arg in args)
        ):  # what hiredis would encode otherwise than redis-py (or refuse to)
            return _python_packed(base, self, args)
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type redis-py's encoder names (DataError)
            return _python_packed(base, self, args)

    return type(f"Hiredis{base.__name__}", (base,), {"pack_command": pack_command})


def _python_packed(base: type[AbstractConnection], conn: AbstractConnection, args: tuple[Any, ...]) -> list[bytes]:
    packed: list[bytes] = base.pack_command(conn, *args)
    return packed
