"""What a personal recommendation reads of Redis, in one round trip: the profile (the same reads and parsing as
:meth:`profiles.store.ProfileStore.request_context`) and, while it is small, the whole out-of-stock set.

A list is built by the engine *after* the profile is read, so the stock of its items cannot be asked for in the same
round trip. The out-of-stock set is usually short, so while it holds at most ``SMALL_STOCK_SET`` items it is read
whole with the profile (fresh at every request, as before) and the list is checked against it in memory. A larger
set is only counted with the profile, and the list's items are checked with ``SMISMEMBER`` in a second round trip;
the count read with each request decides which way the next request goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.redis import redis_errors
from profiles.store import ProfileStore, RequestContext, _history

SMALL_STOCK_SET = 256  # out-of-stock items read whole with every request (more: counted, then checked per list)


@dataclass(frozen=True, slots=True)
class Stock:
    """The out-of-stock items read with a request: every one of them (``items``), or None when the set was too
    large to read whole (the store is then asked about the list's items)."""

    items: frozenset[str] | None

    def among(self, items: list[str]) -> set[str] | None:
        """Which of ``items`` are out of stock, or None when this read cannot tell (pure)."""
        if self.items is None:
            return None
        return {item for item in items if item in self.items} if self.items else set()


class RequestReads:
    """One pipeline per request: the profile's four hashes and the out-of-stock set (or its size)."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store
        self._small = True  # the last request found the out-of-stock set small: read it whole

    async def profile(self, pid: str) -> tuple[RequestContext, Stock]:
        """The profile's history, purchases and top categories, and the out-of-stock items. Raises
        StoreUnavailable."""
        keys = self.store.keys
        with redis_errors(f"reading profile {pid!r}"):
            async with self.store.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.items(pid))
                pipe.hgetall(keys.items_ts(pid))
                pipe.hgetall(keys.bought(pid))
                pipe.hgetall(keys.affinity(pid))
                if self._small:
                    pipe.smembers(keys.out_of_stock)
                else:
                    pipe.scard(keys.out_of_stock)
                weights, times, bought, aff, stock = await pipe.execute()
        context = RequestContext(
            history=_history(weights, times),
            bought={item: int(ts) for item, ts in bought.items()},
            categories=[cat for cat, _ in sorted(aff.items(), key=lambda kv: -float(kv[1]))[:3]],
        )
        if isinstance(stock, int):  # only counted
            self._small = stock <= SMALL_STOCK_SET
            return context, Stock(frozenset() if stock == 0 else None)
        self._small = len(stock) <= SMALL_STOCK_SET
        return context, Stock(frozenset(stock))
