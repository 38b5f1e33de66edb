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


def test_json_names_the_ranking_stage() -> None:
    figures = ApiFigures(
        requests=10, errors=0, seconds=1.0, target_rps=10.0, server_p50_ms=1.0, server_p99_ms=2.0,
        client_p50_ms=1.5, client_p99_ms=2.5, health_rps=1000.0, recs_max_rps=100.0, model_version="v1",
        ranker="forced", ranker_used=True,
    )  # fmt: skip
    out = figures.as_json()
    assert (out["ranker"], out["ranker_used"], out["ratio"]) == ("forced", True, 0.1)


def test_stage_figures_add_up() -> None:
    from benchmarks.api_stages import StageFigures

    figures = StageFigures(items=100, requests=3, ranker=True, stages_us={"encode history": 10.0, "stage: x": 5.25},
                           recommend_us=20.0, retrieval_us={"fold-in (one solve)": 4.0})  # fmt: skip
    out = figures.as_json()
    assert out["stages_sum_us"] == round(15.25, 1)
    assert out["stages_us"] == {"encode history": 10.0, "stage: x": 5.2}
    assert out["retrieval_parts_us"] == {"fold-in (one solve)": 4.0}
    assert any("sum of the stages" in line and "15.2" in line for line in figures.lines())
