"""``ecrm bench campaigns``: the API's latency with a campaign active against none, measured in one run.

Two API processes on the same data at the same time: one without campaigns, one with an A/A campaign on the
personal placement (every request finds the profile's variant, and records the exposure off the request path: the
cost a campaign adds, with nothing else changed). One open loop drives both at once, half the rate each, so they
share the machine's state (the load of other processes, the CPU's clock); the campaign moves to the other process
every round (the campaigns file is re-read), so a difference between the two processes cancels out; the figures
are medians over the rounds of the app's own time from its ``server-timing`` header. Loopback only, bounded in count
and time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.load import get, open_loop, pct
from benchmarks.recommender import synthetic_log, write_log
from core.keyspace import Keys
from core.redis import connect_sync
from core.settings import Settings, isolated
from profiles.layout import item_fields, item_value
from runtime.local import spawn_role, stop_process, wait_ready
from trainer.training import train_once

Echo = Callable[[str], None]
CUSTOMERS = 2000
A_A = """version: 1
campaigns:
  - name: bench-a-a
    goal: purchase
    from: "2020-01-01T00:00:00Z"
    until: "2099-01-01T00:00:00Z"
    placements: [personal]
    variants:
      - {name: a, weight: 50}
      - {name: b, weight: 50}
"""
NONE = "version: 1\ncampaigns: []\n"


@dataclass
class CampaignFigures:
    items: int
    rps: float
    seconds: float
    rounds: int
    none_p50_ms: float
    none_p99_ms: float
    campaign_p50_ms: float
    campaign_p99_ms: float
    none_errors: int
    campaign_errors: int
    lists_recorded: int  # lists the campaign's counters hold after the run (every request recorded)
    requests_with_campaign: int

    def lines(self) -> list[str]:
        return [
            f"{self.items} items, {self.rps:.0f} req/s in all for {self.seconds:.0f}s, split over two API processes; "
            f"medians of {self.rounds} rounds, the campaign alternating between the processes",
            f"no campaign                 server p50 {self.none_p50_ms:.2f} ms, p99 {self.none_p99_ms:.2f} ms, "
            f"{self.none_errors} errors",
            f"A/A campaign active         server p50 {self.campaign_p50_ms:.2f} ms, p99 {self.campaign_p99_ms:.2f} ms, "
            f"{self.campaign_errors} errors",
            f"cost per request (p50)      {self.campaign_p50_ms - self.none_p50_ms:+.2f} ms "
            f"(ratio {self.campaign_p50_ms / self.none_p50_ms:.2f}; p99 ratio "
            f"{self.campaign_p99_ms / self.none_p99_ms:.2f})",
            f"exposures recorded          {self.lists_recorded} of {self.requests_with_campaign} lists",
        ]

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _prepare(settings: Settings, items: int, echo: Echo) -> None:
    r = connect_sync(settings)
    keys = Keys(settings.key_prefix)
    echo(f"training a model over a {items}-item catalogue ...")
    write_log(r, keys, synthetic_log(items * 5, n_users=items // 2, n_items=items, seed=1), echo)
    train_once(settings.model_copy(update={"holdout_max_users": 200, "gate_baselines": ""}))  # engine path
    rng = np.random.default_rng(2)
    pipe = r.pipeline(transaction=False)
    for c in range(CUSTOMERS):
        entries = {
            f"i{i}": item_value(1.0, 1_790_000_000_000 + j) for j, i in enumerate(rng.integers(0, items, 20).tolist())
        }
        pipe.hset(keys.profile(f"c:bench{c}"), mapping=item_fields(entries))
    pipe.execute()


def bench_campaigns(
    base: Settings, ports: tuple[int, int], items: int, rps: float, seconds: float, rounds: int, echo: Echo
) -> CampaignFigures:
    settings = isolated(base, model_poll_s=1.0, campaign_metrics_s=0.0, campaigns_check_interval_s=0.2)
    _prepare(settings, items, echo)
    paths = [Path(f"/tmp/ecrm-bench-campaigns-{port}.yaml") for port in ports]
    procs = [
        spawn_role(["api", "--port", str(port)], settings.model_copy(update={"campaigns_file": str(path),
                                                                          "api_port": port}))
        for port, path in zip(ports, paths, strict=True)
    ]  # fmt: skip
    r = connect_sync(settings, decode_responses=True)
    stats_key = Keys(settings.key_prefix).campaign_stats("bench-a-a")
    none: list[tuple[float, float]] = []
    camp: list[tuple[float, float]] = []
    errors = [0, 0]
    lists = requests = 0
    try:
        for port in ports:
            wait_ready(f"http://127.0.0.1:{port}/health/live", 60, procs)
        time.sleep(settings.model_poll_s * 2)

        def call(port: int) -> Callable[[int], str]:
            return lambda k: f"http://127.0.0.1:{port}/v1/customers/bench{k % CUSTOMERS}/recommendations?n=10"

        async def both(rate: float, secs: float) -> list[tuple[list[float], list[float], int]]:
            return list(await asyncio.gather(*(open_loop(get(call(p)), rate / 2, secs) for p in ports)))

        for round_ in range(rounds):
            on = round_ % 2  # the process with the campaign: the other one next round (the file is re-read)
            paths[on].write_text(A_A)
            paths[1 - on].write_text(NONE)
            time.sleep(1.0)
            asyncio.run(both(100, 2))  # warm-up (and the variants of the customers remembered)
            time.sleep(0.5)
            r.delete(stats_key)
            echo(f"round {round_ + 1}/{rounds}: {rps:.0f} req/s for {seconds:.0f}s, the campaign on API {on + 1} ...")
            results = asyncio.run(both(rps, seconds))
            time.sleep(1.0)  # the last exposures written after their answers
            lists += sum(int(v) for k, v in r.hgetall(stats_key).items() if k.endswith(":lists"))
            requests += len(results[on][0])
            for role, (server, _, _) in ((camp, results[on]), (none, results[1 - on])):
                role.append((statistics.median(server), pct(server, 99)))
            errors[0] += results[1 - on][2]
            errors[1] += results[on][2]
            echo(f"  without: p50 {none[-1][0]:.2f} ms, p99 {none[-1][1]:.2f} ms; "
                 f"with: p50 {camp[-1][0]:.2f} ms, p99 {camp[-1][1]:.2f} ms")  # fmt: skip
    finally:
        for proc in procs:
            stop_process(proc)
        for path in paths:
            path.unlink(missing_ok=True)
    med = statistics.median
    return CampaignFigures(
        items, rps, seconds, rounds, med(x[0] for x in none), med(x[1] for x in none),
        med(x[0] for x in camp), med(x[1] for x in camp), errors[0], errors[1], lists, requests,
    )  # fmt: skip
