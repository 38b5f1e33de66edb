"""The training-log store (trainer/logstore.py) against the real Redis-compatible server: what it reads (segments on
disk and the Redis tail) equals the stream-only reader on the same entries; a drain interrupted between any two of
its steps neither loses nor duplicates an entry; erasures leave no trace in the store's files; the bound keeps the
newest entries; a second store is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings, isolated
from profiles.store import ProfileStore
from recommender.data import Interactions
from runtime.embedded import EmbeddedServer
from runtime.local import settings_env
from tests.conftest import on_cluster as cluster_settings
from tests.conftest import wait_for
from tests.integration.helpers import sync_redis
from trainer import logstore
from trainer.log import read_interactions
from trainer.logstore import TrainingLogSplit, TrainingLogStore

pytestmark = pytest.mark.integration

Record = tuple[str, str, float, int]
ERASED = "c:u3:{é}"


def _record(k: int) -> Record:
    pid = f"a:v{k % 7}" if k % 5 == 0 else f"c:u{k % 13}:{{é}}"
    return (pid, f"i{(k * 7) % 31}", [1.0, 3.0, 0.1, -1.0][k % 4], 1_000 + k)


def _write(r: redis.Redis, keys: Keys, start: int, n: int) -> list[Record]:
    """Entries ``start`` .. ``start + n`` in every form the reader takes (ids three per millisecond)."""
    records: list[Record] = []
    pipe = r.pipeline(transaction=False)
    for k in range(start, start + n):
        record = _record(k)
        pid = record[0]
        entry_id = f"{1_000_000 + (k // 3) * 17}-{k % 3}"
        if k % 11 == 0:  # the older tab-joined form
            pipe.xadd(keys.interactions, {"d": "\t".join(str(x) for x in record)}, id=entry_id)
        elif k % 7 == 0:  # another field order
            pipe.xadd(keys.interactions, {"t": record[3], "w": record[2], "i": record[1], "p": pid}, id=entry_id)
        else:
            pipe.xadd(
                keys.interactions, {"p": pid, "i": record[1], "w": f"{record[2]:.17g}", "t": record[3]}, id=entry_id
            )
        records.append(record)
    pipe.execute()
    return records


def _extras(r: redis.Redis, keys: Keys) -> None:
    r.zadd(keys.erasures, {ERASED: 1_500.0})  # its entries up to t 1500 are left out
    r.hset(keys.alias("v1"), "c", "u1:{é}")  # visitor v1 logged in as customer u1:{é}


def _expected(records: list[Record]) -> Interactions:
    kept = [r for r in records if not (r[0] == ERASED and r[3] <= 1_500)]
    return Interactions.from_records([("c:u1:{é}" if p == "a:v1" else p, i, w, t) for p, i, w, t in kept])


def _same(log: Interactions, expected: Interactions) -> None:
    assert log.user_ids == expected.user_ids and log.item_ids == expected.item_ids
    for name in ("users", "items", "weights", "ts"):
        assert np.array_equal(getattr(log, name), getattr(expected, name)), name


def _store(settings: Settings, folder: Path | None = None) -> TrainingLogStore:
    if folder is not None:
        settings = settings.model_copy(update={"training_log_dir": str(folder)})
    return TrainingLogStore.of(settings, connect_sync(settings))


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drains write segments of 100 entries and merge them up to 400, so a few hundred entries make many."""
    monkeypatch.setattr(logstore, "DRAIN_ROWS", 100)
    monkeypatch.setattr(logstore, "SEGMENT_ROWS", 400)


def test_segments_and_tail_read_as_the_stream_only_reader(settings: Settings, small_segments: None) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    twin = isolated(settings)  # the same entries, never drained: read by the stream-only reader
    r_twin, keys_twin = sync_redis(twin), Keys(twin.key_prefix)
    records = _write(r, keys, 0, 1_300)
    _write(r_twin, keys_twin, 0, 1_300)
    store = _store(settings)
    done = store.drain()
    assert done is not None and done.drained == 1_300 and done.merged > 0
    assert r.xlen(keys.interactions) == 0  # copied out of Redis
    manifest = store.manifest()
    assert manifest is not None and manifest.rows == 1_300 and 1 < len(manifest.segments) < 13
    records += _write(r, keys, 1_300, 500)  # the tail, still in Redis
    _write(r_twin, keys_twin, 1_300, 500)
    for client, k in ((r, keys), (r_twin, keys_twin)):
        _extras(client, k)
    log = store.read(chunk=37, readers=2)
    _same(log, read_interactions(connect_sync(twin), keys_twin))
    _same(log, _expected(records))
    assert len(log) < len(records)  # the erased entries are gone


@pytest.mark.parametrize("crash_after", ["segment", "manifest", "trim"])
def test_a_drain_cut_off_between_steps_neither_loses_nor_duplicates(
    settings: Settings, small_segments: None, crash_after: str
) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    records = _write(r, keys, 0, 250)
    _extras(r, keys)
    store = _store(settings)
    store.drain()  # a first segment, so the store is not empty
    records += _write(r, keys, 250, 250)

    class Crash(Exception):
        pass

    def step(name: str) -> None:
        if name == crash_after:
            raise Crash(name)

    with pytest.raises(Crash):
        store.drain(step=step)
    _same(store.read(), _expected(records))  # nothing lost, nothing twice
    again = store.drain()
    assert again is not None
    _same(store.read(), _expected(records))
    manifest = store.manifest()
    assert manifest is not None and manifest.rows == len(_expected(records)) and r.xlen(keys.interactions) == 0
    named = {s.name for s in manifest.segments}
    assert {p.name for p in store.root.glob("seg-*")} == named  # a segment the crash left unnamed is gone
    assert not list(store.root.glob(".*.tmp"))


async def test_an_erased_profile_leaves_no_trace_in_the_store(settings: Settings, small_segments: None) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    records = _write(r, keys, 0, 600)
    store = _store(settings)
    store.drain()
    records += _write(r, keys, 600, 100)  # some in the Redis tail too
    profiles = ProfileStore(connect(settings), settings)
    try:
        erased = await profiles.erase("u3:{é}")
    finally:
        await profiles.client.aclose()
    assert ERASED in erased.pids and erased.log_entries > 0  # the tail's entries deleted in Redis
    done = store.drain()
    assert done is not None and done.rewritten > 0
    needle = ERASED.encode()
    files = list(store.root.iterdir())
    assert files
    for path in files:
        if path.is_file():
            assert needle not in path.read_bytes(), path
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    assert needle not in z.read(member), (path, member)
    log = store.read()
    assert ERASED not in log.user_ids
    assert len(log) == sum(1 for p, *_ in records if p != ERASED)


def test_the_bound_keeps_the_newest_entries(settings: Settings, small_segments: None) -> None:
    bounded = settings.model_copy(update={"interactions_log_maxlen": 1_000})
    r = sync_redis(bounded)
    keys = Keys(bounded.key_prefix)
    records = _write(r, keys, 0, 1_450)
    store = _store(bounded)
    done = store.drain()
    assert done is not None and done.dropped == 450
    manifest = store.manifest()
    assert manifest is not None and manifest.rows == 1_000
    records += _write(r, keys, 1_450, 30)  # 1,030 in all: the reader keeps the newest 1,000
    log = store.read()
    assert len(log) == 1_000
    _same(log, Interactions.from_records(records[-1_000:]))


def test_a_second_store_is_refused(settings: Settings, tmp_path: Path) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    _write(r, keys, 0, 50)
    first = _store(settings, tmp_path / "host-a")
    first.drain()
    _write(r, keys, 50, 10)
    second = _store(settings, tmp_path / "host-b")
    with pytest.raises(TrainingLogSplit, match="another training-log store"):
        second.drain()
    with pytest.raises(TrainingLogSplit, match="ECRM_TRAINING_LOG_DIR"):
        second.read()
    assert r.xlen(keys.interactions) == 10  # the refused store copied nothing out
    assert len(first.read()) == 60


def test_a_new_redis_sets_the_old_history_aside(settings: Settings) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    _write(r, keys, 0, 80)
    store = _store(settings)
    store.drain()
    r.delete(keys.interactions, keys.training_log_store)  # a flushed Redis
    records = _write(r, keys, 0, 20)
    done = store.drain()
    assert done is not None and done.retired is not None and Path(done.retired).is_dir()
    assert len(store.read()) == len(records)


def test_the_worker_drains_on_its_timer(
    settings: Settings, worker_factory: Callable[[Settings], subprocess.Popen[bytes]]
) -> None:
    quick = settings.model_copy(update={"training_log_drain_s": 1.0})
    r = sync_redis(quick)
    keys = Keys(quick.key_prefix)
    records = _write(r, keys, 0, 120)
    worker_factory(quick)
    store = _store(quick)
    wait_for(lambda: r.xlen(keys.interactions) == 0, timeout=90, what="the worker's timer to drain the log")
    manifest = store.manifest()
    assert manifest is not None and manifest.rows == len(records)
    _same(store.read(), Interactions.from_records(records))


async def test_backup_and_restore_bring_the_training_history_back(
    settings: Settings, tmp_path: Path, small_segments: None
) -> None:
    from runtime import backup as bk

    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    records = _write(r, keys, 0, 400)
    _extras(r, keys)
    store = _store(settings)
    store.drain()
    records += _write(r, keys, 400, 50)  # the tail
    before = store.read()
    _same(before, _expected(records))
    file = tmp_path / "backup.tar.gz"
    manifest = await asyncio.to_thread(bk.backup, settings, file)
    on_disk = store.manifest()
    assert on_disk is not None and on_disk.rows > 300
    assert manifest.training_log is not None and manifest.training_log["entries"] == on_disk.rows
    for path in store.root.glob("seg-*"):  # the disk and Redis lost
        path.unlink()
    (store.root / logstore.MANIFEST).unlink()
    r.delete(keys.interactions, keys.training_log_store)
    done = await asyncio.to_thread(bk.restore, settings, file)
    assert done.written > 0
    _same(store.read(), before)
    again = store.drain()  # the restored store is the one Redis knows
    assert again is not None and again.retired is None and again.drained == 50
    _same(store.read(), before)


def test_the_store_drains_a_cluster_log(
    redis_cluster: list[EmbeddedServer], settings: Settings, small_segments: None
) -> None:
    on_cluster = cluster_settings(settings, redis_cluster)
    r = connect_sync(on_cluster, decode_responses=True)
    keys = Keys(on_cluster.key_prefix)
    records = _write(r, keys, 0, 300)
    store = _store(on_cluster)
    done = store.drain()
    assert done is not None and done.drained == 300 and r.xlen(keys.interactions) == 0
    records += _write(r, keys, 300, 40)
    _same(store.read(chunk=25), Interactions.from_records(records))


def test_the_commands_drain_and_show_the_store(settings: Settings) -> None:
    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    _write(r, keys, 0, 70)

    def ecrm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ecrm", "train-log", *args],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    drained = ecrm("drain")
    assert drained.returncode == 0, drained.stderr
    assert "drained 70 entries (70 removed from Redis)" in drained.stdout
    shown = ecrm("status", "--json")
    assert shown.returncode == 0, shown.stderr
    status = orjson.loads(shown.stdout)
    assert status["entries"] == 70 and status["redis_tail"] == 0 and status["store_id"] == status["redis_store_id"]
    # a second folder is refused with a clear error
    refused = subprocess.run(
        [sys.executable, "-m", "ecrm", "train-log", "drain"],
        env={
            **settings_env(settings),
            "ECRM_TRAINING_LOG_DIR": str(Path(settings.training_log_dir).parent / "elsewhere"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "another training-log store" in refused.stderr


async def test_each_tenant_has_its_own_store_drained_backed_up_and_restored(
    settings: Settings, tmp_path: Path, small_segments: None
) -> None:
    """One store per tenant (``<dir>/<prefix>/<tenant>/``, its id in the tenant's global slot): ``ecrm train-log
    drain`` drains every hosted tenant's, ``--tenant`` one; a backup holds every tenant's store and a restore of one
    tenant brings back that tenant's store only."""
    from runtime import backup as bk

    hosted = settings.model_copy(update={"tenants": "acme"})
    r = sync_redis(hosted)
    default, acme = Keys(hosted.key_prefix), Keys(hosted.key_prefix, "acme")
    _write(r, default, 0, 30)
    acme_records = _write(r, acme, 0, 50)

    def ecrm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ecrm", "train-log", *args], env=settings_env(hosted),
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    drained = ecrm("drain")
    assert drained.returncode == 0, drained.stderr
    assert (
        "tenant default: drained 30 entries" in drained.stdout and "tenant acme: drained 50 entries" in drained.stdout
    )
    assert r.xlen(default.interactions) == 0 and r.xlen(acme.interactions) == 0
    stores = {t: TrainingLogStore.of(hosted, connect_sync(hosted), t) for t in ("default", "acme")}
    assert stores["acme"].root == stores["default"].root.parent / "acme"
    assert r.get(acme.training_log_store) != r.get(default.training_log_store)  # two stores, two ids
    shown = orjson.loads(ecrm("status", "--tenant", "acme", "--json").stdout)
    assert shown["entries"] == 50 and shown["tenant"] == "acme" and shown["dir"] == str(stores["acme"].root)
    _write(r, acme, 50, 10)
    _write(r, default, 30, 5)
    one = ecrm("drain", "--tenant", "acme")
    assert one.returncode == 0 and "drained 10 entries" in one.stdout, one.stdout + one.stderr
    assert r.xlen(acme.interactions) == 0 and r.xlen(default.interactions) == 5  # only acme's drained
    acme_before = stores["acme"].read()
    assert len(acme_before) == len(acme_records) + 10

    file = tmp_path / "all.tar.gz"
    manifest = await asyncio.to_thread(bk.backup, hosted, file)
    assert manifest.training_log is not None and set(manifest.training_log["tenants"]) == {"default", "acme"}
    assert manifest.training_log["tenants"]["acme"]["entries"] == 60
    for path in stores["acme"].root.glob("seg-*"):  # acme's disk lost
        path.unlink()
    default_files = sorted(p.name for p in stores["default"].root.iterdir())
    done = await asyncio.to_thread(bk.restore, hosted, file, tenant="acme")
    assert done.written > 0
    _same(stores["acme"].read(), acme_before)
    assert sorted(p.name for p in stores["default"].root.iterdir()) == default_files  # the other store untouched
