"""Model versions as memory-mapped files, shared by the API processes of one host (``ecrm api --workers N``).

The first process that needs a version fetches its blob from the registry and unpacks its arrays as plain
``.npy`` files into ``<ECRM_API_MODEL_DIR>/<key prefix>/<version>/`` (written to a private folder, then renamed
into place, so no process ever sees half a version); every process then memory-maps them. The large arrays (item
factors, transitions, item-item neighbours) are so held once per host in the page cache, however many processes
serve them; each process keeps its own item-id index and candidate index. A version's files never change (version
ids are unique), and the newest ``KEEP_VERSIONS`` versions stay on disk; older ones are removed (a process still
mapping one keeps its pages until it swaps).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from core.private_dir import private_dir
from recommender.model import KIND, Engine
from recommender.serialize import unpack_to_dir

KEEP_VERSIONS = 3
STALE_S = 3600.0
META = "meta.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / f"ecrm-models-{os.getuid()}"


class ModelFiles:
    """The versions unpacked under one folder (one per key prefix, so deployments sharing a host stay apart)."""

    def __init__(self, root: Path, prefix: str, keep: int = KEEP_VERSIONS) -> None:
        self.base = root
        self.root = root / prefix
        self.keep = keep

    def path(self, version: str) -> Path:
        if not _SAFE.match(version):
            raise ValueError(f"model version {version!r} is not a safe folder name")
        return self.root / version

    def has(self, version: str) -> bool:
        return (self.path(version) / META).is_file()

    def write(self, version: str, blob: bytes, meta: dict[str, Any]) -> None:
        """Unpack a version's blob (ValueError when it is corrupt); a no-op when another process was first."""
        final = self.path(version)
        private_dir(self.base, "the model folder (ECRM_API_MODEL_DIR)")
        self.root.mkdir(mode=0o700, exist_ok=True)
        staging = self.root / f".{version}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        try:
            unpack_to_dir(KIND, blob, staging)
            (staging / META).write_bytes(orjson.dumps(meta))
            try:
                staging.rename(final)
            except OSError:  # another process renamed its copy first: theirs is the same version
                if not self.has(version):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def open(self, version: str) -> tuple[Engine, dict[str, Any]]:
        """The version's model, memory-mapped, and its metadata. ValueError when its files cannot be read."""
        path = self.path(version)
        try:
            meta = orjson.loads((path / META).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the metadata of model version {version}: {exc}") from exc
        return Engine.from_dir(path), meta if isinstance(meta, dict) else {}

    def prune(self, serving: str) -> None:
        """Remove all but the newest ``keep`` versions (by the time they were unpacked), never ``serving``, and
        what a process killed while unpacking left (private folders older than ``STALE_S``)."""
        if not self.root.is_dir():
            return
        for staging in self.root.glob(".*"):
            if staging.is_dir() and time.time() - staging.stat().st_mtime > STALE_S:
                shutil.rmtree(staging, ignore_errors=True)
        versions = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in versions[self.keep :]:
            if old.name != serving:
                shutil.rmtree(old, ignore_errors=True)
