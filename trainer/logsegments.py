"""The training-log store's data (pure): columnar segments of interactions, their arrays on disk, and the plans that
keep the store small (merging, the total bound, erasures).

A segment is a :class:`~trainer.log.CodedLog` (profiles and items coded against the segment's own dictionaries, in
order of first appearance; weights; times as int64 ms) and the range of stream ids it was copied from. On disk it is
one ``.npz`` file (:func:`to_arrays`, :func:`from_arrays`): the codes, the dictionaries as UTF-8 bytes joined with
their offsets (no pickled objects), the weights as float32 (what training takes: :class:`~recommender.data.
Interactions` holds float32, so a float64 parsed from the stream and cast gives the same), the times as differences
from the entry before (exact, and they compress well) and the id range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trainer.log import CodedLog, recode

StreamId = tuple[int, int]
"""A stream entry id: milliseconds and sequence number."""

ZERO_ID: StreamId = (0, 0)
MAX_SEQ = 2**64 - 1


def parse_id(text: str | bytes) -> StreamId:
    """``"<ms>-<seq>"`` -> (ms, seq). ValueError for anything else."""
    raw = text.decode() if isinstance(text, bytes) else text
    ms, sep, seq = raw.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream entry id: {raw!r}")
    return int(ms), int(seq)


def format_id(entry: StreamId) -> str:
    return f"{entry[0]}-{entry[1]}"


def next_id(entry: StreamId) -> StreamId:
    """The smallest id after ``entry`` (``XTRIM MINID`` of it removes ``entry`` and everything before)."""
    ms, seq = entry
    return (ms + 1, 0) if seq == MAX_SEQ else (ms, seq + 1)


@dataclass(frozen=True, slots=True)
class Segment:
    """Entries copied from the stream, in stream order, with the ids of the first and last entry read."""

    log: CodedLog
    first_id: StreamId
    last_id: StreamId

    def __len__(self) -> int:
        return len(self.log.ts)


def empty_log() -> CodedLog:
    return CodedLog(
        profiles=np.zeros(0, dtype=np.int32),
        profile_ids=(),
        items=np.zeros(0, dtype=np.int32),
        item_ids=(),
        weights=np.zeros(0, dtype=np.float64),
        ts=np.zeros(0, dtype=np.int64),
    )


def _merge_ids(
    parts: Sequence[tuple[np.ndarray, tuple[str, ...]]],
) -> tuple[np.ndarray, tuple[str, ...]]:
    index: dict[str, int] = {}
    codes: list[np.ndarray] = []
    for local, ids in parts:
        mapping = np.fromiter((index.setdefault(i, len(index)) for i in ids), dtype=np.int32, count=len(ids))
        codes.append(mapping[local] if len(local) else np.zeros(0, dtype=np.int32))
    joined = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32)
    return joined.astype(np.int32, copy=False), tuple(index)


def concat(parts: Sequence[CodedLog]) -> CodedLog:
    """The logs one after the other, coded against shared dictionaries (ids in order of first appearance when each
    part's are)."""
    if not parts:
        return empty_log()
    profiles, profile_ids = _merge_ids([(p.profiles, p.profile_ids) for p in parts])
    items, item_ids = _merge_ids([(p.items, p.item_ids) for p in parts])
    return CodedLog(
        profiles=profiles,
        profile_ids=profile_ids,
        items=items,
        item_ids=item_ids,
        weights=np.concatenate([p.weights.astype(np.float64, copy=False) for p in parts]),
        ts=np.concatenate([p.ts.astype(np.int64, copy=False) for p in parts]),
    )


def select(log: CodedLog, keep: np.ndarray) -> CodedLog:
    """The entries where ``keep`` is true, with dictionaries holding only the ids they still use."""
    profiles, profile_ids = recode(log.profiles[keep], log.profile_ids)
    items, item_ids = recode(log.items[keep], log.item_ids)
    return CodedLog(profiles, profile_ids, items, item_ids, log.weights[keep], log.ts[keep])


def erased_mask(log: CodedLog, erased: Mapping[str, float]) -> np.ndarray:
    """True for the entries of erased profiles up to their erasure (the reader leaves them out)."""
    if not erased or not len(log.ts):
        return np.zeros(len(log.ts), dtype=bool)
    erased_at = np.array([erased.get(p, -np.inf) for p in log.profile_ids], dtype=np.float64)
    return np.asarray(log.ts <= erased_at[log.profiles], dtype=bool)


def without_erased(log: CodedLog, erased: Mapping[str, float]) -> CodedLog | None:
    """The log without the entries of erased profiles up to their erasure, or None when it holds none."""
    drop = erased_mask(log, erased)
    if not drop.any():
        return None
    return select(log, ~drop)


def holds_any(profile_ids: Sequence[str], erased: Mapping[str, float]) -> bool:
    """Whether a dictionary names an erased profile (its segment may hold entries to drop)."""
    return bool(erased) and any(p in erased for p in profile_ids)


def newest(log: CodedLog, count: int) -> CodedLog:
    """The last ``count`` entries."""
    if count >= len(log.ts):
        return log
    keep = np.zeros(len(log.ts), dtype=bool)
    if count > 0:
        keep[-count:] = True
    return select(log, keep)


def merge_run(rows: Sequence[int], target: int) -> int:
    """How many of the newest segments to merge into one (0 or 2+): a binary-counter policy, so each entry is
    rewritten O(log n) times and there are O(log n) segments below ``target`` rows: the last two merge while the one
    before is at most twice the last and the two together stay within ``target``."""
    run = 1
    total = rows[-1] if rows else 0
    while run < len(rows):
        before = rows[-run - 1]
        if before > 2 * total or before + total > target:
            break
        total += before
        run += 1
    return run if run >= 2 else 0


def trim_plan(rows: Sequence[int], tail: int, maxlen: int) -> tuple[int, int]:
    """Bounding the total (segments' ``rows`` oldest first, plus ``tail`` entries still in Redis) to ``maxlen``:
    how many of the oldest segments to drop whole, and how many entries to keep of the next one (-1: it stays
    whole)."""
    excess = sum(rows) + tail - maxlen
    drop = 0
    while excess > 0 and drop < len(rows) and rows[drop] <= excess:
        excess -= rows[drop]
        drop += 1
    if excess > 0 and drop < len(rows):
        return drop, rows[drop] - excess
    return drop, -1


# ----- arrays on disk -----


def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary as its UTF-8 bytes joined and the end offset of each id."""
    encoded = [i.encode() for i in ids]
    ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def decode_ids(blob: np.ndarray, ends: np.ndarray) -> tuple[str, ...]:
    raw = blob.tobytes()
    starts = [0, *ends[:-1].tolist()] if len(ends) else []
    return tuple(raw[a:b].decode() for a, b in zip(starts, ends.tolist(), strict=True))


def to_arrays(segment: Segment) -> dict[str, np.ndarray]:
    log = segment.log
    profile_blob, profile_ends = encode_ids(log.profile_ids)
    item_blob, item_ends = encode_ids(log.item_ids)
    return {
        "profiles": log.profiles.astype(np.int32, copy=False),
        "profile_blob": profile_blob,
        "profile_ends": profile_ends,
        "items": log.items.astype(np.int32, copy=False),
        "item_blob": item_blob,
        "item_ends": item_ends,
        "weights": log.weights.astype(np.float32),
        "ts_delta": np.diff(log.ts.astype(np.int64, copy=False), prepend=np.int64(0)),
        "ids": np.array([*segment.first_id, *segment.last_id], dtype=np.uint64),
    }


def from_arrays(arrays: Mapping[str, np.ndarray]) -> Segment:
    """A segment from its arrays; ValueError when they do not fit together (a damaged file)."""
    try:
        log = CodedLog(
            profiles=np.asarray(arrays["profiles"], dtype=np.int32),
            profile_ids=decode_ids(arrays["profile_blob"], arrays["profile_ends"]),
            items=np.asarray(arrays["items"], dtype=np.int32),
            item_ids=decode_ids(arrays["item_blob"], arrays["item_ends"]),
            weights=np.asarray(arrays["weights"], dtype=np.float64),
            ts=np.cumsum(np.asarray(arrays["ts_delta"], dtype=np.int64), dtype=np.int64),
        )
        first_ms, first_seq, last_ms, last_seq = (int(x) for x in arrays["ids"].tolist())
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a training-log segment: {exc}") from exc
    n = len(log.ts)
    if not len(log.profiles) == len(log.items) == len(log.weights) == n:
        raise ValueError("training-log segment with columns of different lengths")
    if n and (
        int(log.profiles.max()) >= len(log.profile_ids)
        or int(log.items.max()) >= len(log.item_ids)
        or int(log.profiles.min()) < 0
        or int(log.items.min()) < 0
    ):
        raise ValueError("training-log segment with codes outside its dictionaries")
    return Segment(log, (first_ms, first_seq), (last_ms, last_seq))
