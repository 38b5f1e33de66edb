"""The rules file's validation and the pure engine: order, combinations, segments, time windows, re-buy windows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from merchandising.engine import Candidate, Context, apply_rules, excluded_purchases
from merchandising.rules import ItemInfo, RulesError, parse_rules
from merchandising.source import DEFAULT_RULES_PATH, RulesSource

EXAMPLE = """
version: 1
rules:
  - name: no-gift-cards
    exclude: {category: [gift-cards]}
  - name: winter-sale
    placements: [personal, similar]
    from: "2026-12-01T00:00:00Z"
    until: "2027-01-06T00:00:00Z"
    pin: [{item_id: sku-42, position: 1}]
  - name: own-brand
    boost: {where: {attributes: {brand: acme}}, factor: 1.5}
  - name: variety
    max_per_category: 2
"""
DAY = 86_400_000


def test_the_issue_example_is_accepted_and_the_shipped_file_has_no_rules() -> None:
    rules = parse_rules(EXAMPLE)
    assert rules.names == ["no-gift-cards", "winter-sale", "own-brand", "variety"]
    assert parse_rules(DEFAULT_RULES_PATH.read_text()).rules == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - name: x\n    max_per_category: 2\n", "version: Field required"),
        ("version: 1\nrules:\n  - name: x\n", "rule 'x': (rule): a rule needs at least one action"),
        ("version: 1\nrules:\n  - name: x\n    pin: [{item_id: a, position: 0}]\n", "rule 'x': pin.0.position:"),
        ("version: 1\nrules:\n  - name: x\n    boost: {where: {category: a}, factor: -1}\n", "rule 'x': boost.factor:"),
        ("version: 1\nrules:\n  - name: x\n    exclude: {colour: red}\n", "rule 'x': exclude.colour: unknown field"),
        ("version: 1\nrules:\n  - name: x\n    placements: [home]\n    max_per_category: 1\n", "placements.0"),
        ("version: 1\nrules:\n  - name: x\n    promote: {items: [a], share: 150%}\n", "promote.share"),
        ("version: 1\nrules:\n  - max_per_category: 1\n", "rule #1: name: Field required"),
        (
            "version: 1\nrules:\n  - name: x\n    from: '2027-01-01T00:00:00Z'\n    until: '2026-01-01T00:00:00Z'\n"
            "    max_per_category: 1\n",
            "from must be before until",
        ),
        ("version: 1\nrules:\n  - {name: x, max_per_category: 1}\n  - {name: x, max_per_category: 2}\n", "two rules"),
        ("version: 1\nrules: [\n", "not valid YAML"),
    ],
)
def test_an_invalid_file_is_refused_naming_the_rule_the_field_and_the_reason(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert expected in str(caught.value)


def cands(*ids: str) -> list[Candidate]:
    return [Candidate(i, 1.0, "trending") for i in ids]


def test_time_windows_placements_and_segments() -> None:
    rules = parse_rules(
        "version: 1\nrules:\n"
        "  - {name: vip, segment: [Champions], exclude: {item_ids: [a]}}\n"
        "  - {name: later, from: '2030-01-01T00:00:00Z', exclude: {item_ids: [b]}}\n"
        "  - {name: mail, placements: [email], exclude: {item_ids: [c]}}\n"
    )
    now = int(time.time() * 1000)
    assert [r.name for r in rules.active("personal", "champions", now)] == ["vip"]
    assert [r.name for r in rules.active("email", None, now)] == ["mail"]
    assert [r.name for r in rules.active("personal", None, 1_900_000_000_000)] == ["later"]
    assert rules.needs_segment("personal") and not parse_rules(EXAMPLE).needs_segment("personal")


def test_include_only_of_several_rules_all_hold_and_price_ranges() -> None:
    rules = parse_rules(
        "version: 1\nrules:\n"
        "  - {name: cheap, include_only: {price: {max: 20}}}\n"
        "  - {name: shoes, include_only: {category: shoes}}\n"
    ).rules
    info = {"a": ItemInfo("shoes", 10.0), "b": ItemInfo("shoes", 30.0), "c": ItemInfo("hats", 5.0), "d": ItemInfo()}
    out = apply_rules(rules, cands("a", "b", "c", "d"), 4, Context(0, info))
    assert [r.item_id for r in out.items] == ["a"]
    assert out.applied == {"cheap": 2, "shoes": 1}


def test_numbers_in_attributes_compare_as_text() -> None:
    rules = parse_rules("version: 1\nrules:\n  - {name: size, exclude: {attributes: {size: [3]}}}\n").rules
    info = {"a": ItemInfo("x", 1.0, {"size": 3.0}), "b": ItemInfo("x", 1.0, {"size": "4"})}
    assert [r.item_id for r in apply_rules(rules, cands("a", "b"), 2, Context(0, info)).items] == ["b"]


def test_rotate_by_hours_and_the_promotion_against_the_cap() -> None:
    rules = parse_rules(
        "version: 1\nrules:\n"
        "  - {name: fresh, rotate: {hours: 1, factor: 0.1}}\n"
        "  - {name: cap, max_per_category: 1}\n"
        "  - {name: promo, promote: {where: {category: x}, share: 0.5}}\n"
    ).rules
    info = {i: ItemInfo("x" if i in "abc" else "y") for i in "abcdef"}
    now = 10 * DAY
    served = [(now - 3_600_000 * 2, frozenset("d")), (now - 60_000, frozenset("a"))]
    out = apply_rules(rules, cands(*"abcdef"), 4, Context(now, info, served=served))
    got = [r.item_id for r in out.items]
    assert got[:2] == ["b", "c"] and "e" in got  # a demoted (shown 1 minute ago), d is not (2 hours ago)
    assert sum(1 for i in got if info[i].category == "x") == 2  # the promotion beats the cap of 1


def test_rebuy_windows_per_category_and_global() -> None:
    rules = parse_rules(
        "version: 1\nrules:\n"
        "  - {name: coffee, rebuy: {days: 7, category: coffee}}\n"
        "  - {name: all, rebuy: {days: 90}}\n"
    ).rules
    now = 100 * DAY
    bought = {"beans": now - 10 * DAY, "mug": now - 10 * DAY, "tv": now - 100 * DAY}
    cats = {"beans": "coffee", "mug": "kitchen", "tv": "tech"}
    assert excluded_purchases(bought, now, 0.0, rules, cats) == {"mug"}
    assert excluded_purchases(bought, now, 0.0) == {"beans", "mug", "tv"}
    assert excluded_purchases(bought, now, 30.0) == {"beans", "mug"}


def test_the_source_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    source = RulesSource(path, check_interval_s=0.0)
    assert source.current().rules == () and source.error is None  # no file: no rules
    path.write_text(EXAMPLE)
    assert len(source.current().rules) == 4
    path.write_text("version: 1\nrules:\n  - {name: bad, max_per_category: 0}\n")
    assert len(source.current().rules) == 4 and source.error is not None and "rule 'bad'" in source.error
    path.unlink()
    assert source.current().rules == () and source.error is None


def test_the_benchmark_file_has_twenty_valid_rules_and_the_engine_stays_cheap() -> None:
    from benchmarks.rules import engine_cost, twenty_rules

    rules = parse_rules(twenty_rules())
    assert len(rules.rules) == 20
    p50, p99 = engine_cost(rules, 2000, runs=300)
    assert 0 < p50 <= p99 < 50  # generous: a shared machine; the figure itself is in docs/benchmarks.md
