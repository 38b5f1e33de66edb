"""``ecrm up --data-dir``: the whole engine stopped in the middle of ingest (SIGTERM, and SIGKILL of every process)
and started again on the same folder serves what was there at once (profiles, the model, the segments) without a
retraining; every event acknowledged before the loss window is in its profile; a folder held by a running engine
is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from core import runstate
from core.keyspace import Keys
from runtime.embedded import free_port
from tests.conftest import wait_for
from tests.integration.test_local import alive, children_of, said, second_shell, start_up

pytestmark = pytest.mark.integration
WINDOW_S = 3.0  # the bound asserted: events acknowledged longer than this before the stop are all kept
SAMPLE = [f"cust-{i:05d}" for i in range(10)]


def engine_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env["ECRM_RUNTIME_DIR"] = str(tmp_path / "rt")
    env["ECRM_CAMPAIGNS_FILE"] = str(tmp_path / "no-campaigns.yaml")
    env["ECRM_RETRAIN_MIN_INTERACTIONS"] = str(10**9)  # no training but the one the test asks for
    env["ECRM_RETRAIN_INTERVAL_S"] = str(10**9)
    env["ECRM_ANALYTICS_INTERVAL_S"] = "0"
    return env


def started(env: dict[str, str], data: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc, lines, _ = start_up(env, "--port", str(port), "--no-demo", "--data-dir", str(data), stderr=subprocess.STDOUT)
    wait_for(lambda: said(proc, lines, "API ready"), timeout=90, what="ecrm up to be ready")
    return proc, lines


def engine_redis(env: dict[str, str]) -> redis.Redis:
    state = runstate.read_state(env)
    assert state is not None
    return redis.Redis.from_url(state.redis_url, decode_responses=True)


def applied(env: dict[str, str]) -> int:
    client = engine_redis(env)
    try:
        return int(client.get(Keys().applied_count) or 0)
    finally:
        client.close()


def model_versions(env: dict[str, str]) -> list[str]:
    client = engine_redis(env)
    try:
        return list(client.lrange(Keys().model_versions, 0, -1))
    finally:
        client.close()


class Poster(threading.Thread):
    """Posts one event at a time, each for a customer of its own, and notes when each was acknowledged."""

    def __init__(self, port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.prefix = prefix
        self.url = f"http://127.0.0.1:{port}/v1/events"
        self.acked: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                customer = f"{self.prefix}-{n:06d}"
                event = {"type": "product_view", "event_id": f"{self.prefix}-{n}", "timestamp": int(time.time() * 1000),
                         "customer_id": customer, "item_id": f"sku-{n % 50:05d}"}  # fmt: skip
                try:
                    if client.post(self.url, json=event).status_code == 202:
                        self.acked[customer] = time.monotonic()
                except httpx.HTTPError:
                    time.sleep(0.01)


def stop_hard(proc: subprocess.Popen[str]) -> set[int]:
    """SIGKILL ``ecrm up`` and every process under it at once (as a machine losing power would stop them)."""
    family = children_of(proc.pid) | {proc.pid}
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return family


def test_a_restart_on_the_data_folder_serves_what_was_there(tmp_path: Path) -> None:
    """Stopped by SIGTERM, started again, then every process killed (SIGKILL), started again: each time the same
    model, segments and profiles are served, and the events lost are only those of the last moments."""
    env, data, port = engine_env(tmp_path), tmp_path / "data", free_port()
    proc, lines = started(env, data, port)
    base = f"http://127.0.0.1:{port}"
    try:
        held = subprocess.run(
            [sys.executable, "-m", "ecrm", "up", "--no-demo", "--port", str(free_port())],
            env=env | {"ECRM_DATA_DIR": str(data)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert held.returncode == 2 and f"in use by another running engine (pid {proc.pid})" in held.stderr, held

        made = second_shell(env, "simulate", "--customers", "40", "--items", "60", "--visitors", "10")
        assert made.returncode == 0, made.stderr
        target = int(made.stdout.split()[1])
        wait_for(lambda: applied(env) >= target, timeout=60, what="the history to be applied")
        for command in (["train"], ["analytics", "refresh"]):
            done = second_shell(env, *command)
            assert done.returncode == 0, done.stderr
        wait_for(
            lambda: httpx.get(f"{base}/v1/customers/{SAMPLE[0]}/recommendations", timeout=5).json()["model_version"]
            != "popularity",
            timeout=30, what="the model to be served",
        )  # fmt: skip
        version = httpx.get(f"{base}/v1/customers/{SAMPLE[0]}/recommendations", timeout=5).json()["model_version"]
        segments = httpx.get(f"{base}/v1/segments", timeout=5).json()
        versions = model_versions(env)
        counts = {c: httpx.get(f"{base}/v1/customers/{c}/profile", timeout=5).json()["event_counts"] for c in SAMPLE}

        for stop in ("SIGTERM", "SIGKILL"):
            poster = Poster(port, prefix=stop)
            poster.start()
            wait_for(lambda p=poster: len(p.acked) >= 200, timeout=60, interval=0.05, what="ingest under way")
            stopped_at = time.monotonic()
            if stop == "SIGTERM":
                family = children_of(proc.pid) | {proc.pid}
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            else:
                family = stop_hard(proc)
            wait_for(lambda f=family: not any(alive(p) for p in f), timeout=30, what="every process to be gone")
            poster.stop.set()
            poster.join(timeout=10)
            acked = {c: t for c, t in poster.acked.items() if t <= stopped_at}

            proc, lines = started(env, data, port)
            assert said(proc, lines, f"data folder {data} (restarted)")
            recs = httpx.get(f"{base}/v1/customers/{SAMPLE[0]}/recommendations", timeout=5).json()
            assert recs["model_version"] == version and recs["strategy"] == "personal"  # served at once
            assert model_versions(env) == versions  # no training since
            assert httpx.get(f"{base}/v1/segments", timeout=5).json()["snapshot_id"] == segments["snapshot_id"]
            for c in SAMPLE:
                assert httpx.get(f"{base}/v1/customers/{c}/profile", timeout=5).json()["event_counts"] == counts[c]

            client = engine_redis(env)
            customers = sorted(acked)
            with client.pipeline(transaction=False) as pipe:
                for c in customers:
                    pipe.exists(Keys().profile(f"c:{c}"))
                present = pipe.execute()
            client.close()
            lost = [c for c, there in zip(customers, present, strict=True) if not there]
            window = stopped_at - min(acked[c] for c in lost) if lost else 0.0
            rate = len(acked) / (max(acked.values()) - min(acked.values()))
            print(f"{stop}: {len(acked)} events acknowledged ({rate:.0f}/s), {len(lost)} lost: window {window:.3f}s")
            assert all(acked[c] > stopped_at - WINDOW_S for c in lost), (len(lost), window)
            assert len(lost) < len(acked) / 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_production_shape_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = engine_env(tmp_path)
    args = ["up", "--no-demo", "--data-dir", str(tmp_path / "data"), "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run([sys.executable, "-m", "ecrm", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to listen on '0.0.0.0' without access control" in done.stderr, done
    assert not (tmp_path / "data").exists()  # refused before anything started
