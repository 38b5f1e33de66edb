"""``ecrm backup FILE`` and ``ecrm restore FILE``: the engine's state in one file, for one node or a Redis Cluster.

**The file** is a tar archive, gzip-compressed (level 1), with three kinds of members, in this order:

* ``manifest.json``: ``format`` (this file's format, 1), ``engine_version``, ``key_layout``
  (:data:`core.keyspace.KEY_LAYOUT_VERSION`), ``key_prefix``, ``cluster``, ``started_ms`` / ``finished_ms`` (server
  time of the first and last key copied), ``counts`` (keys, bytes, customers, visitors, items, model versions, keys per
  node), ``applied_before`` / ``applied_after`` (the engine's applied-events counter when the copy started and ended)
  and ``quiet`` (both equal: no event was applied while it ran), ``models`` (the promoted versions) and ``config``
  (each configuration file in force: its role, path and SHA-256).
* ``config/<role>.<ext>``: the configuration files in force (business rules, campaigns, segment rules, recommender
  settings), as they were.
* ``training-log/<tenant>/<file>``: each tenant's training-log store (trainer/logstore.py) when it is on this host
  (its lock held shared while the keys are copied; the manifest's ``training_log`` sums them up, per tenant).
* ``keys.bin``: every key under the engine's prefix, one record after the other: ``u32`` length and the key's name,
  ``i64`` absolute expiry in Unix milliseconds (``-1``: none), ``u32`` length and the key's ``DUMP`` payload (so
  every type, and model versions, which are keys too: blob and metadata). Little-endian.

**What is left out**: the keys of the running engine rather than of its data (:attr:`core.keyspace.Keys.live_only`:
the erasure log, the worker's heartbeat, the training and analytics locks). The model files of ``ECRM_API_MODEL_DIR``
are a cache of the model versions in Redis, made again from them.

**Point in time.** Each node is copied by ``SCAN`` pages, each page's keys by one pipeline of ``PTTL`` + ``DUMP`` (on
one node in one ``MULTI``, so a page's keys are copied at one instant; a cluster refuses a transaction over several
slots): each key is copied whole as it was at one instant, between ``started_ms`` and ``finished_ms``. Writers are not
paused (the API and the workers keep serving), so a backup taken while events are applied may hold an event in one
key and not yet in another (a profile but not the shop-wide counters); the manifest says so (``quiet: false``, and
``ecrm backup`` prints a note). A backup with ``quiet: true`` is exact: no event was applied between its first key
and its last (the engine's every write of an event goes through the counter checked before and after). For an exact
backup of a busy shop, take it when no events arrive (the API keeps reading), or stop the workers for its duration
(events wait in Kafka).

**Restore** (:func:`restore`) refuses a file of a newer format or key layout; reads the erasure log (Redis, and
``ECRM_ERASURE_LOG_FILE``) before anything else; deletes every key under the prefix but the live ones; writes the
backup's keys (``RESTORE ... REPLACE ABSTTL``, so keys keep their expiry and the already expired are not written;
nor the keys of a customer erased since; under another prefix when the settings name one); upgrades an older key
layout with ``ecrm migrate-keys``' code; then reads the log again and erases again every customer erased since the
backup started. Both directions stream: memory stays bounded by one
page of keys (and the largest key).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import os
import re
import struct
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson
import redis

from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from core import erasure_log
from core.errors import ConfigError, StoreRefused, StoreUnavailable
from core.keyspace import CLUSTER_LAYOUT_VERSION, KEY_LAYOUT_VERSION, TENANTS_LAYOUT_VERSION, Keys, encode_id, tenant_of
from core.redis import connect, connect_sync, redis_errors
from core.settings import Settings
from core.tenants import DEFAULT_TENANT, configured_tenants
from merchandising.campaign_source import campaigns_path
from merchandising.source import DEFAULT_RULES_PATH
from profiles.store import ProfileStore
from runtime.datadir import engine_version
from runtime.migrate import Migrated, migrate_deployment
from trainer.logstore import TrainingLogStore

FORMAT = 1
MANIFEST = "manifest.json"
STORE_MEMBERS = "training-log/"
KEYS = "keys.bin"
PAGE = 500  # keys per SCAN page and per pipeline
FLUSH_BYTES = 8 << 20  # a restore pipeline is sent once it holds this many payload bytes
_LEN = struct.Struct("<I")
_EXPIRY = struct.Struct("<q")

Progress = Callable[[int], None]  # called with the number of keys just done


class BackupError(ConfigError):
    """A backup file cannot be restored here (newer format or layout, unreadable, wrong kind of deployment)."""


@dataclass
class Manifest:
    format: int
    engine_version: str
    key_layout: int
    key_prefix: str
    cluster: bool
    started_ms: int
    finished_ms: int
    applied_before: int
    applied_after: int
    counts: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    config: list[dict[str, str]] = field(default_factory=list)
    training_log: dict[str, Any] | None = None  # the training-log stores' files held (None: not local, or none)
    tenant: str | None = None  # the one tenant backed up (None: every tenant)

    @property
    def quiet(self) -> bool:
        return self.applied_before == self.applied_after

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "quiet": self.quiet}

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            obj = orjson.loads(raw)
            fields = {name: obj[name] for name in cls.__dataclass_fields__ if name in obj}
            return cls(**fields)
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            raise BackupError(f"the backup's {MANIFEST} cannot be read: {exc}") from exc


# ----- nodes -----


def primaries(client: redis.Redis, settings: Settings) -> list[redis.Redis]:
    """A client per node holding data: the one node, or every primary of the cluster."""
    if not settings.redis_cluster:
        return [client]
    cluster = cast(redis.RedisCluster, client)
    return [cast(redis.Redis, node.redis_connection) for node in cluster.get_primaries()]


def scan_pages(node: redis.Redis, prefix: str) -> Iterator[list[bytes]]:
    """The node's keys under ``prefix``, one SCAN page at a time."""
    cursor = 0
    while True:
        cursor, page = node.scan(cursor, match=f"{prefix}:*", count=PAGE)
        if page:
            yield list(page)
        if cursor == 0:
            return


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def applied(client: redis.Redis, prefix: str, tenants: list[str]) -> int:
    """The applied-events counters of ``tenants``, summed."""
    return sum(int(client.get(Keys(prefix, t).applied_count) or 0) for t in tenants)


def tenant_keys(prefix: str, tenant: str) -> Keys:
    return _tenant_keys(prefix, tenant)


@functools.lru_cache(maxsize=1024)
def _tenant_keys(prefix: str, tenant: str) -> Keys:
    return Keys(prefix, tenant)


def is_live(prefix: str, key: bytes) -> bool:
    """Whether ``key`` belongs to the running engine rather than to its data (a tenant's
    :attr:`core.keyspace.Keys.live_only`) (pure)."""
    name = key.decode("utf-8", "replace")
    tenant = tenant_of(prefix, name)
    return tenant is not None and name in tenant_keys(prefix, tenant).live_only


def in_scope(prefix: str, tenant: str | None, key: bytes) -> bool:
    """Whether ``key`` is one a backup or a restore of ``tenant`` (None: of every tenant) deals with (pure)."""
    return tenant is None or tenant_of(prefix, key.decode("utf-8", "replace")) == tenant


# ----- configuration files in force -----


def config_targets(settings: Settings) -> dict[str, Path]:
    """The configuration files the engine reads, by role: business rules, campaigns, segment rules and, when one
    is named, the recommender's settings."""
    targets = {
        "rules": Path(settings.rules_file) if settings.rules_file else DEFAULT_RULES_PATH,
        "campaigns": campaigns_path(settings.campaigns_file),
        "segments": Path(AnalyticsSettings().segments_file),
    }
    if settings.recommender_config_file:
        targets["recommender"] = Path(settings.recommender_config_file)
    return targets


def config_files(settings: Settings) -> dict[str, Path]:
    """The configuration files in force (those of :func:`config_targets` that exist)."""
    return {role: path for role, path in config_targets(settings).items() if path.is_file()}


# ----- backup -----

_PROFILE = re.compile(rb"^p:\{(?:[a-z0-9-]+\|)?([ca]):[^{}]*\}$")
_MODEL_BLOB = re.compile(rb"^\{(?:g|t:[a-z0-9-]+)\}:model:blob:")


def classify(rest: bytes) -> str | None:
    """What a key (its name after the prefix and ``:``) counts as in the manifest, or None (pure)."""
    found = _PROFILE.match(rest)
    if found:
        return "customers" if found.group(1) == b"c" else "visitors"
    if rest.startswith(b"item:") and rest.count(b":") == 1:
        return "items"
    if _MODEL_BLOB.match(rest):
        return "model_versions"
    return None


def backup(settings: Settings, out: Path, progress: Progress = lambda _: None, tenant: str | None = None) -> Manifest:
    """Write the engine's keys (``tenant``'s only, when one is named), its configuration files and a manifest to
    ``out`` (a tar.gz; written beside it under a temporary name, then renamed, so a failed backup never leaves a half
    file under the name)."""
    prefix = settings.key_prefix
    keys = Keys(prefix, tenant or DEFAULT_TENANT)
    tenants = [tenant] if tenant else list(configured_tenants(settings.api_keys, settings.tenants))

    def skip(key: bytes) -> bool:
        return is_live(prefix, key) or not in_scope(prefix, tenant, key)

    client = connect_sync(settings)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    per_node: list[int] = []
    try:
        with contextlib.ExitStack() as held:
            store_files: dict[str, list[Path]] = {}
            for name in tenants if tenant else store_tenants(client, settings):
                found = local_store_files(TrainingLogStore.of(settings, client, name), held)
                if found:
                    store_files[name] = found
            return _backup(settings, client, out, keys, skip, counts, per_node, progress, store_files, tenants, tenant)
    finally:
        client.close()


def local_store_files(store: TrainingLogStore, held: contextlib.ExitStack) -> list[Path]:
    """The training-log store's files when it is on this host, its lock held (shared) by ``held`` until the backup
    is written: no drain moves entries from Redis to the store meanwhile, so the keys and the files agree."""
    if store.manifest() is None:
        return []
    held.enter_context(store.locked(exclusive=False))
    return store.files()


def _backup(
    settings: Settings,
    client: redis.Redis,
    out: Path,
    keys: Keys,
    skip: Callable[[bytes], bool],
    counts: Counter[str],
    per_node: list[int],
    progress: Progress,
    store_files: dict[str, list[Path]],
    tenants: list[str],
    tenant: str | None,
) -> Manifest:
    prefix = settings.key_prefix
    with redis_errors("backing up the engine's keys"):
        started, before = server_ms(client), applied(client, prefix, tenants)
        models = [v.decode() for v in client.lrange(keys.model_versions, 0, -1)]
        with tempfile.TemporaryFile(dir=out.parent) as raw:
            for node in primaries(client, settings):
                atomic = not settings.redis_cluster  # a cluster refuses a transaction over several slots
                per_node.append(copy_node(node, settings.key_prefix, skip, raw, counts, progress, atomic))
            finished, after = server_ms(client), applied(client, prefix, tenants)
            counts["nodes"] = len(per_node)
            manifest = Manifest(
                format=FORMAT,
                engine_version=engine_version(),
                key_layout=KEY_LAYOUT_VERSION,
                key_prefix=settings.key_prefix,
                cluster=settings.redis_cluster,
                started_ms=started,
                finished_ms=finished,
                applied_before=before,
                applied_after=after,
                counts={**counts, "keys_per_node": per_node},
                models=models,
                training_log=store_summary(store_files),
                tenant=tenant,
            )
            write_archive(out, manifest, config_files(settings), raw, store_files)
    return manifest


def copy_node(
    node: redis.Redis,
    prefix: str,
    skip: Callable[[bytes], bool],
    out: IO[bytes],
    counts: Counter[str],
    progress: Progress,
    atomic: bool,
) -> int:
    """Append every key of one node under ``prefix`` (but those ``skip`` says) to ``out``, a SCAN page at a time (with
    ``atomic``, each page in one MULTI: its keys as they were at one instant); returns how many."""
    head = len(prefix) + 1
    done = 0
    for page in scan_pages(node, prefix):
        page = [k for k in page if not skip(k)]
        pipe = node.pipeline(transaction=atomic)
        for key in page:
            pipe.pttl(key)
            pipe.dump(key)
        replies = pipe.execute()
        now = int(time.time() * 1000)
        for i, key in enumerate(page):
            ttl, payload = replies[2 * i], replies[2 * i + 1]
            if payload is None or ttl == -2:  # deleted (or expired) since the scan saw it
                continue
            expiry = now + int(ttl) if int(ttl) >= 0 else -1
            out.write(_LEN.pack(len(key)) + key + _EXPIRY.pack(expiry) + _LEN.pack(len(payload)))
            out.write(payload)
            counts["keys"] += 1
            counts["bytes"] += len(payload)
            kind = classify(key[head:])
            if kind:
                counts[kind] += 1
            done += 1
        progress(len(page))
    return done


def store_summary(files: dict[str, list[Path]]) -> dict[str, Any] | None:
    """The manifest's ``training_log``: per tenant its store's id, last stream id and entries; in all, the entries,
    the archive's members and their bytes (None: no store held)."""
    if not files:
        return None
    tenants: dict[str, dict[str, Any]] = {}
    for tenant, paths in files.items():
        manifest = orjson.loads(paths[-1].read_bytes())
        tenants[tenant] = {
            "store_id": manifest["store_id"],
            "last_id": manifest["last_id"],
            "entries": sum(int(s["rows"]) for s in manifest["segments"]),
        }
    return {
        "entries": sum(t["entries"] for t in tenants.values()),
        "files": [f"{STORE_MEMBERS}{t}/{p.name}" for t, paths in files.items() for p in paths],
        "bytes": sum(p.stat().st_size for paths in files.values() for p in paths),
        "tenants": tenants,
    }


def write_archive(
    out: Path,
    manifest: Manifest,
    config: dict[str, Path],
    raw: IO[bytes],
    store_files: dict[str, list[Path]] | None = None,
) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            members: list[tuple[str, bytes]] = []
            for role, path in config.items():
                data = path.read_bytes()
                name = f"config/{role}{path.suffix or '.yaml'}"
                manifest.config.append({"role": role, "path": str(path), "member": name,
                                        "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
                members.append((name, data))
            _add_bytes(tar, MANIFEST, orjson.dumps(manifest.as_json(), option=orjson.OPT_INDENT_2))
            for name, data in members:
                _add_bytes(tar, name, data)
            for path, tenant in [(p, t) for t, paths in (store_files or {}).items() for p in paths]:
                info = tar.gettarinfo(str(path), arcname=f"{STORE_MEMBERS}{tenant}/{path.name}")
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            size = raw.seek(0, os.SEEK_END)
            raw.seek(0)
            info = tarfile.TarInfo(KEYS)
            info.size, info.mtime, info.mode = size, int(time.time()), 0o600
            tar.addfile(info, raw)
        tmp.chmod(0o600)  # it holds every profile
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


# ----- reading a backup -----


def read_manifest(path: Path) -> Manifest:
    """The manifest of a backup file (BackupError when it is not one)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST:
                raise BackupError(f"{path} is not an ecrm backup (its first member is not {MANIFEST})")
            handle = tar.extractfile(member)
            assert handle is not None
            return Manifest.parse(handle.read())
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path} cannot be read as an ecrm backup: {exc}") from exc


def records(handle: IO[bytes]) -> Iterator[tuple[bytes, int, bytes]]:
    """The (key, expiry ms or -1, payload) records of a ``keys.bin`` stream."""
    while True:
        head = handle.read(_LEN.size)
        if not head:
            return
        key = _exact(handle, _LEN.unpack(head)[0])
        expiry = _EXPIRY.unpack(_exact(handle, _EXPIRY.size))[0]
        payload = _exact(handle, _LEN.unpack(_exact(handle, _LEN.size))[0])
        yield key, expiry, payload


def _exact(handle: IO[bytes], n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise BackupError(f"the backup's {KEYS} is cut short")
    return data


def check_restorable(manifest: Manifest, settings: Settings) -> bool:
    """Whether the backup must be upgraded after it is written (an older key layout); BackupError when it cannot
    be restored here."""
    if manifest.format > FORMAT:
        raise BackupError(f"the backup is of a newer file format ({manifest.format}; this engine reads {FORMAT})")
    if manifest.key_layout > KEY_LAYOUT_VERSION:
        raise BackupError(
            f"the backup was written by a newer engine ({manifest.engine_version}, key layout {manifest.key_layout}); "
            f"this engine ({engine_version()}) knows key layout {KEY_LAYOUT_VERSION} at most: restore it with that "
            "engine or a later one"
        )
    older = manifest.key_layout < KEY_LAYOUT_VERSION
    if manifest.key_layout < CLUSTER_LAYOUT_VERSION and settings.redis_cluster:
        raise BackupError(
            f"the backup holds key layout {manifest.key_layout} (before Redis Cluster support): restore it on a "
            "single node, where it is upgraded by `ecrm migrate-keys`"
        )
    return older


# ----- restore -----


@dataclass
class Restored:
    manifest: Manifest
    deleted: int
    written: int
    expired: int
    migrated: Migrated | None
    erased_again: list[str]
    config_written: list[str]


def restore_scope(manifest: Manifest, tenant: str | None) -> str | None:
    """The tenant a restore deals with (None: every tenant): the one asked for, else the backup's (pure)."""
    if manifest.tenant is not None and tenant is not None and tenant != manifest.tenant:
        raise BackupError(f"the backup holds the tenant {manifest.tenant!r} only, not {tenant!r}")
    if tenant is not None and manifest.key_layout < TENANTS_LAYOUT_VERSION:
        raise BackupError(
            f"the backup holds key layout {manifest.key_layout}, a single shop before tenants: restore it whole "
            "(without --tenant); its keys become the tenant 'default''s"
        )
    return tenant or manifest.tenant


def restore(
    settings: Settings,
    path: Path,
    progress: Progress = lambda _: None,
    with_config: bool = False,
    phase: Callable[[str], None] = lambda _: None,
    tenant: str | None = None,
) -> Restored:
    """Replace the engine's keys by the backup's (see the module's docstring): of one tenant when ``tenant`` is named
    or the backup holds one tenant only (the other tenants' keys are left as they are), else of every tenant."""
    manifest = read_manifest(path)
    upgrade = check_restorable(manifest, settings)
    scope = restore_scope(manifest, tenant)
    prefix = settings.key_prefix
    client = connect_sync(settings)
    stores: dict[str, TrainingLogStore] = {}
    held = contextlib.ExitStack()
    for name in manifest_store_tenants(manifest):  # no drain between the keys and the files
        if scope is None or name == scope:
            stores[name] = TrainingLogStore.of(settings, client, name)
            held.enter_context(stores[name].locked(exclusive=True))

    def keep(key: bytes) -> bool:
        return is_live(prefix, key) or not in_scope(prefix, scope, key)

    try:
        with redis_errors("restoring the engine's keys"):
            tenants = [scope] if scope else erasure_tenants(client, settings)
            erasures = logged_erasures(client, settings, manifest.started_ms, tenants)
            phase(f"erasures logged since the backup: {len(erasures)}")
            deleted = sum(wipe(node, prefix, keep) for node in primaries(client, settings))
            phase(f"deleted {deleted} keys under {prefix}:" + (f" of the tenant {scope}" if scope else ""))
            erased_tags = {tag for e in erasures for tag in profile_tags(e.customer_id, e.tenant)}  # not written
            wanted = functools.partial(in_scope, prefix, scope)
            written, expired = write_keys(client, path, manifest.key_prefix, prefix, progress, erased_tags, wanted)
            # and those erased while the restore ran (the log in Redis was kept)
            erasures = erasure_log.merged(erasures, logged_erasures(client, settings, manifest.started_ms, tenants))
        if stores:
            members = read_store_members(path)
            for name, store in stores.items():
                store.replace_files(members.get(name, {}))
                entries = manifest_store_entries(manifest, name)
                phase(f"training-log store of the tenant {name} restored in {store.root}: {entries} entries")
        held.close()
        migrated = None
        if upgrade:
            migrated = migrate_deployment(settings)
        try:
            erased = asyncio.run(erase_again(settings, erasures))
        except (StoreUnavailable, StoreRefused) as exc:
            raise StoreUnavailable(
                f"{exc}; the customers erased since the backup may not all be erased again: run the restore again",
                exc.reason if isinstance(exc, StoreUnavailable) else "refused",
            ) from exc
        written_config = write_config(path, manifest, settings) if with_config else []
    finally:
        held.close()
        client.close()
    return Restored(manifest, deleted, written, expired, migrated, erased, written_config)


def read_store_members(path: Path) -> dict[str, dict[str, bytes]]:
    """The training-log stores' files a backup holds, by tenant and name (``training-log/<tenant>/<name>``; a backup
    of key layout 4 held one store, ``training-log/<name>``: the tenant ``default``'s)."""
    files: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.name.startswith(STORE_MEMBERS) and member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    tenant, _, name = member.name[len(STORE_MEMBERS) :].rpartition("/")
                    files.setdefault(tenant or DEFAULT_TENANT, {})[name] = handle.read()
    return files


def manifest_store_tenants(manifest: Manifest) -> list[str]:
    """The tenants whose training-log stores a backup holds (pure)."""
    if not manifest.training_log:
        return []
    return sorted(manifest.training_log.get("tenants") or {DEFAULT_TENANT: None})


def manifest_store_entries(manifest: Manifest, tenant: str) -> int:
    """The entries of ``tenant``'s training-log store in a backup (pure)."""
    held = manifest.training_log or {}
    per = held.get("tenants")
    return int(per[tenant]["entries"]) if per and tenant in per else int(held.get("entries", 0))


def tenants_with(client: redis.Redis, settings: Settings, suffix: str) -> list[str]:
    """The configured tenants and any other with the global key ``{t:<tenant>}:<suffix>`` in Redis (every node)."""
    found = set(configured_tenants(settings.api_keys, settings.tenants))
    prefix = settings.key_prefix
    for node in primaries(client, settings):
        for key in node.scan_iter(match=f"{prefix}:{{t:*}}:{suffix}", count=PAGE):
            tenant = tenant_of(prefix, key.decode() if isinstance(key, bytes) else str(key))
            if tenant is not None:
                found.add(tenant)
    return sorted(found)


def store_tenants(client: redis.Redis, settings: Settings) -> list[str]:
    """The tenants whose training-log stores a backup of every tenant looks for on this host."""
    return tenants_with(client, settings, "training_log:store")


def erasure_tenants(client: redis.Redis, settings: Settings) -> list[str]:
    """The tenants whose erasure logs a restore of every tenant reads: the configured ones and any other with an
    erasure log in Redis (on every node)."""
    return tenants_with(client, settings, "erasure_log")


def logged_erasures(
    client: redis.Redis, settings: Settings, since_ms: int, tenants: list[str]
) -> list[erasure_log.Erasure]:
    """The erasures of ``tenants`` logged at or after ``since_ms``: in their Redis streams, and in
    ``ECRM_ERASURE_LOG_FILE`` when set."""
    from_file = erasure_log.read_file(Path(settings.erasure_log_file), since_ms) if settings.erasure_log_file else []
    streams = [erasure_log.read_stream(client, Keys(settings.key_prefix, t), since_ms) for t in tenants]
    return erasure_log.merged(*streams, [e for e in from_file if e.tenant in tenants])


def profile_tags(customer_id: str, tenant: str = DEFAULT_TENANT) -> list[bytes]:
    """The starts of the names of a customer's keys after the prefix (``p:{<tenant>|c:<encoded id>}``; of the tenant
    ``default``, also the layout before tenants': ``p:{c:<encoded id>}``)."""
    tags = [f"p:{{{tenant}|c:{encode_id(customer_id)}}}".encode()]
    return [*tags, f"p:{{c:{encode_id(customer_id)}}}".encode()] if tenant == DEFAULT_TENANT else tags


def wipe(node: redis.Redis, prefix: str, keep: Callable[[bytes], bool]) -> int:
    """Delete every key of one node under ``prefix`` but those ``keep`` says; returns how many."""
    deleted = 0
    for page in scan_pages(node, prefix):
        doomed = [k for k in page if not keep(k)]
        if doomed:
            pipe = node.pipeline(transaction=False)
            for key in doomed:  # one key per command: a cluster node holds many slots
                pipe.unlink(key)
            deleted += sum(int(n) for n in pipe.execute())
    return deleted


def write_keys(
    client: redis.Redis,
    path: Path,
    old: str,
    new: str,
    progress: Progress,
    skip_tags: set[bytes],
    wanted: Callable[[bytes], bool] = lambda _: True,
) -> tuple[int, int]:
    """Write the backup's keys (renamed from prefix ``old`` to ``new``) that are ``wanted`` (their new name), but
    those of the profiles in ``skip_tags`` (:func:`profile_tags`); returns (written, already expired or skipped)."""
    written = expired = 0
    old_head, new_head = f"{old}:".encode(), f"{new}:".encode()
    with tarfile.open(path, "r:gz") as tar:
        member = next((m for m in tar if m.name == KEYS), None)
        handle = tar.extractfile(member) if member is not None else None
        if handle is None:
            raise BackupError(f"{path} holds no {KEYS}")
        pipe = client.pipeline(transaction=False)
        queued = size = 0
        now = int(time.time() * 1000)
        for key, expiry, payload in records(handle):
            if expiry != -1 and expiry <= now:
                expired += 1
                continue
            if not key.startswith(old_head):
                raise BackupError(f"the backup holds a key outside its prefix {old!r}: {key[:80]!r}")
            rest = key[len(old_head) :]
            if skip_tags and rest.startswith(b"p:{") and rest[: rest.find(b"}") + 1] in skip_tags:
                expired += 1  # an erased customer's key: never written back
                continue
            if not wanted(new_head + rest):
                continue  # another tenant's
            pipe.restore(new_head + rest, max(expiry, 0), payload, replace=True, absttl=expiry != -1)
            queued += 1
            size += len(payload)
            if queued >= PAGE or size >= FLUSH_BYTES:
                pipe.execute()
                written += queued
                progress(queued)
                queued = size = 0
                now = int(time.time() * 1000)
        if queued:
            pipe.execute()
            written += queued
            progress(queued)
    return written, expired


async def erase_again(settings: Settings, erasures: list[erasure_log.Erasure]) -> list[str]:
    """Erase again each customer erased since the backup started, at the time of their erasure (their tombstone
    keeps their older events out of a replay, as the first time)."""
    if not erasures:
        return []
    client = connect(settings)
    try:
        store = ProfileStore(client, settings)
        for erasure in erasures:
            pids = await store.for_tenant(erasure.tenant).forget(erasure.customer_id, now=erasure.at_ms)
            await AnalyticsStore(client, settings.key_prefix, erasure.tenant).forget_rows(pids)
    finally:
        await client.aclose()
    return [e.customer_id for e in erasures]


def write_config(path: Path, manifest: Manifest, settings: Settings) -> list[str]:
    """Write the backup's configuration files over the ones in force now (same roles); returns the paths."""
    targets = config_targets(settings)
    written: list[str] = []
    with tarfile.open(path, "r:gz") as tar:
        for entry in manifest.config:
            target = targets.get(entry["role"])
            handle = tar.extractfile(entry["member"])
            if target is None or handle is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.restore")
            tmp.write_bytes(handle.read())
            tmp.replace(target)
            written.append(str(target))
    return written
