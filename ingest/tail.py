"""Reading a log file line by line, optionally following it as it grows (``tail -F`` by polling).

:func:`read_lines` yields :class:`Line` objects and, while following, ``None`` whenever it had to wait for new
data: the caller uses those ticks to flush what it has batched. Following survives truncation (``copytruncate``)
and replacement (rename and re-create) of the file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based, counted from the start of the file (restarts when the file is replaced)
    raw: bytes  # without the line break
    size: int  # bytes consumed, line break included (for progress)


def read_lines(
    path: Path,
    follow: bool = False,
    poll_s: float = 0.5,
    max_idle_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Line | None]:
    """Lines of ``path``; with ``follow``, keep waiting for more until ``max_idle_s`` without data (or forever)."""
    handle: BinaryIO = path.open("rb")
    try:
        number = 0
        pending = b""
        idle_since = clock()
        while True:
            chunk = handle.readline()
            if chunk.endswith(b"\n") or (chunk and not follow):
                number += 1
                data = pending + chunk
                pending = b""
                yield Line(number, data.rstrip(b"\r\n"), len(data))
                idle_since = clock()
                continue
            pending += chunk  # a line still being written (follow) or nothing at all
            if not follow:
                break
            if max_idle_s is not None and clock() - idle_since >= max_idle_s:
                break
            yield None
            sleep(poll_s)
            reopened = _reopen_if_replaced(path, handle)
            if reopened is not None:
                handle.close()
                handle, number, pending = reopened, 0, b""
        if pending:
            number += 1
            yield Line(number, pending.rstrip(b"\r\n"), len(pending))
    finally:
        handle.close()


def _reopen_if_replaced(path: Path, handle: BinaryIO) -> BinaryIO | None:
    """A fresh handle when the file was truncated or replaced since ``handle`` was opened, else None."""
    try:
        now = os.stat(path)
    except OSError:
        return None  # rotated away and not re-created yet: keep waiting on the old handle
    then = os.fstat(handle.fileno())
    if now.st_size < handle.tell() and (now.st_ino, now.st_dev) == (then.st_ino, then.st_dev):
        return path.open("rb")  # truncated in place
    if (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev) and then.st_size <= handle.tell():
        return path.open("rb")  # replaced, and the old file is read to its end
    return None
