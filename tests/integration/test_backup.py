"""``ecrm backup`` / ``ecrm restore`` on the real Valkey, one node and the suite's three-node cluster: backup, wipe,
restore gives the same profiles, segments and recommendations; a customer erased after the backup (by ``ecrm
forget`` and by the API) stays erased; a backup of a newer key layout is refused, one of an older layout upgraded."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from analytics.refresh import make_refresher
from analytics.settings import AnalyticsSettings
from core.keyspace import KEY_LAYOUT_VERSION, Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.layout import item_value
from profiles.store import ProfileStore
from runtime import backup as bk
from runtime.embedded import EmbeddedServer
from runtime.local import settings_env
from tests.conftest import on_cluster
from tests.integration.helpers import api_client
from tests.integration.test_serving import demo_events, load
from trainer.training import train_once

pytestmark = pytest.mark.integration
SAMPLE = [f"cust-{i:05d}" for i in range(0, 40, 2)]
NOW = 1_900_000_000_000  # profiles are read at one fixed time before and after


def ecrm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrm", *args], env=settings_env(settings), capture_output=True, text=True, timeout=120
    )


async def state(settings: Settings, customers: list[str]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Profiles (read at a fixed time), recommendations (items and model version) and the segment sizes."""
    store = ProfileStore(connect(settings), settings)
    try:
        profiles = {c: await store.profile(f"c:{c}", NOW) for c in customers}
    finally:
        await store.client.aclose()
    recs: dict[str, Any] = {}
    async with api_client(settings) as client:
        for c in customers:
            body = (await client.get(f"/v1/customers/{c}/recommendations", params={"n": 10})).json()
            recs[c] = (body["model_version"], body["strategy"], [i["item_id"] for i in body["items"]])
        segments = (await client.get("/v1/segments")).json()
    return profiles, recs, segments


def wipe(settings: Settings, keep: set[bytes]) -> None:
    client = connect_sync(settings)
    try:
        for node in bk.primaries(client, settings):
            bk.wipe(node, settings.key_prefix, keep.__contains__)
    finally:
        client.close()


async def roundtrip(settings: Settings, tmp_path: Path, log_file: bool) -> None:
    """With ``log_file`` the erasure log file survives a Redis that lost everything; without, the log in Redis
    survives a wipe of the engine's data."""
    if log_file:
        settings = settings.model_copy(update={"erasure_log_file": str(tmp_path / "erasures.jsonl")})
    await load(settings, demo_events())
    trained = await asyncio.to_thread(train_once, settings)
    assert trained.promoted
    refresher = make_refresher(settings, AnalyticsSettings())
    await refresher.refresh(force=True)
    await refresher.store.client.aclose()
    before = await state(settings, SAMPLE)
    assert all(before[0].values()) and {r[0] for r in before[1].values()} == {trained.version}
    assert before[2]["segments"], before[2]

    file = tmp_path / "shop.tar.gz"
    done = ecrm(settings, "backup", str(file))
    assert done.returncode == 0, done.stderr
    manifest = bk.read_manifest(file)
    assert manifest.key_layout == KEY_LAYOUT_VERSION and manifest.quiet
    index = connect_sync(settings, decode_responses=True)
    keys = Keys(settings.key_prefix)
    pids = [str(keys.profile_id(key)) for key in index.scan_iter(match=keys.profile_pattern(), count=1000)]
    assert int(index.get(keys.profile_count) or 0) == len(pids)
    index.close()
    assert manifest.counts["customers"] == sum(p.startswith("c:") for p in pids) > 100
    assert manifest.counts["visitors"] == sum(p.startswith("a:") for p in pids)
    assert manifest.models == [trained.version]
    assert manifest.counts["keys"] == sum(manifest.counts["keys_per_node"])
    assert len(manifest.counts["keys_per_node"]) == (3 if settings.redis_cluster else 1)
    assert {c["role"] for c in manifest.config} >= {"rules", "segments"}

    # after the backup: two customers erased, one by the command, one by the API
    gone = ecrm(settings, "forget", SAMPLE[0])
    assert gone.returncode == 0, gone.stderr
    async with api_client(settings) as client:
        assert (await client.delete(f"/v1/customers/{SAMPLE[1]}")).status_code == 200

    wipe(settings, set() if log_file else {k.encode() for k in Keys(settings.key_prefix).live_only})
    stray = connect_sync(settings)
    stray.set(f"{settings.key_prefix}:stray", "not in the backup")
    back = ecrm(settings, "restore", str(file))
    assert back.returncode == 0, back.stderr
    assert "erased again 2 customer(s)" in back.stdout, back.stdout
    assert stray.get(f"{settings.key_prefix}:stray") is None  # the restore replaced the keys, not merged them
    stray.close()

    after = await state(settings, SAMPLE)
    kept = SAMPLE[2:]
    assert {c: after[0][c] for c in kept} == {c: before[0][c] for c in kept}
    assert {c: after[1][c] for c in kept} == {c: before[1][c] for c in kept}
    assert after[0][SAMPLE[0]] is None and after[0][SAMPLE[1]] is None  # erased after the backup: still erased
    assert after[2]["snapshot_id"] == before[2]["snapshot_id"]
    assert {**after[2], "rules": None} == {**before[2], "rules": None}  # but when the API read its rules file
    async with api_client(settings) as client:
        for c in SAMPLE[:2]:
            assert (await client.get(f"/v1/customers/{c}/profile")).status_code == 404
    # a second restore of the same file still erases them (the log stays, outside the backup)
    again = await asyncio.to_thread(bk.restore, settings, file)
    assert sorted(again.erased_again) == sorted(SAMPLE[:2]) and again.expired >= 2  # their keys not written


async def test_backup_wipe_restore_on_one_node(settings: Settings, tmp_path: Path) -> None:
    await roundtrip(settings, tmp_path, log_file=True)


async def test_backup_wipe_restore_on_a_cluster(
    settings: Settings, redis_cluster: list[EmbeddedServer], tmp_path: Path
) -> None:
    await roundtrip(on_cluster(settings, redis_cluster), tmp_path, log_file=False)


def archive(path: Path, manifest: dict[str, Any], records: list[tuple[bytes, int, bytes]]) -> None:
    raw = io.BytesIO()
    for key, expiry, payload in records:
        raw.write(bk._LEN.pack(len(key)) + key + bk._EXPIRY.pack(expiry) + bk._LEN.pack(len(payload)) + payload)
    raw.seek(0)
    bk.write_archive(path, bk.Manifest(**manifest), {}, raw)


def test_a_newer_layout_is_refused_and_an_older_one_upgraded(settings: Settings, tmp_path: Path) -> None:
    keys = Keys(settings.key_prefix)
    client = connect_sync(settings)
    prefix = settings.key_prefix
    client.zadd(f"{prefix}:popular", {"sku-1": 5.0})  # an engine before the {g} tag wrote this name
    legacy = client.dump(f"{prefix}:popular")
    client.delete(f"{prefix}:popular")
    client.set(keys.applied_count, 7)
    base = {"format": 1, "engine_version": "9.9.9", "key_prefix": prefix, "cluster": False, "started_ms": 1,
            "finished_ms": 2, "applied_before": 0, "applied_after": 0}  # fmt: skip
    newer = tmp_path / "newer.tar.gz"
    archive(newer, {**base, "key_layout": KEY_LAYOUT_VERSION + 1}, [(f"{prefix}:popular".encode(), -1, legacy)])
    refused = ecrm(settings, "restore", str(newer))
    assert refused.returncode == 2
    assert f"key layout {KEY_LAYOUT_VERSION + 1}" in refused.stderr and "newer engine (9.9.9" in refused.stderr
    assert client.get(keys.applied_count) == b"7"  # nothing touched

    item_times = keys.legacy("c:older", "items_ts")
    client.hset(item_times, mapping={"sku-1": "1790000000000"})  # item times apart (layout 1 and 2)
    times = client.dump(item_times)
    client.delete(item_times)
    older = tmp_path / "older.tar.gz"
    records = [(f"{prefix}:popular".encode(), -1, legacy), (item_times.encode(), -1, times)]
    archive(older, {**base, "key_layout": 1}, records)
    upgraded = bk.restore(settings, older)
    assert upgraded.migrated is not None and (upgraded.migrated.moved, upgraded.migrated.markers) == (1, 0)
    assert upgraded.migrated.folded == 1 and not client.exists(item_times)
    folded = item_value(0, 1790000000000).encode()
    assert client.hget(keys.profile("c:older"), "i:sku-1") == folded  # folded into the profile hash
    assert client.zscore(keys.popular, "sku-1") == 5.0 and not client.exists(f"{prefix}:popular")
    assert client.get(keys.applied_count) is None  # the backup's keys replaced the ones there
    client.close()


def test_keys_keep_their_expiry_and_a_changing_engine_is_noted(settings: Settings, tmp_path: Path) -> None:
    client = connect_sync(settings)
    prefix = settings.key_prefix
    client.set(f"{prefix}:p:{{c:x}}:served", "a", px=600_000)
    client.set(f"{prefix}:p:{{c:x}}:gone", "b", px=1)
    client.set(f"{prefix}:item:{{sku}}", "c")
    file = tmp_path / "ttl.tar.gz"
    seen: list[int] = []

    def busy(done: int) -> None:  # an event applied while the backup runs
        seen.append(done)
        client.incr(Keys(prefix).applied_count)

    manifest = bk.backup(settings, file, busy)
    assert seen and not manifest.quiet and manifest.counts["items"] == 1
    with tarfile.open(file, "r:gz") as tar:
        assert tar.getnames()[0] == "manifest.json"
        assert orjson.loads(tar.extractfile("manifest.json").read())["quiet"] is False  # type: ignore[union-attr]
    client.delete(f"{prefix}:p:{{c:x}}:served")
    bk.restore(settings, file)
    assert 590_000 < client.pttl(f"{prefix}:p:{{c:x}}:served") <= 600_000
    assert client.get(f"{prefix}:item:{{sku}}") == b"c"
    client.close()


def test_an_older_data_folder_is_upgraded_as_it_starts(settings: Settings, tmp_path: Path) -> None:
    """A data folder written by an engine before a profile was one hash (key layout 3, with keys of layout 2 left):
    ``ecrm up`` upgrades its keys once Redis is up (``upgrade_data_dir``) and notes the new layout in the folder's
    manifest."""
    from runtime.datadir import MANIFEST, open_data_dir
    from runtime.local import upgrade_data_dir

    folder = open_data_dir(tmp_path / "d")
    folder.release()
    found = orjson.loads((tmp_path / "d" / MANIFEST).read_bytes())
    (tmp_path / "d" / MANIFEST).write_bytes(orjson.dumps({**found, "key_layout": 3}))
    folder = open_data_dir(tmp_path / "d")
    assert folder.layout == 3 and not folder.fresh
    keys = Keys(settings.key_prefix)
    client = connect_sync(settings, decode_responses=True)
    pid = "c:old-folder"
    client.hset(keys.profile(pid), mapping={"n:purchase": 1, "last_seen": "1790000000001"})
    client.hset(keys.legacy(pid, "items"), mapping={"sku-1": "2.5"})  # the older engine's plain weight
    client.hset(keys.legacy(pid, "items_ts"), mapping={"sku-1": "1790000000000"})
    client.hset(keys.legacy(pid, "bought"), mapping={"sku-1": "1790000000001"})
    client.hset(keys.legacy(pid, "cart"), mapping={"sku-2": "1"})
    client.pfadd(keys.legacy(pid, "sess"), "s1")
    said: list[str] = []
    try:
        upgrade_data_dir(settings, folder, said.append)
        # a purchase is an interaction: the later time, whichever key the scan met first
        assert client.hmget(keys.profile(pid), "i:sku-1", "k:sku-2", "ss", "#i", "#k") == [
            item_value(2.5, 1790000000001, 1790000000001), "1", "1", "1", "1"
        ]  # fmt: skip
        assert not client.exists(*keys.legacy_profile_keys(pid))
        assert client.hmget(keys.profile(pid), "ls", "last_seen") == ["1790000000001", None]  # layout 3's name renamed
    finally:
        client.close()
        folder.release()
    assert said and "from key layout 3" in said[0] and "5 older profile keys folded into 1 profile" in said[0]
    assert orjson.loads((tmp_path / "d" / MANIFEST).read_bytes())["key_layout"] == KEY_LAYOUT_VERSION
    again = open_data_dir(tmp_path / "d")
    assert again.layout == KEY_LAYOUT_VERSION
    again.release()
