"""``ecrm bench api --json``: the names the issue gives, and the ratio measured in the run."""

from __future__ import annotations

from benchmarks.recommender import ApiFigures


def test_json_names_and_ratio() -> None:
    figures = ApiFigures(
        requests=900, errors=0, seconds=15.0, target_rps=60.0, server_p50_ms=2.5, server_p99_ms=9.25,
        client_p50_ms=3.0, client_p99_ms=11.0, health_rps=2000.0, recs_max_rps=120.0, model_version="v1",
        items=100_000, workers=2, scoring="candidates", load_avg=(5.0, 4.0, 3.0),
    )  # fmt: skip
    out = figures.as_json()
    assert {"rec_max_rps", "live_max_rps", "ratio", "p50_ms", "p99_ms"} <= set(out)
    assert out["ratio"] == 0.06
    assert (out["rec_max_rps"], out["live_max_rps"], out["p50_ms"], out["p99_ms"]) == (120.0, 2000.0, 2.5, 9.25)
    assert (out["workers"], out["items"], out["scoring"], out["load_avg"]) == (
        2,
        100_000,
        "candidates",
        [5.0, 4.0, 3.0],
    )
    assert "2" in figures.lines()[1] and "candidates scoring" in figures.lines()[0]
