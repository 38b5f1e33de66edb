"""One contract test suite shared by every recommender, after implicit's ``tests/recommender_base_test.py``.

:class:`RecommenderContract` holds the tests; a concrete ``Test...`` class per model only says how to build an
unfitted model (``make_model``) and overrides the checks that do not fit it (the popularity baseline is not
personal, so it gets the popularity-order check instead of the checkerboard one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import pytest

from recommender import (
    Algorithm,
    Engine,
    HistoryEntry,
    Interactions,
    ItemMask,
    NotFittedError,
    Popularity,
    Recommendation,
    RecommenderBase,
    blas_threads,
    encode,
)
from tests.unit.test_recommender import checkerboard, clustered, config, history_of

N_USERS = 8  # histories checked per test (the users 0 .. N_USERS - 1 of the log)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with blas_threads(1):
        yield


def ids(recs: Sequence[Recommendation]) -> list[str]:
    return [r.item_id for r in recs]


def items_of(history: Sequence[HistoryEntry]) -> set[str]:
    return {item for item, _, _ in history}


def index_of(item_ids: Sequence[str]) -> dict[str, int]:
    return {item: k for k, item in enumerate(item_ids)}


def renamed(log: Interactions, prefix: str) -> Interactions:
    """The same log over another catalogue of the same size (every item id gets ``prefix``)."""
    return Interactions(
        log.users, log.items, log.weights, log.ts, log.user_ids, tuple(prefix + i for i in log.item_ids)
    )


class RecommenderContract(ABC):
    """The tests every model passes. Subclasses implement :meth:`make_model` and :meth:`foreign_model`."""

    @abstractmethod
    def make_model(self) -> RecommenderBase:
        """A new, unfitted model (small, fast settings)."""

    @abstractmethod
    def foreign_model(self) -> RecommenderBase:
        """An unfitted model of another kind, whose blobs this model must refuse."""

    @pytest.fixture(scope="class")
    def log(self) -> Interactions:
        return clustered()

    @pytest.fixture(scope="class")
    def model(self, log: Interactions) -> RecommenderBase:
        """Fitted once per class; tests must not refit it."""
        return self.make_model().fit(log)

    @pytest.fixture(scope="class")
    def histories(self, log: Interactions) -> list[list[HistoryEntry]]:
        return [history_of(log, u) for u in range(N_USERS)]

    # ----- fit -----

    def test_fit_returns_the_model_and_its_catalogue_is_the_log_items(self, log: Interactions) -> None:
        model = self.make_model()
        assert model.item_ids == ()
        assert model.fit(log) is model
        assert len(model.item_ids) == model.n_items == len(set(log.item_ids))
        assert set(model.item_ids) == set(log.item_ids)
        assert model.index == index_of(model.item_ids)

    def test_fit_leaves_the_log_unchanged(self) -> None:
        log = clustered(users=30)
        before = (log.users.copy(), log.items.copy(), log.weights.copy(), log.ts.copy())
        self.make_model().fit(log)
        for a, b in zip(before, (log.users, log.items, log.weights, log.ts), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_fit_is_deterministic(self, log: Interactions, model: RecommenderBase) -> None:
        again = self.make_model().fit(log)
        for user in range(N_USERS):
            history = history_of(log, user)
            assert ids(again.recommend(history, n=5)) == ids(model.recommend(history, n=5))

    def test_refit_on_another_catalogue_replaces_it(self) -> None:
        """A refit model must forget the old catalogue, also when the new one has as many items."""
        first = clustered(users=30, items_per_cluster=10)
        model = self.make_model().fit(first)
        model.recommend(history_of(first, 0), n=3)  # builds the item index
        second = renamed(first, "new-")
        model.fit(second)
        assert model.item_ids == second.item_ids
        assert model.index == index_of(second.item_ids)
        history = history_of(second, 0)
        recs = model.recommend(history, n=model.n_items)
        assert not items_of(history) & set(ids(recs))  # the new ids are known, so the history is left out
        assert set(model.mask(second.item_ids[:3]).codes.tolist()) == {0, 1, 2}

    def test_unfitted_model_raises_not_fitted(self) -> None:
        model = self.make_model()
        with pytest.raises(NotFittedError):
            model.recommend([("i1", 1.0, 0)])
        with pytest.raises(NotFittedError):
            model.recommend([])
        with pytest.raises(NotFittedError):
            model.cart_items(["i1"])
        with pytest.raises(NotFittedError):
            model.encode([[("i1", 1.0, 0)]])
        with pytest.raises(NotFittedError):
            model.score_batch(encode([[]], {}))
        with pytest.raises(NotFittedError):
            model.to_bytes()

    # ----- recommend -----

    def test_recommend_returns_at_most_n_distinct_known_items_best_first(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        known = set(model.item_ids)
        for n in (1, 5, model.n_items + 10):
            for history in histories:
                recs = model.recommend(history, n=n)
                assert 0 < len(recs) <= n
                assert all(isinstance(r, Recommendation) for r in recs)
                assert len(set(ids(recs))) == len(recs)
                assert set(ids(recs)) <= known
                scores = [r.score for r in recs]
                assert all(np.isfinite(scores))
                assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))

    def test_recommend_reasons_come_from_the_history(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        for history in histories:
            for r in model.recommend(history, n=10):
                assert r.reason_item is None or r.reason_item in items_of(history)

    def test_history_items_are_left_out_unless_asked(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        for history in histories:
            seen = items_of(history)
            recs = model.recommend(history, n=model.n_items)
            assert not seen & set(ids(recs))
            assert len(recs) == model.n_items - len(seen)
            everything = model.recommend(history, n=model.n_items, exclude_history=False)
            assert set(ids(everything)) == set(model.item_ids)

    def test_a_shorter_list_is_a_prefix_of_a_longer_one(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        """Top-n is one ranking cut at n: items tied at the cut go by item code (as ``top_n`` documents)."""
        for history in [[], *histories]:
            full = model.recommend(history, n=model.n_items)
            for n in range(1, len(full) + 1):
                assert model.recommend(history, n=n) == full[:n], n

    def test_exclude_is_honoured(self, model: RecommenderBase, histories: list[list[HistoryEntry]]) -> None:
        for history in histories:
            full = model.recommend(history, n=model.n_items)
            excluded = {*ids(full[:3]), "not-in-catalogue"}
            recs = model.recommend(history, n=5, exclude=excluded)
            rest = [r for r in full if r.item_id not in excluded]
            assert not excluded & set(ids(recs))
            assert set(ids(recs)) <= set(ids(rest))
            assert [r.score for r in recs] == [r.score for r in rest[:5]]  # the best of the rest (ties aside)

    def test_allowed_is_honoured_as_mask_and_as_set(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        allowed = {*model.item_ids[::3], "not-in-catalogue"}
        mask = model.mask(allowed)
        for history in histories:
            full = model.recommend(history, n=model.n_items)
            best = [r.score for r in full if r.item_id in allowed][:4]
            by_mask = model.recommend(history, n=4, allowed=mask)
            assert set(ids(by_mask)) <= allowed
            assert [r.score for r in by_mask] == best  # the best of the allowed items (ties aside)
            assert model.recommend(history, n=4, allowed=allowed) == by_mask
            assert model.recommend(history, n=4, allowed=set()) == []
            assert model.recommend(history, n=model.n_items, allowed=mask) == [r for r in full if r.item_id in allowed]

    def test_a_mask_of_the_wrong_size_raises(self, model: RecommenderBase) -> None:
        wrong = ItemMask(np.ones(model.n_items + 1, dtype=bool))
        with pytest.raises(ValueError):
            model.recommend([], n=3, allowed=wrong)

    def test_n_zero_gives_nothing_and_negative_n_raises(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        history = histories[0]
        known = model.item_ids[0]
        assert model.recommend(history, n=0) == []
        assert model.rank_batch(model.encode([history, []]), 0) == [[], []]
        with pytest.raises(ValueError):
            model.recommend(history, n=-1)
        with pytest.raises(ValueError):
            model.rank_batch(model.encode([history]), -1)
        with pytest.raises(ValueError):
            model.similar_items(known, n=-1)
        with pytest.raises(ValueError):
            model.cart_items([known], n=-1)

    def test_unknown_history_items_are_ignored(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        for history in histories:
            noisy = [("not-in-catalogue", 5.0, history[0][2]), *history, ("also-unknown", 1.0, 0)]
            assert model.recommend(noisy, n=5) == model.recommend(history, n=5)

    def test_empty_history_gets_the_popularity_ranking(self, model: RecommenderBase, log: Interactions) -> None:
        expected = ids(Popularity().fit(log).recommend([], n=5))
        for history in ([], [("not-in-catalogue", 1.0, 0)]):
            recs = model.recommend(history, n=5)
            assert ids(recs) == expected
            assert all(r.reason_item is None for r in recs)

    # ----- batches -----

    def test_rank_batch_equals_recommend(self, model: RecommenderBase, histories: list[list[HistoryEntry]]) -> None:
        rows = [*histories, [], [("not-in-catalogue", 1.0, 0)]]
        batched = model.rank_batch(model.encode(rows), 6)
        assert len(batched) == len(rows)
        for history, batch_recs in zip(rows, batched, strict=True):
            single = model.recommend(history, n=6)
            assert ids(batch_recs) == ids(single)
            assert [r.reason_item for r in batch_recs] == [r.reason_item for r in single]
            np.testing.assert_allclose([r.score for r in batch_recs], [r.score for r in single], rtol=1e-5, atol=1e-7)

    def test_rank_batch_with_filters_equals_recommend(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        mask = model.mask(model.item_ids[1::2])
        excluded_ids = [list(model.item_ids[1:6:2]) for _ in histories]
        batched = model.rank_batch(
            model.encode(histories), 4, excluded=[model.codes(e) for e in excluded_ids], allowed=mask, reasons=False
        )
        for history, exclude, batch_recs in zip(histories, excluded_ids, batched, strict=True):
            single = model.recommend(history, n=4, exclude=exclude, allowed=mask)
            assert ids(batch_recs) == ids(single)
            assert all(r.reason_item is None for r in batch_recs)

    def test_empty_batch(self, model: RecommenderBase) -> None:
        assert model.rank_batch(model.encode([]), 5) == []

    # ----- item to item -----

    def test_similar_items(self, model: RecommenderBase) -> None:
        for item in model.item_ids[:5]:
            recs = model.similar_items(item, n=5)
            assert 0 < len(recs) <= 5
            assert item not in ids(recs)
            assert len(set(ids(recs))) == len(recs)
        assert model.similar_items("not-in-catalogue", n=5) == []

    def test_cart_items(self, model: RecommenderBase) -> None:
        cart = list(model.item_ids[:3])
        recs = model.cart_items(cart, n=5)
        assert 0 < len(recs) <= 5
        assert not set(cart) & set(ids(recs))
        assert model.cart_items([*cart, cart[0], "not-in-catalogue"], n=5) == recs  # a cart is a set
        unknown = model.cart_items(["not-in-catalogue"], n=5)
        assert isinstance(unknown, list) and "not-in-catalogue" not in ids(unknown)
        assert model.cart_items([], n=5) == model.recommend([], n=5)

    # ----- serialisation -----

    def test_round_trip_gives_identical_recommendations(
        self, model: RecommenderBase, histories: list[list[HistoryEntry]]
    ) -> None:
        loaded = type(model).from_bytes(model.to_bytes())
        assert type(loaded) is type(model)
        assert loaded.item_ids == model.item_ids
        for history in histories:
            assert loaded.recommend(history, n=5) == model.recommend(history, n=5)
        item = model.item_ids[0]
        assert loaded.similar_items(item, n=5) == model.similar_items(item, n=5)

    def test_from_bytes_refuses_junk_and_foreign_blobs(self, model: RecommenderBase, log: Interactions) -> None:
        cls = type(model)
        blob = model.to_bytes()
        for junk in (b"", b"not a zip", blob[:100], blob[:-10]):
            with pytest.raises(ValueError):
                cls.from_bytes(junk)
        with pytest.raises(ValueError):
            cls.from_bytes(self.foreign_model().fit(log).to_bytes())

    # ----- the model's own ranking quality -----

    def test_checkerboard(self) -> None:
        """Every user's held-out item (the one missing from their checkerboard row) ranks first."""
        n = 30
        log = checkerboard(n)
        model = self.make_model().fit(log)
        for user in range(n):
            assert ids(model.recommend(history_of(log, user), n=1)) == [f"i{user}"], user


class EngineContract(RecommenderContract):
    algorithm: ClassVar[Algorithm]

    def make_model(self) -> Engine:
        return Engine(config(self.algorithm))

    def foreign_model(self) -> RecommenderBase:
        return Popularity()

    def test_round_trip_keeps_config_and_training_info(self, model: RecommenderBase) -> None:
        assert isinstance(model, Engine)
        loaded = Engine.from_bytes(model.to_bytes())
        assert loaded.config == model.config
        assert loaded.info == model.info
        assert loaded.info.algorithm == self.algorithm


class TestEngineALS(EngineContract):
    algorithm = "als"


class TestEngineBPR(EngineContract):
    algorithm = "bpr"


class TestEngineCosine(EngineContract):
    algorithm = "cosine"


class TestEngineBM25(EngineContract):
    algorithm = "bm25"


class TestPopularity(RecommenderContract):
    def make_model(self) -> Popularity:
        return Popularity()

    def foreign_model(self) -> RecommenderBase:
        return Engine(config("cosine"))

    def test_checkerboard(self) -> None:
        """Not personal: with the history allowed back, every user gets the same list; the default only drops
        the user's own items from it. (All checkerboard items are equally popular: ties go by item code.)"""
        n = 30
        log = checkerboard(n)
        model = self.make_model().fit(log)
        shared = ids(model.recommend([], n=n))
        assert shared == list(model.item_ids)
        for user in range(n):
            history = history_of(log, user)
            assert ids(model.recommend(history, n=n, exclude_history=False)) == shared
            assert ids(model.recommend(history, n=n)) == [i for i in shared if i not in items_of(history)]

    def test_ranking_is_by_distinct_users(self, model: RecommenderBase, log: Interactions) -> None:
        users: dict[str, set[int]] = {}
        for u, i, w in zip(log.users.tolist(), log.items.tolist(), log.weights.tolist(), strict=True):
            if w > 0:
                users.setdefault(log.item_ids[i], set()).add(u)
        code = index_of(log.item_ids)
        expected = sorted(log.item_ids, key=lambda item: (-len(users.get(item, ())), code[item]))
        recs = model.recommend([], n=model.n_items)
        assert ids(recs) == expected
        assert [r.score for r in recs] == [float(len(users.get(item, ()))) for item in expected]

    def test_repeats_and_non_positive_weights_do_not_count(self) -> None:
        log = Interactions.from_records(
            [("u1", "a", 1.0, t) for t in range(5)]
            + [("u2", "b", 1.0, 0), ("u3", "b", 1.0, 0)]
            + [("u4", "c", -1.0, 0), ("u5", "c", 0.0, 0)]
        )
        recs = self.make_model().fit(log).recommend([], n=3)
        assert [(r.item_id, r.score) for r in recs] == [("b", 2.0), ("a", 1.0), ("c", 0.0)]

    def test_reasons_are_never_given(self, model: RecommenderBase, histories: list[list[HistoryEntry]]) -> None:
        for history in histories:
            assert all(r.reason_item is None for r in model.recommend(history, n=10))
