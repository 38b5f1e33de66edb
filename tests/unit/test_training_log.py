"""The training-log reader's pure parts: entry forms, cutting XRANGE replies into columns, coding them, the
erasure and alias rules, the id ranges read at once. The result must equal reading entry by entry
(:meth:`Interactions.from_records`)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.data import Interactions
from trainer.log import (
    MAX_SEQ,
    LogColumns,
    code_columns,
    entry_values,
    id_ranges,
    kept_profiles,
    parse_chunk,
    recode,
    to_interactions,
)

WORKER_ENTRY = [b"p", b"c:a", b"i", b"x", b"w", b"2.5", b"t", b"7"]


@pytest.mark.parametrize(
    "fields",
    [
        WORKER_ENTRY,
        [b"t", b"7", b"w", b"2.5", b"i", b"x", b"p", b"c:a"],
        [b"d", b"c:a\tx\t2.5\t7"],
    ],
)
def test_entry_forms(fields: list[bytes]) -> None:
    assert entry_values(fields) == (b"c:a", b"x", b"2.5", b"7")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([b"p", b"c:a", b"i", b"x", b"w", b"1"], "without field b't'"),
        ([b"d", b"c:a\tx\t1"], "malformed field d"),
    ],
)
def test_entry_without_a_field_is_refused(fields: list[bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry_values(fields)


def test_a_reply_in_the_worker_form_is_cut_into_columns() -> None:
    rows = [(b"1-0", WORKER_ENTRY), (b"2-0", [b"p", b"a:v", b"i", b"y", b"w", b"-1", b"t", b"9"])]
    assert parse_chunk(rows) == LogColumns([b"c:a", b"a:v"], [b"x", b"y"], [b"2.5", b"-1"], [b"7", b"9"])


def test_a_reply_with_other_forms_is_read_entry_by_entry() -> None:
    rows = [
        (b"1-0", WORKER_ENTRY),
        (b"2-0", [b"d", b"c:b\ty\t1\t8"]),
        (b"3-0", [b"i", b"z", b"p", b"c:c", b"t", b"9", b"w", b"3"]),
    ]
    cols = parse_chunk(rows)
    assert cols.profiles == [b"c:a", b"c:b", b"c:c"] and cols.items == [b"x", b"y", b"z"]
    assert cols.weights == [b"2.5", b"1", b"3"] and cols.ts == [b"7", b"8", b"9"]


def test_a_reply_with_an_incomplete_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="without field"):
        parse_chunk([(b"1-0", WORKER_ENTRY), (b"2-0", [b"p", b"c:a", b"i", b"x", b"w", b"1", b"x", b"1"])])


RECORDS = [
    ("c:b", "i2", 1.0, 10),
    ("a:v", "i1", 0.1, 11),
    ("c:b", "i1", 3.0, 12),
    ("c:é{x}", "it\u00a0em", -1.0, 13),
    ("a:v", "i3", 0.1, 14),
]


def _columns(records: list[tuple[str, str, float, int]]) -> LogColumns:
    return LogColumns(
        [p.encode() for p, _, _, _ in records],
        [i.encode() for _, i, _, _ in records],
        [b"%.17g" % w for _, _, w, _ in records],
        [b"%d" % t for _, _, _, t in records],
    )


def _same(a: Interactions, b: Interactions) -> None:
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids
    for name in ("users", "items", "weights", "ts"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name


def test_coded_columns_equal_reading_entry_by_entry() -> None:
    log = to_interactions(code_columns(_columns(RECORDS)), {}, {})
    _same(log, Interactions.from_records(RECORDS))


def test_erased_entries_are_left_out_and_visitors_mapped_to_their_customer() -> None:
    coded = code_columns(_columns(RECORDS))
    erased = {"c:b": 10.0, "c:gone": 99.0}  # c:b's first entry (t 10) is before the erasure, the next is not
    log = to_interactions(coded, erased, {"a:v": "c:b"})
    expected = [("c:b", "i1", 0.1, 11), ("c:b", "i1", 3.0, 12), ("c:é{x}", "it\u00a0em", -1.0, 13)]
    expected.append(("c:b", "i3", 0.1, 14))
    _same(log, Interactions.from_records(expected))
    assert "i2" not in log.item_ids  # only its erased entry held it


def test_kept_profiles_are_those_with_an_entry_after_their_erasure() -> None:
    coded = code_columns(_columns(RECORDS))
    assert kept_profiles(coded, {"a:v": 14.0, "c:b": 11.0}) == ["c:b", "c:é{x}"]


def test_bad_numbers_are_refused() -> None:
    cols = _columns(RECORDS[:1])
    with pytest.raises(ValueError, match="bad number"):
        code_columns(LogColumns(cols.profiles, cols.items, [b"x"], cols.ts))
    with pytest.raises(ValueError, match="bad number"):
        code_columns(LogColumns(cols.profiles, cols.items, cols.weights, [b"1.5"]))


def test_an_empty_log_codes_to_empty_interactions() -> None:
    log = to_interactions(code_columns(LogColumns([], [], [], [])), {}, {})
    assert len(log) == 0 and log.user_ids == () and log.item_ids == ()


def test_recode_numbers_in_order_of_first_appearance_and_drops_unused_ids() -> None:
    codes, ids = recode(np.array([2, 0, 2, 3], dtype=np.int32), ("a", "b", "c", "d"))
    assert codes.tolist() == [0, 1, 0, 2] and ids == ("c", "a", "d")


@pytest.mark.parametrize(("first", "last", "parts"), [(100, 100, 4), (100, 103, 8), (5, 1_000_003, 8), (0, 7, 3)])
def test_id_ranges_cover_every_id_once(first: int, last: int, parts: int) -> None:
    ranges = id_ranges(first, last, parts)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == f"{first}-0" and ranges[-1][1] == f"{last}-{MAX_SEQ}"
    for (_, end), (start, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert int(end.split("-")[0]) + 1 == int(start.split("-")[0]) and end.endswith(f"-{MAX_SEQ}")
        assert start.endswith("-0")
    for lo, hi in ranges:
        assert int(lo.split("-")[0]) <= int(hi.split("-")[0])


def test_id_ranges_refuse_an_empty_span() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        id_ranges(10, 9, 2)
