"""``ecrm bench backup``: how long ``ecrm backup`` and ``ecrm restore`` take for a shop of N profiles, the file's
size, and the memory each command needs (bounded: it streams keys): both run as the real commands, in processes of
their own.

The profiles are written as ``ecrm bench memory`` writes them (benchmarks/memory.py: the same typical history
through the worker's write path, after a catalogue of 10,000 items). Then the backup is taken (runtime/backup.py),
every key of the prefix deleted and the backup restored; a sample of profiles is read before and after and must be
the same.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.memory import CATALOGUE, apply_all, catalogue_plans, history
from core.keyspace import ProfileId
from core.redis import connect, connect_sync
from core.settings import Settings, isolated
from profiles.store import ProfileStore
from runtime import backup as bk
from runtime.local import settings_env

Echo = Callable[[str], None]


@dataclass
class BackupFigures:
    profiles: int
    events_per_profile: int
    keys: int
    write_s: float
    backup_s: float
    restore_s: float
    file_bytes: int
    backup_rss_mb: float
    restore_rss_mb: float
    sample_equal: bool
    load_avg: tuple[float, float, float]

    def lines(self) -> list[str]:
        return [
            f"profiles                {self.profiles} ({self.events_per_profile} events each), {self.keys} keys",
            f"backup                  {self.backup_s:8.1f} s   ({self.keys / self.backup_s:,.0f} keys/s)",
            f"restore                 {self.restore_s:8.1f} s   ({self.keys / self.restore_s:,.0f} keys/s; "
            "deleting first included)",
            f"file                    {self.file_bytes / 1e6:8.1f} MB",
            f"peak memory             {self.backup_rss_mb:8.0f} MB (ecrm backup), {self.restore_rss_mb:.0f} MB "
            "(ecrm restore, or backup if more)",
            f"sample equal after      {self.sample_equal}",
            f"load average            {' '.join(f'{x:.1f}' for x in self.load_avg)}",
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "profiles": self.profiles,
            "events_per_profile": self.events_per_profile,
            "keys": self.keys,
            "write_s": round(self.write_s, 1),
            "backup_s": round(self.backup_s, 2),
            "restore_s": round(self.restore_s, 2),
            "file_bytes": self.file_bytes,
            "backup_rss_mb": round(self.backup_rss_mb, 1),
            "restore_rss_mb": round(self.restore_rss_mb, 1),
            "sample_equal": self.sample_equal,
            "load_avg": list(self.load_avg),
        }


async def fill(settings: Settings, profiles: int, events: int, echo: Echo) -> None:
    store = ProfileStore(connect(settings), settings)
    try:
        echo(f"writing a catalogue of {CATALOGUE} items and {profiles} profiles x {events} events ...")
        await apply_all(store, catalogue_plans())
        step = 2_000
        for start in range(0, profiles, step):
            plans = [p for i in range(start, min(start + step, profiles)) for p in history(i, events, 10)]
            await apply_all(store, plans)
            if (start + step) % 20_000 == 0:
                echo(f"  {start + step} profiles")
    finally:
        await store.client.aclose()


async def sample(settings: Settings, profiles: int) -> list[Any]:
    store = ProfileStore(connect(settings), settings)
    try:
        pids = [ProfileId("c", f"cust-{i:07d}") for i in range(0, profiles, max(profiles // 100, 1))]
        return [await store.profile(str(pid), 1_900_000_000_000) for pid in pids]
    finally:
        await store.client.aclose()


def bench_backup(base: Settings, profiles: int, events: int, echo: Echo) -> BackupFigures:
    settings = isolated(base)
    started = time.perf_counter()
    asyncio.run(fill(settings, profiles, events, echo))
    write_s = time.perf_counter() - started
    before = asyncio.run(sample(settings, profiles))
    with tempfile.TemporaryDirectory(prefix="ecrm-bench-backup-") as folder:
        file = Path(folder) / "shop.tar.gz"
        echo("ecrm backup ...")
        backup_s, backup_rss = command(settings, "backup", str(file))
        manifest = bk.read_manifest(file)
        size = file.stat().st_size
        echo(f"  {manifest.counts['keys']} keys, {size / 1e6:.1f} MB in {backup_s:.1f} s; ecrm restore ...")
        restore_s, restore_rss = command(settings, "restore", str(file))
    after = asyncio.run(sample(settings, profiles))
    client = connect_sync(settings)
    try:  # the bench's keys are removed again
        for node in bk.primaries(client, settings):
            bk.wipe(node, settings.key_prefix, lambda _: False)
    finally:
        client.close()
    return BackupFigures(profiles, events, int(manifest.counts["keys"]), write_s, backup_s, restore_s, size,
                         backup_rss, restore_rss, before == after, os.getloadavg())  # fmt: skip


def command(settings: Settings, *args: str) -> tuple[float, float]:
    """Run ``ecrm <args>`` on ``settings``; its wall time (s) and peak resident memory (MB). Exits on failure."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ecrm", *args], env=settings_env(settings), capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ecrm {' '.join(args)} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
