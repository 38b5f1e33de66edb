"""``ecrm bench tenant-slots``: the worker's store path (``BatchProcessor.apply``: validation and planning excluded)
on a three-node Redis Cluster with the events of one tenant against the same events spread over three tenants, in one
run.

With one tenant every chunk ends with a global call on the one node holding that tenant's global slot; with three
tenants whose global slots are on the three nodes (``shop-a``, ``shop-b``, ``shop-d``) the global calls spread over
the nodes. The same number of events, customers and items either way (each tenant gets a third of the customers); the
passes alternate (one, three, one, three ...) so that the machine's load falls on both alike, and the figure of each
is the median of its passes. The cluster is started for the bench (``runtime.embedded.start_redis_cluster``) and
stopped after; on the development machine its three nodes share the bench's cores, so the ratio says how much the
global slot weighed, not how a cluster of real machines scales.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from core.kafka import tenant_key
from core.redis import connect
from core.settings import Settings, isolated
from profiles.store import ProfileStore
from runtime.embedded import start_redis_cluster
from stream.processing import BatchProcessor, Envelope, RawMessage

Echo = Callable[[str], None]
THREE = ("shop-a", "shop-b", "shop-d")  # global slots on the three nodes of an evenly split cluster
BASE_TS = 1_790_000_000_000


@dataclass
class TenantsFigures:
    events: int
    passes: int
    one_tenant_eps: list[float] = field(default_factory=list)
    three_tenants_eps: list[float] = field(default_factory=list)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def one(self) -> float:
        return statistics.median(self.one_tenant_eps)

    @property
    def three(self) -> float:
        return statistics.median(self.three_tenants_eps)

    def as_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "passes": self.passes,
            "one_tenant_events_per_s": round(self.one),
            "three_tenants_events_per_s": round(self.three),
            "ratio_three_to_one": round(self.three / self.one, 3),
            "one_tenant_passes": [round(x) for x in self.one_tenant_eps],
            "three_tenants_passes": [round(x) for x in self.three_tenants_eps],
            "load_avg": list(self.load_avg),
        }

    def lines(self) -> list[str]:
        return [
            f"store on a 3-node Redis Cluster, {self.events} events per pass, median of {self.passes} passes each:",
            f"  one tenant     {self.one:>9,.0f} events/s  {[round(x) for x in self.one_tenant_eps]}",
            f"  three tenants  {self.three:>9,.0f} events/s  {[round(x) for x in self.three_tenants_eps]}",
            f"  ratio three/one {self.three / self.one:.2f} (load average {self.load_avg[0]:.1f})",
        ]


def batch(tenants: tuple[str, ...], events: int, customers: int, run: str) -> list[RawMessage]:
    """``events`` product views of ``customers`` customers over 500 items, the customers split among ``tenants``
    (each customer in one tenant), as the worker reads them."""
    out: list[RawMessage] = []
    for i in range(events):
        customer = i % customers
        tenant = tenants[customer % len(tenants)]
        event = {"type": "product_view", "event_id": f"{run}-{i}", "timestamp": BASE_TS + i,
                 "customer_id": f"c{customer}", "item_id": f"sku-{(i * 7) % 500}"}  # fmt: skip
        key = tenant_key(tenant, f"c{customer}".encode())
        out.append(RawMessage(orjson.dumps(event), key, "bench", i % 4, i // 4, "admin", None, None, tenant))
    return out


async def one_pass(settings: Settings, tenants: tuple[str, ...], events: int, customers: int) -> float:
    async def nowhere(_: Envelope) -> None:
        raise AssertionError("no event of the bench is dead-lettered")

    processor = BatchProcessor(ProfileStore(connect(settings), settings), settings, nowhere)
    try:
        messages = batch(tenants, events, customers, uuid.uuid4().hex[:8])
        prepared = [processor.prepare(messages[i : i + 500]) for i in range(0, len(messages), 500)]
        started = time.perf_counter()
        for part in prepared:
            done = await processor.apply(part)
            assert done.applied == part.size, "every event is applied once"
        return events / (time.perf_counter() - started)
    finally:
        await processor.store.client.aclose()


def bench_tenants(base: Settings, events: int, passes: int, echo: Echo) -> TenantsFigures:
    nodes = start_redis_cluster(3)
    try:
        settings = isolated(base).model_copy(
            update={
                "redis_url": f"redis://127.0.0.1:{nodes[0].port}/0",
                "redis_cluster": True,
                "tenants": ",".join(THREE),
            }
        )
        figures = TenantsFigures(events, passes)
        customers = max(events // 10, 3)
        asyncio.run(one_pass(settings, THREE, min(events, 3000), customers))  # warm up: scripts loaded everywhere
        for n in range(passes):
            figures.one_tenant_eps.append(asyncio.run(one_pass(settings, THREE[:1], events, customers)))
            figures.three_tenants_eps.append(asyncio.run(one_pass(settings, THREE, events, customers)))
            echo(f"pass {n + 1}/{passes}: {figures.one_tenant_eps[-1]:,.0f} / {figures.three_tenants_eps[-1]:,.0f}")
        figures.load_avg = os.getloadavg()
        return figures
    finally:
        for node in nodes:
            node.stop()
