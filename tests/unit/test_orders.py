"""ingest.orders on the shared Online Retail sample (figures computed here with plain csv) and on small files."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.orders import (
    OrderColumns,
    OrderGrouper,
    OrderOptions,
    OrdersFormatError,
    RowReject,
    read_csv,
)
from schemas import parse_event_obj

SAMPLE = "online_retail_sample.csv"
NOT_PRODUCTS = {"POST", "DOT", "C2", "M", "D", "S", "B", "PADS", "CRUK", "AMAZONFEE", "BANK CHARGES"}


def run(text: str, columns: OrderColumns | None = None, options: OrderOptions | None = None) -> tuple[
    OrderGrouper, list[dict[str, Any]], list[RowReject]
]:  # fmt: skip
    grouper = OrderGrouper(columns or OrderColumns(), options or OrderOptions())
    rejects = [r for r in read_csv(io.StringIO(text), grouper) if isinstance(r, RowReject)]
    events: list[dict[str, Any]] = []
    for item in grouper.events():
        if isinstance(item, RowReject):
            rejects.append(item)
        else:
            events.append(item)
    return grouper, events, rejects


@pytest.fixture(scope="module")
def sample_text(datasets: Path) -> str:
    return (datasets / SAMPLE).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sample(sample_text: str) -> tuple[OrderGrouper, list[dict[str, Any]], list[RowReject]]:
    return run(sample_text)


@pytest.fixture(scope="module")
def plain(sample_text: str) -> dict[str, Any]:
    """The expected figures, from a plain reading of the CSV."""
    rows = list(csv.DictReader(io.StringIO(sample_text)))
    cancelled = [r for r in rows if r["InvoiceNo"].startswith("C")]
    rest = [r for r in rows if not r["InvoiceNo"].startswith("C")]
    adjustments = [r for r in rest if int(r["Quantity"]) <= 0]
    sales = [r for r in rest if int(r["Quantity"]) > 0]
    anonymous = [r for r in sales if not r["CustomerID"]]
    attributed = [r for r in sales if r["CustomerID"]]
    fees = [r for r in attributed if r["StockCode"] in NOT_PRODUCTS]
    kept = [r for r in attributed if r["StockCode"] not in NOT_PRODUCTS]
    by_invoice: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in kept:
        by_invoice[r["InvoiceNo"]].append(r)
    return {
        "rows": len(rows),
        "attributed": attributed,
        "kept": kept,
        "by_invoice": by_invoice,
        "skipped": {
            "cancellation": len(cancelled),
            "non-positive quantity": len(adjustments),
            "no customer": len(anonymous),
            "non-product line": len(fees),
        },
        "returned_invoices": len({r["InvoiceNo"] for r in cancelled}),
        "returned_units": sum(-int(r["Quantity"]) for r in cancelled),
    }


def test_sample_figures(sample: tuple[OrderGrouper, list[dict[str, Any]], list[RowReject]]) -> None:
    grouper, events, rejects = sample
    t = grouper.tally
    assert (t.rows, t.invoices, t.lines, len(t.customers), len(t.items)) == (40_000, 11_476, 29_183, 3_587, 2_865)
    assert dict(t.skipped) == {
        "no customer": 9_927,
        "cancellation": 674,
        "non-product line": 112,
        "non-positive quantity": 104,
    }
    assert (len(t.returns.invoices), t.returns.rows, t.returns.units) == (569, 674, 7_677)
    assert round(t.revenue, 2) == 593_596.99
    assert rejects == [] and t.rejected_rows == 0
    assert t.accounted == t.rows
    assert len(events) == t.invoices


def test_sample_figures_match_a_plain_reading(
    sample: tuple[OrderGrouper, list[dict[str, Any]], list[RowReject]], plain: dict[str, Any]
) -> None:
    grouper, events, _ = sample
    t = grouper.tally
    # the shared datasets README: 29,295 rows with a customer and a positive quantity, from 3,591 customers
    assert len(plain["attributed"]) == 29_295 and len({r["CustomerID"] for r in plain["attributed"]}) == 3_591
    assert t.rows == plain["rows"]
    assert dict(t.skipped) == plain["skipped"]
    assert t.lines == len(plain["kept"])
    assert t.invoices == len(plain["by_invoice"])
    assert t.customers == {r["CustomerID"] for r in plain["kept"]}
    assert t.items == {r["StockCode"] for r in plain["kept"]}
    assert (len(t.returns.invoices), t.returns.units) == (plain["returned_invoices"], plain["returned_units"])
    assert Counter({e["order_id"]: len(e["lines"]) for e in events}) == Counter(
        {inv: len(rows) for inv, rows in plain["by_invoice"].items()}
    )


def test_sample_events_are_valid_and_grouped(
    sample: tuple[OrderGrouper, list[dict[str, Any]], list[RowReject]], plain: dict[str, Any]
) -> None:
    _, events, _ = sample
    for event in events:
        parsed = parse_event_obj(event)
        assert parsed.type == "purchase"
    by_id = {e["order_id"]: e for e in events}
    for invoice, rows in list(plain["by_invoice"].items())[:500]:
        event = by_id[invoice]
        assert event["event_id"] == f"order:{invoice}"
        assert event["customer_id"] == rows[0]["CustomerID"]
        assert event["currency"] == "GBP"
        assert sorted((ln["item_id"], ln["quantity"]) for ln in event["lines"]) == sorted(
            (r["StockCode"], int(r["Quantity"])) for r in rows
        )
        first = min(datetime.strptime(r["InvoiceDate"], "%Y-%m-%d %H:%M:%S") for r in rows)
        assert event["timestamp"] == first.replace(tzinfo=UTC).isoformat()


def test_importing_again_gives_identical_events(
    sample_text: str, sample: tuple[OrderGrouper, list[dict[str, Any]], list[RowReject]]
) -> None:
    _, first, _ = sample
    _, second, _ = run(sample_text)
    assert second == first
    assert len({e["event_id"] for e in first}) == len(first)


# --- small files -------------------------------------------------------------------------------------------------

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def test_grouping_earliest_time_and_customer_normalisation() -> None:
    grouper, events, rejects = run(
        HEADER
        + "500,P1,x,2,2011-01-21 14:59:00,1.5,17850.0,UK\n"
        + "501,P2,x,1,2011-01-21 15:00:00,3,17851,UK\n"
        + "500,P2,x,1,2011-01-21 14:58:00,3,17850,UK\n"
    )
    assert rejects == []
    assert [e["event_id"] for e in events] == ["order:500", "order:501"]
    first = events[0]
    assert first["customer_id"] == "17850"
    assert first["timestamp"] == "2011-01-21T14:58:00+00:00"
    assert first["lines"] == [
        {"item_id": "P1", "quantity": 2, "unit_price": 1.5},
        {"item_id": "P2", "quantity": 1, "unit_price": 3.0},
    ]
    assert grouper.tally.revenue == 9.0


def test_skips_are_counted_by_reason() -> None:
    grouper, events, _ = run(
        HEADER
        + "C500,P1,x,-2,2011-01-21 14:59:00,1.5,17850,UK\n"
        + "C500,P2,x,-1,2011-01-21 14:59:00,4,17850,UK\n"
        + "501,P1,damaged,-5,2011-01-21 14:59:00,0,,UK\n"
        + "502,P1,x,1,2011-01-21 14:59:00,1.5,,UK\n"
        + "503,POST,postage,1,2011-01-21 14:59:00,18,17850,UK\n"
        + "504,P1,x,1,2011-01-21 14:59:00,-11,17850,UK\n"
        + "505,P1,x,1,2011-01-21 14:59:00,0,17850,UK\n"
    )
    t = grouper.tally
    assert dict(t.skipped) == {
        "cancellation": 2,
        "non-positive quantity": 1,
        "no customer": 1,
        "non-product line": 1,
        "negative price": 1,
    }
    assert (t.returns.rows, len(t.returns.invoices), t.returns.units, t.returns.value) == (2, 1, 3, 7.0)
    assert [e["order_id"] for e in events] == ["505"]  # a free item is still a purchase
    assert t.accounted == t.rows == 7


def test_malformed_rows_are_rejected_with_their_line_numbers() -> None:
    grouper, events, rejects = run(
        HEADER
        + "500,P1,x,1.5,2011-01-21 14:59:00,1.5,17850,UK\n"
        + "501,P1,x,1,2011-01-21 14:59:00,abc,17850,UK\n"
        + "502,P1,x,1,21/01/2011 14:59,1.5,17850,UK\n"
        + "503,P1,x,1,2011-01-21 14:59:00,1.5,17850,UK,extra\n"
        + "504,P1,x,1\n"
        + ",P1,x,1,2011-01-21 14:59:00,1.5,17850,UK\n"
        + "505,P1,x,1,2011-01-21 14:59:00,inf,17850,UK\n"
        + "506,P1,x,1,1999-01-21 14:59:00,1,17850,UK\n"
        + "507,P1,x,1,2011-01-21 14:59:00,1,17850,UK\n"
    )
    assert [(r.row_number, r.reason.split(":")[0]) for r in rejects] == [
        (2, "Quantity"),
        (3, "UnitPrice"),
        (4, "InvoiceDate"),
        (5, "more fields than the header has"),
        (6, "fewer fields than the header has"),
        (7, "empty InvoiceNo"),
        (8, "UnitPrice"),
        (9, "InvoiceDate"),
    ]
    assert rejects[0].text.startswith("500,P1,x,1.5,")
    assert [e["order_id"] for e in events] == ["507"]
    assert grouper.tally.rejected_rows == 8 and grouper.tally.accounted == grouper.tally.rows == 9


def test_an_invoice_of_two_customers_keeps_the_first() -> None:
    _, events, rejects = run(
        HEADER + "500,P1,x,1,2011-01-21 14:59:00,1,1,UK\n" + "500,P2,x,1,2011-01-21 14:59:00,1,2,UK\n"
    )
    assert len(events[0]["lines"]) == 1
    assert [(r.row_number, r.reason) for r in rejects] == [(3, "invoice 500 belongs to customer 1, not 2")]


def test_an_invalid_event_rejects_its_whole_invoice() -> None:
    long_code = "X" * 300
    grouper, events, rejects = run(
        HEADER + f"500,{long_code},x,1,2011-01-21 14:59:00,1,1,UK\n500,P2,x,1,2011-01-21 14:59:00,1,1,UK\n"
    )
    assert events == []
    assert len(rejects) == 1 and rejects[0].row_number == 2 and rejects[0].rows == 2
    assert "lines.0.item_id" in rejects[0].reason
    assert grouper.tally.rejected_rows == 2 and grouper.tally.accounted == 2


def test_other_column_names_time_zone_and_currency() -> None:
    columns = OrderColumns().with_overrides(
        [
            "invoice=Order",
            "item=SKU",
            "quantity=Qty",
            "date=Created",
            "price=Price",
            "customer=Customer ID",
            "category=Dept",
        ]
    )
    options = OrderOptions(currency="EUR", date_format="%d/%m/%Y %H:%M", timezone=ZoneInfo("Europe/London"))
    text = "Order,SKU,Qty,Created,Price,Customer ID,Dept\nA1,s1,2,01/07/2011 10:00,5,c1,toys\n"
    _, events, rejects = run(text, columns, options)
    assert rejects == []
    assert events[0]["timestamp"] == "2011-07-01T09:00:00+00:00"  # BST is UTC+1
    assert events[0]["currency"] == "EUR"
    assert events[0]["lines"] == [{"item_id": "s1", "quantity": 2, "unit_price": 5.0, "category": "toys"}]


def test_column_option_errors() -> None:
    with pytest.raises(OrdersFormatError, match="expected NAME=COLUMN"):
        OrderColumns().with_overrides(["customer"])
    with pytest.raises(OrdersFormatError, match="unknown name 'client'"):
        OrderColumns().with_overrides(["client=Customer"])
    with pytest.raises(OrdersFormatError, match=r"missing column\(s\): CustomerID; the header has: InvoiceNo"):
        run("InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice\n1,A,1,2011-01-01 00:00:00,1\n")
    with pytest.raises(OrdersFormatError, match=r"the header has: \(nothing\)"):
        run("")


cells = st.one_of(
    st.sampled_from(["", "C1", "17850", "17850.0", "-3", "0", "2", "1.5", "x", "2011-01-21 14:59:00", "POST", "nan"]),
    st.text(max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=10), max_size=30))
def test_any_rows_are_all_accounted_for(rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"])
    writer.writerows(rows)
    grouper, events, rejects = run(buffer.getvalue())
    t = grouper.tally
    assert t.accounted == t.rows
    assert t.invoices == len(events)
    for event in events:
        parse_event_obj(event)
    assert all(r.row_number >= 2 for r in rejects)
