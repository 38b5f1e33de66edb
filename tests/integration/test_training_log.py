"""The training-log reader against the real Redis-compatible server: every entry form, entries spread over many
id ranges read by several connections at once in small chunks, erasures and logged-in visitors; the result equals
reading entry by entry."""

from __future__ import annotations

import numpy as np
import pytest

from core.keyspace import Keys
from core.redis import connect_sync
from core.settings import Settings
from recommender.data import Interactions
from runtime.embedded import EmbeddedServer
from tests.conftest import on_cluster as cluster_settings
from tests.integration.helpers import sync_redis
from trainer.log import read_interactions

pytestmark = pytest.mark.integration


def _write(settings: Settings, n: int) -> list[tuple[str, str, float, int]]:
    r = connect_sync(settings, decode_responses=True) if settings.redis_cluster else sync_redis(settings)
    keys = Keys(settings.key_prefix)
    records: list[tuple[str, str, float, int]] = []
    pipe = r.pipeline(transaction=False)
    for k in range(n):
        pid = f"a:v{k % 7}" if k % 5 == 0 else f"c:u{k % 13}:{{é}}"
        record = (pid, f"i{(k * 7) % 31}", [1.0, 3.0, 0.1, -1.0][k % 4], 1_000 + k)
        entry_id = f"{1_000_000 + (k // 3) * 17}-{k % 3}"  # three entries per millisecond, ms spread unevenly
        if k % 11 == 0:  # the older tab-joined form
            pipe.xadd(keys.interactions, {"d": "\t".join(str(x) for x in record)}, id=entry_id)
        elif k % 7 == 0:  # another field order
            pipe.xadd(keys.interactions, {"t": record[3], "w": record[2], "i": record[1], "p": pid}, id=entry_id)
        else:
            pipe.xadd(
                keys.interactions, {"p": pid, "i": record[1], "w": f"{record[2]:.17g}", "t": record[3]}, id=entry_id
            )
        records.append(record)
    pipe.zadd(keys.erasures, {"c:u3:{é}": 1_500.0})  # its entries up to t 1500 are left out
    pipe.hset(keys.alias("v1"), "c", "u1:{é}")  # visitor v1 logged in as customer u1:{é}
    pipe.execute()
    return records


def _expected(records: list[tuple[str, str, float, int]]) -> Interactions:
    kept = [r for r in records if not (r[0] == "c:u3:{é}" and r[3] <= 1_500)]
    return Interactions.from_records([("c:u1:{é}" if p == "a:v1" else p, i, w, t) for p, i, w, t in kept])


@pytest.mark.parametrize(("chunk", "readers"), [(10_000, 1), (7, 3), (50, 2)])
def test_the_log_reads_back_as_entry_by_entry(settings: Settings, chunk: int, readers: int) -> None:
    records = _write(settings, 2_000)
    log = read_interactions(connect_sync(settings), Keys(settings.key_prefix), chunk=chunk, readers=readers)
    expected = _expected(records)
    assert log.user_ids == expected.user_ids and log.item_ids == expected.item_ids
    assert len(log) < len(records)  # the erased entries are gone
    for name in ("users", "items", "weights", "ts"):
        assert np.array_equal(getattr(log, name), getattr(expected, name)), name


def test_an_empty_log_reads_as_no_interactions(settings: Settings) -> None:
    log = read_interactions(connect_sync(settings), Keys(settings.key_prefix))
    assert len(log) == 0 and log.n_users == 0


def test_the_log_reads_back_from_a_cluster_node(redis_cluster: list[EmbeddedServer], settings: Settings) -> None:
    on_cluster = cluster_settings(settings, redis_cluster)
    records = _write(on_cluster, 300)
    log = read_interactions(connect_sync(on_cluster), Keys(on_cluster.key_prefix), chunk=40, readers=2)
    expected = _expected(records)
    assert log.user_ids == expected.user_ids and log.item_ids == expected.item_ids
    assert np.array_equal(log.users, expected.users) and np.array_equal(log.ts, expected.ts)
