"""The watched file under every hot-reloaded configuration file."""

from __future__ import annotations

import os
from pathlib import Path

from core.watched import WatchedFile


def test_reads_only_when_changed_and_at_most_every_interval(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "f.yaml"
    path.write_text("a")
    watched = WatchedFile(path, 2.0, clock=lambda: now[0])
    first = watched.poll()
    assert first is not None and first.text == "a"
    assert watched.poll(force=True) is None  # unchanged
    path.write_text("bb")
    assert watched.poll() is None  # not due yet
    now[0] = 2.0
    changed = watched.poll()
    assert changed is not None and changed.text == "bb"


def test_a_missing_or_undecodable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    watched = WatchedFile(path, 0.0)
    gone = watched.poll()
    assert gone is not None and gone.gone and isinstance(gone.error, FileNotFoundError)
    assert watched.poll() is None  # still missing: reported once, not on every poll
    path.write_bytes(b"\xff\xfe\x00bad")
    bad = watched.poll()
    assert bad is not None and not bad.gone and isinstance(bad.error, UnicodeDecodeError)
    stat = os.stat(path)
    os.remove(path)
    assert watched.poll() is not None  # gone
    assert watched.poll() is None
    path.write_bytes(b"\xff\xfe\x00bad")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the very same stamp as before it went
    assert watched.poll() is not None  # read again all the same
