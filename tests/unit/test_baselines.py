"""The baselines a shop would try, the best-baseline comparison, and the rolling time-split protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recommender.data import Interactions, interactions_batch
from recommender.evaluation.baselines import (
    BASELINES,
    RecentlyViewed,
    Trending,
    baselines_for,
    best_baseline,
    make_baseline,
    ratio,
)
from recommender.evaluation.datasets import Dataset
from recommender.evaluation.protocols import rolling_windows, window_splits
from recommender.evaluation.runner import comparison, evaluate_rolling

HOUR = 3_600_000


def _scores(model: object, log: Interactions, user: str) -> dict[str, float]:
    assert hasattr(model, "score_batch")
    row = interactions_batch(log).take([log.user_ids.index(user)])
    values = model.score_batch(row).values[0]
    return dict(zip(log.item_ids, values.tolist(), strict=True))


def test_trending_halves_an_interaction_s_weight_every_half_life() -> None:
    # "old" was popular a day ago (4 users), "new" an hour ago (3 users): trending prefers "new" with a 12 h
    # half-life, popularity prefers "old"
    records = [(f"u{k}", "old", 1.0, 0) for k in range(4)] + [(f"v{k}", "new", 1.0, 23 * HOUR) for k in range(3)]
    records.append(("w", "other", 1.0, 24 * HOUR))
    log = Interactions.from_records(records)
    trending = _scores(Trending(half_life_hours=12).fit(log), log, "w")
    assert trending["old"] == pytest.approx(4 * 0.25)
    assert trending["new"] == pytest.approx(3 * 2 ** (-1 / 12))
    assert trending["new"] > trending["old"]
    popularity = _scores(make_baseline("popularity").fit(log), log, "w")
    assert popularity["old"] > popularity["new"]
    with pytest.raises(ValueError, match="half_life_hours"):
        Trending(0)


def test_trending_counts_customers_and_the_served_lists_count_weights() -> None:
    # u viewed a once and b five times; w viewed b once at hour 24; v's weights on b sum to a negative
    log = Interactions.from_records(
        [("u", "a", 1.0, 0), *[("u", "b", 1.0, 0)] * 5, ("v", "b", -5.0, 0), ("w", "b", 1.0, 24 * HOUR)]
    )
    scores = _scores(Trending(24).fit(log), log, "u")  # one per customer, at their latest time
    assert scores["a"] == pytest.approx(0.5) and scores["b"] == pytest.approx(0.5 + 1.0)
    served = _scores(make_baseline("trending", 24, served=True).fit(log), log, "u")  # as the Redis list: weights
    assert served["a"] == pytest.approx(0.5) and served["b"] == pytest.approx(5 * 0.5 + 1.0)
    popular = _scores(make_baseline("popularity", served=True).fit(log), log, "u")  # all-time weight, no decay
    assert popular["a"] == pytest.approx(1.0) and popular["b"] == pytest.approx(6.0)


def test_recently_viewed_ranks_the_customer_s_own_items_newest_first() -> None:
    log = Interactions.from_records(
        [("u", "a", 1.0, 1), ("u", "b", 9.0, 2), ("u", "c", 1.0, 3), ("u", "a", 1.0, 4), ("v", "d", 1.0, 5)]
    )
    scores = _scores(RecentlyViewed().fit(log), log, "u")
    assert scores["a"] > scores["c"] > scores["b"] > float("-inf") == scores["d"]
    ranked = (
        RecentlyViewed().fit(log).recommend([("a", 1.0, 4), ("c", 1.0, 3), ("b", 9.0, 2)], 3, exclude_history=False)
    )
    assert [r.item_id for r in ranked] == ["a", "c", "b"]


def test_buy_again_ranks_by_frequency_before_recency() -> None:
    log = Interactions.from_records([("u", "a", 1.0, 1), ("u", "a", 1.0, 2), ("u", "b", 1.0, 3), ("v", "c", 1.0, 1)])
    scores = _scores(make_baseline("buy-again").fit(log), log, "u")
    assert scores["a"] > scores["b"] > float("-inf") == scores["c"]


def test_baseline_names_and_the_comparison() -> None:
    assert set(BASELINES) == {"popularity", "trending", "buy-again", "recently-viewed"}
    assert baselines_for(False) == ("popularity", "trending")
    assert baselines_for(True) == BASELINES
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("random")
    assert best_baseline({"popularity": 0.1, "trending": 0.3, "engine": 0.9}) == ("trending", 0.3)
    assert best_baseline({"popularity": 0.2, "trending": 0.2}) == ("popularity", 0.2)  # a tie: the first named
    assert best_baseline({"engine": 0.5}) is None
    assert ratio(0.3, 0.2) == 1.5 and ratio(0.3, 0.0) is None
    models = {
        "engine": {"ndcg@10": 0.2, "hr@10": 0.4},
        "popularity": {"ndcg@10": 0.1, "hr@10": 0.5},
        "trending": {"ndcg@10": 0.25, "hr@10": 0.2},
    }
    assert comparison(models) == {"best_baseline": "trending", "engine_ratio": {"ndcg@10": 0.8, "hr@10": 2.0}}
    assert comparison({"popularity": models["popularity"]}) == {}


def _log_over_days(days: int = 10, users: int = 60) -> Interactions:
    """Each user views two items a day; half of them also view their first item again every day (repeats)."""
    records = []
    for day in range(days):
        for u in range(users):
            ts = day * 24 * HOUR + u * 1000
            records.append((f"u{u}", f"i{(u + day) % 30}", 1.0, ts))
            records.append((f"u{u}", f"i{u % 30}" if u % 2 else f"j{day}", 1.0, ts + 500))
    return Interactions.from_records(records)


def test_rolling_windows_are_consecutive_and_end_after_the_newest_interaction() -> None:
    log = _log_over_days()
    windows = rolling_windows(log, windows=4, window_ms=24 * HOUR)
    newest = int(log.ts.max())
    assert [w.index for w in windows] == [0, 1, 2, 3]
    assert windows[-1].end == newest + 1
    assert all(w.end - w.start == 24 * HOUR for w in windows)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    # by default the span after the 80% quantile of times, cut in equal parts
    default = rolling_windows(log, windows=2)
    assert len(default) == 2 and default[0].start >= int(np.quantile(log.ts, 0.8)) - 1
    # windows reaching before the oldest interaction have nothing to learn from: left out
    assert len(rolling_windows(log, windows=20, window_ms=24 * HOUR)) == 9
    with pytest.raises(ValueError, match="windows"):
        rolling_windows(log, windows=0)


def test_each_window_trains_on_all_before_it_and_tests_on_it_in_both_views() -> None:
    log = _log_over_days()
    window = rolling_windows(log, windows=3, window_ms=24 * HOUR)[1]
    views = window_splits(log, window)
    assert views is not None and set(views) == {"time-split", "repeat"}
    new, every = views["time-split"], views["repeat"]
    assert new.train is every.train or np.array_equal(new.train.ts, every.train.ts)
    assert int(new.train.ts.max()) < window.start and len(new.train) == int((log.ts < window.start).sum())
    assert new.cutoff_ts == window.start
    # the repeat view holds every item of the window, the time-split view only the new ones
    assert every.n_test_users == 60 and len(every.test_items) == 60 * 2
    assert len(new.test_items) < len(every.test_items)
    empty = rolling_windows(log, windows=1, window_ms=24 * HOUR)[0]
    assert window_splits(log.select(log.ts < empty.start), empty) is None


def test_the_rolling_report_averages_each_view_over_its_windows() -> None:
    log = _log_over_days()
    echoed: list[str] = []
    report = evaluate_rolling(Dataset("synthetic", "test", log, 0), windows=3, window_ms=24 * HOUR, echo=echoed.append)
    assert len(report.windows) == 3 and len(echoed) == 3 and "window 1/3" in echoed[0]
    averages = report.averages()
    assert set(averages) == {"time-split", "repeat"}
    assert set(averages["time-split"]["models"]) == {"engine", "popularity", "trending"}
    assert set(averages["repeat"]["models"]) == {"engine", *BASELINES}
    for view in ("time-split", "repeat"):
        per_window = [w.views[view][1]["engine"].metrics["ndcg@10"] for w in report.windows]
        assert averages[view]["models"]["engine"]["ndcg@10"] == pytest.approx(np.mean(per_window), abs=1e-6)
        assert averages[view]["windows"] == 3
        assert averages[view]["best_baseline"] in BASELINES
    # the odd users view their own first item every day: buy-again finds it, recently-viewed too
    assert averages["repeat"]["models"]["buy-again"]["hr@10"] >= 0.5
    as_dict = report.as_dict()
    assert as_dict["protocol"] == "rolling" and len(as_dict["windows"]) == 3
    assert "engine_ratio" in as_dict["windows"][0]["views"]["repeat"]


def test_the_rolling_command_prints_windows_and_averages(tmp_path: Path) -> None:
    from ecrm.cli import app

    path = tmp_path / "seq.txt"
    path.write_text("".join(f"u{u} " + " ".join(f"i{(u + k) % 25}" for k in range(12)) + "\n" for u in range(80)))
    args = ["evaluate", "--dataset", str(path), "--format", "sequences", "--protocol", "rolling", "--windows", "2"]
    out = CliRunner().invoke(app, [*args, "--json", "--no-progress"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert [w["window"] for w in report["windows"]] == [1, 2]
    assert set(report["views"]) == {"time-split", "repeat"}
    assert report["views"]["repeat"]["best_baseline"] in BASELINES
    text = CliRunner().invoke(app, [*args, "--no-progress"])
    assert text.exit_code == 0, text.output
    assert "window 2 repeat:" in text.stdout and "average over 2 windows, view time-split" in text.stdout
    assert "best baseline:" in text.stdout
    bad = CliRunner().invoke(app, [*args, "--validation"])
    assert bad.exit_code == 2 and "rolling" in bad.output
