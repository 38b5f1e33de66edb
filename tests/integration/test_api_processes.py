"""``ecrm api --workers 2``: two API processes on one port share the memory-mapped model files, each swaps to a
newly promoted version by itself, and ``/metrics`` counts the requests of both, whichever process answers."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import multiprocess

from core.settings import Settings
from runtime.embedded import free_port
from runtime.local import spawn_role, stop_process, wait_ready
from tests.integration.helpers import view
from tests.integration.test_serving import demo_events, load
from trainer.training import train_once

pytestmark = pytest.mark.integration
REQUESTS = 120


def children(pid: int) -> list[int]:
    """The API processes uvicorn started (not multiprocessing's resource tracker)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split() if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def metrics_folder(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    return Path(value.split(b"=", 1)[1].decode())


def served_count(text: str) -> float:
    return sum(
        float(m) for m in re.findall(r'^ecrm_recommendations_total\{[^}]*endpoint="customer"[^}]*\} (\S+)$', text, re.M)
    )


def per_process_counts(folder: Path, pids: list[int]) -> dict[int, float]:
    """Each process's own count of personal recommendations, read from its own file."""
    counts: dict[int, float] = {}
    for pid in pids:
        files = [str(p) for p in folder.glob(f"counter_{pid}.db")]
        total = 0.0
        for metric in multiprocess.MultiProcessCollector.merge(files, accumulate=True):
            if metric.name == "ecrm_recommendations":
                total += sum(s.value for s in metric.samples if s.labels.get("endpoint") == "customer"
                             and s.name.endswith("_total"))  # fmt: skip
        counts[pid] = total
    return counts


def versions_served(base: str, count: int) -> set[str]:
    """The versions named by ``count`` requests, each on a new connection (so either process may answer)."""
    return {
        httpx.get(f"{base}/v1/customers/cust-{k % 50:05d}/recommendations", timeout=10).json()["model_version"]
        for k in range(count)
    }


async def hammer(base: str, total: int) -> None:
    """``total`` requests from 8 concurrent connections (both processes get some)."""
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        queue = list(range(total))

        async def one() -> None:
            while queue:
                k = queue.pop()
                resp = await c.get(f"/v1/customers/cust-{k % 50:05d}/recommendations")
                assert resp.status_code == 200

        await asyncio.gather(*(one() for _ in range(8)))


def test_two_processes_share_the_model_swap_and_count_together(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    settings = settings.model_copy(update={"api_port": free_port(), "api_model_dir": str(models), "model_poll_s": 0.2})
    asyncio.run(load(settings, demo_events()))
    first = train_once(settings)
    assert first.promoted
    proc = spawn_role(["api", "--port", str(settings.api_port), "--workers", "2"], settings)
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        wait_ready(f"{base}/health/ready", 60, [proc])
        deadline = time.monotonic() + 30
        while len(children(proc.pid)) < 2 or versions_served(base, 10) != {first.version}:
            assert time.monotonic() < deadline, "the two processes did not both serve the first version"
            time.sleep(0.2)
        pids = children(proc.pid)
        assert len(pids) == 2
        folder = metrics_folder(pids[0])
        before = served_count(httpx.get(f"{base}/metrics").text)
        asyncio.run(hammer(base, REQUESTS))
        # every scrape, whichever process answers it, counts the requests of both
        scrapes = [served_count(httpx.get(f"{base}/metrics").text) for _ in range(6)]
        assert scrapes == [before + REQUESTS] * 6
        own = per_process_counts(folder, pids)
        assert all(count > 0 for count in own.values()), own  # both processes served some of them
        assert sum(own.values()) == before + REQUESTS
        # the version was unpacked once for the host, and both processes map those files
        assert sorted(p.name for p in (models / settings.key_prefix).iterdir()) == [first.version]
        for pid in pids:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert str(models / settings.key_prefix / first.version / "item_factors.npy") in maps
        # a newly promoted version reaches every process
        asyncio.run(load(settings, [view("cust-00003", f"sku-{i:05d}") for i in range(20, 40)]))
        second = train_once(settings)
        assert second.promoted
        deadline = time.monotonic() + 30
        while versions_served(base, 20) != {second.version}:
            assert time.monotonic() < deadline, "not every process swapped to the second version"
            time.sleep(0.2)
        text = httpx.get(f"{base}/metrics").text
        assert f'ecrm_model_info{{tenant="default",version="{second.version}"}} 1.0' in text
        assert f'ecrm_model_info{{tenant="default",version="{first.version}"}} 0.0' in text
        assert "ecrm_events_consumed_total" not in text  # the worker's metrics stay the worker's
        assert children(proc.pid) == pids  # no process was lost on the way
    finally:
        stop_process(proc)
    assert not folder.exists()  # the metrics folder of the run is removed with it
