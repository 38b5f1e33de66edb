"""``ecrm import-orders`` end to end without a broker (--dry-run)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ecrm.cli import app

runner = CliRunner()


def test_dry_run_on_the_sample(datasets: Path, tmp_path: Path) -> None:
    csv_path = datasets / "online_retail_sample.csv"
    args = ["import-orders", str(csv_path), "--dry-run", "--no-progress", "--rejects", str(tmp_path / "r.tsv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rows read               40000" in out
    assert "purchases (invoices)    11476" in out
    assert "  lines                 29183" in out
    assert "  customers             3587" in out
    assert "  no customer           9927" in out
    assert "  cancellation          674" in out
    assert "returns                 569 invoices, 674 rows, 7677 units" in out
    assert "rejected rows           0" in out
    assert not (tmp_path / "r.tsv").exists()


def test_rejects_file_and_column_option(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text(
        "Order,SKU,Qty,When,Price,Client\nA1,s1,2,2011-07-01 10:00:00,5,c1\nA2,s1,x,2011-07-01 10:00:00,5,c1\n"
    )
    rejects = tmp_path / "r.tsv"
    columns = ["--column", "invoice=Order", "--column", "item=SKU", "--column", "quantity=Qty", "--column", "date=When"]
    columns += ["--column", "price=Price", "--column", "customer=Client"]
    args = ["import-orders", str(csv_path), *columns, "--currency", "EUR", "--dry-run", "--no-progress"]
    result = runner.invoke(app, [*args, "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    assert "purchases (invoices)    1" in result.output
    assert "revenue               10.00 EUR" in result.output
    assert rejects.read_text().splitlines()[1] == "3\tQty: 'x' is not a whole number\tA2,s1,x,2011-07-01 10:00:00,5,c1"


def test_option_and_header_errors_exit_2(datasets: Path, tmp_path: Path) -> None:
    csv_path = datasets / "online_retail_sample.csv"
    for extra, message in [
        (["--column", "client=X"], "unknown name 'client'"),
        (["--currency", "pounds"], "--currency 'pounds'"),
        (["--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--column", "customer=Client"], "missing column(s): Client"),
    ]:
        result = runner.invoke(app, ["import-orders", str(csv_path), "--dry-run", "--no-progress", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output
    assert not list(tmp_path.iterdir())
