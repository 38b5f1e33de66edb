"""The one-line error every command prints when it stops, with a hint when a server could not be reached."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from core.errors import BrokerUnavailable, DeliveryFailed, StoreUnavailable
from core.runstate import start_hint
from ingest.sink import rejects_beside, unwritable


def error_line(exc: BaseException) -> str:
    """``error: <what went wrong>`` on one line; for a broker or Redis that does not answer, how to start one or
    which variable names it."""
    text = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc, BrokerUnavailable) and not isinstance(exc, DeliveryFailed):
        return f"error: {text}; {start_hint('ECRM_KAFKA_BOOTSTRAP')}"
    if isinstance(exc, StoreUnavailable) and exc.reason in ("connection", "timeout"):
        return f"error: {text}; {start_hint('ECRM_REDIS_URL')}"
    return f"error: {text}"


def refuse_file(path: Path, problems: Sequence[str]) -> typer.Exit:
    """Print why a config file (rules, campaigns) was refused, one problem a line on stderr; the exit (code 1) to
    raise."""
    typer.echo(f"{path}: refused", err=True)
    for problem in problems:
        typer.echo(f"  {problem}", err=True)
    return typer.Exit(1)


def checked_rejects(given: Path | None, source: Path) -> Path:
    """Where the refused input of ``source`` goes: ``given``, or ``NAME.rejects.tsv`` beside it; prints why and
    exits (code 2) when that file cannot be created."""
    path = given or rejects_beside(source)
    if problem := unwritable(path):
        typer.echo(f"error: cannot create the rejects file {path}: {problem} (give --rejects FILE)", err=True)
        raise typer.Exit(2)
    return path
