"""Offline evaluation: metrics by hand, loaders of the three formats, split protocols, ``ecrm evaluate``."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recommender import Interactions
from recommender.evaluation import MetricSums, leave_one_out, time_split
from trainer.datasets import load_dataset


def test_metrics_on_a_hand_made_example() -> None:
    sums = MetricSums(k=3, n_items=10)
    top = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    valid = np.array([[True, True, True], [True, True, True], [True, True, False]])
    indptr = np.array([0, 1, 3, 4])
    relevant = np.array([2, 6, 0, 0])  # user 0: {2}; user 1: {6, 0}; user 2: {0}
    best_rank = np.array([2, 3, 4])
    sums.add(top[:2], valid[:2], indptr[:3], relevant[:3], best_rank[:2])  # in two batches, like the runner
    sums.add(top[2:], valid[2:], np.array([0, 1]), relevant[3:], best_rank[2:])
    result = sums.result()
    ndcg_user0 = 1 / math.log2(3)
    ndcg_user1 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert result == pytest.approx(
        {
            "hr@3": 2 / 3,
            "ndcg@3": (ndcg_user0 + ndcg_user1) / 3,
            "precision@3": (1 / 3 + 1 / 3 + 0) / 3,
            "recall@3": (1 + 1 / 2 + 0) / 3,
            "mrr": (1 / 2 + 1 / 3 + 1 / 4) / 3,
            "coverage@3": 8 / 10,  # items 1..8; item 9 was not a real entry
        }
    )


def test_load_sequences(tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("u1 a b c\nu2 b\n\nu3\n")
    data = load_dataset(path, "sequences")
    log = data.interactions
    assert data.skipped == 1 and len(log) == 4
    assert [log.item_ids[i] for i in log.items] == ["a", "b", "c", "b"]
    assert [log.user_ids[u] for u in log.users] == ["u1", "u1", "u1", "u2"]
    assert log.ts.tolist() == [0, 1, 2, 0] and log.weights.tolist() == [1.0] * 4


def test_load_taobao(tmp_path: Path) -> None:
    path = tmp_path / "taobao.csv"
    path.write_text(
        "1,100,7,pv,1511544070\n1,101,7,cart,1511544071\n2,100,7,fav,1511544072\n"
        "2,102,8,buy,1511544073\n3,103,8,click,1511544074\nbroken line\n"
    )
    data = load_dataset(path, "taobao")
    log = data.interactions
    assert data.skipped == 2 and len(log) == 4
    assert log.weights.tolist() == [1.0, 3.0, 3.0, 5.0]
    assert log.ts.tolist() == [1511544070000, 1511544071000, 1511544072000, 1511544073000]
    assert log.item_ids == ("100", "101", "102")


def test_load_events(tmp_path: Path) -> None:
    ts = 1_700_000_000_000
    events = [
        {"event_id": "e1", "timestamp": ts, "type": "product_view", "customer_id": "42", "item_id": "sku1"},
        {"event_id": "e2", "timestamp": ts + 1, "type": "add_to_cart", "anonymous_id": "v9", "item_id": "sku2"},
        {
            "event_id": "e3",
            "timestamp": ts + 2,
            "type": "purchase",
            "customer_id": "42",
            "order_id": "o1",
            "currency": "EUR",
            "lines": [
                {"item_id": "sku1", "quantity": 1, "unit_price": 9.5},
                {"item_id": "sku3", "quantity": 2, "unit_price": 1.0},
            ],
        },
        {"event_id": "e4", "timestamp": ts + 3, "type": "page_view", "customer_id": "42"},
        {
            "event_id": "e5",
            "timestamp": ts,
            "type": "item",
            "item_id": "sku1",
            "title": "t",
            "category": "c",
            "price": 1,
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*(json.dumps(e) for e in events), "{not json", '{"type": "purchase"}']) + "\n")
    data = load_dataset(path, "events")
    log = data.interactions
    assert data.skipped == 2
    assert [
        (log.user_ids[u], log.item_ids[i], w) for u, i, w in zip(log.users, log.items, log.weights, strict=True)
    ] == [
        ("c:42", "sku1", 1.0),
        ("a:v9", "sku2", 3.0),
        ("c:42", "sku1", 5.0),
        ("c:42", "sku3", 5.0),
    ]
    assert log.ts.tolist() == [ts, ts + 1, ts + 2, ts + 2]


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_dataset(tmp_path / "missing.txt", "sequences")
    empty = tmp_path / "empty.csv"
    empty.write_text("a b c\n")
    with pytest.raises(ValueError, match="no interactions"):
        load_dataset(empty, "taobao")


def _log(rows: list[tuple[str, str, int]]) -> Interactions:
    return Interactions.from_records((u, i, 1.0, t) for u, i, t in rows)


def test_leave_one_out_and_its_validation_variant() -> None:
    log = _log(
        [("u1", "a", 1), ("u1", "c", 3), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u3", "a", 5)]
        + [("u4", "b", 1), ("u4", "a", 2), ("u4", "b", 3)]
    )
    split = leave_one_out(log)
    tested = {log.user_ids[u]: log.item_ids[i] for u, i in zip(split.test_users, split.test_items, strict=True)}
    assert tested == {"u1": "c", "u2": "b"}  # u3 has one interaction; u4's last item repeats (skipped)
    assert split.skipped_users == 1 and len(split.train) == 6
    assert split.test_indptr.tolist() == [0, 1, 2]
    validation = leave_one_out(log, validation=True)
    tested = {
        log.user_ids[u]: log.item_ids[i] for u, i in zip(validation.test_users, validation.test_items, strict=True)
    }
    assert tested == {"u1": "b", "u4": "a"}
    assert len(validation.train) == 3  # u1 a, u2 a, u4 b


def test_time_split() -> None:
    log = _log([("u1", "a", 1), ("u1", "b", 5), ("u2", "a", 2), ("u2", "c", 6), ("u2", "a", 7), ("u3", "c", 8)])
    split = time_split(log, cutoff_ts=5)
    assert len(split.train) == 2 and split.cutoff_ts == 5
    tested = {
        log.user_ids[u]: [log.item_ids[i] for i in split.test_items[split.test_indptr[k] : split.test_indptr[k + 1]]]
        for k, u in enumerate(split.test_users)
    }
    assert tested == {"u1": ["b"], "u2": ["c"]}  # u2's "a" is already known; u3 has no training history
    assert split.skipped_users == 1
    assert time_split(log).cutoff_ts == int(np.quantile(log.ts, 0.8))
    with pytest.raises(ValueError):
        time_split(log, quantile=1.0)
    with pytest.raises(ValueError, match="no training"):
        time_split(log, cutoff_ts=0)


@pytest.fixture(scope="module")
def beauty_slice(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("beauty") / "beauty_2000.txt"
    with (datasets / "amazon_beauty_sequences.txt").open() as fh:
        path.write_text("".join(itertools.islice(fh, 2000)))
    return path


def _runner() -> CliRunner:
    return CliRunner()


def test_cli_json_shape(beauty_slice: Path) -> None:
    from ecrm.cli import app

    args = ["evaluate", "--dataset", str(beauty_slice), "--format", "sequences", "--protocol", "leave-one-out"]
    result = _runner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object on stdout (progress goes to stderr)
    assert report["dataset"] == "beauty_2000.txt" and report["protocol"] == "leave-one-out"
    assert set(report["models"]) == {"engine", "popularity", "trending"}  # personal baselines: history excluded
    keys = {"hr@10", "ndcg@10", "precision@10", "recall@10", "mrr", "coverage@10"}
    for metrics in report["models"].values():
        assert keys <= set(metrics)
        assert all(0.0 <= metrics[key] <= 1.0 for key in keys)
    assert report["users"] == 2000
    engine, popularity = report["models"]["engine"], report["models"]["popularity"]
    assert engine["ndcg@10"] > popularity["ndcg@10"]  # a thin slice; the full file is in docs/recommender.md
    assert engine["coverage@10"] > popularity["coverage@10"]
    best = max(("popularity", "trending"), key=lambda name: report["models"][name]["ndcg@10"])
    assert report["best_baseline"] == best
    best_figures = report["models"][best]
    assert report["engine_ratio"]["ndcg@10"] == pytest.approx(engine["ndcg@10"] / best_figures["ndcg@10"], abs=1e-4)
    assert report["engine_ratio"]["hr@10"] == pytest.approx(engine["hr@10"] / best_figures["hr@10"], abs=1e-4)


def test_cli_table_time_split_and_errors(beauty_slice: Path, tmp_path: Path) -> None:
    from ecrm.cli import app

    config = tmp_path / "rec.yaml"
    config.write_text("algorithm: bm25\n")
    args = ["evaluate", "--dataset", str(beauty_slice), "--format", "sequences", "--no-progress"]
    result = _runner().invoke(app, [*args, "--protocol", "time-split", "--config", str(config), "--max-users", "100"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "protocol time-split: 100 test users" in lines[0]
    assert lines[1].split()[:3] == ["model", "hr@10", "ndcg@10"]
    assert lines[2].startswith("engine") and lines[3].startswith("popularity") and lines[4].startswith("trending")
    assert lines[5].startswith("best baseline: ") and "engine / " in lines[5] and "NDCG@10 " in lines[5]
    missing = _runner().invoke(app, ["evaluate", "--dataset", str(tmp_path / "none.txt"), "--json"])
    assert missing.exit_code == 2 and "not found" in missing.stderr and missing.stdout == ""
    config.write_text("algorithm: svd\n")
    bad = _runner().invoke(app, [*args, "--config", str(config)])
    assert bad.exit_code == 2 and "invalid recommender configuration" in bad.stderr


def test_evaluation_agrees_with_per_request_recommendations(beauty_slice: Path) -> None:
    """The batched evaluation scores exactly what ``recommend`` (the API's call) returns, user by user."""
    from recommender import Engine, RecommenderConfig
    from recommender.data import interactions_batch
    from recommender.evaluation import evaluate_model

    split = leave_one_out(load_dataset(beauty_slice, "sequences").interactions).sample(400)
    model = Engine(RecommenderConfig(factors=16)).fit(split.train)
    histories = interactions_batch(split.train).take(split.test_users)
    metrics, _ = evaluate_model(model, histories, split)
    ids = model.item_ids
    hits = 0
    for row in range(split.n_test_users):
        sl = histories.row(row)
        history = [
            (ids[i], float(w), int(t))
            for i, w, t in zip(histories.items[sl], histories.weights[sl], histories.ts[sl], strict=True)
        ]
        recommended = [r.item_id for r in model.recommend(history, n=10)]
        hits += ids[split.test_items[row]] in recommended
    assert hits > 0
    assert metrics["hr@10"] == pytest.approx(hits / split.n_test_users)


@pytest.mark.parametrize("pool_size", [0, 1, 50, 5_000])
def test_membership_of_keys_matches_numpy_isin(pool_size: int) -> None:
    from recommender.evaluation.protocols import _member

    rng = np.random.default_rng(pool_size)
    pool = rng.integers(0, 3_000, pool_size).astype(np.int64)
    keys = rng.integers(-5, 3_100, 2_000).astype(np.int64)
    assert np.array_equal(_member(keys, pool), np.isin(keys, pool))
