"""Pure parts of the degraded modes: the in-memory popular copy, the bounded mask cache, the Redis timeouts."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from api.degraded import PopularItem, merge_popular, pick
from api.serving import Served
from core.redis import connect, connect_bytes, connect_sync
from core.settings import Settings
from profiles.store import ScoredItem
from recommender.base import ItemMask
from recommender.model import Engine


def test_popular_copy_is_trending_then_popular_once_each_without_out_of_stock() -> None:
    trending = [ScoredItem("a", 5.0), ScoredItem("b", 4.0), ScoredItem("gone", 3.0)]
    popular = [ScoredItem("b", 90.0), ScoredItem("c", 80.0), ScoredItem("d", 70.0)]
    items = merge_popular(trending, popular, {"a": "shoes", "c": "hats"}, {"gone"}, limit=4)
    assert items == (
        PopularItem("a", 5.0, "trending", "shoes"),
        PopularItem("b", 4.0, "trending", None),
        PopularItem("c", 80.0, "popular", "hats"),
        PopularItem("d", 70.0, "popular", None),
    )
    assert len(merge_popular(trending, popular, {}, set(), limit=2)) == 2


def test_degraded_pick_honours_exclusions_and_the_category() -> None:
    items = merge_popular(
        [ScoredItem("a", 3.0), ScoredItem("b", 2.0), ScoredItem("c", 1.0)],
        [],
        {"a": "shoes", "b": "hats", "c": "shoes"},
        set(),
        limit=10,
    )
    assert [i for i, _, _ in pick(items, set())] == ["a", "b", "c"]
    assert [i for i, _, _ in pick(items, {"a"})] == ["b", "c"]
    assert [i for i, _, _ in pick(items, set(), "shoes")] == ["a", "c"]
    assert list(pick(items, set(), "unknown")) == []


class CountingModel:
    """Stands in for a model: builds a mask and counts how often it had to."""

    def __init__(self) -> None:
        self.built: list[frozenset[str]] = []

    def mask(self, items: set[str]) -> ItemMask:
        self.built.append(frozenset(items))
        return ItemMask(np.zeros(4, dtype=np.bool_))


def test_category_masks_are_a_bounded_lru() -> None:
    model = CountingModel()
    served = Served(cast(Engine, model), "v1", {}, mask_cache_size=3)
    for k in range(1000):  # a scan over arbitrary ?category= values
        served.mask(f"cat:{k}", {f"i{k}"})
    assert len(served.masks) == 3 and len(model.built) == 1000
    served.mask("cat:hot", {"x"})
    for k in range(5):
        served.mask("cat:hot", {"x"})  # used again and again: built once, never evicted
        served.mask(f"cat:other{k}", {"y"})
    assert model.built.count(frozenset({"x"})) == 1
    assert "cat:hot" in served.masks and len(served.masks) == 3


def test_every_redis_client_has_explicit_timeouts() -> None:
    settings = Settings(redis_socket_timeout_s=0.7, redis_connect_timeout_s=0.3)
    for kwargs in (
        connect(settings).connection_pool.connection_kwargs,
        connect_bytes(settings).connection_pool.connection_kwargs,
        connect_sync(settings).connection_pool.connection_kwargs,
    ):
        assert kwargs["socket_timeout"] == 0.7 and kwargs["socket_connect_timeout"] == 0.3


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_on_a_failure_and_lets_one_request_try_again() -> None:
    from api.breaker import RedisBreaker

    clock = Clock()
    breaker = RedisBreaker(retry_s=1.0, clock=clock)
    assert breaker.closed and breaker.allow() and breaker.allow()  # closed: every request tries
    breaker.failed()
    assert not breaker.allow()  # open: nobody tries
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.allow()  # one trial ...
    assert not breaker.allow() and not breaker.allow()  # ... at a time
    breaker.failed()
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.6
    assert breaker.allow()
    breaker.abandoned()  # the trial was cancelled (the client left): another request may try
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.closed and breaker.allow() and breaker.allow()


async def test_reads_share_one_deadline_and_a_miss_opens_the_breaker() -> None:
    import asyncio

    from api.breaker import BreakerOpen, DeadlineExceeded, RedisBreaker, within
    from core.errors import StoreUnavailable

    clock = Clock()
    breaker = RedisBreaker(retry_s=1.0, clock=clock)

    async def reads(delays: list[float]) -> str:
        for delay in delays:  # each read alone is within the budget, together they are not
            await asyncio.sleep(delay)
        return "ok"

    assert await within(breaker, 0.2, lambda: reads([0.01, 0.01])) == "ok"
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded, match="request deadline of 50 ms"):
        await within(breaker, 0.05, lambda: reads([0.03, 0.03, 0.03]))
    assert asyncio.get_running_loop().time() - started < 0.085
    assert not breaker.closed
    with pytest.raises(BreakerOpen):  # at once, without trying
        await within(breaker, 0.05, lambda: reads([]))
    # the readiness probe tries anyway, and its success closes the breaker
    assert await within(breaker, 0.05, lambda: reads([]), always=True) == "ok" and breaker.closed

    async def failing() -> str:
        raise StoreUnavailable("down", "connection")

    with pytest.raises(StoreUnavailable):
        await within(breaker, 0.05, failing)
    assert not breaker.closed
    clock.now += 1.5
    assert await within(breaker, 0.05, lambda: reads([])) == "ok" and breaker.closed


async def test_a_missed_deadline_opens_the_breaker_only_when_redis_is_found_slow() -> None:
    import asyncio

    from api.breaker import DeadlineExceeded, RedisBreaker, within

    async def slow() -> str:
        await asyncio.sleep(0.2)
        return "late"

    async def quick() -> bool:
        return True

    async def hung() -> bool:
        await asyncio.sleep(10)
        return True

    busy_host = RedisBreaker(retry_s=1.0, probe=quick, probe_timeout_s=0.05)  # the request was late, Redis is not
    with pytest.raises(DeadlineExceeded):
        await within(busy_host, 0.02, slow)
    await asyncio.sleep(0.03)
    assert busy_host.closed
    hung_redis = RedisBreaker(retry_s=1.0, probe=hung, probe_timeout_s=0.05)
    with pytest.raises(DeadlineExceeded):
        await within(hung_redis, 0.02, slow)
    assert hung_redis.closed  # the probe decides, in the background ...
    await asyncio.sleep(0.1)
    assert not hung_redis.closed  # ... and found Redis hung
    await busy_host.close()
    await hung_redis.close()
