"""Pure parts of training and serving: promotion decision, retraining trigger, the fallback chain."""

from __future__ import annotations

from api.recommend import Chain, baseline_items, excluded_purchases, personal_reason
from profiles.store import ScoredItem
from recommender.base import Recommendation
from stream.retrain import should_retrain
from trainer.training import decide

DAY = 86_400_000


def test_promotion_margin() -> None:
    assert decide(0.10, None, 0.05)[0]
    assert decide(None, 0.10, 0.05)[0]
    assert decide(0.096, 0.10, 0.05)[0]
    promoted, reason = decide(0.094, 0.10, 0.05)
    assert not promoted and "0.0940 < 0.0950" in reason


def test_retraining_trigger() -> None:
    assert should_retrain(5, None, None, now_ms=0, min_new=1000, interval_s=60)  # never trained
    assert not should_retrain(5, 5, 0, now_ms=10**9, min_new=1000, interval_s=60)  # nothing new
    assert should_retrain(1005, 5, 0, now_ms=1000, min_new=1000, interval_s=60)  # N new
    assert not should_retrain(6, 5, 0, now_ms=59_000, min_new=1000, interval_s=60)
    assert should_retrain(6, 5, 0, now_ms=60_000, min_new=1000, interval_s=60)  # T passed


def test_chain_fills_in_order_without_repeats_or_exclusions() -> None:
    chain = Chain(n=4, excluded={"x"})
    chain.add("personal", [("a", 3.0, "because"), ("x", 2.0, "excluded")])
    chain.add("trending", [("a", 9.0, "dup"), ("b", 1.0, "trending"), ("c", 0.5, "trending")])
    chain.add("popular", [("d", 1.0, "popular"), ("e", 1.0, "popular")])
    assert [(r.item_id, r.reason) for r in chain.items] == [
        ("a", "because"),
        ("b", "trending"),
        ("c", "trending"),
        ("d", "popular"),
    ]
    assert chain.strategy == "personal" and chain.full


def test_chain_strategy_is_the_first_step_that_served() -> None:
    chain = Chain(n=2, excluded=set(), allowed={"b"})
    chain.add("personal", [])
    chain.add("trending", [("a", 1.0, "t")])  # not allowed by the category filter
    chain.add("popular", [("b", 1.0, "p")])
    assert chain.strategy == "popular" and [r.item_id for r in chain.items] == ["b"]


def test_rebuy_window() -> None:
    bought = {"old": 0, "new": 10 * DAY}
    assert excluded_purchases(bought, now_ms=11 * DAY, rebuy_window_days=0) == {"old", "new"}
    assert excluded_purchases(bought, now_ms=11 * DAY, rebuy_window_days=5) == {"new"}


def test_reasons_a_person_can_read() -> None:
    assert personal_reason(Recommendation("i", 1.0, "x"), {"x": 1}) == "because you bought x"
    assert personal_reason(Recommendation("i", 1.0, "y"), {}) == "because you viewed y"
    assert personal_reason(Recommendation("i", 1.0, None), {}) == "recommended for you"


def test_the_baseline_the_gate_serves_is_computed_from_redis_and_the_profile() -> None:
    history = [("a", 1.0, 30), ("b", 5.0, 10), ("c", 5.0, 20), ("d", 2.0, 40)]
    popular = [ScoredItem("p1", 9.0), ScoredItem("p2", 4.0)]
    trending = [ScoredItem("t1", 2.5)]
    assert baseline_items("popularity", history, popular, trending) == [("p1", 9.0, "popular"), ("p2", 4.0, "popular")]
    assert baseline_items("trending", history, popular, trending) == [("t1", 2.5, "trending")]
    # buy-again: by summed weight, the newest first among equals
    assert [i for i, _, _ in baseline_items("buy-again", history, [], [])] == ["c", "b", "d", "a"]
    # recently viewed: the newest first
    recent = baseline_items("recently-viewed", history, [], [])
    assert [i for i, _, _ in recent] == ["d", "a", "c", "b"]
    assert [s for _, s, _ in recent] == sorted((s for _, s, _ in recent), reverse=True)
    assert baseline_items("unknown", history, popular, trending) == []
    chain = Chain(n=3, excluded={"c"})  # bought within the re-buy window: stays out
    chain.add("baseline:buy-again", baseline_items("buy-again", history, [], []))
    assert [r.item_id for r in chain.items] == ["b", "d", "a"] and chain.strategy == "baseline:buy-again"
