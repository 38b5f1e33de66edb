"""Order exports (one CSV row per order line) to ``purchase`` events, one per invoice.

The defaults read the UCI "Online Retail" layout (``InvoiceNo, StockCode, Quantity, InvoiceDate, UnitPrice,
CustomerID``); other exports name their columns with :meth:`OrderColumns.with_overrides`.

Each row ends in exactly one place:

* a line of a ``purchase`` event (event id ``order:<invoice>``, so importing a file again changes nothing once the
  worker has de-duplicated);
* skipped, with a reason, in this order: ``cancellation`` (invoice number starting with ``C``: a return, also
  summed up in :class:`Returns`), ``non-positive quantity`` (outside cancellations: stock adjustments such as
  "damaged" or "check", never attributed to a customer), ``no customer`` (a sale that cannot be attributed),
  ``negative price``, ``non-product line`` (postage, fees, manual adjustments: see :data:`NON_PRODUCT_CODES`);
* rejected: a malformed row, a row whose invoice already belongs to another customer, or the rows of an invoice
  whose event does not validate.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from typing import Any

from schemas import EventLimits, InvalidEvent, encode_event

# Stock codes of the Online Retail data that are not products: postage, carriage, discounts, fees, samples...
NON_PRODUCT_CODES: tuple[str, ...] = (
    "POST",
    "DOT",
    "C2",
    "M",
    "D",
    "S",
    "B",
    "PADS",
    "CRUK",
    "AMAZONFEE",
    "BANK CHARGES",
)
DEFAULT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)


class OrdersFormatError(ValueError):
    """The file as a whole cannot be read: a required column is missing, or a column option is wrong."""


class RowError(ValueError):
    """One row cannot be read (the message says which field and why)."""


@dataclass(frozen=True, slots=True)
class OrderColumns:
    """Which CSV column holds each field. ``category`` is optional (no column by default)."""

    invoice: str = "InvoiceNo"
    item: str = "StockCode"
    quantity: str = "Quantity"
    date: str = "InvoiceDate"
    price: str = "UnitPrice"
    customer: str = "CustomerID"
    category: str | None = None

    def with_overrides(self, specs: Iterable[str]) -> OrderColumns:
        """Apply ``NAME=COLUMN`` options, e.g. ``customer=Customer ID``."""
        known = [f.name for f in fields(self)]
        changes: dict[str, str] = {}
        for spec in specs:
            name, sep, column = spec.partition("=")
            name, column = name.strip().lower(), column.strip()
            if not sep or not column:
                raise OrdersFormatError(f"--column {spec!r}: expected NAME=COLUMN, e.g. customer=CustomerID")
            if name not in known:
                raise OrdersFormatError(f"--column {spec!r}: unknown name {name!r} (one of {', '.join(known)})")
            changes[name] = column
        return replace(self, **changes)

    def required(self) -> list[str]:
        named = [self.invoice, self.item, self.quantity, self.date, self.price, self.customer]
        return named + ([self.category] if self.category else [])

    def check_header(self, header: list[str] | None) -> None:
        """Raise :class:`OrdersFormatError` naming the missing columns."""
        found = [h.strip() for h in header or []]
        missing = [c for c in self.required() if c not in found]
        if missing:
            raise OrdersFormatError(
                f"missing column(s): {', '.join(missing)}; the header has: {', '.join(found) or '(nothing)'} "
                "(name other columns with --column NAME=COLUMN)"
            )


@dataclass(frozen=True, slots=True)
class OrderOptions:
    currency: str = "GBP"
    date_format: str = DEFAULT_DATE_FORMAT
    timezone: tzinfo = UTC
    non_product: frozenset[str] = frozenset(NON_PRODUCT_CODES)
    cancellation_prefix: str = "C"
    limits: EventLimits = field(default_factory=EventLimits)  # the schema's limits (timestamp floor, size ...)


@dataclass(frozen=True, slots=True)
class OrderRow:
    invoice: str
    item: str
    quantity: int
    price: float
    when: datetime
    customer: str | None
    category: str | None = None


def parse_row(row: dict[str | None, Any], columns: OrderColumns, options: OrderOptions) -> OrderRow:
    """Read one CSV row (from :class:`csv.DictReader`). Raises :class:`RowError`."""
    if None in row:
        raise RowError("more fields than the header has")
    if any(v is None for v in row.values()):
        raise RowError("fewer fields than the header has")
    invoice = _text(row, columns.invoice)
    item = _text(row, columns.item)
    if not invoice or not item:
        raise RowError(f"empty {columns.invoice if not invoice else columns.item}")
    category = _text(row, columns.category) if columns.category else None
    return OrderRow(
        invoice=invoice,
        item=item,
        quantity=_quantity(_text(row, columns.quantity), columns.quantity),
        price=_price(_text(row, columns.price), columns.price),
        when=_when(_text(row, columns.date), columns.date, options),
        customer=_customer(_text(row, columns.customer)),
        category=category or None,
    )


def skip_reason(row: OrderRow, options: OrderOptions) -> str | None:
    """Why a row is not a purchase line (None: it is one)."""
    if options.cancellation_prefix and row.invoice.upper().startswith(options.cancellation_prefix):
        return "cancellation"
    if row.quantity <= 0:
        return "non-positive quantity"
    if row.customer is None:
        return "no customer"
    if row.price < 0:
        return "negative price"
    if row.item.upper() in options.non_product:
        return "non-product line"
    return None


def _text(row: dict[str | None, Any], column: str) -> str:
    return str(row.get(column) or "").strip()


_INTEGRAL = re.compile(r"[+-]?\d+(?:\.0*)?")


def _quantity(value: str, column: str) -> int:
    if not _INTEGRAL.fullmatch(value):
        raise RowError(f"{column}: {value[:40]!r} is not a whole number")
    quantity = int(value.split(".", 1)[0])
    if abs(quantity) > 1_000_000:
        raise RowError(f"{column}: {quantity} is out of range")
    return quantity


def _price(value: str, column: str) -> float:
    try:
        price = float(value)
    except ValueError as exc:
        raise RowError(f"{column}: {value[:40]!r} is not a number") from exc
    if not math.isfinite(price):
        raise RowError(f"{column}: {value[:40]!r} is not a finite number")
    return price


def _when(value: str, column: str, options: OrderOptions) -> datetime:
    try:
        parsed = datetime.strptime(value, options.date_format)
    except ValueError as exc:
        raise RowError(f"{column}: {value[:40]!r} does not match {options.date_format!r}") from exc
    when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=options.timezone)).astimezone(UTC)
    if not _MIN_TIME <= when < _MAX_TIME:
        raise RowError(f"{column}: {value[:40]!r} is out of range (2000-2099)")
    return when


def _customer(value: str) -> str | None:
    """``"17850"`` and ``"17850.0"`` (a float-typed export) are the same customer; empty means none."""
    if not value:
        return None
    return value[: value.index(".")] if re.fullmatch(r"\d+\.0+", value) else value


# --- grouping ------------------------------------------------------------------------------------------------------


@dataclass
class Returns:
    """Cancellations (returns), reported rather than imported."""

    rows: int = 0
    invoices: set[str] = field(default_factory=set)
    units: int = 0
    value: float = 0.0

    def add(self, row: OrderRow) -> None:
        self.rows += 1
        self.invoices.add(row.invoice)
        self.units += abs(row.quantity)
        self.value += abs(row.quantity) * row.price


@dataclass
class OrdersTally:
    """Counts of rows by fate: ``rows == lines + sum(skipped) + rejected_rows``."""

    rows: int = 0
    invoices: int = 0
    lines: int = 0
    customers: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    revenue: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected_rows: int = 0
    returns: Returns = field(default_factory=Returns)

    @property
    def accounted(self) -> int:
        return self.lines + sum(self.skipped.values()) + self.rejected_rows


@dataclass(frozen=True, slots=True)
class RowReject:
    """A row (or, for an invalid event, the invoice starting at this row) that was rejected, and why."""

    row_number: int
    reason: str
    rows: int = 1
    text: str = ""


@dataclass
class _Invoice:
    first_row: int
    customer: str
    when: datetime
    lines: list[OrderRow] = field(default_factory=list)


class OrderGrouper:
    """Collects purchase lines by invoice (rows of one invoice may be anywhere in the file)."""

    def __init__(self, columns: OrderColumns, options: OrderOptions) -> None:
        self.columns = columns
        self.options = options
        self.tally = OrdersTally()
        self._invoices: dict[str, _Invoice] = {}

    def add(self, row_number: int, raw: dict[str | None, Any]) -> RowReject | None:
        """Take one CSV row: kept, skipped (counted) or rejected (returned)."""
        self.tally.rows += 1
        try:
            row = parse_row(raw, self.columns, self.options)
        except RowError as exc:
            return self._reject(RowReject(row_number, str(exc), text=_row_text(raw)))
        reason = skip_reason(row, self.options)
        if reason is not None or row.customer is None:
            self.tally.skipped[reason or "no customer"] += 1
            if reason == "cancellation":
                self.tally.returns.add(row)
            return None
        invoice = self._invoices.setdefault(row.invoice, _Invoice(row_number, row.customer, row.when))
        if invoice.customer != row.customer:
            reason = f"invoice {row.invoice} belongs to customer {invoice.customer}, not {row.customer}"
            return self._reject(RowReject(row_number, reason, text=_row_text(raw)))
        invoice.when = min(invoice.when, row.when)
        invoice.lines.append(row)
        return None

    def reject_unreadable(self, row_number: int, reason: str) -> RowReject:
        """Count a row the CSV reader could not even split."""
        self.tally.rows += 1
        return self._reject(RowReject(row_number, reason))

    def events(self) -> Iterator[dict[str, Any] | RowReject]:
        """One validated purchase event per invoice, in order of first appearance; or the invoice's reject."""
        for order_id, invoice in self._invoices.items():
            event = purchase_event(order_id, invoice.customer, invoice.when, invoice.lines, self.options.currency)
            try:
                encode_event(event, self.options.limits)
            except InvalidEvent as exc:
                yield self._reject(RowReject(invoice.first_row, f"invoice {order_id}: {exc}", len(invoice.lines)))
                continue
            self._count(invoice)
            yield event

    @property
    def invoice_count(self) -> int:
        return len(self._invoices)

    def _count(self, invoice: _Invoice) -> None:
        t = self.tally
        t.invoices += 1
        t.lines += len(invoice.lines)
        t.customers.add(invoice.customer)
        t.items.update(line.item for line in invoice.lines)
        t.revenue += sum(line.quantity * line.price for line in invoice.lines)

    def _reject(self, reject: RowReject) -> RowReject:
        self.tally.rejected_rows += reject.rows
        return reject


def _row_text(raw: dict[str | None, Any]) -> str:
    values: list[Any] = []
    for value in raw.values():
        values.extend(value if isinstance(value, list) else [value])
    return ",".join("" if v is None else str(v) for v in values)


def purchase_event(
    order_id: str, customer: str, when: datetime, lines: list[OrderRow], currency: str
) -> dict[str, Any]:
    """The ``purchase`` event of one invoice. Its id depends on the invoice number only."""
    return {
        "event_id": f"order:{order_id}",
        "type": "purchase",
        "timestamp": when.isoformat(),
        "customer_id": customer,
        "order_id": order_id,
        "currency": currency,
        "lines": [_line(line) for line in lines],
    }


def _line(row: OrderRow) -> dict[str, Any]:
    line: dict[str, Any] = {"item_id": row.item, "quantity": row.quantity, "unit_price": row.price}
    if row.category:
        line["category"] = row.category
    return line


def read_csv(lines: Iterable[str], grouper: OrderGrouper) -> Iterator[RowReject | int]:
    """Feed CSV text to ``grouper``; yields each reject, and the running row count after every row.

    Raises :class:`OrdersFormatError` when a required column is missing from the header.
    """
    reader = csv.DictReader(iter(lines))
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise OrdersFormatError(f"cannot read the header: {exc}") from exc
    grouper.columns.check_header(list(header) if header else None)
    reader.fieldnames = [h.strip() for h in header or []]
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield grouper.reject_unreadable(reader.line_num, f"unreadable CSV: {exc}")
            continue
        reject = grouper.add(reader.line_num, raw)
        if reject is not None:
            yield reject
        yield grouper.tally.rows
