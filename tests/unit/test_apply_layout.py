"""The apply script's calls (profiles/script.py): on a Redis Cluster every call's KEYS are in one slot, whatever the
plans; on one node one call holds all of them (pure)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from core.keyspace import Keys, ProfileId
from profiles.script import LoginAnswer, Lookups, ScriptParams, build_call, build_globals, home_tag, login_name
from profiles.store import _run_starts
from profiles.updates import CampaignOutcome, CartChange, CatalogueUpdate, Interaction, Plan

K = Keys("ecrm")
P = ScriptParams(1000, 50, 1e9, 8.64e7, 64, 1000)
T0 = 1_795_424_400_000
ids = st.text(min_size=1, max_size=12) | st.sampled_from(["{x}", "a:b", "}", "v%3A"])


def behaviour(n: int, kind: str, ident: str, login: str | None = None, item: str = "sku") -> Plan:
    return Plan(
        f"e{n}", "purchase", T0 + n, ProfileId(kind, ident), login=login, session="s",  # type: ignore[arg-type]
        interactions=(Interaction(item, "", 5.0), Interaction("other", "k", 1.0)), cart=(CartChange(item, 0),),
        revenue=3.0, campaigns=(CampaignOutcome("exp", 1000),),
    )  # fmt: skip


def catalogue(n: int, item: str, category: str) -> Plan:
    return Plan(f"i{n}", "item", T0 + n, catalogue=CatalogueUpdate(item, "t", category, 1.0, True))


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


@given(ids, ids, ids, st.booleans())
def test_a_profile_call_on_a_cluster_stays_in_one_slot(visitor: str, customer: str, item: str, aliased: bool) -> None:
    found = Lookups(
        aliases={visitor: customer if aliased else None},
        categories={item: "k2"},
        logins={login_name(behaviour(2, "c", customer, visitor)): LoginAnswer(True, "", "")},
    )
    plans = [behaviour(1, "a", visitor, item=item), behaviour(2, "c", customer, visitor), catalogue(3, item, "k")]
    for plan in plans:
        names, args = build_call([plan], found, K, P, cluster=True, origins=[("t:0", 7)])
        assert len(slots(names)) == 1, names
        assert f"{{{K.tenant}|{home_tag(plan, found)}}}" in names[0]
        wire = orjson.loads(args[0])[0]
        assert (wire["f"], wire["o"]) == ("t:0", 7)
        assert args[12] == "profile" and args[13] == "{}"


@given(ids, ids)
def test_one_node_takes_one_call_and_names_every_global_key(customer: str, category: str) -> None:
    plans = [behaviour(1, "c", customer), catalogue(2, "sku", category)]
    names, args = build_call(plans, Lookups(categories={"sku": "old"}), K, P)
    gk = orjson.loads(args[13])
    assert args[12] == "one"
    assert {names[i - 1] for i in gk.values()} >= {K.popular, K.profile_count, K.interactions, K.campaign_stats("exp"),
                                                   K.category(category), K.category("old")}  # fmt: skip


def test_the_global_call_names_the_keys_its_records_use() -> None:
    records = [
        orjson.dumps({"f": "t:0", "o": 1, "g": [["t", "i", "tr:5", "tr:6", "1", "0.5", "1"], ["c", "exp", "a:orders",
                                                  "1", 0], ["k", "i", 1, "old", "new"]]}).decode(),
        orjson.dumps({"g": {}}).decode(),  # an event without global effects (an empty Lua table)
    ]  # fmt: skip
    names, args = build_globals(records, K, P)
    assert len(slots(names)) == 1 and args[12] == "global"
    gk = orjson.loads(args[13])
    assert names[gk["tr:5"] - 1] == K.trending(5) and names[gk["camp:exp"] - 1] == K.campaign_stats("exp")
    assert names[gk["cat:old"] - 1] == K.category("old") and names[gk["offsets"] - 1] == K.applied_offsets
    assert orjson.loads(args[0])[0]["o"] == 1


def test_a_chunk_is_cut_at_logins_and_after_an_items_description() -> None:
    plans = [
        behaviour(0, "a", "v"),
        catalogue(1, "new", "k"),
        behaviour(2, "c", "x", item="old"),  # another item: no cut
        behaviour(3, "c", "x", item="new"),  # its category comes from plan 1: cut
        behaviour(4, "c", "y", login="v"),  # a login: cut
        behaviour(5, "a", "v"),
    ]
    assert _run_starts(plans) == [0, 3, 4]
    assert _run_starts(plans[:3]) == [0]


PEOPLE = st.sampled_from(["a", "b", "{x}", "a:b"])


@given(
    st.lists(st.tuples(st.sampled_from("ac"), PEOPLE, st.none() | PEOPLE, st.booleans()), min_size=1, max_size=12),
    st.dictionaries(PEOPLE, st.none() | PEOPLE, max_size=3),
    st.booleans(),
)
def test_every_index_of_a_call_names_the_key_keys_gives(
    people: list[tuple[str, str, str | None, bool]], aliases: dict[str, str | None], cluster: bool
) -> None:
    """The names a call puts in KEYS (memoised per profile, each once per call) are the ones
    :class:`core.keyspace.Keys` gives, at every index the wire names, for repeated profiles, visitors who logged in
    and visitors whose alias points at a customer."""
    plans = [
        behaviour(n, kind, ident, login if kind == "c" and flag else None)
        for n, (kind, ident, login, flag) in enumerate(people)
    ]
    found = Lookups(aliases=aliases)
    if cluster:
        plans = plans[:1]  # a profile call of a cluster holds one slot's plans
        found = Lookups(aliases=aliases, logins={login_name(plans[0]): LoginAnswer(True, "", "")})
    names, args = build_call(plans, found, K, P, cluster)
    assert len(names) == len(set(names))
    for plan, wire in zip(plans, orjson.loads(args[0]), strict=True):
        assert plan.profile is not None
        own = plan.profile
        customer = aliases.get(own.ident) if own.kind == "a" else None
        target = ProfileId("c", customer) if customer else own
        assert names[wire["P"] - 1] == K.profile(target) and wire["pid"] == str(target)  # the whole profile
        if not cluster:  # an event's marker: in its own profile's set, whichever customer it lands in
            assert names[wire["seen"] - 1] == K.seen_set(own)
            assert {names[i - 1] for i in wire["er"]} == {K.erased(own), K.erased(target)}
        else:  # in the plan's slot, named with the visitor whose event it is
            assert names[wire["seen"] - 1] == K.seen(target, plan.source, plan.event_id, None if own == target else own)
        if own.kind == "a" and (own == target or not cluster):  # on a cluster: only in the visitor's own slot
            assert names[wire["alias"] - 1] == K.alias(own.ident)
        alive = {names[i - 1] for i in wire["alive"]}
        assert (K.visitors(target.ident) in alive) == (target.kind == "c")
        assert names[wire["CK"] - 1] == K.campaigns(target)
