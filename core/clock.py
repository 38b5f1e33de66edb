"""The clock, in one place: epoch milliseconds, the engine's unit of time."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)
