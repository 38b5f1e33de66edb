"""The profile hash's field format (key layout 4, profiles/layout.py): the kinds of field, read back apart; the
listpack cost estimate of the memory bench."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from analytics.store import LEGACY, NAMES, PROFILE_FIELDS, SESSIONS, VIEWS, profile_row
from benchmarks.memory import field_kind, listpack_entry_bytes
from profiles import layout
from profiles.layout import ProfileHash, item_fields, split
from schemas.events import EVENT_TYPES

SCALARS = ["n:product_view", *layout.SCALARS]
ids = st.text(min_size=1, max_size=30)


@given(
    st.dictionaries(ids, ids, max_size=5), st.dictionaries(ids, ids, max_size=5), st.dictionaries(ids, ids, max_size=5)
)
def test_a_profile_hash_splits_into_its_kinds_whatever_the_ids(
    items: dict[str, str], aff: dict[str, str], cart: dict[str, str]
) -> None:
    """An id after its prefix, whatever it holds (``n:x``, ``#i``, ``a:b``, ``ss``), is read back as that kind's."""
    h = dict.fromkeys(SCALARS, "1")
    h |= {f"i:{k}": v for k, v in items.items()} | {f"a:{k}": v for k, v in aff.items()}
    h |= {f"k:{k}": v for k, v in cart.items()} | {"#i": str(len(items)), "#a": str(len(aff)), "#k": str(len(cart))}
    found = split(h)
    assert found == ProfileHash(dict.fromkeys(SCALARS, "1"), items, aff, cart)
    assert found.sessions == 1


def test_no_scalar_field_starts_with_a_prefix() -> None:
    """Every field name outside the prefixed kinds is told apart from them (the scripts write no other:
    tests/integration/test_profile_bounds.py checks a merged profile's fields)."""
    for name in SCALARS:
        assert name[:2] not in (layout.ITEM, layout.AFFINITY, layout.CART) and not name.startswith("#")


def test_item_fields_write_entries_with_their_count() -> None:
    assert item_fields({"a": "1 5", "b": "2 6 6"}) == {"i:a": "1 5", "i:b": "2 6 6", "#i": "2"}
    assert split(item_fields({"a": "1 5"})).items == {"a": "1 5"}


def test_the_analytics_read_the_session_count_field() -> None:
    """analytics may not import profiles (sibling libraries): its copy of the field name is the layout's."""
    assert SESSIONS == layout.SESSIONS and SESSIONS in PROFILE_FIELDS


def test_the_analytics_read_the_layouts_names_and_layout_3s() -> None:
    """analytics' copies of the names are the layout's, each beside its layout-3 name; either is read."""
    assert NAMES == (layout.ORDERS, layout.REVENUE, layout.FIRST_PURCHASE, layout.LAST_PURCHASE, layout.FIRST_SEEN,
                     layout.LAST_SEEN)  # fmt: skip
    assert [layout.LEGACY_NAMES[old] for old in LEGACY] == list(NAMES)
    now = profile_row("c:x", ["2", "5.5", "10", "20", "1", "30", *[None] * 6, "3", None, None, None, "2"])
    old = profile_row("c:x", [None] * 6 + ["2", "5.5", "10", "20", "1", "30", None, None, "3", None, "2"])
    assert now == old and (now.orders, now.last_purchase_ms, now.first_seen_ms, now.views) == (2, 20, 1, 3)
    both = profile_row("c:x", [*[None] * 12, "3", "4", "5", "6", "2"])  # codes and layout 4's names add up
    assert both.views == 18 and both.sessions == 2


def test_the_analytics_read_the_view_counts_under_their_codes_and_layout_4s_names() -> None:
    assert VIEWS == (layout.count_field("product_view"), layout.count_field("page_view"), "n:product_view",
                     "n:page_view")  # fmt: skip


def test_every_event_type_has_a_one_letter_code_and_the_script_has_the_same_table() -> None:
    """The count fields' codes: one letter each, no two alike, the same pairs in items.lua (the script's copy)."""
    assert set(EVENT_TYPES) - {"item"} | {"claimed_purchase"} == set(layout.TYPE_CODES)
    codes = list(layout.TYPE_CODES.values())
    assert all(len(c) == 1 for c in codes) and len(set(codes)) == len(codes)
    lua = (Path(layout.__file__).parent / "items.lua").read_text()
    table = lua[lua.index("local TYPE_CODES = {") : lua.index("local TYPE_CODE, LEGACY_COUNT")]
    assert dict(re.findall(r"\{'([a-z_]+)', '([a-z])'\}", table)) == layout.TYPE_CODES


def test_event_counts_read_codes_and_layout_4s_names_as_the_types() -> None:
    h = {"n:v": "3", "n:product_view": "2", "n:p": "1", "n:some_new_type": "4", "fs": "1", "ls": "2"}
    assert layout.event_counts(h) == {"product_view": 5, "purchase": 1, "some_new_type": 4}
    assert layout.count_field("add_to_cart") == "n:a" and layout.count_field("some_new_type") == "n:some_new_type"
    assert split({"n:g": "2", "n:page_view": "1"}).scalars == {"n:g": "2", "n:page_view": "1"}


def test_split_reads_layout_3s_long_names_as_the_short_ones() -> None:
    found = split({"first_seen": "5", "ls": "9", "orders": "2", "aff_L": "4", "n:page_view": "1"})
    assert found.scalars == {layout.FIRST_SEEN: "5", layout.LAST_SEEN: "9", layout.ORDERS: "2",
                             layout.AFF_LANDMARK: "4", "n:page_view": "1"}  # fmt: skip
    assert all(len(name) == 2 for name in layout.SCALARS)


def test_listpack_entry_sizes_follow_the_encoding() -> None:
    assert listpack_entry_bytes("7") == 2  # 7-bit unsigned
    assert listpack_entry_bytes("-5") == 3 and listpack_entry_bytes("4095") == 3  # 13-bit
    assert listpack_entry_bytes("1790000000000") == 10  # int64
    assert listpack_entry_bytes("07") == 1 + 2 + 1  # not canonical: a string
    assert listpack_entry_bytes("i:sku-00001") == 1 + 11 + 1
    assert listpack_entry_bytes("x" * 100) == 2 + 100 + 1
    assert field_kind("i:a") == "items (i:)" and field_kind("#k") == "counts (#i, #a, #k)"
    assert field_kind("ss") == field_kind("sl") == "sessions (ss, sl)" and field_kind("or") == "counters and times"
    assert field_kind("n:v") == "event counts (n:)"
