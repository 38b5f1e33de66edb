"""The training-log store's pure parts (trainer/logsegments.py): ids, the arrays of a segment, merging and bounding
plans, erasures."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import logsegments as seg
from trainer.log import CodedLog, LogColumns, code_columns


def _log(rows: list[tuple[str, str, float, int]]) -> CodedLog:
    return code_columns(
        LogColumns(
            [p.encode() for p, *_ in rows],
            [i.encode() for _, i, *_ in rows],
            [repr(w).encode() for *_, w, _ in rows],
            [str(t).encode() for *_, t in rows],
        )
    )


ROWS = [("c:a", "x", 1.0, 10), ("c:b", "y", 3.0, 11), ("c:a", "z", 0.1, 12), ("a:v\t{é}", "x", -1.0, 13)]


def test_stream_ids_parse_format_and_follow() -> None:
    assert seg.parse_id(b"1700-3") == (1700, 3) and seg.format_id((1700, 3)) == "1700-3"
    assert seg.next_id((5, 2)) == (5, 3) and seg.next_id((5, seg.MAX_SEQ)) == (6, 0)
    for bad in ("1700", "a-1", "1-", "-1"):
        with pytest.raises(ValueError, match="not a stream entry id"):
            seg.parse_id(bad)


def test_a_segment_round_trips_through_its_arrays() -> None:
    segment = seg.Segment(_log(ROWS), (1, 0), (9, 2))
    back = seg.from_arrays(seg.to_arrays(segment))
    assert back.first_id == (1, 0) and back.last_id == (9, 2)
    assert back.log.profile_ids == ("c:a", "c:b", "a:v\t{é}") and back.log.item_ids == ("x", "y", "z")
    for name in ("profiles", "items", "ts"):
        assert np.array_equal(getattr(back.log, name), getattr(segment.log, name)), name
    # float32 on disk: what training takes (Interactions holds float32), the same as the float64 parsed, cast
    assert np.array_equal(back.log.weights.astype(np.float32), segment.log.weights.astype(np.float32))
    assert back.log.weights.astype(np.float32)[2] == np.float32(0.1)


def test_a_damaged_segment_is_refused() -> None:
    arrays = seg.to_arrays(seg.Segment(_log(ROWS), (1, 0), (9, 2)))
    with pytest.raises(ValueError, match="different lengths"):
        seg.from_arrays({**arrays, "ts_delta": arrays["ts_delta"][:2]})
    with pytest.raises(ValueError, match="outside its dictionaries"):
        seg.from_arrays({**arrays, "items": arrays["items"] + 5})
    with pytest.raises(ValueError, match="not a training-log segment"):
        seg.from_arrays({k: v for k, v in arrays.items() if k != "weights"})


def test_concat_codes_ids_in_order_of_first_appearance() -> None:
    joined = seg.concat([_log(ROWS[2:]), _log(ROWS[:2])])
    assert joined.profile_ids == ("c:a", "a:v\t{é}", "c:b") and joined.item_ids == ("z", "x", "y")
    assert joined.profiles.tolist() == [0, 1, 0, 2] and joined.ts.tolist() == [12, 13, 10, 11]


def test_erased_entries_go_with_their_ids() -> None:
    log = _log(ROWS)
    kept = seg.without_erased(log, {"c:a": 11.0})
    assert kept is not None and kept.ts.tolist() == [11, 12, 13]  # c:a's entry after its erasure stays
    gone = seg.without_erased(log, {"c:b": 99.0})
    assert gone is not None and "c:b" not in gone.profile_ids and "y" not in gone.item_ids
    assert seg.without_erased(log, {"c:zz": 99.0}) is None
    assert seg.holds_any(log.profile_ids, {"c:b": 1.0}) and not seg.holds_any(log.profile_ids, {})


def test_newest_keeps_the_last_entries() -> None:
    last = seg.newest(_log(ROWS), 2)
    assert last.ts.tolist() == [12, 13] and last.item_ids == ("z", "x")
    assert len(seg.newest(_log(ROWS), 0).ts) == 0 and len(seg.newest(_log(ROWS), 10).ts) == 4


@pytest.mark.parametrize(
    ("rows", "target", "run"),
    [
        ([], 100, 0),
        ([10], 100, 0),
        ([10, 10], 100, 2),
        ([20, 10], 100, 2),
        ([21, 10], 100, 0),  # the one before is more than twice the last
        ([40, 20, 10, 10], 100, 4),
        ([80, 10, 10], 100, 2),  # 80 + 20 = 100 is within the target but 80 > 2 * 20
        ([60, 30, 30], 100, 2),  # 60 + 60 > 100
    ],
)
def test_the_merge_policy(rows: list[int], target: int, run: int) -> None:
    assert seg.merge_run(rows, target) == run


def test_equal_drains_keep_few_segments() -> None:
    rows: list[int] = []
    for _ in range(1000):
        rows.append(7)
        while (run := seg.merge_run(rows, 10_000)) >= 2:
            rows[-run:] = [sum(rows[-run:])]
    assert sum(rows) == 7000 and len(rows) <= 12


@pytest.mark.parametrize(
    ("rows", "tail", "maxlen", "plan"),
    [
        ([100, 50], 10, 200, (0, -1)),
        ([100, 50], 10, 160, (0, -1)),
        ([100, 50], 10, 150, (0, 90)),
        ([100, 50], 10, 60, (1, -1)),  # exactly the oldest segment over
        ([100, 50], 10, 50, (1, 40)),
        ([100, 50], 10, 5, (2, -1)),  # the tail alone is over: Redis' own bound keeps it
    ],
)
def test_the_bound_plan(rows: list[int], tail: int, maxlen: int, plan: tuple[int, int]) -> None:
    assert seg.trim_plan(rows, tail, maxlen) == plan
