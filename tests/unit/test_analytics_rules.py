"""Segment rules: the shipped file, evaluation, validation messages, hot reload keeping the last good rules."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from analytics.rfm import RfmScore
from analytics.rules import RulesError, classify, parse_rules, slug, uncovered
from analytics.rules_file import DEFAULT_RULES_PATH, RulesSource, load_rules

SHIPPED = load_rules(DEFAULT_RULES_PATH)

MINIMAL = """
segments:
  - name: Best
    when: {r: 5}
  - name: Rest
"""


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "Champions"),
        (5, 4, 3, "Champions"),  # fm = 4
        (4, 5, 5, "Loyal"),
        (3, 4, 4, "Loyal"),
        (5, 2, 3, "Potential loyalists"),
        (5, 1, 1, "New"),
        (4, 1, 1, "Promising"),
        (3, 3, 3, "Need attention"),
        (1, 5, 5, "Cannot lose them"),
        (2, 4, 3, "At risk"),
        (1, 1, 1, "Lost"),
        (2, 1, 2, "Hibernating"),
        (3, 2, 1, "Hibernating"),
    ],
)
def test_shipped_rules_name_the_usual_segments(r: int, f: int, m: int, segment: str) -> None:
    assert classify(RfmScore(r, f, m), SHIPPED) == segment


def test_shipped_rules_cover_every_score_and_name_the_non_buyers() -> None:
    assert uncovered(list(SHIPPED.segments)) == []
    assert SHIPPED.non_buyers.name == "Prospects"
    assert len(SHIPPED.names) == 11
    assert SHIPPED.resolve("cannot-lose-them") == "Cannot lose them"
    assert SHIPPED.resolve("CHAMPIONS") == "Champions"
    assert SHIPPED.resolve("nobody") is None
    assert slug("Potential loyalists") == "potential-loyalists"


def test_first_matching_rule_wins() -> None:
    rules = parse_rules(MINIMAL)
    assert classify(RfmScore(5, 1, 1), rules) == "Best"
    assert classify(RfmScore(4, 5, 5), rules) == "Rest"


def _problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "segments.yaml")
    assert "segments.yaml" in str(info.value)
    return info.value.problems


def test_each_problem_names_the_rule_the_field_and_why() -> None:
    problems = _problems(
        """
segments:
  - name: Champions
    when: {r: [4, 6], fm: [4, 5], x: 1}
  - name: At risk
    when: {f: [3, 1]}
  - name: Lost
    when: {r: true}
  - name: Rest
"""
    )
    assert problems == [
        "segments[0] ('Champions').when.r: 6 is outside 1-5",
        "segments[0] ('Champions').when.x: unknown field (allowed: r, f, m, fm, total)",
        "segments[1] ('At risk').when.f: min 3 is above max 1",
        "segments[2] ('Lost').when.r: must be a score or a [min, max] pair, not true/false",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("segments: [", "not valid YAML"),
        ("- just a list", "must be a mapping with a 'segments' list"),
        ("segments: []", "segments: List should have at least 1 item"),
        ("segments:\n  - name: A\n    when: {r: 5}\n", "100 of 125 score combinations match no rule"),
        ("segments:\n  - name: All\n  - name: all\n", "segment name 'all' is used twice (same as 'All')"),
        ("segments:\n  - name: All\nnon_buyers: {name: all}\n", "used twice"),
        ("segments:\n  - name: All\n    when: {total: [2, 9]}\n", "segments[0] ('All').when.total: 2 is outside 3-15"),
        ("segments:\n  - name: All\n    when: {r: [1, 2, 3]}\n", "must be a score or a [min, max] pair, got 3"),
        ("segments:\n  - name: ''\n", "segments[0].name: String should have at least 1 character"),
        ("segments:\n  - name: All\n    colour: red\n", "segments[0] ('All').colour: unknown field"),
        ("version: 2\nsegments:\n  - name: All\n", "version: Input should be less than or equal to 1"),
    ],
)
def test_invalid_files_are_refused_with_a_reason(text: str, expected: str) -> None:
    assert any(expected in p for p in _problems(text)), _problems(text)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))  # a distinct mtime per edit


def test_hot_reload_on_change_checked_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    _write(path, MINIMAL, 1)
    clock = Clock()
    source = RulesSource(path, check_interval_s=5.0, clock=clock, fallback=None)
    assert source.current().names == ["Best", "Rest", "Prospects"]
    _write(path, MINIMAL.replace("Best", "Top"), 2)
    clock.t = 4.0
    assert source.current().names[0] == "Best"  # not checked again yet
    clock.t = 5.0
    assert source.current().names[0] == "Top"
    _write(path, MINIMAL.replace("Best", "Tip"), 3)
    assert source.current(force=True).names[0] == "Tip"  # the refresh forces a check


def test_invalid_edit_is_refused_and_the_last_good_rules_stay(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "segments.yaml"
    _write(path, MINIMAL, 1)
    source = RulesSource(path, check_interval_s=0.0, fallback=None)
    good = source.current()
    _write(path, MINIMAL.replace("{r: 5}", "{r: 9}"), 2)
    with caplog.at_level(logging.ERROR, logger="analytics.rules_file"):
        assert source.current() is good
        assert source.current() is good
    assert source.error is not None
    assert "segments[0] ('Best').when.r: 9 is outside 1-5" in source.error
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # logged once per change
    assert "previous rules stay in force" in caplog.records[0].message
    assert source.status().error == source.error
    _write(path, MINIMAL.replace("Best", "Fixed"), 3)
    assert source.current().names[0] == "Fixed"
    assert source.error is None


def test_deleted_file_keeps_the_rules_and_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    _write(path, MINIMAL, 1)
    source = RulesSource(path, check_interval_s=0.0, fallback=None)
    good = source.current()
    path.unlink()
    assert source.current() is good
    assert source.error is not None and "cannot read" in source.error


def test_never_valid_file_falls_back_to_the_shipped_rules(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    _write(path, "segments: nope", 1)
    source = RulesSource(path, check_interval_s=0.0)
    assert source.current().names == SHIPPED.names
    assert source.error is not None and "segments" in source.error
    without = RulesSource(path, check_interval_s=0.0, fallback=None)
    with pytest.raises(RulesError):
        without.current()
