"""The training-log store: the trainer's own columnar copy of the interactions on disk, so that Redis holds only the
tail of the training log (``{g}:interactions``) not yet copied.

Layout of the store (``ECRM_TRAINING_LOG_DIR``/<key prefix>/<tenant>/, 0700: one store per tenant, as each tenant
has its own training log)::

    manifest.json       format, the store's id, the last stream id copied, the segments in log order, the erasures
                        applied; written to a temporary file, flushed to disk, then renamed over the old one
    seg-*.npz           one segment each: columns of coded ids with their dictionaries, weights, times, id range
                        (trainer/logsegments.py); never changed once written, only replaced
    store.lock          flock: exclusive while draining or restoring, shared while reading or backing up

**Draining** (:meth:`TrainingLogStore.drain`, at the start of every training and on the worker's timer,
``ECRM_TRAINING_LOG_DRAIN_S``) reads the stream after the manifest's last id, writes a segment, writes the
manifest naming it, then trims the stream (``XTRIM MINID``) past it. A crash between two steps neither loses nor
duplicates an entry: a segment the manifest does not name is deleted at the next drain, and entries the stream still
holds up to the manifest's id are skipped by readers and trimmed by the next drain. Then the erasures since the last
drain are applied to the segments (a segment holding an erased profile's entries is rewritten without them),
segments are merged (a binary-counter policy) and the total is bounded by ``ECRM_INTERACTIONS_LOG_MAXLEN`` (the
oldest entries go).

**One store per log**: the store's id is recorded in Redis (``{g}:training_log:store``, in the tenant's global slot)
by its first drain; a store
with another id (another host's folder) refuses to drain or read with :class:`TrainingLogSplit`, since the log would
be split between two folders. A store whose Redis no longer knows it (a new or flushed Redis) sets its old content
aside in ``retired-<id>/`` and starts afresh.

**Reading** (:meth:`TrainingLogStore.read`) gives exactly what :func:`trainer.log.read_interactions` gives on the
same entries: the segments and the Redis tail, ids coded in order of first appearance, erased profiles' entries up
to their erasure left out, visitors mapped to customers.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from core.errors import TrainingError
from core.keyspace import Keys
from core.private_dir import private_dir
from core.redis import redis_errors
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from recommender.data import Interactions
from trainer import logsegments as seg
from trainer.log import CodedLog, code_columns, erasures, gc_paused, parse_chunk, raw_client, read_columns
from trainer.log import training_data as _training_data

Echo = Callable[[str], None]
Step = Callable[[str], None]
"""Called after each durable step of a drain (``segment``, ``manifest``, ``trim``): tests interrupt there."""

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = "store.lock"
DRAIN_ROWS = 250_000  # entries per segment a drain writes (and per progress line)
SEGMENT_ROWS = 1 << 20  # segments are merged up to this many entries
ERASURE_MARGIN_MS = 600_000  # erasures this much older than the newest applied are checked again (clock skew)
PROGRESS_S = 2.0


class TrainingLogError(TrainingError):
    """The training-log store cannot be used (a damaged manifest or segment, a folder that is not private)."""


class TrainingLogSplit(TrainingLogError):
    """Redis' training log is drained by another store (another host's folder)."""


def default_dir(env: dict[str, str] | None = None) -> Path:
    """The store's folder when ``ECRM_TRAINING_LOG_DIR`` is not set: in ``ECRM_DATA_DIR`` when set, else in the
    temp dir (as the model files)."""
    env = dict(os.environ) if env is None else env
    if env.get("ECRM_DATA_DIR"):
        return Path(env["ECRM_DATA_DIR"]).expanduser() / "training-log"
    return Path(tempfile.gettempdir()) / f"ecrm-training-log-{os.getuid()}"


def store_dir(settings: Settings, tenant: str = DEFAULT_TENANT) -> Path:
    """The store's folder for these settings' key prefix and ``tenant`` (not created here)."""
    base = Path(settings.training_log_dir).expanduser() if settings.training_log_dir else default_dir()
    return base / settings.key_prefix / tenant


@dataclass
class SegmentInfo:
    name: str
    rows: int
    first_id: seg.StreamId
    last_id: seg.StreamId
    size: int  # bytes on disk

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "first_id": seg.format_id(self.first_id),
            "last_id": seg.format_id(self.last_id),
            "bytes": self.size,
        }

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> SegmentInfo:
        return cls(
            str(raw["name"]),
            int(raw["rows"]),
            seg.parse_id(raw["first_id"]),
            seg.parse_id(raw["last_id"]),
            int(raw["bytes"]),
        )


@dataclass
class Manifest:
    store_id: str
    last_id: seg.StreamId = seg.ZERO_ID  # every stream entry up to this id is in the segments (or was dropped)
    segments: list[SegmentInfo] = field(default_factory=list)
    erasures_ms: float = 0.0  # the newest erasure applied to the segments
    erasures_count: int = 0  # how many erased profiles Redis listed then

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "store_id": self.store_id,
            "last_id": seg.format_id(self.last_id),
            "segments": [s.as_json() for s in self.segments],
            "erasures_ms": self.erasures_ms,
            "erasures_count": self.erasures_count,
        }

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        data = orjson.loads(raw)
        if int(data["format"]) > FORMAT:
            raise TrainingLogError(f"training-log store of a newer format ({data['format']} > {FORMAT})")
        return cls(
            str(data["store_id"]),
            seg.parse_id(data["last_id"]),
            [SegmentInfo.parse(s) for s in data["segments"]],
            float(data.get("erasures_ms", 0.0)),
            int(data.get("erasures_count", 0)),
        )


@dataclass
class DrainResult:
    drained: int = 0  # entries copied from Redis
    trimmed: int = 0  # entries removed from Redis
    rewritten: int = 0  # segments rewritten without erased entries
    merged: int = 0  # segments merged into others
    dropped: int = 0  # oldest entries dropped by the bound
    seconds: float = 0.0
    retired: str | None = None  # where an earlier Redis' store was set aside


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable[[Any], None]) -> int:
    """Write ``path`` through a temporary file flushed to disk, renamed over it; returns its size."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path.stat().st_size


def write_npz(handle: Any, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` (what ``np.load`` reads) deflated at level 1: several times faster to write than
    ``np.savez_compressed``'s default level, and the coded columns still shrink several-fold."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


class TrainingLogStore:
    """One tenant's store (of one key prefix) in ``root`` (see the module's docstring)."""

    def __init__(self, root: Path, client: redis.Redis, keys: Keys, maxlen: int) -> None:
        self.root = root
        self.client = client
        self.keys = keys
        self.maxlen = maxlen

    @classmethod
    def of(cls, settings: Settings, client: redis.Redis, tenant: str = DEFAULT_TENANT) -> TrainingLogStore:
        keys = Keys(settings.key_prefix, tenant)
        return cls(store_dir(settings, tenant), client, keys, settings.interactions_log_maxlen)

    # ----- files -----

    def _open(self) -> None:
        try:
            private_dir(self.root.parent.parent, "the training-log folder (ECRM_TRAINING_LOG_DIR)")
            private_dir(self.root.parent, "the training-log folder (ECRM_TRAINING_LOG_DIR)")
            private_dir(self.root, "the training-log folder (ECRM_TRAINING_LOG_DIR)")
        except OSError as exc:
            raise TrainingLogError(f"training-log folder {self.root}: {exc.strerror or exc}") from exc

    @contextmanager
    def locked(self, exclusive: bool, wait: bool = True) -> Iterator[bool]:
        """The store's lock (exclusive: draining, restoring; shared: reading, backing up). With ``wait=False``
        yields False at once when another process holds it."""
        self._open()
        handle = open(self.root / LOCK, "a+")  # noqa: SIM115 - closed below
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(handle.fileno(), mode if wait else mode | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            handle.close()

    def manifest(self) -> Manifest | None:
        path = self.root / MANIFEST
        try:
            return Manifest.parse(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingLogError(f"training-log store {self.root}: {MANIFEST} cannot be read ({exc})") from exc

    def _write_manifest(self, manifest: Manifest) -> None:
        data = orjson.dumps(manifest.as_json(), option=orjson.OPT_INDENT_2)
        _write_atomic(self.root / MANIFEST, lambda handle: handle.write(data))

    def _write_segment(self, segment: seg.Segment) -> SegmentInfo:
        name = f"seg-{segment.first_id[0]}-{segment.first_id[1]}-{uuid.uuid4().hex[:8]}.npz"
        arrays = seg.to_arrays(segment)
        size = _write_atomic(self.root / name, lambda handle: write_npz(handle, arrays))
        return SegmentInfo(name, len(segment), segment.first_id, segment.last_id, size)

    def load_segment(self, info: SegmentInfo) -> seg.Segment:
        try:
            with np.load(self.root / info.name, allow_pickle=False) as arrays:
                loaded = seg.from_arrays({k: arrays[k] for k in arrays.files})
        except (OSError, ValueError) as exc:
            raise TrainingLogError(f"training-log segment {self.root / info.name} cannot be read ({exc})") from exc
        if len(loaded) != info.rows:
            raise TrainingLogError(f"training-log segment {self.root / info.name}: {len(loaded)} rows, not {info.rows}")
        return loaded

    def _profile_ids(self, info: SegmentInfo) -> tuple[str, ...]:
        try:
            with np.load(self.root / info.name, allow_pickle=False) as arrays:
                return seg.decode_ids(arrays["profile_blob"], arrays["profile_ends"])
        except (OSError, KeyError, ValueError) as exc:
            raise TrainingLogError(f"training-log segment {self.root / info.name} cannot be read ({exc})") from exc

    def files(self) -> list[Path]:
        """The store's files a copy needs (the manifest last, since it names the segments)."""
        manifest = self.manifest()
        if manifest is None:
            return []
        return [*(self.root / s.name for s in manifest.segments), self.root / MANIFEST]

    def _sweep(self, manifest: Manifest) -> None:
        """Delete the segments the manifest does not name (a drain or a merge cut off before its manifest)."""
        named = {s.name for s in manifest.segments}
        for path in self.root.iterdir():
            if (path.name.startswith("seg-") and path.suffix == ".npz" and path.name not in named) or (
                path.name.startswith(".") and path.name.endswith(".tmp")
            ):
                path.unlink(missing_ok=True)

    # ----- identity -----

    def _claimed(self) -> str | None:
        with redis_errors("reading the training-log store's id"):
            raw = self.client.get(self.keys.training_log_store)
        return raw.decode() if isinstance(raw, bytes) else raw

    def _split(self, manifest: Manifest | None, claimed: str) -> TrainingLogSplit:
        ours = f"id {manifest.store_id}" if manifest is not None else "empty"
        return TrainingLogSplit(
            f"the training log of key prefix {self.keys.prefix!r} is drained by another training-log store (id "
            f"{claimed}), not by this one ({self.root}, {ours}): every process that trains or "
            "drains must use one folder (ECRM_TRAINING_LOG_DIR on one shared volume). If the other store is lost "
            f"for good, delete the Redis key {self.keys.training_log_store} to let this one take over (the "
            "history the other held is lost)"
        )

    def _bind(self, manifest: Manifest | None, echo: Echo, result: DrainResult) -> Manifest:
        """The manifest of a store Redis knows as the one that drains its log (created or set aside as needed)."""
        claimed = self._claimed()
        if manifest is not None and claimed == manifest.store_id:
            return manifest
        if manifest is not None and claimed is not None:
            raise self._split(manifest, claimed)
        if manifest is not None and (manifest.segments or manifest.last_id != seg.ZERO_ID):
            # Redis does not know this store: a new or flushed Redis. Its history is of another log: set aside.
            aside = self.root / f"retired-{manifest.store_id}"
            aside.mkdir(mode=0o700, exist_ok=True)
            for path in self.files():
                path.replace(aside / path.name)
            _fsync_dir(self.root)
            result.retired = str(aside)
            echo(
                f"training-log store {self.root}: Redis does not know it (a new or flushed Redis); its "
                f"{manifest.rows} entries are set aside in {aside}"
            )
            manifest = None
        if manifest is None:
            manifest = Manifest(uuid.uuid4().hex)
            self._write_manifest(manifest)
        with redis_errors("recording the training-log store's id"):
            self.client.set(self.keys.training_log_store, manifest.store_id, nx=True)
        claimed = self._claimed()
        if claimed != manifest.store_id:
            raise self._split(manifest, claimed or "?")
        return manifest

    # ----- draining -----

    def drain(self, echo: Echo = lambda _: None, step: Step = lambda _: None, wait: bool = True) -> DrainResult | None:
        """Copy the stream's entries after the manifest's id into segments and trim them from Redis; apply new
        erasures, merge, bound. None when ``wait`` is False and another process holds the store."""
        with self.locked(exclusive=True, wait=wait) as held:
            if not held:
                return None
            return self._drain(echo, step)

    def _drain(self, echo: Echo, step: Step) -> DrainResult:
        started = time.monotonic()
        result = DrainResult()
        manifest = self._bind(self.manifest(), echo, result)
        self._sweep(manifest)
        erased = erasures(self.client, self.keys)
        manifest = self._copy_tail(manifest, erased, echo, step, result)
        manifest = self._apply_erasures(manifest, erased, result)
        manifest = self._compact(manifest, result)
        result.seconds = time.monotonic() - started
        if result.seconds >= PROGRESS_S:
            echo(
                f"training log drained: {result.drained} entries copied in {result.seconds:.1f}s; the store holds "
                f"{manifest.rows} entries in {len(manifest.segments)} segments ({manifest.size / 1e6:.1f} MB)"
            )
        return result

    def _copy_tail(
        self, manifest: Manifest, erased: dict[str, float], echo: Echo, step: Step, result: DrainResult
    ) -> Manifest:
        raw = raw_client(self.client, self.keys.interactions)
        key = self.keys.interactions
        with redis_errors("reading the training log"):
            last = raw.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
            waiting = int(self.client.xlen(key))
        if not last:
            return manifest
        end = last[0][0].decode()  # a snapshot: entries added meanwhile wait for the next drain
        last_progress = time.monotonic()
        while seg.parse_id(end) > manifest.last_id:
            with redis_errors("reading the training log"):
                start = f"({seg.format_id(manifest.last_id)}"
                rows = raw.execute_command("XRANGE", key, start, end, "COUNT", DRAIN_ROWS)
            if not rows:
                break
            with gc_paused():
                log = code_columns(parse_chunk(rows))
            first_id, last_id = seg.parse_id(rows[0][0]), seg.parse_id(rows[-1][0])
            kept = seg.without_erased(log, erased) or log
            added: list[SegmentInfo] = []
            if len(kept.ts):
                added.append(self._write_segment(seg.Segment(kept, first_id, last_id)))
            step("segment")
            manifest = Manifest(
                manifest.store_id, last_id, [*manifest.segments, *added], manifest.erasures_ms, manifest.erasures_count
            )
            self._write_manifest(manifest)
            step("manifest")
            result.drained += len(rows)
            result.trimmed += self._trim(last_id)
            step("trim")
            if time.monotonic() - last_progress >= PROGRESS_S:
                echo(f"draining the training log: {result.drained} of about {waiting} entries copied")
                last_progress = time.monotonic()
        return manifest

    def _trim(self, upto: seg.StreamId) -> int:
        """Remove the stream's entries up to ``upto`` (they are in the store)."""
        with redis_errors("trimming the training log"):
            return int(
                self.client.execute_command("XTRIM", self.keys.interactions, "MINID", seg.format_id(seg.next_id(upto)))
            )

    def _replace(self, manifest: Manifest, segments: list[SegmentInfo], **changes: Any) -> Manifest:
        """A new manifest with ``segments``, written, and the files it no longer names deleted."""
        new = Manifest(
            manifest.store_id,
            changes.get("last_id", manifest.last_id),
            segments,
            changes.get("erasures_ms", manifest.erasures_ms),
            changes.get("erasures_count", manifest.erasures_count),
        )
        self._write_manifest(new)
        self._sweep(new)
        return new

    def _apply_erasures(self, manifest: Manifest, erased: dict[str, float], result: DrainResult) -> Manifest:
        """Rewrite the segments holding entries of profiles erased since the last drain (those entries dropped).
        Nothing to do when Redis lists as many erasures as then, the newest the same; else the erasures from a
        little before the newest applied on (an erasure logged late with an older time, from another host's clock)
        are looked for in the segments' dictionaries."""
        newest = max(erased.values(), default=0.0)
        if (newest, len(erased)) == (manifest.erasures_ms, manifest.erasures_count):
            return manifest
        recent = {p: at for p, at in erased.items() if at >= manifest.erasures_ms - ERASURE_MARGIN_MS}
        segments: list[SegmentInfo] = []
        for info in manifest.segments:
            if not recent or not seg.holds_any(self._profile_ids(info), recent):
                segments.append(info)
                continue
            loaded = self.load_segment(info)
            kept = seg.without_erased(loaded.log, erased)
            if kept is None:
                segments.append(info)
                continue
            result.rewritten += 1
            if len(kept.ts):
                segments.append(self._write_segment(seg.Segment(kept, loaded.first_id, loaded.last_id)))
        return self._replace(manifest, segments, erasures_ms=newest, erasures_count=len(erased))

    def _compact(self, manifest: Manifest, result: DrainResult) -> Manifest:
        """Merge the newest segments (binary-counter policy) and drop the oldest entries beyond the bound."""
        while (run := seg.merge_run([s.rows for s in manifest.segments], SEGMENT_ROWS)) >= 2:
            parts = [self.load_segment(s) for s in manifest.segments[-run:]]
            merged = seg.Segment(seg.concat([p.log for p in parts]), parts[0].first_id, parts[-1].last_id)
            info = self._write_segment(merged)
            manifest = self._replace(manifest, [*manifest.segments[:-run], info])
            result.merged += run
        with redis_errors("reading the training log's length"):
            tail = int(self.client.xlen(self.keys.interactions))
        drop, keep = seg.trim_plan([s.rows for s in manifest.segments], tail, self.maxlen)
        if drop == 0 and keep < 0:
            return manifest
        rest = manifest.segments[drop:]
        result.dropped += sum(s.rows for s in manifest.segments[:drop])
        if keep >= 0 and rest:
            oldest = self.load_segment(rest[0])
            result.dropped += len(oldest) - keep
            cut = seg.Segment(seg.newest(oldest.log, keep), oldest.first_id, oldest.last_id)
            rest = ([self._write_segment(cut)] if keep else []) + rest[1:]
        return self._replace(manifest, rest)

    # ----- reading -----

    def read_log(self, chunk: int = 10_000, readers: int = 2) -> tuple[CodedLog, dict[str, float]]:
        """The segments and the Redis tail as one coded log (the newest ``maxlen`` entries), and the erasures."""
        with self.locked(exclusive=False):
            manifest = self.manifest()
            claimed = self._claimed()
            if claimed is not None and (manifest is None or claimed != manifest.store_id):
                raise self._split(manifest, claimed)
            bound = manifest if manifest is not None and claimed == manifest.store_id else None
            erased = erasures(self.client, self.keys)
            with gc_paused():
                parts = [self.load_segment(s).log for s in bound.segments] if bound else []
                after = seg.format_id(bound.last_id) if bound and bound.last_id != seg.ZERO_ID else None
                tail = read_columns(self.client, self.keys.interactions, chunk, readers, after=after)
                parts.append(code_columns(tail))
                log = seg.newest(seg.concat(parts), self.maxlen) if len(parts) > 1 else parts[0]
        return log, erased

    def read(self, chunk: int = 10_000, readers: int = 2) -> Interactions:
        """The training data: what :func:`trainer.log.read_interactions` gives on the same entries."""
        log, erased = self.read_log(chunk, readers)
        return _training_data(self.client, self.keys, log, erased)

    def status(self) -> dict[str, Any]:
        with self.locked(exclusive=False):
            manifest = self.manifest()
            claimed = self._claimed()
        return {
            "dir": str(self.root),
            "store_id": manifest.store_id if manifest else None,
            "redis_store_id": claimed,
            "last_id": seg.format_id(manifest.last_id) if manifest else None,
            "segments": len(manifest.segments) if manifest else 0,
            "entries": manifest.rows if manifest else 0,
            "bytes": manifest.size if manifest else 0,
        }

    # ----- backup -----

    def replace_files(self, files: dict[str, bytes]) -> None:
        """Replace the store's content by a backup's (its manifest and segments); the caller holds the lock
        (exclusive)."""
        if MANIFEST not in files:
            raise TrainingLogError(f"the training-log store's files lack {MANIFEST}")
        for name in files:
            if "/" in name or not (name == MANIFEST or (name.startswith("seg-") and name.endswith(".npz"))):
                raise TrainingLogError(f"not a training-log store file: {name!r}")
        self._open()
        (self.root / MANIFEST).unlink(missing_ok=True)
        for path in self.root.glob("seg-*.npz"):
            path.unlink()
        for name, data in sorted(files.items(), key=lambda kv: kv[0] == MANIFEST):  # the manifest last
            _write_atomic(self.root / name, _writer(data))


def _writer(data: bytes) -> Callable[[Any], None]:
    return lambda handle: handle.write(data)


def read_training_log(
    settings: Settings, client: redis.Redis | None = None, tenant: str = DEFAULT_TENANT
) -> Interactions:
    """``tenant``'s training data as a training reads it: its store's segments and the Redis tail."""
    from core.redis import connect_sync

    return TrainingLogStore.of(settings, client if client is not None else connect_sync(settings), tenant).read()
