"""Candidate retrieval (recommender/candidates.py) and the engine's candidate path against exact scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import Engine, Interactions, RecommenderConfig
from recommender.candidates import FactorIndex, exclude_candidates, members, sparse_rows, union_codes
from recommender.data import encode
from recommender.serialize import load, save, unpack_to_dir
from recommender.weighting import sparse_scores

ITEMS = 600


def generated(users: int = 400, items: int = ITEMS, seed: int = 5) -> Interactions:
    """Users in ten taste clusters walking their cluster's items, plus some popular items."""
    rng = np.random.default_rng(seed)
    records: list[tuple[str, str, float, int]] = []
    per = items // 10
    for u in range(users):
        cluster = u % 10
        for step in range(int(rng.integers(4, 12))):
            item = cluster * per + int(rng.integers(0, per)) if rng.random() < 0.8 else int(rng.zipf(1.5)) % items
            records.append((f"u{u}", f"i{item}", float(rng.choice([1.0, 3.0])), 1_700_000_000_000 + 60_000 * step))
    return Interactions.from_records(records)


@pytest.fixture(scope="module", params=["als", "bpr", "cosine"])
def model(request: pytest.FixtureRequest) -> Engine:
    extra: dict[str, Any] = {"learning_rate": 0.05, "iterations": 60} if request.param == "bpr" else {}
    cfg = RecommenderConfig(algorithm=request.param, factors=16, candidates_min_items=0, **extra)
    return Engine(cfg).fit(generated())


def histories(model: Engine, count: int = 30, seed: int = 1) -> list[list[tuple[str, float, int]]]:
    rng = np.random.default_rng(seed)
    ids = model.item_ids
    return [
        [(ids[int(i)], 1.0, 1_700_000_000_000 + j) for j, i in enumerate(rng.integers(0, len(ids), 6))]
        for _ in range(count)
    ]


def exact(model: Engine) -> Engine:
    return model.with_scoring(candidates_min_items=10**9)


def test_index_probing_every_list_is_exact() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 8)).astype(np.float32)
    index = FactorIndex.build(vectors)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    found = index.search(queries, 10, probe=index.lists)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert found.tolist() == expected.tolist()
    assert index.lists == round(np.sqrt(2000))


def test_index_round_trip_and_corrupt_bytes() -> None:
    vectors = np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32)
    index = FactorIndex.build(vectors)
    again = FactorIndex.from_array(index.to_array(), 500, 4)
    q = vectors[:3]
    assert again.search(q, 5, 4).tolist() == index.search(q, 5, 4).tolist()
    with pytest.raises(ValueError, match="does not match"):
        FactorIndex.from_array(index.to_array(), 501, 4)
    with pytest.raises(ValueError, match="corrupt candidate index"):
        FactorIndex.from_array(np.frombuffer(b"not an index at all", dtype=np.uint8), 500, 4)


def test_sparse_rows_equal_the_dense_sum(model: Engine) -> None:
    batch = model.encode(histories(model, 5))
    weights = np.linspace(0.1, 1.0, batch.items.size).astype(np.float32)
    dense = sparse_scores(batch, weights, model.state.transitions)
    assert np.allclose(sparse_rows(batch, weights, model.state.transitions).toarray(model.n_items), dense, atol=1e-6)


def test_candidate_scores_equal_exact_scores_of_the_same_items(model: Engine) -> None:
    """The candidates are scored exactly: the same values as the dense scores (same normalisation when the
    row's maximum is among the candidates, which the sparse parts guarantee and the index nearly does)."""
    batch = model.encode(histories(model, 10))
    dense = exact(model).score_batch(batch).values
    cand = model.score_candidates(batch, 20)
    assert cand is not None and cand.codes is not None
    for r in range(batch.n_rows):
        codes = cand.codes[r][cand.codes[r] >= 0]
        top = dense[r].argmax()
        assert top in codes  # the best item of the exact scoring is retrieved
        if model.config.algorithm == "cosine":  # all parts sparse: identical, normalisation included
            assert np.allclose(cand.values[r, : codes.size], dense[r, codes], rtol=1e-5, atol=1e-7)


def test_candidate_lists_match_exact_lists(model: Engine) -> None:
    ex = exact(model)
    overlaps = []
    for history in histories(model):
        got = [r.item_id for r in model.recommend(history, 10)]
        want = [r.item_id for r in ex.recommend(history, 10)]
        assert len(got) == 10 and len(set(got)) == 10
        assert not set(got) & {item for item, _, _ in history}  # the history stays out
        overlaps.append(len(set(got) & set(want)) / 10)
    assert np.mean(overlaps) >= 0.9


def test_exclusions_and_filters_on_the_candidate_path(model: Engine) -> None:
    history = histories(model, 1)[0]
    first = [r.item_id for r in model.recommend(history, 5)]
    again = [r.item_id for r in model.recommend(history, 5, exclude=set(first[:2]))]
    assert not set(again) & set(first[:2])
    assert again[:3] == first[2:5]
    narrow = [f"i{k}" for k in range(0, ITEMS, 50)]  # 12 items: too few candidates, the exact path answers
    allowed = model.mask(narrow)
    got = [r.item_id for r in model.recommend(history, 5, allowed=allowed)]
    assert set(got) <= set(narrow) and len(got) == 5
    assert got == [r.item_id for r in exact(model).recommend(history, 5, allowed=allowed)]


def test_exclude_candidates_in_place() -> None:
    batch = encode([[("a", 1.0, 0)]], {"a": 0, "b": 1, "c": 2, "d": 3})
    codes = np.array([[0, 1, 2, -1]])
    values = np.array([[1.0, 2.0, 3.0, -np.inf]], dtype=np.float32)
    allowed = np.array([True, True, False, True])
    exclude_candidates(values, codes, batch, exclude_history=True, excluded=[np.array([1])], allowed=allowed)
    assert values.tolist() == [[-np.inf, -np.inf, -np.inf, -np.inf]]


def test_small_catalogues_and_old_blobs_are_scored_exactly(model: Engine, tmp_path: Path) -> None:
    batch = model.encode(histories(model, 2))
    assert model.with_scoring(candidates_min_items=ITEMS + 1).score_candidates(batch, 10) is None
    arrays = load("engine", model.to_bytes())
    if "ann_index" in arrays:  # a factor model stored before the index existed: no candidate path
        del arrays["ann_index"]
        old = Engine.from_bytes(save("engine", arrays))
        assert old.score_candidates(batch, 10) is None
        assert [r.item_id for r in old.recommend(histories(model, 1)[0], 5)] == [
            r.item_id for r in exact(model).recommend(histories(model, 1)[0], 5)
        ]


def test_memory_mapped_model_serves_the_same(model: Engine, tmp_path: Path) -> None:
    unpack_to_dir("engine", model.to_bytes(), tmp_path / "v1")
    mapped = Engine.from_dir(tmp_path / "v1")
    shared = [mapped.state.transitions.indices, mapped.state.transitions.data]
    if mapped.state.factors is not None:
        shared.append(mapped.state.factors.item_factors)
    assert all(mapped_file(a) for a in shared)  # views of the files, not copies
    for history in histories(model, 5):
        assert mapped.recommend(history, 10) == model.recommend(history, 10)


def mapped_file(array: np.ndarray) -> bool:
    base: object = array
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return type(base).__name__ == "mmap"


def test_evaluation_through_the_candidate_path(model: Engine) -> None:
    batch = model.encode(histories(model, 4))
    widened = model.masked_scores(batch, candidates=10).values
    dense = exact(model).masked_scores(batch).values
    assert widened.shape == dense.shape
    assert np.isneginf(widened).sum() > np.isneginf(dense).sum()  # items that were not candidates rank last
    with pytest.raises(ValueError, match="whole catalogue"):
        exact(model).masked_scores(batch, candidates=10)


def test_one_user_fold_in_equals_implicits() -> None:
    """A request's fold-in (numpy, one row) is implicit's ALS user step."""
    import scipy.sparse as sp

    from recommender.factors import FactorPart

    rng = np.random.default_rng(4)
    part = FactorPart((rng.standard_normal((300, 16)) * 0.1).astype(np.float32), None, 0.1, 40.0)
    items = np.sort(rng.choice(300, 12, replace=False)).astype(np.int32)
    conf = sp.csr_matrix((rng.random(12).astype(np.float32) + 0.1, items, np.array([0, 12])), shape=(1, 300))
    expected = np.asarray(part._solver.recalculate_user(np.arange(1), conf))
    assert np.allclose(part.fold_in(conf), expected, atol=1e-5)
    assert not np.allclose(expected, 0)


@pytest.mark.parametrize("mode", ["least_squares", "mean"])
def test_fold_in_of_one_history_equals_the_sparse_rows(mode: str) -> None:
    """A request's fold-in from the history's arrays is exactly the fold-in of its sparse row (zeros left out)."""
    import scipy.sparse as sp

    from recommender.factors import FactorPart

    rng = np.random.default_rng(6)
    part = FactorPart((rng.standard_normal((300, 16)) * 0.1).astype(np.float32), None, 0.1, 40.0, fold_in=mode)
    items = rng.choice(300, 12, replace=False).astype(np.int32)  # newest first, as a batch holds them
    conf = (rng.random(12) + 0.1).astype(np.float32)
    conf[3] = 0.0
    keep = conf != 0
    row = sp.csr_matrix((conf[keep], items[keep], np.array([0, int(keep.sum())])), shape=(1, 300))
    assert np.array_equal(part.fold_in_one(items, conf), part.fold_in(row))
    assert part.fold_in_one(items, conf).shape == (1, 16)


def test_union_codes_equals_numpy_unique() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.integers(0, 50, size).astype(np.int64) for size in (0, 1, 30, 7)]
    assert np.array_equal(union_codes(parts), np.unique(np.concatenate(parts)))
    assert union_codes([np.array([4], dtype=np.int64)]).tolist() == [4]
    assert union_codes([np.zeros(0, dtype=np.int64)]).size == 0


def test_members_equals_numpy_isin() -> None:
    rng = np.random.default_rng(9)
    for size, pool in [(0, 5), (1, 0), (40, 3), (600, 25), (50, 200)]:
        codes = rng.integers(-1, 80, size).astype(np.int64)
        items = rng.integers(0, 80, pool).astype(np.int32)
        assert np.array_equal(members(codes, items), np.isin(codes, items))
