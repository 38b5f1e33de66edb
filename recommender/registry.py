"""Model versions in Redis, so every API replica can load them without a shared disk.

A version is its npz bytes plus JSON metadata (training info, holdout metrics, promotion decision). Promoted
versions form a list, newest first; ``current`` names the one served. The last K promoted versions are kept;
``rollback`` serves the previous one again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from redis.exceptions import RedisError

from ecrm.keys import Keys


class RegistryError(RuntimeError):
    """Redis failed, or a version asked for does not exist."""


def new_version_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"v{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    meta: dict[str, Any]

    @property
    def ndcg(self) -> float | None:
        value = self.meta.get("holdout", {}).get("ndcg@10")
        return float(value) if value is not None else None


class Registry:
    """Synchronous registry used by the trainer and the command line (the API reads with its own async client)."""

    def __init__(self, client: redis.Redis, keys: Keys, keep: int) -> None:
        self.client = client
        self.keys = keys
        self.keep = keep

    def current(self) -> str | None:
        value = self._call(self.client.get, self.keys.model_current)
        return value.decode() if isinstance(value, bytes) else value

    def info(self, version: str) -> VersionInfo:
        raw = self._call(self.client.get, self.keys.model_meta(version))
        if raw is None:
            raise RegistryError(f"no model version {version!r}")
        return VersionInfo(version, orjson.loads(raw))

    def blob(self, version: str) -> bytes:
        raw = self._call(self.client.get, self.keys.model_blob(version))
        if raw is None:
            raise RegistryError(f"no stored model for version {version!r}")
        return bytes(raw)

    def promoted(self) -> list[str]:
        """Promoted versions still kept, newest first."""
        return [v.decode() for v in self._call(self.client.lrange, self.keys.model_versions, 0, -1)]

    def record_rejected(self, version: str, meta: dict[str, Any]) -> None:
        """Keep the metadata of a refused version for a day (for ``ecrm model list`` and the logs)."""
        self._call(self.client.set, self.keys.model_meta(version), orjson.dumps(meta), ex=86_400)

    def promote(self, version: str, blob: bytes, meta: dict[str, Any]) -> list[str]:
        """Store and serve ``version``; drop the versions beyond the last K. Returns the dropped ones."""
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.set(k.model_blob(version), blob)
        pipe.set(k.model_meta(version), orjson.dumps(meta))
        pipe.lpush(k.model_versions, version)
        pipe.set(k.model_current, version)
        self._call(pipe.execute)
        return self._trim()

    def rollback(self) -> str:
        """Serve the previous promoted version again; the current one leaves the history. Returns the new current."""
        versions = self.promoted()
        if len(versions) < 2:
            raise RegistryError("no earlier model version to roll back to")
        current, previous = versions[0], versions[1]
        pipe = self.client.pipeline(transaction=True)
        pipe.lrem(self.keys.model_versions, 1, current)
        pipe.set(self.keys.model_current, previous)
        pipe.delete(self.keys.model_blob(current))
        self._call(pipe.execute)
        return previous

    def _trim(self) -> list[str]:
        dropped = [v.decode() for v in self._call(self.client.lrange, self.keys.model_versions, self.keep, -1)]
        if dropped:
            pipe = self.client.pipeline(transaction=True)
            pipe.ltrim(self.keys.model_versions, 0, self.keep - 1)
            for version in dropped:
                pipe.delete(self.keys.model_blob(version), self.keys.model_meta(version))
            self._call(pipe.execute)
        return dropped

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise RegistryError(f"model registry: {exc}") from exc
