"""``ecrm bench ingest --json``: the names the issue gives, the ratio measured in the run, and the worker's own CPU
per event (beyond a Faust agent's that does nothing)."""

from __future__ import annotations

from benchmarks.ingest import IngestFigures


def figures(worker_cpu: float, noop_cpu: float) -> IngestFigures:
    out = IngestFigures(100_000, 200_000.0, 8_000.0, 4_000.0, 30.0, 60.0, 80.0, 300, noop_faust_eps=10_000.0)
    out.worker_cpu_us, out.redis_cpu_us, out.noop_cpu_us = worker_cpu, 50.0, noop_cpu
    return out


def test_json_names_ratio_and_the_workers_own_cpu() -> None:
    out = figures(110.0, 75.5).as_json()
    assert {"worker_eps", "noop_faust_eps", "ratio", "lag_p99_ms", "lag_p99_with_training_ms"} <= set(out)
    assert out["ratio"] == 0.8
    assert (out["worker_cpu_us_per_event"], out["redis_cpu_us_per_event"], out["noop_cpu_us_per_event"]) == (
        110.0,
        50.0,
        75.5,
    )
    assert out["worker_own_cpu_us_per_event"] == 34.5
    assert any("the worker's own: 34 us" in line for line in figures(110.0, 75.5).lines())


def test_no_own_cpu_where_a_process_could_not_be_read() -> None:
    assert figures(0.0, 75.0).as_json()["worker_own_cpu_us_per_event"] == 0.0
    assert figures(110.0, 0.0).as_json()["worker_own_cpu_us_per_event"] == 0.0
