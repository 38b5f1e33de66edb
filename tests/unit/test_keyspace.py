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
    profile_of,
    profiles_pattern,
    tenant_of,
    untenanted,
)
from core.tenants import TenantError

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
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{t:default}")}


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
        layout3 = legacy_global("ecrm", before)
        assert layout3 is not None and layout3.startswith("ecrm:{g}:") and untenanted("ecrm", layout3) == now
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
    assert K.erased(customer_pid("victim:erased")) == "ecrm:p:{default|c:victim%3Aerased}:erased"
    assert K.erased(customer_pid("victim")) == "ecrm:p:{default|c:victim}:erased"
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


THREE_SHOPS = ("shop-a", "shop-b", "shop-d")  # the tenants of the three-tenant cluster tests
TENANTS = st.sampled_from(["default", "acme", "c", "a", "t", "g", "t-g", "0", "default-2", "x" * 32])


def tenant_keys(keys: Keys, pid: ProfileId, name: str, era: int) -> set[str]:
    """Every kind of key of a tenant: a profile's, an item's, the global ones."""
    out = {keys.profile(pid), *keys.legacy_profile_keys(pid), keys.seen(pid, "direct", name), keys.seen_set(pid)}
    out.add(keys.erased(pid))
    out |= {keys.alias(pid.ident), keys.visitors(pid.ident), keys.item(name), keys.item_seen(name, "open", name)}
    out |= {keys.category(name), keys.campaign_stats(name), keys.model_blob(name), keys.snapshot(name)}
    return out | {keys.trending(era), keys.popular, keys.applied_offsets, keys.interactions, keys.erasure_log}


@given(TENANTS, TENANTS, profiles, profiles, ids, ids, st.integers(min_value=0, max_value=10**6))
def test_two_tenants_never_share_a_key_even_with_the_same_ids(
    t1: str, t2: str, a: ProfileId, b: ProfileId, n1: str, n2: str, era: int
) -> None:
    one, two = Keys("ecrm", t1), Keys("ecrm", t2)
    mine, theirs = tenant_keys(one, a, n1, era), tenant_keys(two, b, n2, era)
    if t1 != t2:
        assert not mine & theirs
    assert all(tenant_of("ecrm", key) == t1 and one.owns(key) for key in mine)
    assert all(not one.owns(key) for key in theirs) or t1 == t2
    assert all(untenanted("ecrm", key) is None for key in mine)  # no key of a tenant passes for an older one


@given(TENANTS, TENANTS)
def test_each_tenant_has_its_own_global_slot(t1: str, t2: str) -> None:
    one, two = Keys("ecrm", t1), Keys("ecrm", t2)
    assert len({key_slot(k.encode()) for k in (one.popular, one.campaign_stats("x"), one.profile_count)}) == 1
    assert (key_slot(one.popular.encode()) == key_slot(two.popular.encode())) == (
        key_slot(f"t:{t1}".encode()) == key_slot(f"t:{t2}".encode())
    )


def test_three_tenants_global_slots_spread_over_three_nodes() -> None:
    """The three tenants the cluster tests use have their global slots on three different nodes (0-5460,
    5461-10922, 10923-16383), so the global calls of their chunks spread over the cluster."""
    nodes = {key_slot(Keys("ecrm", t).popular.encode()) * 3 // 16384 for t in THREE_SHOPS}
    assert len(nodes) == 3, nodes


@given(profiles, ids)
def test_the_layout_before_tenants_moves_into_the_tenant_default(pid: ProfileId, name: str) -> None:
    k3 = {  # layouts up to 5 -> layout 6
        f"ecrm:p:{{{pid.tag}}}": K.profile(pid),
        f"ecrm:p:{{{pid.tag}}}:items": K.legacy(pid, "items"),
        f"ecrm:p:{{{pid.tag}}}:seen:open:{encode_id(name)}": K.seen(pid, "open", name),
        f"ecrm:item:{{{encode_id(name)}}}": K.item(name),
        f"ecrm:item:{{{encode_id(name)}}}:seen:open:e1": K.item_seen(name, "open", "e1"),
        "ecrm:{g}:popular": K.popular,
        f"ecrm:{{g}}:camp:{encode_id(name)}": K.campaign_stats(name),
        "ecrm:{g}:trending:7": K.trending(7),
    }
    for before, now in k3.items():
        assert untenanted("ecrm", before) == now
        assert tenant_of("ecrm", before) is None
    assert untenanted("other", "ecrm:{g}:popular") is None and untenanted("ecrm", "ecrm:bench:noop:x") is None


@pytest.mark.parametrize("bad", ["", "Acme", "-a", "a|b", "a:b", "{a}", "a" * 33, "a b"])
def test_a_bad_tenant_name_is_refused(bad: str) -> None:
    with pytest.raises(TenantError, match="not a tenant name"):
        Keys("ecrm", bad)


def test_a_tenants_scan_patterns_match_its_keys_and_no_others() -> None:
    from fnmatch import fnmatchcase

    acme, other = Keys("ecrm", "acme"), Keys("ecrm", "acme-2")
    for key in tenant_keys(acme, ProfileId("c", "42"), "sku", 3):
        assert any(fnmatchcase(key, p) for p in acme.patterns), key
        assert not any(fnmatchcase(key, p) for p in other.patterns), key


@given(profiles)
def test_migrate_keys_renames_the_fields_of_profile_hashes_and_no_other_key(pid: ProfileId) -> None:
    assert is_profile_hash("ecrm", K.profile(pid)) and not is_profile_hash("other", K.profile(pid))
    assert is_profile_hash("ecrm", f"ecrm:p:{{{pid.tag}}}")  # a hash of the layouts before tenants too
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


tenant_names = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")


@given(profiles, profiles, tenant_names, tenant_names)
def test_the_all_tenants_profile_pattern_matches_every_tenants_profile_hashes_and_no_other_key(
    pid: ProfileId, other: ProfileId, one: str, two: str
) -> None:
    """The refresh round's one SCAN: every tenant's profile hashes match, each read back to its own tenant and
    profile; a profile's other keys, the items, the global keys, another prefix's and an older layout's never do."""
    pattern = profiles_pattern("ecrm")
    for tenant, p in ((one, pid), (two, other)):
        keys = Keys("ecrm", tenant)
        assert fnmatchcase(keys.profile(p), pattern) and profile_of("ecrm", keys.profile(p)) == (tenant, p)
        assert fnmatchcase(keys.profile(p), keys.profile_pattern())  # the tenant's own pattern agrees
        others = {*keys.legacy_profile_keys(p), keys.seen(p, "direct", "e1"), keys.seen_set(p), keys.erased(p)}
        others |= {keys.campaigns(p), keys.served(p), keys.merging(p), keys.handoff("x"), keys.alias("x")}
        others |= {keys.visitors("x"), keys.item(p.ident), keys.popular, keys.profile_count, keys.catalogue}
        others |= {keys.category(p.ident), keys.snapshot("s"), keys.campaign_stats(p.ident)}
        for key in others:
            assert not fnmatchcase(key, pattern) and profile_of("ecrm", key) is None, key
        assert not fnmatchcase(Keys("ecrm2", tenant).profile(p), pattern)
        assert profile_of("ecrm", Keys("ecrm2", tenant).profile(p)) is None
    legacy = f"ecrm:p:{{{pid.tag}}}"  # a profile hash of the layouts before tenants
    assert not fnmatchcase(legacy, pattern) and profile_of("ecrm", legacy) is None
