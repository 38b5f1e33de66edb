"""What a personal recommendation reads of Redis, in one round trip
(:meth:`profiles.store.ProfileStore.request_context`): the profile and, while it is small, the whole out-of-stock set.

A list is built by the engine *after* the profile is read, so the stock of its items cannot be asked for in the same
round trip. The out-of-stock set is usually short, so while it holds at most ``SMALL_STOCK_SET`` items it is read
whole with the profile (fresh at every request, as before) and the list is checked against it in memory. A larger
set is only counted with the profile, and the list's items are checked with ``SMISMEMBER`` in a second round trip;
the count read with each request decides which way the next request goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiles.store import ProfileStore, RequestContext

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
    """One pipeline per request: the profile's hash (the whole profile) and the out-of-stock set (or its size)."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store
        self._small = True  # the last request found the out-of-stock set small: read it whole

    async def profile(self, pid: str) -> tuple[RequestContext, Stock]:
        """The profile's history, purchases and top categories, and the out-of-stock items. Raises
        StoreUnavailable."""
        context, stock = await self.store.request_context(pid, whole_stock=self._small)
        if isinstance(stock, int):  # only counted
            self._small = stock <= SMALL_STOCK_SET
            return context, Stock(frozenset() if stock == 0 else None)
        self._small = len(stock) <= SMALL_STOCK_SET
        return context, Stock(stock)
