"""A configuration file read again only when it changed: the mechanism under every hot-reloaded file (segment rules,
business rules).

:meth:`WatchedFile.poll` looks at the file's modification time and size at most every ``check_interval_s`` seconds
(a ``stat``, never a read, on a hot path) and reads it only when they changed. A file that cannot be looked at
(missing, unreadable directory) is reported once, when that is found, not on every poll until it is back. What the
text means, and what to do when it is invalid, is the caller's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_Stamp = tuple[int, int]  # (mtime_ns, size); (-1, errno) while the file cannot be looked at


@dataclass(frozen=True, slots=True)
class Poll:
    """What a poll found: the new ``text``; or ``error``, with ``gone`` when the file could not even be looked at
    (missing or unreadable: the next poll that finds it reads it again)."""

    text: str | None = None
    error: OSError | UnicodeDecodeError | None = None
    gone: bool = False


class WatchedFile:
    def __init__(self, path: Path, check_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._stamp: _Stamp | None = None
        self._checked_at = float("-inf")

    def poll(self, force: bool = False) -> Poll | None:
        """None when it is not time to look yet or nothing changed; else what was found."""
        now = self._clock()
        if not force and now - self._checked_at < self.check_interval_s:
            return None
        self._checked_at = now
        try:
            st = os.stat(self.path)
        except OSError as exc:
            gone = (-1, exc.errno or 0)
            if gone == self._stamp:  # still missing (or still unreadable) for the same reason: reported already
                return None
            self._stamp = gone
            return Poll(error=exc, gone=True)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return Poll(text=self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return Poll(error=exc)
