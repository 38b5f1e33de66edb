"""The data folder of ``ecrm up --data-dir DIR`` (or ``ECRM_DATA_DIR``): what a restart on the same folder serves
again at once.

Layout::

    DIR/ecrm-data.json   the folder's manifest: format, engine version and key layout that wrote it
    DIR/ecrm.lock        held (flock) by the running engine; holds its pid
    DIR/redis/           Valkey's append-only files (appendfsync everysec) and snapshots (dump.rdb)
    DIR/models/          the model versions unpacked as memory-mapped files (ECRM_API_MODEL_DIR)
    DIR/erasures.jsonl   every erasure asked for (ECRM_ERASURE_LOG_FILE), read by ``ecrm restore``
    DIR/training-log/    the training-log store: the trainer's copy of the interactions (ECRM_TRAINING_LOG_DIR)

A folder held by another running engine is refused (the lock names its pid), and so is one written by a newer
engine (a format or key layout above this one's); one of an older key layout is upgraded when its Redis has started
(``ecrm migrate-keys``' code, :func:`runtime.local.start_stack`), then its manifest names this layout. The broker
stays memory-only: see docs/deployment.md for what a crash can lose.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from core.keyspace import KEY_LAYOUT_VERSION

DATA_FORMAT = 1
MANIFEST = "ecrm-data.json"
LOCK = "ecrm.lock"


class DataDirError(RuntimeError):
    """The data folder cannot be used (held by another engine, written by a newer one, not writable)."""


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ecrm-engine")
    except PackageNotFoundError:  # pragma: no cover - the project is installed in development
        return "0+unknown"


@dataclass
class DataDir:
    """An opened data folder: locked for this process until :meth:`release`."""

    root: Path
    fresh: bool  # True when the folder held no engine data before (the demo may seed it)
    _lock: IO[str] | None = None
    layout: int = KEY_LAYOUT_VERSION  # the key layout of the data it holds (older: to upgrade)

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def training_log_dir(self) -> Path:
        return self.root / "training-log"

    @property
    def erasure_log(self) -> Path:
        return self.root / "erasures.jsonl"

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None


def open_data_dir(root: Path) -> DataDir:
    """Create or reopen ``root``, take its lock and check its manifest (DataDirError otherwise)."""
    root = root.expanduser().resolve()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = _take_lock(root / LOCK)
    except OSError as exc:
        raise DataDirError(f"data folder {root}: {exc.strerror or exc}") from exc
    try:
        fresh, layout = _check_manifest(root)
        for sub in ("redis", "models"):
            (root / sub).mkdir(mode=0o700, exist_ok=True)
    except BaseException:
        lock.close()
        raise
    return DataDir(root, fresh, lock, layout)


def _take_lock(path: Path) -> IO[str]:
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of the engine
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirError(
            f"data folder {path.parent} is in use by another running engine (pid {holder}); stop it first, or "
            "give this one another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_manifest(root: Path) -> tuple[bool, int]:
    """Whether the folder is new (a manifest is written) and the key layout of its data; DataDirError when a newer
    engine wrote it."""
    path = root / MANIFEST
    if not path.exists():
        if (root / "redis").exists() and any((root / "redis").iterdir()):
            raise DataDirError(f"data folder {root} holds Redis files but no {MANIFEST}: not an ecrm data folder?")
        write_manifest(path)
        return True, KEY_LAYOUT_VERSION
    try:
        found = orjson.loads(path.read_bytes())
        data_format, layout = int(found["format"]), int(found["key_layout"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataDirError(f"data folder {root}: {MANIFEST} cannot be read ({exc})") from exc
    if data_format > DATA_FORMAT or layout > KEY_LAYOUT_VERSION:
        raise DataDirError(
            f"data folder {root} was written by a newer engine ({found.get('engine_version', '?')}: folder format "
            f"{data_format}, key layout {layout}); this engine ({engine_version()}) reads format {DATA_FORMAT}, "
            f"key layout {KEY_LAYOUT_VERSION} at most"
        )
    return False, layout


def write_manifest(path: Path) -> None:
    manifest = {
        "format": DATA_FORMAT,
        "key_layout": KEY_LAYOUT_VERSION,
        "engine_version": engine_version(),
        "created_ms": int(time.time() * 1000),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
