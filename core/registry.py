"""Model versions in Redis, so every API replica can load them without a shared disk.

A version is its npz bytes plus JSON metadata (training info, holdout metrics, promotion decision). Promoted
versions form a list, newest first; ``current`` names the one served. The last K promoted versions are kept;
``rollback`` serves the previous one again. When the retraining gate finds that a simple baseline (popularity,
trending, buy-again, recently viewed) beats the engine on the newest window, the registry records which one serves
the personal lists instead, and why (:meth:`Registry.serve_baseline`), until a version beats it
(:meth:`Registry.clear_baseline`). The registry also keeps the training bookkeeping: the lock one
training holds, and the interaction count and time of the last one (the worker's retraining trigger).

:class:`Registry` is the blocking side (the trainer, the command line); :class:`AsyncRegistry` the asyncio side
(the API loading versions, the worker deciding when to train). Both name keys through :mod:`core.keyspace` and
raise only :mod:`core.errors` exceptions: :class:`~core.errors.StoreUnavailable` when Redis fails,
:class:`~core.errors.RegistryError` when a version asked for does not exist.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from core.errors import RegistryError
from core.keyspace import Keys
from core.redis import redis_errors

LOCK_TTL_MS = 30 * 60 * 1000


def new_version_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"v{stamp}-{uuid.uuid4().hex[:6]}"


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _baseline_record(raw: Any) -> dict[str, Any] | None:
    """The stored record, or None when absent or unreadable (then the engine serves: never worse than before)."""
    if raw is None:
        return None
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("baseline"), str) else None


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    meta: dict[str, Any]

    @property
    def ndcg(self) -> float | None:
        value = self.meta.get("holdout", {}).get("ndcg@10")
        return float(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """What the retraining trigger needs: interactions logged so far, and the count and time of the last training."""

    interactions: int
    trained_count: int | None
    trained_at_ms: int | None
    busy: bool


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    version: str
    blob: bytes
    meta: dict[str, Any]


class Registry:
    """Blocking registry used by the trainer and the command line (a client that returns bytes)."""

    def __init__(self, client: redis.Redis, keys: Keys, keep: int) -> None:
        self.client = client
        self.keys = keys
        self.keep = keep

    def current(self) -> str | None:
        with redis_errors("reading the served model version"):
            return _text(self.client.get(self.keys.model_current))

    def info(self, version: str) -> VersionInfo:
        with redis_errors(f"reading model version {version!r}"):
            raw = self.client.get(self.keys.model_meta(version))
        if raw is None:
            raise RegistryError(f"no model version {version!r}")
        return VersionInfo(version, orjson.loads(raw))

    def blob(self, version: str) -> bytes:
        with redis_errors(f"reading model version {version!r}"):
            raw = self.client.get(self.keys.model_blob(version))
        if raw is None:
            raise RegistryError(f"no stored model for version {version!r}")
        return bytes(raw)

    def promoted(self) -> list[str]:
        """Promoted versions still kept, newest first."""
        with redis_errors("reading the model versions"):
            return [v.decode() for v in self.client.lrange(self.keys.model_versions, 0, -1)]

    def record_rejected(self, version: str, meta: dict[str, Any]) -> None:
        """Keep the metadata of a refused version for a day (for ``ecrm model list`` and the logs)."""
        with redis_errors(f"recording refused version {version!r}"):
            self.client.set(self.keys.model_meta(version), orjson.dumps(meta), ex=86_400)

    def promote(self, version: str, blob: bytes, meta: dict[str, Any]) -> list[str]:
        """Store and serve ``version``; drop the versions beyond the last K. Returns the dropped ones."""
        k = self.keys
        with redis_errors(f"promoting model version {version!r}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(k.model_blob(version), blob)
            pipe.set(k.model_meta(version), orjson.dumps(meta))
            pipe.lpush(k.model_versions, version)
            pipe.set(k.model_current, version)
            pipe.execute()
        return self._trim()

    def rollback(self) -> str:
        """Serve the previous promoted version again; the current one leaves the history. Returns the new current."""
        versions = self.promoted()
        if len(versions) < 2:
            raise RegistryError("no earlier model version to roll back to")
        current, previous = versions[0], versions[1]
        with redis_errors("rolling back the model version"):
            pipe = self.client.pipeline(transaction=True)
            pipe.lrem(self.keys.model_versions, 1, current)
            pipe.set(self.keys.model_current, previous)
            pipe.delete(self.keys.model_blob(current))
            pipe.execute()
        return previous

    def _trim(self) -> list[str]:
        with redis_errors("trimming the model versions"):
            dropped = [v.decode() for v in self.client.lrange(self.keys.model_versions, self.keep, -1)]
            if dropped:
                pipe = self.client.pipeline(transaction=True)
                pipe.ltrim(self.keys.model_versions, 0, self.keep - 1)
                for version in dropped:
                    pipe.delete(self.keys.model_blob(version), self.keys.model_meta(version))
                pipe.execute()
        return dropped

    # ----- the baseline the gate serves instead of the engine -----

    def baseline(self) -> dict[str, Any] | None:
        """The gate's record of the baseline served for personal lists (``baseline``, ``reason``, ``since``, ...),
        or None while the engine serves."""
        with redis_errors("reading the served baseline"):
            raw = self.client.get(self.keys.model_baseline)
        return _baseline_record(raw)

    def serve_baseline(self, record: dict[str, Any]) -> None:
        """Serve ``record["baseline"]`` instead of the engine for personal lists (``record``: why, figures); the
        time it began is kept while the same baseline stays served."""
        previous = self.baseline()
        since = previous.get("since") if previous and previous.get("baseline") == record.get("baseline") else None
        record = {**record, "since": since or datetime.now(tz=UTC).isoformat()}
        with redis_errors("recording the served baseline"):
            self.client.set(self.keys.model_baseline, orjson.dumps(record))

    def clear_baseline(self) -> None:
        """The engine serves the personal lists again."""
        with redis_errors("clearing the served baseline"):
            self.client.delete(self.keys.model_baseline)

    # ----- training bookkeeping -----

    def acquire_training_lock(self, token: str) -> bool:
        """True when this caller now holds the training lock (it expires after 30 minutes)."""
        with redis_errors("taking the training lock"):
            return bool(self.client.set(self.keys.model_lock, token, nx=True, px=LOCK_TTL_MS))

    def release_training_lock(self, token: str) -> None:
        with redis_errors("releasing the training lock"):
            if _text(self.client.get(self.keys.model_lock)) == token:
                self.client.delete(self.keys.model_lock)

    def interactions_logged(self) -> int:
        with redis_errors("reading the interaction count"):
            return int(self.client.get(self.keys.interactions_count) or 0)

    def record_training(self, count: int, at_ms: int) -> None:
        """Remember the interaction count a training started from, and when it ended."""
        with redis_errors("recording the training"):
            self.client.hset(self.keys.model_trained, mapping={"count": count, "at": at_ms})


class AsyncRegistry:
    """The asyncio side: the API loads versions, the worker reads the training status."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def current(self) -> str | None:
        with redis_errors("reading the served model version"):
            return _text(await self.client.get(self.keys.model_current))

    async def load(self, version: str) -> LoadedVersion | None:
        """A version's bytes and metadata; None when its blob is gone."""
        with redis_errors(f"loading model version {version!r}"):
            blob, meta = await self.client.mget([self.keys.model_blob(version), self.keys.model_meta(version)])
        if blob is None:
            return None
        raw = blob if isinstance(blob, bytes) else str(blob).encode()
        return LoadedVersion(version, raw, orjson.loads(meta) if meta else {})

    async def baseline(self) -> dict[str, Any] | None:
        """The gate's record of the baseline served instead of the engine, or None (see :meth:`Registry.baseline`)."""
        with redis_errors("reading the served baseline"):
            raw = await self.client.get(self.keys.model_baseline)
        return _baseline_record(raw)

    async def training_status(self) -> TrainingStatus:
        with redis_errors("reading the training status"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.interactions_count)
                pipe.hgetall(self.keys.model_trained)
                pipe.exists(self.keys.model_lock)
                count, trained, busy = await pipe.execute()
        trained = {_text(k): _text(v) for k, v in trained.items()}
        return TrainingStatus(
            interactions=int(count or 0),
            trained_count=int(trained["count"]) if trained.get("count") else None,
            trained_at_ms=int(trained["at"]) if trained.get("at") else None,
            busy=bool(busy),
        )
