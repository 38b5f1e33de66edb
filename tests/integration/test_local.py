"""``ecrm up``: the all-in-one runtime starts everything and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from core import runstate
from core.settings import Settings
from runtime.embedded import free_port
from runtime.local import LocalStack, wait_until_stopped
from tests.conftest import wait_for
from tests.integration.test_auth import listening

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def second_shell(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A command run as from another shell: no ECRM_* address, only the runtime directory of the test."""
    return subprocess.run([sys.executable, "-m", "ecrm", *args], env=env, capture_output=True, text=True, timeout=60)


def start_up(env: dict[str, str], *args: str, stderr: int) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """``ecrm up`` started with ``args``; its output lines are gathered in the list by the (returned) thread."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecrm", "up", *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    return proc, lines, reader


def said(proc: subprocess.Popen[str], lines: list[str], text: str) -> bool:
    """Whether ``ecrm up`` printed ``text`` yet; fails the test when it exited."""
    if proc.poll() is not None:
        pytest.fail(f"ecrm up exited: {''.join(lines)}")
    return any(text in line for line in lines)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_is_found_and_a_stop_signal_leaves_nothing_behind(stop_signal: int, tmp_path: Path) -> None:
    port, kafka_port, redis_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env["ECRM_RUNTIME_DIR"] = str(tmp_path / "rt")
    # the shipped config/campaigns.yaml: no campaign runs (only the demo plays its own)
    args = ["--port", str(port), "--kafka-port", str(kafka_port), "--redis-port", str(redis_port), "--no-demo"]
    proc, lines, reader = start_up(env, *args, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: said(proc, lines, "API ready"), timeout=90, what="ecrm up to be ready")
        # "ready" means a worker consumes: an event posted at once reaches its profile without a group join
        health = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).json()
        assert health["worker"] is True and health["status"] == "ok", health
        event = {"type": "product_view", "event_id": "first", "timestamp": int(time.time() * 1000)}
        posted = time.perf_counter()
        event |= {"customer_id": "first-visitor", "item_id": "sku-1"}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/events", json=event, timeout=5).status_code == 202
        profile = f"http://127.0.0.1:{port}/v1/customers/first-visitor/profile"
        wait_for(lambda: httpx.get(profile, timeout=5).status_code == 200, timeout=30, interval=0.02)
        print(f"event posted right after the ready line -> in its profile: {time.perf_counter() - posted:.3f}s")
        wait_for(lambda: any("press Ctrl-C" in line for line in lines), timeout=30, what="ecrm up to be running")
        family = children_of(proc.pid)
        assert len(family) >= 4  # broker, Redis, worker, API
        assert listening(port) == {"0100007F"}  # the open demo API listens on 127.0.0.1 only
        recs = httpx.get(f"http://127.0.0.1:{port}/v1/customers/x/recommendations", timeout=5)
        assert recs.status_code == 200 and recs.json()["strategy"] == "trending"  # the one event posted above
        assert recs.json()["campaign"] is None and recs.json()["variant"] is None
        assert [i["item_id"] for i in recs.json()["items"]] == ["sku-1"]
        state = runstate.read_state(env)
        assert state is not None and state.pid == proc.pid
        assert (state.kafka_bootstrap, state.api_url) == (f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{port}")
        assert state.redis_url == f"redis://127.0.0.1:{redis_port}/0"
        topics = second_shell(env, "topics")
        assert (topics.returncode, topics.stdout.strip()) == (0, "topics already exist"), topics.stderr
        models = second_shell(env, "model", "list")
        # the worker may already have trained on the one event posted above
        assert models.returncode == 0, models.stderr
        assert "no model version yet" in models.stdout or models.stdout.startswith("* v"), models.stdout
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)
        reader.join(timeout=5)
        out = "".join(lines)
        assert proc.returncode == 0, out
        assert "stopped" in out
        wait_for(lambda: not any(alive(p) for p in family), timeout=15, what="every child to exit")
        assert not runstate.state_path(env).exists()
        gone = second_shell(env, "topics")
        assert gone.returncode == 2 and "`make run`" in gone.stderr
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_child_that_dies_is_restarted(settings: Settings) -> None:
    """The supervisor of ``ecrm up`` restarts a crashed role, and gives up after a bounded number of restarts."""
    quick = subprocess.Popen([sys.executable, "-m", "ecrm", "schema"], stdout=subprocess.DEVNULL)
    stack = LocalStack(settings, procs=[quick])
    messages: list[str] = []
    code = wait_until_stopped(stack, messages.append, max_restarts=2)
    assert code == 1
    assert messages == [
        "schema exited with code 0; restarting (1/2)",
        "schema exited with code 0; restarting (2/2)",
    ]
    stack.stop()


def test_the_demo_is_complete_when_its_urls_are_printed(tmp_path: Path) -> None:
    """Scores, segment, lifetime value (or the reason there is none) and a served model before "demo ready"."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env["ECRM_RUNTIME_DIR"] = str(tmp_path / "rt")
    proc, lines, _ = start_up(env, "--port", str(port), "--customers", "120", stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: said(proc, lines, "demo ready"), timeout=240, what="the demo to be ready")
        # the demo's own keys (it hosts two shops: runtime/demo_shops.py), printed once the second shop's history is
        # produced: the first shop's server key
        wait_for(lambda: said(proc, lines, "(tenant default): collect"), timeout=120, what="the demo's keys")
        out = "".join(lines)
        assert "demo: every event applied" in out and "analytics: refreshed" in out, out
        base = f"http://127.0.0.1:{port}/v1/customers/cust-00000"
        printed = re.search(r"\(tenant default\): collect \S+, server (\S+),", out)
        assert printed is not None, out
        headers = {"Authorization": f"Bearer {printed.group(1)}"}
        profile = httpx.get(f"{base}/profile", headers=headers, timeout=5).json()
        assert profile["segment"] is not None and profile["rfm"]["rfm_score"] is not None
        analytics = profile["analytics"]
        assert profile["lifetime_value"] is not None or analytics["reason"], analytics
        recs = httpx.get(f"{base}/recommendations", params={"n": 5}, headers=headers, timeout=5).json()
        assert recs["strategy"] == "personal" and recs["model_version"] != "popularity", (recs, out)
        assert recs["campaign"] == "engine-vs-popular", recs  # the demo's own campaign (runtime/demo_campaigns.yaml)
        # another shell's command finds the demo's campaigns file through the running ecrm up
        report = second_shell(env, "campaign", "report", "engine-vs-popular", "--json")
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["campaign"]["name"] == "engine-vs-popular"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
