"""The repeat-purchase protocol: items bought before the cut-off may be the answer; the buy-again baseline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ecrm.cli import app
from recommender.data import Interactions
from recommender.evaluation.buy_again import BuyAgain
from recommender.evaluation.protocols import time_split
from recommender.evaluation.runner import evaluate
from trainer.datasets import load_dataset

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def orders_csv(tmp_path: Path) -> Path:
    rows = []
    for c in range(30):
        for month, item in ((1, "coffee"), (2, f"mug-{c % 5}"), (3, "coffee"), (4, "coffee")):
            rows.append(f"{c}{month},{item},x,1,2011-0{month}-01 10:00:00,2.0,{1000 + c},UK\n")
    rows.append("C999,coffee,x,-1,2011-04-02 10:00:00,2.0,1000,UK\n")  # a cancellation: not a purchase
    rows.append("998,tea,x,1,2011-04-02 10:00:00,2.0,,UK\n")  # no customer
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "".join(rows))
    return path


def test_repeats_are_answers_only_in_the_repeat_protocol(tmp_path: Path) -> None:
    data = load_dataset(orders_csv(tmp_path), "orders")
    assert len(data.interactions) == 120 and "tea" not in data.interactions.item_ids
    plain = time_split(data.interactions, quantile=0.7)
    repeat = time_split(data.interactions, quantile=0.7, repeats=True)
    assert plain.n_test_users == 0 < repeat.n_test_users == 30
    report = evaluate(data, "repeat", quantile=0.7)
    assert set(report.models) == {"engine", "popularity", "trending", "buy-again", "recently-viewed"}
    assert report.models["buy-again"].metrics["hr@10"] == 1.0
    assert report.extra["repeat_share"] == 1.0


def test_buy_again_scores_only_the_customer_s_own_items() -> None:
    log = Interactions.from_records([("u", "a", 1.0, 1), ("u", "a", 1.0, 2), ("u", "b", 1.0, 3), ("v", "c", 1.0, 1)])
    from recommender.data import interactions_batch

    model = BuyAgain().fit(log)
    scores = model.score_batch(interactions_batch(log).take([0])).values[0]
    a, b, c = (log.item_ids.index(i) for i in "abc")
    assert scores[a] > scores[b] > float("-inf") == scores[c]


def test_the_command_reports_the_repeat_share(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app, ["evaluate", "--dataset", str(orders_csv(tmp_path)), "--format", "orders", "--protocol", "repeat",
              "--cutoff-quantile", "0.7", "--no-progress"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "buy-again" in out.output and "repeat purchases): 100.0%" in out.output
