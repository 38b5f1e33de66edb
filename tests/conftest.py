"""Shared fixtures. Integration tests get a real embedded broker (Tansu) and Redis-compatible server (Valkey),
started once per test session on free loopback ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecrm.embedded import EmbeddedServer, start_broker, start_redis
from ecrm.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("ECRM_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared real data sets (never copied into the project)."""
    assert DATASETS.is_dir(), f"shared datasets not found at {DATASETS} (set ECRM_DATASETS)"
    return DATASETS


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedServer]:
    server = start_broker()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture()
def settings(broker: EmbeddedServer, redis_server: EmbeddedServer) -> Settings:
    """Settings isolated per test: own topics, own Redis key prefix, on the session's embedded servers."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{broker.port}",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
        events_topic=f"t{tag}.events",
        dlq_topic=f"t{tag}.events.dlq",
        key_prefix=f"t{tag}",
        worker_app_id=f"t{tag}-worker",
        topic_partitions=2,
        worker_web_port=0,
        worker_metrics_port=0,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (worker, API) use ``settings``."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"ECRM_{name.upper()}"] = value if isinstance(value, str) else __import__("json").dumps(value)
    return env
