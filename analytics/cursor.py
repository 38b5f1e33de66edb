"""Cursors of the segment export: which snapshot, which segment, which position (opaque to clients)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

_VERSION = 1


class InvalidCursor(ValueError):
    """A cursor that was not issued by this API for this segment."""


@dataclass(frozen=True, slots=True)
class Cursor:
    snapshot_id: str
    segment: str
    offset: int

    def encode(self) -> str:
        raw = orjson.dumps({"v": _VERSION, "s": self.snapshot_id, "g": self.segment, "o": self.offset})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            d = orjson.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("invalid cursor: not a cursor returned by this API (pass next_cursor as is)") from exc
        if not isinstance(d, dict) or d.get("v") != _VERSION:
            raise InvalidCursor("invalid cursor: unknown format (pass next_cursor as is)")
        sid, segment, offset = d.get("s"), d.get("g"), d.get("o")
        if not isinstance(sid, str) or not isinstance(segment, str) or not isinstance(offset, int) or offset < 0:
            raise InvalidCursor("invalid cursor: damaged (pass next_cursor as is)")
        return cls(sid, segment, offset)
