"""Stopping the API's background tasks (model polling, the popular-items copy, the broker connection) for sure.

Cancelling a task once and awaiting it is not enough on Python 3.11: ``asyncio.wait_for``, which redis-py uses to
send a command, drops a cancellation that arrives in the same loop iteration as the command's completion (CPython
gh-86296, fixed in 3.12). The task then runs on with the cancellation consumed, and a shutdown that awaits it waits
forever. :func:`cancel_and_wait` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], recancel_s: float = RECANCEL_S) -> None:
    """Cancel ``task`` and return once it has ended, cancelling it again every ``recancel_s`` while it runs on
    (a cancellation swallowed on the way). Its result or error, other than the cancellation, is left unread."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=recancel_s)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
