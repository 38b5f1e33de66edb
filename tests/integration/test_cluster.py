"""A three-node Valkey Redis Cluster started by the suite (``runtime.embedded.start_redis_cluster``), reached with
``ECRM_REDIS_CLUSTER=1`` through any node's URL: the keyspace puts every key of one profile in one slot (a script
over all of them runs; one with a global key beside them is refused as CROSSSLOT), and profiles spread over the
nodes. The worker's write script still joins a profile's keys with global ones in one call: docs/deployment.md
("Redis Cluster") says what stands in the way of running the pipeline on a cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from core.keyspace import Keys, ProfileId
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.store import ProfileStore
from runtime.embedded import EmbeddedServer, start_redis_cluster

pytestmark = pytest.mark.integration
COUNT_KEYS = "return #KEYS"


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedServer]]:
    servers = start_redis_cluster(3)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture()
def on_cluster(cluster: list[EmbeddedServer], settings: Settings) -> Settings:
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{cluster[1].port}/0", "redis_cluster": True})


@pytest.fixture()
def client(on_cluster: Settings) -> redis.Redis:
    return connect_sync(on_cluster, decode_responses=True)


def profile_keys(keys: Keys, pid: ProfileId) -> list[str]:
    """Every key of one profile the engine writes."""
    out = [*keys.profile_keys(pid), keys.seen(pid, "direct", "e1"), keys.erased(pid), keys.served(pid)]
    out.append(keys.alias(pid.ident) if pid.kind == "a" else keys.visitors(pid.ident))
    return out


@pytest.mark.parametrize("pid", [ProfileId("c", "alice"), ProfileId("a", "v:{x}\n"), ProfileId("c", "ü{}")])
def test_a_profiles_keys_share_one_slot_on_a_real_cluster(
    client: redis.Redis, settings: Settings, pid: ProfileId
) -> None:
    keys = Keys(settings.key_prefix)
    names = profile_keys(keys, pid)
    assert len({client.cluster_keyslot(name) for name in names}) == 1
    assert client.eval(COUNT_KEYS, len(names), *names) == len(names)  # one slot: the cluster runs it
    node = client.get_node_from_key(names[0])
    direct = redis.Redis(host=node.host, port=node.port)  # past the client's own check: the server refuses
    with pytest.raises(redis.ResponseError, match="same slot"):
        direct.eval(COUNT_KEYS, 2, names[0], keys.popular)
    direct.close()


def test_profiles_spread_over_the_three_nodes(client: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    for n in range(300):
        client.hset(keys.profile(ProfileId("c", f"spread-{n}")), "n:page_view", 1)
    per_node = [
        sum(1 for key in client.scan_iter(match=f"{settings.key_prefix}:p:*", target_nodes=node))
        for node in client.get_primaries()
    ]
    assert len(per_node) == 3 and sum(per_node) == 300 and min(per_node) > 50, per_node


async def test_the_api_reads_a_profile_through_the_cluster_client(client: redis.Redis, on_cluster: Settings) -> None:
    keys = Keys(on_cluster.key_prefix)
    pid = ProfileId("c", "reader")
    client.hset(keys.profile(pid), mapping={"n:product_view": 2, "first_seen": 1_790_000_000_000,
                                            "last_seen": 1_790_000_060_000})  # fmt: skip
    client.zadd(keys.recent(pid), {"sku-2": 1_790_000_060_000, "sku-1": 1_790_000_000_000})
    client.pfadd(keys.sessions(pid), "s1", "s2")
    store = ProfileStore(connect(on_cluster), on_cluster)
    try:
        profile = await store.profile(str(pid))
    finally:
        await store.client.aclose()
    assert profile is not None
    assert profile["events_total"] == 2 and profile["sessions"] == 2
    assert [r["item_id"] for r in profile["recent_items"]] == ["sku-2", "sku-1"]
