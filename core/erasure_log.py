"""The erasure log: every erasure asked for, kept outside the backups so that ``ecrm restore`` applies again the
ones made after a backup was taken and a restore never brings an erased customer back.

An erasure is logged where it is asked for (``ecrm forget``, ``DELETE /v1/customers/{id}``), before it is done, in
two places: the tenant's Redis stream ``{p}:{g}:erasure_log`` (:attr:`core.keyspace.Keys.erasure_log`; its entry
ids hold the server's time, ``c`` the customer id), which a backup leaves out and a restore keeps, and, when
``ECRM_ERASURE_LOG_FILE`` names one, a file of JSON lines (``{"customer_id": ..., "at_ms": ..., "tenant": ...}``;
a line without ``tenant`` is the tenant ``default``'s) that survives the loss of Redis itself. Logging first means
an erasure that failed half-way is still applied again on a restore (erasing is idempotent).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis

from core.keyspace import Keys
from core.redis import redis_errors
from core.tenants import DEFAULT_TENANT, TenantError, validate_tenant


@dataclass(frozen=True, slots=True, order=True)
class Erasure:
    at_ms: int
    customer_id: str
    tenant: str = DEFAULT_TENANT


async def record(client: aioredis.Redis, keys: Keys, customer_id: str, file: str = "") -> None:
    """Log an erasure of ``customer_id`` (before it is done): the Redis stream, and the file if one is named."""
    with redis_errors(f"logging the erasure of customer {customer_id!r}"):
        await client.xadd(keys.erasure_log, {"c": customer_id})
    if file:
        append_file(Path(file), Erasure(int(time.time() * 1000), customer_id, keys.tenant))


def append_file(path: Path, erasure: Erasure) -> None:
    """One JSON line, appended and flushed to disk (an erasure is rare; losing one is not acceptable)."""
    line = orjson.dumps({"customer_id": erasure.customer_id, "at_ms": erasure.at_ms, "tenant": erasure.tenant}) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_stream(client: redis.Redis, keys: Keys, since_ms: int) -> list[Erasure]:
    """The erasures logged in ``keys``' tenant's Redis stream at or after ``since_ms`` (a blocking client)."""
    out: list[Erasure] = []
    with redis_errors("reading the erasure log"):
        start = f"{since_ms}-0"
        while True:
            page = client.xrange(keys.erasure_log, min=start, count=1000)
            for entry_id, fields in page:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                raw = fields.get(b"c", fields.get("c"))
                customer = raw.decode() if isinstance(raw, bytes) else str(raw)
                out.append(Erasure(int(eid.split("-")[0]), customer, keys.tenant))
            if len(page) < 1000:
                return out
            last = page[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def read_file(path: Path, since_ms: int) -> list[Erasure]:
    """The erasures of a log file at or after ``since_ms`` (a torn last line, from a crash, is skipped)."""
    if not path.is_file():
        return []
    return [e for e in _parse(path.read_bytes().splitlines()) if e.at_ms >= since_ms]


def _parse(lines: Iterable[bytes]) -> Iterator[Erasure]:
    for line in lines:
        try:
            obj = orjson.loads(line)
            tenant = validate_tenant(obj.get("tenant", DEFAULT_TENANT))
            yield Erasure(int(obj["at_ms"]), str(obj["customer_id"]), tenant)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, TenantError, AttributeError):
            continue


def merged(*logs: Iterable[Erasure]) -> list[Erasure]:
    """Each customer of each tenant once, at the time of their last erasure, in time order (pure)."""
    last: dict[tuple[str, str], int] = {}
    for log in logs:
        for erasure in log:
            who = (erasure.tenant, erasure.customer_id)
            last[who] = max(erasure.at_ms, last.get(who, 0))
    return sorted(Erasure(at, customer, tenant) for (tenant, customer), at in last.items())
