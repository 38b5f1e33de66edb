"""``ecrm bench api --rules``: the cost of a 20-rule business rules file per recommendation request.

Two figures: the pure engine alone (``merchandising.engine.apply_rules`` on a 30-candidate pool for n = 10, what a
request with rules in force runs; no I/O), and the API end to end, one process without rules then one with the
20-rule file, each under the same steady open-loop load (server-side latency from the ``server-timing`` header).
The difference end to end includes the rules' Redis reads (the candidates' catalogue entries, the served lists for
``rotate``) and the larger candidate pool. Loopback only, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from benchmarks.load import get, open_loop, pct
from benchmarks.recommender import synthetic_log, write_log
from core.keyspace import Keys
from core.redis import connect_sync
from core.settings import Settings, isolated
from merchandising.engine import Candidate, Context, apply_rules
from merchandising.rules import ItemInfo, RuleSet, parse_rules
from profiles.layout import item_fields, item_value
from runtime.local import spawn_role, stop_process, wait_ready
from trainer.training import train_once

Echo = Callable[[str], None]
CATEGORIES = 20
BRANDS = ("acme", "globex", "initech", "umbrella", "hooli")


def twenty_rules() -> str:
    """A realistic 20-rule file: every action, conditions on categories, prices, attributes, placements, time."""
    rules = [
        "  - {name: no-gift-cards, exclude: {category: [cat-19]}}",
        "  - {name: no-clearance, exclude: {attributes: {clearance: 'yes'}}}",
        "  - {name: no-cheap, exclude: {price: {max: 1}}}",
        "  - {name: blocked-ids, exclude: {item_ids: [i1, i2, i3, i4, i5, i6, i7, i8, i9, i10]}}",
        "  - {name: own-brand, boost: {where: {attributes: {brand: acme}}, factor: 1.5}}",
        "  - {name: partner, boost: {where: {attributes: {brand: [globex, initech]}}, factor: 1.2}}",
        "  - {name: premium, boost: {where: {price: {min: 80}}, factor: 1.3}}",
        "  - {name: seasonal, boost: {where: {category: [cat-1, cat-2]}, factor: 2}, from: '2020-01-01T00:00:00Z'}",
        "  - {name: bury-umbrella, bury: {where: {attributes: {brand: umbrella}}, factor: 2}}",
        "  - {name: bury-cat-3, bury: {where: {category: cat-3}, factor: 1.5}}",
        "  - {name: hero, pin: [{item_id: i100, position: 1}], placements: [personal, email]}",
        "  - {name: launch, pin: [{item_id: i200, position: 4}], until: '2099-01-01T00:00:00Z'}",
        "  - {name: promo, promote: {items: [i300, i301, i302, i303], share: 20%}}",
        "  - {name: promo-cat, promote: {where: {category: cat-5}, share: 10%}}",
        "  - {name: variety, max_per_category: 3}",
        "  - {name: fresh, rotate: {lists: 5, hours: 24, factor: 0.5}}",
        "  - {name: upsell, placements: [cart], upsell: {factor: 1.5}}",
        "  - {name: consumables, rebuy: {days: 30, category: [cat-7, cat-8]}}",
        "  - {name: later, from: '2099-01-01T00:00:00Z', exclude: {category: [cat-4]}}",
        "  - {name: email-only, placements: [email], max_per_category: 1}",
    ]
    return "version: 1\nrules:\n" + "\n".join(rules) + "\n"


def _catalogue(n_items: int) -> dict[str, ItemInfo]:
    rng = np.random.default_rng(5)
    return {
        f"i{k}": ItemInfo(
            f"cat-{int(rng.integers(CATEGORIES))}",
            float(rng.uniform(0.5, 100.0)),
            {"brand": BRANDS[int(rng.integers(len(BRANDS)))], "clearance": "yes" if rng.random() < 0.05 else "no"},
        )
        for k in range(n_items)
    }


def engine_cost(rules: RuleSet, n_items: int, runs: int = 20_000) -> tuple[float, float]:
    """p50 and p99 (ms) of selecting the active rules and applying them to a 30-candidate pool for n = 10."""
    info = _catalogue(n_items)
    ids = list(info)
    rng = np.random.default_rng(6)
    served = [(int(time.time() * 1000) - h * 3_600_000, frozenset(rng.choice(ids, 10).tolist())) for h in range(20)]
    times: list[float] = []
    for run in range(runs):
        pool = [ids[int(i)] for i in rng.choice(len(ids), 30, replace=False)]
        candidates = [Candidate(item, 30.0 - j, "because") for j, item in enumerate(pool)]
        wanted = {i: info[i] for i in [*pool, "i100", "i200", "i300", "i301", "i302", "i303"] if i in info}
        started = time.perf_counter()
        now = int(time.time() * 1000)
        active = rules.active("personal", None, now)
        apply_rules(active, candidates, 10, Context(now, wanted, frozenset(), served))
        if run >= 100:  # warm-up
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), pct(times, 99)


@dataclass
class RulesFigures:
    engine_p50_ms: float
    engine_p99_ms: float
    off_p50_ms: float
    off_p99_ms: float
    on_p50_ms: float
    on_p99_ms: float
    rps: float
    items: int

    def lines(self) -> list[str]:
        return [
            f"20-rule file, engine alone (30 candidates -> 10)   p50 {self.engine_p50_ms:.3f} ms, "
            f"p99 {self.engine_p99_ms:.3f} ms (target p50 < 0.5 ms)",
            f"API without rules ({self.items} items, {self.rps:.0f} req/s)   server p50 {self.off_p50_ms:.2f} ms, "
            f"p99 {self.off_p99_ms:.2f} ms",
            f"API with the 20 rules                      server p50 {self.on_p50_ms:.2f} ms, "
            f"p99 {self.on_p99_ms:.2f} ms",
            f"cost per request end to end (p50)          {self.on_p50_ms - self.off_p50_ms:+.2f} ms "
            "(engine, catalogue and served-list reads, larger candidate pool)",
        ]


def bench_rules(base: Settings, port: int, items: int, rps: float, seconds: float, echo: Echo) -> RulesFigures:
    path = Path(f"/tmp/ecrm-bench-rules-{port}.yaml")
    path.write_text(twenty_rules())
    rules = parse_rules(path.read_text(), str(path))
    echo(f"{len(rules.rules)} rules; timing the engine alone ...")
    engine_p50, engine_p99 = engine_cost(rules, items)
    echo(f"  p50 {engine_p50:.3f} ms, p99 {engine_p99:.3f} ms")
    settings = isolated(base, api_port=port, model_poll_s=1.0)
    r = connect_sync(settings)
    keys = Keys(settings.key_prefix)
    echo(f"training a model over a {items}-item catalogue ...")
    write_log(r, keys, synthetic_log(items * 5, n_users=items // 2, n_items=items, seed=1), echo)
    train_once(settings.model_copy(update={"holdout_max_users": 200}))
    pipe = r.pipeline(transaction=False)
    for item, meta in _catalogue(items).items():
        pipe.hset(keys.item(item), mapping={"category": meta.category or "", "price": meta.price or 0.0,
                                            "attrs": orjson.dumps(meta.attributes).decode()})  # fmt: skip
    rng = np.random.default_rng(2)
    customers = 2000
    for c in range(customers):
        entries = {
            f"i{i}": item_value(1.0, 1_790_000_000_000 + j) for j, i in enumerate(rng.integers(0, items, 20).tolist())
        }
        pipe.hset(keys.profile(f"c:bench{c}"), mapping=item_fields(entries))
    pipe.execute()
    figures: dict[bool, tuple[float, float]] = {}
    base_url = f"http://127.0.0.1:{port}"

    def recs(k: int) -> str:
        return f"{base_url}/v1/customers/bench{k % customers}/recommendations?n=10"

    for with_rules in (False, True):
        rules_file = str(path) if with_rules else str(path.with_suffix(".absent"))
        proc = spawn_role(["api", "--port", str(port)], settings.model_copy(update={"rules_file": rules_file}))
        try:
            wait_ready(f"{base_url}/health/live", 60, [proc])
            time.sleep(settings.model_poll_s * 2)
            asyncio.run(open_loop(get(recs), rps=100, seconds=2))
            echo(f"{'with' if with_rules else 'without'} rules: {rps:.0f} req/s for {seconds:.0f}s ...")
            server, _client, errors = asyncio.run(open_loop(get(recs), rps, seconds))
            figures[with_rules] = (statistics.median(server), pct(server, 99))
            echo(f"  server p50 {figures[with_rules][0]:.2f} ms, p99 {figures[with_rules][1]:.2f} ms, {errors} errors")
        finally:
            stop_process(proc)
    path.unlink(missing_ok=True)
    return RulesFigures(engine_p50, engine_p99, *figures[False], *figures[True], rps, items)
