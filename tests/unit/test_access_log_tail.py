"""Reading and following a log file (ingest.tail) with a fake clock: no real waiting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.tail import Line, read_lines


class FakeTime:
    """A clock that only moves when slept on; each sleep may run the next scripted file change."""

    def __init__(self, changes: list[Callable[[], None]] | None = None) -> None:
        self.now = 0.0
        self.changes = list(changes or [])

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.changes:
            self.changes.pop(0)()


def lines_of(items: list[Line | None]) -> list[tuple[int, bytes]]:
    return [(i.number, i.raw) for i in items if i is not None]


def test_reads_all_lines_and_a_last_one_without_break(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\r\ntwo\n\nlast")
    items = list(read_lines(log))
    assert lines_of(items) == [(1, b"one"), (2, b"two"), (3, b""), (4, b"last")]
    assert sum(i.size for i in items if i is not None) == log.stat().st_size


def test_empty_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    assert list(read_lines(log)) == []


def _append(path: Path, data: bytes) -> Callable[[], None]:
    def change() -> None:
        with path.open("ab") as handle:
            handle.write(data)

    return change


def test_follow_picks_up_growth_and_stops_when_idle(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    fake = FakeTime([_append(log, b"two\nthr"), _append(log, b"ee\n")])
    items = list(read_lines(log, follow=True, poll_s=0.5, max_idle_s=2.0, clock=fake.clock, sleep=fake.sleep))
    assert lines_of(items) == [(1, b"one"), (2, b"two"), (3, b"three")]
    assert None in items  # idle ticks let the caller flush
    assert fake.now >= 2.0


def test_follow_keeps_a_partial_line_until_it_ends_or_following_stops(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\npart")
    fake = FakeTime()
    items = list(read_lines(log, follow=True, poll_s=1.0, max_idle_s=3.0, clock=fake.clock, sleep=fake.sleep))
    assert lines_of(items) == [(1, b"one"), (2, b"part")]


def test_follow_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")

    def truncate() -> None:
        log.write_bytes(b"new\n")

    fake = FakeTime([truncate])
    items = list(read_lines(log, follow=True, poll_s=0.5, max_idle_s=2.0, clock=fake.clock, sleep=fake.sleep))
    assert lines_of(items) == [(1, b"one"), (2, b"two"), (1, b"new")]


def test_follow_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")

    def rotate() -> None:
        _append(log, b"two\n")()
        log.rename(tmp_path / "a.log.1")
        log.write_bytes(b"fresh\n")

    fake = FakeTime([rotate])
    items = list(read_lines(log, follow=True, poll_s=0.5, max_idle_s=2.0, clock=fake.clock, sleep=fake.sleep))
    assert lines_of(items) == [(1, b"one"), (2, b"two"), (1, b"fresh")]
