"""``ecrm import-orders``: an order-lines CSV export to ``purchase`` events, one per invoice."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from tqdm import tqdm

from core.errors import BrokerUnavailable
from core.settings import get_settings
from ecrm.commands.errors import checked_rejects, error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from ingest.orders import (
    DEFAULT_DATE_FORMAT,
    NON_PRODUCT_CODES,
    OrderColumns,
    OrderGrouper,
    OrderOptions,
    OrdersFormatError,
    OrdersTally,
    RowReject,
    read_csv,
)
from ingest.sink import DryRunSink, EventSink, KafkaSink, RejectsFile, failure_message
from schemas import EventLimits


def import_orders(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Order lines CSV")],
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="NAME=COLUMN, NAME one of invoice, item, quantity, date, price, customer, category (repeatable)",
        ),
    ] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217 currency of the prices")] = "GBP",
    date_format: Annotated[str, typer.Option(help="strptime format of the date column")] = DEFAULT_DATE_FORMAT,
    timezone: Annotated[str, typer.Option(help="Zone of dates that carry none (IANA name)")] = "UTC",
    non_product: Annotated[
        str, typer.Option(help="Comma-separated stock codes that are not products (empty: none)")
    ] = ",".join(NON_PRODUCT_CODES),
    encoding: Annotated[str, typer.Option(help="Text encoding of the file")] = "utf-8-sig",
    rejects: Annotated[
        Path | None, typer.Option(help="Where unreadable rows go; default: FILENAME.rejects.tsv beside the input")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and count; produce nothing")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Events per produce batch")] = 500,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr")] = True,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Import a transactions CSV as purchase events of a shop (``--tenant``: the events' tenant header and
    partition key) (event id ``order:<invoice>``: importing again changes nothing).

    Rows without a customer, cancellations (returns), non-positive quantities and non-product lines (postage,
    fees) are skipped and counted; unreadable rows go to the rejects file. Every event's delivery is checked: when
    any is not acknowledged the command stops and exits 2, naming how many failed.
    """
    try:
        columns = OrderColumns().with_overrides(column or [])
        options = _options(currency, date_format, timezone, non_product, get_settings().event_limits())
    except (OrdersFormatError, ValueError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    grouper = OrderGrouper(columns, options)
    rejects_path = checked_rejects(rejects, path)
    with RejectsFile(rejects_path) as rejected:
        _read(path, encoding, grouper, rejected, progress)
        sink: EventSink = DryRunSink() if dry_run else _kafka_sink(batch_size, tenant)
        try:
            _send(grouper, sink, rejected, progress)
            sink.close()
        except BrokerUnavailable as exc:
            typer.echo(failure_message(exc, sink), err=True)
            raise typer.Exit(2) from exc
    typer.echo(format_orders_summary(grouper.tally, options.currency, sink.sent, dry_run, rejected))


def _options(currency: str, date_format: str, timezone: str, non_product: str, limits: EventLimits) -> OrderOptions:
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise ValueError(f"--currency {currency!r}: expected an ISO 4217 code such as GBP")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"--timezone {timezone!r}: unknown time zone") from exc
    codes = frozenset(c.strip().upper() for c in non_product.split(",") if c.strip())
    return OrderOptions(currency=currency, date_format=date_format, timezone=zone, non_product=codes, limits=limits)


def _read(path: Path, encoding: str, grouper: OrderGrouper, rejected: RejectsFile, progress: bool) -> None:
    try:
        with path.open(encoding=encoding, errors="replace", newline="") as handle:
            total = max(sum(1 for _ in handle) - 1, 0)
            handle.seek(0)
            bar = tqdm(total=total, unit="rows", desc="reading", file=sys.stderr, disable=not progress)
            with bar:
                for item in read_csv(handle, grouper):
                    if isinstance(item, RowReject):
                        rejected.write(item.row_number, item.reason, item.text)
                    else:
                        bar.update(item - bar.n)
    except (OrdersFormatError, LookupError) as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


def _kafka_sink(batch_size: int, tenant: str) -> EventSink:
    try:
        return KafkaSink(get_settings(), batch_size=batch_size, tenant=tenant)
    except BrokerUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc


def _send(grouper: OrderGrouper, sink: EventSink, rejected: RejectsFile, progress: bool) -> None:
    bar = tqdm(total=grouper.invoice_count, unit="orders", desc="sending", file=sys.stderr, disable=not progress)
    with bar:
        for item in grouper.events():
            if isinstance(item, RowReject):
                rejected.write(item.row_number, item.reason, item.text or f"{item.rows} row(s)")
            else:
                sink.add(item)
            bar.update(1)


def format_orders_summary(tally: OrdersTally, currency: str, sent: int, dry_run: bool, rejected: RejectsFile) -> str:
    """The end-of-run report: every row read is a purchase line, skipped (by reason) or rejected."""
    r = tally.returns
    rows: list[tuple[str, object]] = [
        ("rows read", tally.rows),
        ("purchases (invoices)", tally.invoices),
        ("  lines", tally.lines),
        ("  customers", len(tally.customers)),
        ("  items", len(tally.items)),
        ("  revenue", f"{tally.revenue:,.2f} {currency}"),
        ("skipped rows", sum(tally.skipped.values())),
    ]
    rows += [(f"  {reason}", n) for reason, n in tally.skipped.most_common()]
    rows += [("returns", f"{len(r.invoices)} invoices, {r.rows} rows, {r.units} units, {r.value:,.2f} {currency}")]
    where = f" (see {rejected.path})" if rejected.count else ""
    rows += [("rejected rows", f"{tally.rejected_rows}{where}")]
    rows += [("produced", "nothing (dry run)" if dry_run else sent)]
    return "\n".join(f"{label:<24}{value}" for label, value in rows)
