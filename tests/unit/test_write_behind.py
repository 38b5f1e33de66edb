"""The worker's write-behind (stream/agents.py): one batch written at a time, in order, each acked only once
written, the events of the batch being written reported as unacked (a stop withholds them).

The processor here is a stand-in that records when each batch's write starts and ends; the agent and the real
processor run against the real broker and Redis in tests/integration/test_pipeline.py and test_graceful_stop.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from stream.agents import WriteBehind
from stream.processing import BatchProcessor, BatchResult, PreparedBatch


class RecordingProcessor:
    """Writes take until ``release`` is set for them; ``log`` records each start and end."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release: dict[int, asyncio.Event] = {}

    async def apply(self, batch: PreparedBatch) -> BatchResult:
        self.log.append(f"start {batch.size}")
        await self.release.setdefault(batch.size, asyncio.Event()).wait()
        self.log.append(f"end {batch.size}")
        return BatchResult()


class FakeEvent:
    def __init__(self, name: str) -> None:
        self.name = name


async def test_one_batch_at_a_time_in_order_acked_once_written() -> None:
    processor = RecordingProcessor()
    acked: list[str] = []

    async def ack(event: Any) -> bool:
        acked.append(f"{event.name} after {processor.log[-1]}")
        return True

    writes = WriteBehind(cast(BatchProcessor, processor), ack)
    first, second = [FakeEvent("a1"), FakeEvent("a2")], [FakeEvent("b1")]
    await writes.submit(PreparedBatch(1), cast(Any, first))
    await asyncio.sleep(0)
    assert processor.log == ["start 1"] and acked == []
    assert list(writes.unacked()) == first  # being written: a stop now must withhold these

    # The next batch waits for the first to be written (and acked) before its own write starts.
    submitted = asyncio.create_task(writes.submit(PreparedBatch(2), cast(Any, second)))
    await asyncio.sleep(0.01)
    assert not submitted.done() and processor.log == ["start 1"]
    processor.release.setdefault(1, asyncio.Event()).set()
    await submitted
    await asyncio.sleep(0)
    assert processor.log == ["start 1", "end 1", "start 2"]
    assert acked == ["a1 after end 1", "a2 after end 1"]
    assert list(writes.unacked()) == second

    processor.release.setdefault(2, asyncio.Event()).set()
    assert writes.task is not None
    await writes.task
    assert acked[-1] == "b1 after end 2" and list(writes.unacked()) == []


async def test_a_cancelled_write_acks_nothing() -> None:
    processor = RecordingProcessor()
    acked: list[Any] = []

    async def ack(event: Any) -> bool:
        acked.append(event)
        return True

    writes = WriteBehind(cast(BatchProcessor, processor), ack)
    await writes.submit(PreparedBatch(1), cast(Any, [FakeEvent("a")]))
    await asyncio.sleep(0)
    assert writes.task is not None
    writes.task.cancel()
    await asyncio.gather(writes.task, return_exceptions=True)
    assert acked == [] and processor.log == ["start 1"]


async def test_written_waits_for_the_write_and_its_acks() -> None:
    processor = RecordingProcessor()
    acked: list[Any] = []

    async def ack(event: Any) -> bool:
        acked.append(event)
        return True

    writes = WriteBehind(cast(BatchProcessor, processor), ack)
    events = [FakeEvent("a")]
    await writes.submit(PreparedBatch(1), cast(Any, events))
    waiting = asyncio.create_task(writes.written())
    await asyncio.sleep(0.01)
    assert not waiting.done() and acked == []
    processor.release.setdefault(1, asyncio.Event()).set()
    await waiting
    assert acked == events and processor.log == ["start 1", "end 1"]
