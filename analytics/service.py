"""What the API asks of the analytics: live figures of one profile, the segment totals, a page of an export.

Built on an :class:`~analytics.store.AnalyticsStore` and a hot-reloaded :class:`~analytics.rules_file.RulesSource`.
Domain errors (:class:`UnknownSegment`, :class:`~analytics.cursor.InvalidCursor`, :class:`NoRefreshYet`) are
mapped to HTTP by the routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analytics.cursor import Cursor, InvalidCursor
from analytics.rules import SegmentRules, slug
from analytics.rules_file import RulesSource
from analytics.settings import AnalyticsSettings
from analytics.snapshot import iso
from analytics.state import NO_REFRESH, AnalyticsState, live_analytics
from analytics.store import AnalyticsStore


class UnknownSegment(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.known = known
        super().__init__(f"unknown segment {name!r}; known segments: {', '.join(known)}")


class NoRefreshYet(LookupError):
    def __init__(self) -> None:
        super().__init__(NO_REFRESH)


@dataclass(frozen=True, slots=True)
class Page:
    segment: str
    snapshot_id: str
    refreshed_at: str | None
    total: int
    offset: int
    rows: list[dict[str, Any]]
    next_cursor: str | None


class AnalyticsService:
    def __init__(
        self, store: AnalyticsStore, rules: RulesSource | Callable[[], RulesSource], cfg: AnalyticsSettings
    ) -> None:
        """``rules``: the segment rules, or what returns those serving the request (one file per tenant)."""
        self.store = store
        self._rules = rules
        self.cfg = cfg
        self._raw: str | None = None
        self._state: AnalyticsState | None = None

    async def state(self) -> AnalyticsState | None:
        """The last published state (parsed once per refresh)."""
        return self._parsed(await self.store.state_raw())

    def _parsed(self, raw: str | None) -> AnalyticsState | None:
        if raw != self._raw:
            self._state = AnalyticsState.from_json(raw) if raw else None
            self._raw = raw
        return self._state

    @property
    def rules(self) -> RulesSource:
        return self._rules if isinstance(self._rules, RulesSource) else self._rules()

    def current_rules(self) -> SegmentRules:
        return self.rules.current()

    async def profile_analytics(self, pid: str, now_ms: int) -> dict[str, Any]:
        """Live scores, segment, lifetime value and churn risk of a profile (see :func:`live_analytics`)."""
        live, raw = await self.store.live(pid)
        return live_analytics(live, self._parsed(raw), self.current_rules(), now_ms, self.cfg.clv_horizon_days)

    async def overview(self) -> dict[str, Any]:
        """Segment sizes and totals as of the last refresh, with the refresh's figures and the rules in force."""
        state = await self.state()
        rules = self.current_rules()
        status = self.rules.status()
        rules_info = {
            "path": status.path,
            "loaded_at": iso(int(status.loaded_at * 1000)) if status.loaded_at else None,
            "error": status.error,
            "segments": rules.names,
        }
        if state is None:
            return {"refreshed_at": None, "message": NO_REFRESH, "rules": rules_info, "segments": []}
        return {
            "refreshed_at": iso(state.refreshed_at_ms),
            "snapshot_id": state.snapshot_id,
            "refresh_duration_s": state.duration_s,
            "profiles": state.profiles,
            "customers_scored": state.customers_scored,
            "breakpoints": _breakpoints(state),
            "model": state.model_info,
            "rules": rules_info,
            "segments": state.summary,
        }

    async def page(self, name: str, cursor_text: str | None, limit: int) -> Page:
        """One page of the members of segment ``name`` in the snapshot the cursor names (else the latest)."""
        at = self._resume(name, cursor_text) if cursor_text else await self._start(name)
        meta = await self.store.snapshot_meta(at.snapshot_id)
        if meta is None:
            raise self._expired(at.snapshot_id) if cursor_text else NoRefreshYet()
        names: list[str] = list(meta["segments"])
        if at.segment not in names:
            raise InvalidCursor(f"invalid cursor: snapshot {at.snapshot_id} has no segment {at.segment!r}")
        index = names.index(at.segment)
        rows = await self.store.members(at.snapshot_id, index, at.offset, limit)
        end, total = at.offset + len(rows), int(meta["sizes"][index])
        more = end < total and len(rows) == limit
        return Page(
            segment=at.segment,
            snapshot_id=at.snapshot_id,
            refreshed_at=iso(int(meta["refreshed_at_ms"])),
            total=total,
            offset=at.offset,
            rows=rows,
            next_cursor=Cursor(at.snapshot_id, at.segment, end).encode() if more else None,
        )

    async def _start(self, name: str) -> Cursor:
        """The first position of segment ``name`` in the latest snapshot."""
        state = await self.state()
        if state is None:
            raise NoRefreshYet()
        found = next((s for s in state.segments if slug(s) == slug(name)), None)
        if found is None:
            raise UnknownSegment(name, state.segments)
        return Cursor(state.snapshot_id, found, 0)

    @staticmethod
    def _resume(name: str, cursor_text: str) -> Cursor:
        cursor = Cursor.decode(cursor_text)
        if slug(cursor.segment) != slug(name):
            raise InvalidCursor(f"invalid cursor: it pages through segment {cursor.segment!r}, not {name!r}")
        return cursor

    def _expired(self, snapshot_id: str) -> InvalidCursor:
        keep = int(self.cfg.analytics_snapshot_keep_s)
        return InvalidCursor(
            f"cursor expired: snapshot {snapshot_id} is no longer kept (a replaced snapshot is kept for {keep} s, "
            "ECRM_ANALYTICS_SNAPSHOT_KEEP_S); start the export again without a cursor"
        )


def _breakpoints(state: AnalyticsState) -> dict[str, Any] | None:
    """The quintile breakpoints; recency as the days before the refresh."""
    bp = state.breakpoints
    if bp is None:
        return None
    return {
        "population": bp.population,
        "recency_days": [round((state.refreshed_at_ms - c) / 86_400_000.0, 3) for c in bp.recency],
        "last_purchase": [iso(int(c)) for c in bp.recency],
        "frequency": list(bp.frequency),
        "monetary": list(bp.monetary),
    }
