"""The keyspace: no id, whatever it holds, names another profile's key or a global key; one slot per profile."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from core.keyspace import Keys, ProfileId, customer_pid, encode_id, parse_pid

K = Keys("ecrm")
HOSTILE = ["victim:cart", "victim}:cart", "{victim}", "a\tb", "a\nb", "vïctim✓", "%3A", ":", "{", "}", "c:x", " "]
ids = st.text(min_size=1, max_size=40) | st.sampled_from(HOSTILE)
kinds = st.sampled_from(["c", "a"])
profiles = st.builds(ProfileId, kinds, ids)


def all_keys(pid: ProfileId) -> set[str]:
    keys = set(K.profile_keys(pid)) | {K.seen(pid, "direct", "e1"), K.erased(pid)}
    if pid.kind == "a":
        keys.add(K.alias(pid.ident))
    else:
        keys.add(K.visitors(pid.ident))
    return keys


GLOBAL = {
    *(K.profiles, K.popular, K.catalogue, K.out_of_stock, K.interactions, K.applied_count, K.interactions_count),
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


@given(ids, ids)
def test_encoding_is_injective_and_key_safe(a: str, b: str) -> None:
    assert (encode_id(a) == encode_id(b)) == (a == b)
    assert not set(encode_id(a)) & set(":{}\t\n\r %") - {"%"}
    assert K.item(a) != K.category(a) and (K.item(a) == K.item(b)) == (a == b)


@given(profiles)
def test_profile_id_round_trip(pid: ProfileId) -> None:
    assert parse_pid(str(pid)) == pid


def test_the_victim_example() -> None:
    assert K.cart(customer_pid("victim:cart")) == "ecrm:p:{c:victim%3Acart}:cart"
    assert K.cart(customer_pid("victim")) == "ecrm:p:{c:victim}:cart"
    assert K.profile(customer_pid("victim:cart")) != K.cart(customer_pid("victim"))


@pytest.mark.parametrize("bad", ["", "x", "b:y", ":y", "c:"])
def test_parse_pid_refuses_what_is_not_a_profile(bad: str) -> None:
    with pytest.raises(ValueError, match="not a profile id"):
        parse_pid(bad)


@pytest.mark.parametrize("prefix", ["", "a:b", "{x}", "a b", "x" * 65])
def test_prefix_is_checked(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        Keys(prefix)
