"""The recommender contract, run for every algorithm: checkerboard, batch = single, fold-in, filters, reasons,
serialisation (after implicit's ``tests/recommender_base_test.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recommender import (
    Engine,
    HistoryEntry,
    Interactions,
    ModelFitError,
    NotFittedError,
    Popularity,
    RecommenderConfig,
    blas_threads,
)
from recommender.data import interactions_batch

ALGORITHMS = ["als", "bpr", "cosine", "bm25"]
FAST: dict[str, Any] = {"factors": 8, "iterations": 10}
BPR: dict[str, Any] = {"factors": 8, "iterations": 200, "learning_rate": 0.05, "regularization": 0.001}


def config(algorithm: str, **changes: Any) -> RecommenderConfig:
    base = BPR if algorithm == "bpr" else FAST
    return RecommenderConfig(algorithm=algorithm, **{**base, **changes})  # type: ignore[arg-type]


def checkerboard(n: int, seed: int = 3) -> Interactions:
    """Even users liked every even item and odd users every odd item, except the item with their own number;
    each user in a random order (so every item is preceded and followed by others)."""
    rng = np.random.default_rng(seed)
    records = [
        (f"u{u}", f"i{i}", 1.0, 1_700_000_000_000 + 1000 * int(rng.integers(0, 10_000)))
        for u in range(n)
        for i in range(n)
        if i != u and i % 2 == u % 2
    ]
    return Interactions.from_records(records)


def clustered(users: int = 120, items_per_cluster: int = 20, seed: int = 7) -> Interactions:
    """Two disjoint item clusters; every user stays in one cluster and walks it mostly in item order."""
    rng = np.random.default_rng(seed)
    records: list[tuple[str, str, float, int]] = []
    for u in range(users):
        cluster = u % 2
        start = int(rng.integers(0, items_per_cluster - 6))
        length = int(rng.integers(3, 7))
        for step, offset in enumerate(range(start, start + length)):
            item = cluster * items_per_cluster + offset
            weight = float(rng.choice([1.0, 1.0, 3.0, 5.0]))
            records.append((f"u{u}", f"i{item}", weight, 1_700_000_000_000 + 60_000 * step))
    return Interactions.from_records(records)


def history_of(log: Interactions, user: int) -> list[HistoryEntry]:
    batch = interactions_batch(log)
    sl = batch.row(user)
    return [
        (log.item_ids[i], float(w), int(t))
        for i, w, t in zip(batch.items[sl].tolist(), batch.weights[sl].tolist(), batch.ts[sl].tolist(), strict=True)
    ]


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Any:
    with blas_threads(1):
        yield


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("blend", ["engine", "collaborative", "sequential"])
def test_checkerboard_held_out_item_ranks_first(algorithm: str, blend: str) -> None:
    n = 50
    weights = {"engine": {}, "collaborative": {"sequence_weight": 0.0}, "sequential": {"collaborative_weight": 0.0}}
    log = checkerboard(n)
    model = Engine(config(algorithm, **weights[blend])).fit(log)
    for user in range(n):
        recs = model.recommend(history_of(log, user), n=1)
        assert [r.item_id for r in recs] == [f"i{user}"], (algorithm, blend, user)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_batch_equals_single(algorithm: str) -> None:
    log = clustered()
    model = Engine(config(algorithm)).fit(log)
    histories = [history_of(log, u) for u in range(40)]
    batch = model.rank_batch(model.encode(histories), 8)
    for history, batched in zip(histories, batch, strict=True):
        single = model.recommend(history, n=8)
        assert [r.item_id for r in single] == [r.item_id for r in batched]
        assert [r.reason_item for r in single] == [r.reason_item for r in batched]
        np.testing.assert_allclose([r.score for r in single], [r.score for r in batched], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fold_in_of_an_unseen_user_is_personal(algorithm: str) -> None:
    log = clustered()
    model = Engine(config(algorithm)).fit(log)
    assert "new-visitor" not in log.user_ids
    first = model.recommend([("i3", 1.0, 1000), ("i4", 1.0, 2000), ("i5", 3.0, 3000)], n=5)
    second = model.recommend([("i23", 1.0, 1000), ("i24", 1.0, 2000), ("i25", 3.0, 3000)], n=5)
    assert len(first) == len(second) == 5
    assert all(int(r.item_id[1:]) < 20 for r in first)
    assert all(int(r.item_id[1:]) >= 20 for r in second)
    assert all(r.reason_item in {"i3", "i4", "i5"} for r in first)


def test_sequence_order_matters() -> None:
    """The same items in another order: the most recent item decides what comes next."""
    log = Interactions.from_records(
        [
            (f"u{u}", item, 1.0, t)
            for u in range(30)
            for t, item in enumerate(["a", "b", "c"] if u % 2 else ["x", "y", "z"])
        ]
        + [(f"v{u}", item, 1.0, t) for u in range(30) for t, item in enumerate(["c", "d"] if u % 2 else ["z", "w"])]
    )
    model = Engine(config("als", collaborative_weight=0.0)).fit(log)
    after_c = model.recommend([("x", 1.0, 1), ("c", 1.0, 2)], n=1)
    after_x = model.recommend([("c", 1.0, 1), ("x", 1.0, 2)], n=1)
    assert after_c[0].item_id == "d" and after_c[0].reason_item == "c"
    assert after_x[0].item_id == "y" and after_x[0].reason_item == "x"


def test_exclusions_and_allowed_items() -> None:
    log = clustered()
    model = Engine(config("als")).fit(log)
    history = history_of(log, 0)
    plain = [r.item_id for r in model.recommend(history, n=6)]
    excluded = set(plain[:2])
    assert not excluded & {r.item_id for r in model.recommend(history, n=6, exclude=excluded)}
    allowed = {"i30", "i31", "i32"}
    only = model.recommend(history, n=6, allowed=model.mask(allowed))
    assert {r.item_id for r in only} == allowed  # fewer than n: only the allowed items come back
    assert [r.item_id for r in model.recommend(history, n=6, allowed=allowed)] == [r.item_id for r in only]
    in_history = {item for item, _, _ in history}
    assert not in_history & set(plain)
    assert in_history & {r.item_id for r in model.recommend(history, n=40, exclude_history=False)}


def test_similar_and_cart_items() -> None:
    log = clustered()
    model = Engine(config("als")).fit(log)
    similar = model.similar_items("i4", n=5)
    assert len(similar) == 5 and "i4" not in {r.item_id for r in similar}
    assert all(int(r.item_id[1:]) < 20 and r.reason_item == "i4" for r in similar)
    assert model.similar_items("not-in-catalogue") == []
    cart = model.cart_items(["i24", "i25", "unknown"], n=5)
    assert len(cart) == 5 and not {"i24", "i25"} & {r.item_id for r in cart}
    assert all(int(r.item_id[1:]) >= 20 for r in cart)


def test_empty_history_falls_back_to_popular_items() -> None:
    log = clustered()
    model = Engine(config("als")).fit(log)
    popular = Popularity().fit(log)
    expected = [r.item_id for r in popular.recommend([], n=3)]
    recs = model.recommend([("unknown-item", 1.0, 0)], n=3)
    assert [r.item_id for r in recs] == expected
    assert all(r.reason_item is None for r in recs)


def test_scoring_leaves_the_batch_unchanged() -> None:
    log = clustered()
    model = Engine(config("als", max_history=2)).fit(log)
    batch = interactions_batch(log)
    before = (batch.indptr.copy(), batch.items.copy(), batch.weights.copy(), batch.ts.copy())
    model.rank_batch(batch, 5)
    for a, b in zip(before, (batch.indptr, batch.items, batch.weights, batch.ts), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_serialisation_round_trip(algorithm: str) -> None:
    log = clustered()
    model = Engine(config(algorithm)).fit(log)
    model.metrics = {"holdout": {"ndcg@10": 0.5}}
    loaded = Engine.from_bytes(model.to_bytes())
    assert loaded.item_ids == model.item_ids
    assert loaded.config == model.config
    assert loaded.info == model.info
    assert loaded.metrics == model.metrics
    assert loaded.info.n_interactions == len(log) and loaded.info.algorithm == algorithm
    for user in range(10):
        history = history_of(log, user)
        assert loaded.recommend(history, n=5) == model.recommend(history, n=5)


def test_popularity_round_trip_and_foreign_blobs() -> None:
    log = clustered()
    popular = Popularity().fit(log)
    loaded = Popularity.from_bytes(popular.to_bytes())
    assert loaded.recommend([], n=4) == popular.recommend([], n=4)
    with pytest.raises(ValueError, match="popularity"):
        Engine.from_bytes(popular.to_bytes())
    for junk in (b"", b"not a zip", Engine(config("als")).fit(log).to_bytes()[:100]):
        with pytest.raises(ValueError):
            Engine.from_bytes(junk)


def test_model_fit_error_on_nan_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    import recommender.factors as factors

    class NaNALS:
        def __init__(self, **kwargs: Any) -> None:
            self.item_factors = np.empty(0, dtype=np.float32)

        def fit(self, matrix: Any, show_progress: bool = False) -> None:
            self.item_factors = np.full((matrix.shape[1], 4), np.nan, dtype=np.float32)

    monkeypatch.setattr(factors, "AlternatingLeastSquares", NaNALS)
    with pytest.raises(ModelFitError, match="NaN"):
        Engine(config("als")).fit(clustered())


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(NotFittedError):
        Engine().recommend([("a", 1.0, 0)])
    with pytest.raises(ValueError):
        Engine().fit(Interactions.from_records([]))
    with pytest.raises(ValueError, match="same length"):
        Interactions(
            np.zeros(2, np.int32), np.zeros(1, np.int32), np.ones(2, np.float32), np.zeros(2, np.int64), ("u",), ("i",)
        )
    with pytest.raises(ValueError, match="out of range"):
        Interactions(
            np.zeros(1, np.int32), np.ones(1, np.int32), np.ones(1, np.float32), np.zeros(1, np.int64), ("u",), ("i",)
        )
    model = Engine(config("als")).fit(clustered())
    with pytest.raises(ValueError, match="negative"):
        model.recommend([("i1", 1.0, 0)], n=-1)
    with pytest.raises(ValueError, match="finite"):
        model.recommend([("i1", float("nan"), 0)])
    with pytest.raises(ValueError, match="retraining"):
        model.with_scoring(factors=3)
    assert model.recommend([("i1", 1.0, 0)], n=0) == []


def test_config_validation_and_files(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="invalid recommender configuration"):
        RecommenderConfig.from_mapping({"algoritm": "als"})
    with pytest.raises(ValueError):
        RecommenderConfig.from_mapping({"algorithm": "svd"})
    yaml_file = tmp_path / "rec.yaml"
    yaml_file.write_text("algorithm: bm25\nneighbours: 50\n")
    assert RecommenderConfig.from_file(yaml_file) == RecommenderConfig(algorithm="bm25", neighbours=50)
    json_file = tmp_path / "rec.json"
    json_file.write_text('{"recency_decay": 0.7}')
    assert RecommenderConfig.from_file(json_file).recency_decay == 0.7
    json_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        RecommenderConfig.from_file(json_file)
    with pytest.raises(ValueError, match="cannot read"):
        RecommenderConfig.from_file(tmp_path / "missing.yaml")
