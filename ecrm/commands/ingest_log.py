"""``ecrm ingest-log``: web server access log lines to events on the events topic."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from core.errors import BrokerUnavailable
from core.settings import Settings, get_settings
from ecrm.commands.errors import checked_rejects, error_line
from ecrm.commands.tenant import DEFAULT_TENANT, TenantOption
from ingest.access_log import AccessLogMapper, Emit, LogTally, Reject, redact
from ingest.patterns import PatternError, load_patterns
from ingest.sink import DryRunSink, EventSink, KafkaSink, RejectsFile, failure_message
from ingest.tail import read_lines

SALT_ENV = "ECRM_LOG_SALT"


class LogFormatName(StrEnum):
    combined = "combined"
    common = "common"


def ingest_log(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Access log file")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep reading as the file grows")] = False,
    log_format: Annotated[LogFormatName, typer.Option("--format", help="Log format")] = LogFormatName.combined,
    patterns: Annotated[
        Path | None, typer.Option(help="URL patterns file (YAML); default: the shipped config/log_patterns.yaml")
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Where malformed lines go; default: LOGNAME.rejects.tsv beside the input")
    ] = None,
    salt: Annotated[
        str | None,
        typer.Option(envvar=SALT_ENV, help="Secret salt of the anonymous visitor ids (required)", show_default=False),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Parse and count; produce nothing")] = False,
    max_idle: Annotated[
        float | None, typer.Option(min=0, help="With --follow: stop after this many seconds without new lines")
    ] = None,
    poll: Annotated[float, typer.Option(min=0.01, help="With --follow: seconds between checks")] = 0.5,
    session_gap: Annotated[float, typer.Option(min=1, help="Minutes of inactivity that end a session")] = 30.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Events per produce batch")] = 500,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr")] = True,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Parse an Apache/Nginx access log and produce its page and item views as events.

    Static assets, bots and failed requests are dropped and counted; malformed lines go to the rejects file.
    The client address is never stored or sent: visitors are keyed hashes of address and user agent, with a secret
    salt (--salt or ECRM_LOG_SALT; the command refuses to run without one). Every event's delivery is checked: when
    any is not acknowledged the command stops and exits 2, naming how many failed.
    """
    if not salt:
        typer.echo(
            f"error: a secret salt is required (--salt or {SALT_ENV}): without one, anonymous ids could be linked "
            "back to client addresses by anyone who tries them all",
            err=True,
        )
        raise typer.Exit(2)
    try:
        compiled = load_patterns(patterns)
    except PatternError as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    settings = get_settings()
    mapper = AccessLogMapper(
        compiled,
        salt,
        log_format.value,
        session_gap=timedelta(minutes=session_gap),
        limits=settings.event_limits(),
    )
    rejects_path = checked_rejects(rejects, path)
    run = _LogRun(path, follow, poll, max_idle, progress)
    sink = _open_sink(settings, dry_run, batch_size, tenant)
    with RejectsFile(rejects_path) as rejected:
        try:
            run.ingest(mapper, sink, rejected)
            sink.close()
        except BrokerUnavailable as exc:
            typer.echo(failure_message(exc, sink), err=True)
            raise typer.Exit(2) from exc
    typer.echo(format_log_summary(mapper.tally, sink.sent, dry_run, rejected))


class _LogRun:
    """The read-map-send loop of one ingest, with its progress bar."""

    def __init__(self, path: Path, follow: bool, poll: float, max_idle: float | None, progress: bool) -> None:
        self.path, self.follow, self.poll, self.max_idle, self.progress = path, follow, poll, max_idle, progress

    def ingest(self, mapper: AccessLogMapper, sink: EventSink, rejected: RejectsFile) -> None:
        total = None if self.follow else os.path.getsize(self.path)
        bar = tqdm(
            total=total, unit="B", unit_scale=True, desc="ingest-log", file=sys.stderr, disable=not self.progress
        )
        try:
            for line in read_lines(self.path, self.follow, self.poll, self.max_idle):
                if line is None:  # waiting for the file to grow: send what we have
                    sink.flush()
                    continue
                outcome = mapper.process(line.number, line.raw)
                if isinstance(outcome, Emit):
                    sink.add(outcome.event)
                elif isinstance(outcome, Reject):
                    rejected.write(line.number, outcome.reason, redact(line.raw.decode("utf-8", "replace")))
                bar.update(line.size)
        except KeyboardInterrupt:
            typer.echo("interrupted: sending what was read", err=True)
        finally:
            bar.close()


def _open_sink(settings: Settings, dry_run: bool, batch_size: int, tenant: str = DEFAULT_TENANT) -> EventSink:
    if dry_run:
        return DryRunSink()
    try:
        return KafkaSink(settings, batch_size=batch_size, tenant=tenant)
    except BrokerUnavailable as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc


def format_log_summary(tally: LogTally, sent: int, dry_run: bool, rejected: RejectsFile) -> str:
    """The end-of-run report: every line read is in exactly one of the counted buckets."""
    rows: list[tuple[str, object]] = [("lines read", tally.lines), ("events", sum(tally.events.values()))]
    rows += [(f"  {kind}", n) for kind, n in sorted(tally.events.items())]
    rows += [("sessions", tally.sessions), ("assets dropped", tally.assets), ("bots dropped", tally.bots)]
    rows += [("errors dropped", tally.errors), ("ignored", sum(tally.ignored.values()))]
    rows += [(f"  {reason}", n) for reason, n in tally.ignored.most_common()]
    where = f" (see {rejected.path})" if rejected.count else ""
    rows += [("rejects", f"{tally.rejects}{where}")]
    rows += [("produced", "nothing (dry run)" if dry_run else sent)]
    return "\n".join(f"{label:<22}{value}" for label, value in rows)
