"""Stopping a background task for sure (api/background.py), even when it swallows a cancellation."""

from __future__ import annotations

import asyncio

from api.background import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # consumed, as asyncio.wait_for may on Python 3.11 (CPython gh-86296)
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, recancel_s=0.01), 5)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_ends_with_an_error_is_waited_for_quietly() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)


async def test_a_finished_task_returns_at_once() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await cancel_and_wait(task)
    assert task.done() and not task.cancelled()
