"""The pure parts of backups and data folders: the keys file's records, what a key counts as, the erasure logs
merged, the refusals of newer backups and folders, the data folder's lock."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from core.erasure_log import Erasure, append_file, merged, read_file
from core.keyspace import CLUSTER_LAYOUT_VERSION, KEY_LAYOUT_VERSION
from core.settings import Settings
from runtime import backup as bk
from runtime.datadir import MANIFEST, DataDirError, open_data_dir


def test_records_read_back_what_was_written() -> None:
    written = [(b"ecrm:p:{c:a}", -1, b"\x00payload"), (b"ecrm:{g}:popular", 1_900_000_000_000, b"x" * 70_000)]
    raw = io.BytesIO()
    for key, expiry, payload in written:
        raw.write(bk._LEN.pack(len(key)) + key + bk._EXPIRY.pack(expiry) + bk._LEN.pack(len(payload)) + payload)
    assert list(bk.records(io.BytesIO(raw.getvalue()))) == written
    with pytest.raises(bk.BackupError, match="cut short"):
        list(bk.records(io.BytesIO(raw.getvalue()[:-1])))


@pytest.mark.parametrize(
    ("rest", "kind"),
    [
        (b"p:{c:alice}", "customers"),
        (b"p:{a:v%3A1}", "visitors"),
        (b"p:{c:alice}:items", None),
        (b"item:{sku-1}", "items"),
        (b"item:{sku-1}:seen:direct:e1", None),
        (b"{g}:model:blob:v1", "model_versions"),
        (b"{g}:model:meta:v1", None),
        (b"p:{acme|c:alice}", "customers"),
        (b"p:{default|a:v}", "visitors"),
        (b"p:{acme|c:alice}:items", None),
        (b"item:{acme|sku-1}", "items"),
        (b"{t:acme}:model:blob:v1", "model_versions"),
        (b"{t:acme}:model:meta:v1", None),
    ],
)
def test_what_a_key_counts_as(rest: bytes, kind: str | None) -> None:
    assert bk.classify(rest) == kind


def test_erasure_logs_merge_each_customer_once_at_their_last_erasure(tmp_path: Path) -> None:
    log = tmp_path / "erasures.jsonl"
    append_file(log, Erasure(10, "a"))
    append_file(log, Erasure(30, "b"))
    with open(log, "ab") as out:
        out.write(b'{"customer_id": "c", "at_')  # a line torn by a crash
    assert read_file(log, 20) == [Erasure(30, "b")]
    assert read_file(tmp_path / "none.jsonl", 0) == []
    assert merged(read_file(log, 0), [Erasure(20, "a"), Erasure(5, "d")]) == [
        Erasure(5, "d"), Erasure(20, "a"), Erasure(30, "b"),
    ]  # fmt: skip


def test_erasure_logs_keep_tenants_apart(tmp_path: Path) -> None:
    """The same customer id erased in two shops is two erasures; a line of an engine before tenants is the tenant
    default's, a line naming no valid tenant is skipped."""
    log = tmp_path / "erasures.jsonl"
    append_file(log, Erasure(10, "a", "acme"))
    with open(log, "ab") as out:
        out.write(b'{"customer_id": "a", "at_ms": 20}\n{"customer_id": "a", "at_ms": 25, "tenant": "Bad|x"}\n')
    assert read_file(log, 0) == [Erasure(10, "a", "acme"), Erasure(20, "a", "default")]
    assert merged(read_file(log, 0), [Erasure(30, "a", "acme")]) == [Erasure(20, "a"), Erasure(30, "a", "acme")]
    assert bk.profile_tags("x:1", "acme") == [b"p:{acme|c:x%3A1}"]
    assert bk.profile_tags("x") == [b"p:{default|c:x}", b"p:{c:x}"]


def test_what_a_tenant_backup_holds() -> None:
    assert bk.in_scope("e", "acme", b"e:p:{acme|c:1}:items") and not bk.in_scope("e", "acme", b"e:p:{acme-2|c:1}")
    assert bk.in_scope("e", None, b"e:p:{acme-2|c:1}") and not bk.in_scope("e", "acme", b"e:{t:default}:popular")
    assert bk.is_live("e", b"e:{t:acme}:erasure_log") and not bk.is_live("e", b"e:{t:acme}:popular")


def manifest(layout: int, fmt: int = 1) -> bk.Manifest:
    return bk.Manifest(fmt, "9.9.9", layout, "ecrm", False, 1, 2, 0, 0)


def test_newer_backups_are_refused_older_layouts_upgraded_the_first_on_one_node_only() -> None:
    one, cluster = Settings(), Settings(redis_cluster=True)
    assert bk.check_restorable(manifest(KEY_LAYOUT_VERSION), one) is False
    assert bk.check_restorable(manifest(KEY_LAYOUT_VERSION - 1), one) is True
    with pytest.raises(bk.BackupError, match=f"key layout {KEY_LAYOUT_VERSION + 1}"):
        bk.check_restorable(manifest(KEY_LAYOUT_VERSION + 1), one)
    with pytest.raises(bk.BackupError, match="newer file format"):
        bk.check_restorable(manifest(KEY_LAYOUT_VERSION, fmt=bk.FORMAT + 1), one)
    assert bk.check_restorable(manifest(CLUSTER_LAYOUT_VERSION), cluster) is (
        CLUSTER_LAYOUT_VERSION < KEY_LAYOUT_VERSION
    )
    with pytest.raises(bk.BackupError, match="single node"):
        bk.check_restorable(manifest(CLUSTER_LAYOUT_VERSION - 1), cluster)


def test_a_data_folder_is_held_by_one_engine_and_refused_when_newer(tmp_path: Path) -> None:
    folder = open_data_dir(tmp_path / "d")
    assert folder.fresh and (folder.root / MANIFEST).is_file() and folder.redis_dir.is_dir()
    with pytest.raises(DataDirError, match=r"in use by another running engine \(pid \d+\)"):
        open_data_dir(tmp_path / "d")
    folder.release()
    again = open_data_dir(tmp_path / "d")
    assert not again.fresh
    again.release()
    found = orjson.loads((tmp_path / "d" / MANIFEST).read_bytes())
    (tmp_path / "d" / MANIFEST).write_bytes(orjson.dumps({**found, "key_layout": KEY_LAYOUT_VERSION + 1}))
    with pytest.raises(DataDirError, match="written by a newer engine"):
        open_data_dir(tmp_path / "d")
    # the refusal released the lock: the folder is not held by anyone
    (tmp_path / "d" / MANIFEST).write_bytes(orjson.dumps(found))
    open_data_dir(tmp_path / "d").release()
