"""What the API asks of the analytics: live figures of one profile, the segment totals, a page of an export.

Built on an :class:`~analytics.store.AnalyticsStore` and a hot-reloaded :class:`~analytics.rules_file.RulesSource`.
Domain errors (:class:`UnknownSegment`, :class:`~analytics.cursor.InvalidCursor`, :class:`NoRefreshYet`) are
mapped to HTTP by the routes.
"""

from __future__ import annotations

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
    def __init__(self, store: AnalyticsStore, rules: RulesSource, cfg: AnalyticsSettings) -> None:
        self.store = store
        self.rules = rules
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
        if cursor_text:
            cursor = Cursor.decode(cursor_text)
            if slug(cursor.segment) != slug(name):
                raise InvalidCursor(f"invalid cursor: it pages through segment {cursor.segment!r}, not {name!r}")
            snapshot_id, segment, offset = cursor.snapshot_id, cursor.segment, cursor.offset
        else:
            state = await self.state()
            if state is None:
                raise NoRefreshYet()
            found = next((s for s in state.segments if slug(s) == slug(name)), None)
            if found is None:
                raise UnknownSegment(name, state.segments)
            snapshot_id, segment, offset = state.snapshot_id, found, 0
        meta = await self.store.snapshot_meta(snapshot_id)
        if meta is None:
            keep = int(self.cfg.analytics_snapshot_keep_s)
            raise InvalidCursor(
                f"cursor expired: snapshot {snapshot_id} is no longer kept (a replaced snapshot is kept for {keep} s, "
                "ECRM_ANALYTICS_SNAPSHOT_KEEP_S); start the export again without a cursor"
            )
        names: list[str] = list(meta["segments"])
        if segment not in names:
            raise InvalidCursor(f"invalid cursor: snapshot {snapshot_id} has no segment {segment!r}")
        index = names.index(segment)
        rows = await self.store.members(snapshot_id, index, offset, limit)
        end = offset + len(rows)
        total = int(meta["sizes"][index])
        more = end < total and len(rows) == limit
        return Page(
            segment=segment,
            snapshot_id=snapshot_id,
            refreshed_at=iso(int(meta["refreshed_at_ms"])),
            total=total,
            offset=offset,
            rows=rows,
            next_cursor=Cursor(snapshot_id, segment, end).encode() if more else None,
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
