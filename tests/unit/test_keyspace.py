"""The keyspace: no id, whatever it holds, names another profile's key or a global key; one slot per profile."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from core.keyspace import (
    LEGACY_PROFILE_SUFFIXES,
    Keys,
    ProfileId,
    customer_pid,
    encode_id,
    is_profile_hash,
    legacy_global,
    legacy_marker,
    legacy_profile_key,
    marker_digest,
    parse_pid,
)

K = Keys("ecrm")
HOSTILE = ["victim:cart", "victim}:cart", "{victim}", "a\tb", "a\nb", "vïctim✓", "%3A", ":", "{", "}", "c:x", " "]
ids = st.text(min_size=1, max_size=40) | st.sampled_from(HOSTILE)
kinds = st.sampled_from(["c", "a"])
profiles = st.builds(ProfileId, kinds, ids)


def all_keys(pid: ProfileId) -> set[str]:
    keys = {K.profile(pid), *K.legacy_profile_keys(pid), K.seen(pid, "direct", "e1"), K.seen_set(pid), K.erased(pid)}
    if pid.kind == "a":
        keys.add(K.alias(pid.ident))
    else:
        keys.add(K.visitors(pid.ident))
    return keys


GLOBAL = {
    *(
        K.profile_count,
        K.legacy_profiles_index,
        K.popular,
        K.catalogue,
        K.out_of_stock,
        K.interactions,
        K.applied_count,
        K.interactions_count,
    ),
    *(
        K.model_current,
        K.model_versions,
        K.model_trained,
        K.model_lock,
        K.analytics_state,
        K.analytics_lock,
        K.erasures,
    ),
}


@given(profiles, profiles)
def test_two_profiles_never_share_a_key(a: ProfileId, b: ProfileId) -> None:
    if a != b:
        assert not all_keys(a) & all_keys(b)
    assert not all_keys(a) & GLOBAL


@given(profiles)
def test_one_profile_is_one_cluster_slot(pid: ProfileId) -> None:
    slots = {key_slot(key.encode()) for key in all_keys(pid)}
    assert len(slots) == 1
    assert all(key.count("{") == 1 and key.count("}") == 1 for key in all_keys(pid))


@given(ids, st.integers(min_value=0, max_value=10**6))
def test_every_global_key_is_in_the_global_slot(name: str, era: int) -> None:
    named = {K.category(name), K.campaign_stats(name), K.model_blob(name), K.model_meta(name), K.snapshot(name)}
    keys = GLOBAL | named | {K.trending(era), K.applied_offsets, K.worker_consuming}
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{g}")}


@given(ids, st.integers(min_value=0, max_value=10**6))
def test_the_older_global_keys_map_to_the_current_ones(name: str, era: int) -> None:
    e = encode_id(name)
    old = {
        "ecrm:popular": K.popular,
        "ecrm:profiles": K.legacy_profiles_index,
        "ecrm:stats:applied": K.applied_count,
        f"ecrm:trending:{era}": K.trending(era),
        f"ecrm:category:{e}": K.category(name),
        f"ecrm:camp:{{{e}}}": K.campaign_stats(name),
        f"ecrm:model:blob:{e}": K.model_blob(name),
        f"ecrm:an:snap:{e}:3": K.snapshot_members(name, 3),
    }
    for before, now in old.items():
        assert legacy_global("ecrm", before) == now
    pid = ProfileId("c", name)
    for other in [*all_keys(pid), K.item(name), *GLOBAL, "ecrm:bench:noop:x", "other:popular"]:
        assert legacy_global("ecrm", other) is None, other


@given(ids, ids)
def test_encoding_is_injective_and_key_safe(a: str, b: str) -> None:
    assert (encode_id(a) == encode_id(b)) == (a == b)
    assert not set(encode_id(a)) & set(":{}\t\n\r %") - {"%"}
    assert K.item(a) != K.category(a) and (K.item(a) == K.item(b)) == (a == b)


@given(profiles)
def test_profile_id_round_trip(pid: ProfileId) -> None:
    assert parse_pid(str(pid)) == pid


def test_the_victim_example() -> None:
    assert K.erased(customer_pid("victim:erased")) == "ecrm:p:{c:victim%3Aerased}:erased"
    assert K.erased(customer_pid("victim")) == "ecrm:p:{c:victim}:erased"
    assert K.profile(customer_pid("victim:erased")) != K.erased(customer_pid("victim"))
    assert K.profile(customer_pid("victim:cart")) != K.legacy(customer_pid("victim"), "cart")


@pytest.mark.parametrize("bad", ["", "x", "b:y", ":y", "c:"])
def test_parse_pid_refuses_what_is_not_a_profile(bad: str) -> None:
    with pytest.raises(ValueError, match="not a profile id"):
        parse_pid(bad)


@pytest.mark.parametrize("prefix", ["", "a:b", "{x}", "a b", "x" * 65])
def test_prefix_is_checked(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        Keys(prefix)


def test_a_legacy_marker_maps_to_its_profiles_set_and_digest() -> None:
    keys = Keys("ecrm")
    pid = ProfileId("a", "v:{x}\n")
    old = f"{keys.profile(pid)}:seen:{encode_id('open')}:{encode_id('e:1/ü')}"
    assert legacy_marker("ecrm", old) == (keys.seen_set(pid), marker_digest("open", "e:1/ü"))
    assert legacy_marker("ecrm", keys.seen_set(pid)) is None
    assert legacy_marker("ecrm", keys.item_seen("sku", "open", "e1")) is None  # catalogue markers stay keys
    assert legacy_marker("other", old) is None


def test_marker_digests_are_short_and_depend_on_the_sender_and_the_id() -> None:
    one = marker_digest("open", "e1")
    assert len(one) == 12 and one == marker_digest("open", "e1")
    assert len({one, marker_digest("server", "e1"), marker_digest("open", "e2"), marker_digest("open\0e", "1")}) == 4


@given(profiles)
def test_the_profile_keys_migrate_keys_upgrades_are_known_and_no_other(pid: ProfileId) -> None:
    for suffix, key in zip(LEGACY_PROFILE_SUFFIXES, K.legacy_profile_keys(pid), strict=True):
        assert key == K.legacy(pid, suffix) == f"{K.profile(pid)}:{suffix}"
        assert legacy_profile_key("ecrm", key) == (suffix, K.profile(pid))  # folded into the profile's hash
    assert legacy_profile_key("ecrm", K.seen_set(pid)) == ("seen", K.seen_set(pid))
    for other in [K.profile(pid), K.seen(pid, "open", "e1"), K.erased(pid), K.campaigns(pid), K.popular]:
        assert legacy_profile_key("ecrm", other) is None, other
    assert legacy_profile_key("other", K.legacy(pid, "items")) is None
    with pytest.raises(ValueError, match="not an older profile key"):
        K.legacy(pid, "seen")


@given(profiles)
def test_migrate_keys_renames_the_fields_of_profile_hashes_and_no_other_key(pid: ProfileId) -> None:
    assert is_profile_hash("ecrm", K.profile(pid)) and not is_profile_hash("other", K.profile(pid))
    for other in [*K.legacy_profile_keys(pid), K.seen_set(pid), K.campaigns(pid), K.erased(pid), K.popular]:
        assert not is_profile_hash("ecrm", other), other


@given(profiles, profiles)
def test_the_profile_pattern_matches_every_profile_hash_and_no_other_key(pid: ProfileId, other: ProfileId) -> None:
    """The SCAN pattern of the profile hashes (the analytics refresh, the profile count) and the key read back: a
    profile's other keys, another prefix's and the global keys are never taken for a profile."""
    pattern = K.profile_pattern()
    assert fnmatchcase(K.profile(pid), pattern) and K.profile_id(K.profile(pid)) == pid
    assert K.profile_id(K.profile(str(pid))) == pid
    siblings = all_keys(pid) | all_keys(other) | {K.campaigns(pid), K.served(pid), K.merging(pid), K.handoff("x")}
    for key in (siblings - {K.profile(pid), K.profile(other)}) | GLOBAL:
        assert not fnmatchcase(key, pattern), key
        assert K.profile_id(key) is None, key
    assert not fnmatchcase(Keys("ecrm2").profile(pid), pattern) and K.profile_id(Keys("ecrm2").profile(pid)) is None
