"""``ecrm evaluate``: offline evaluation of the engine against a popularity baseline on a dataset file."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ecrm.commands.errors import error_line
from recommender.config import RecommenderConfig
from recommender.evaluation.runner import EvaluationReport
from recommender.evaluation.runner import evaluate as run_evaluation
from trainer.datasets import load_dataset


class DatasetFormat(StrEnum):
    sequences = "sequences"
    taobao = "taobao"
    events = "events"
    orders = "orders"


class ScoringName(StrEnum):
    exact = "exact"
    candidates = "candidates"
    both = "both"


class ProtocolName(StrEnum):
    leave_one_out = "leave-one-out"
    time_split = "time-split"
    repeat = "repeat"


def evaluate(
    dataset: Annotated[Path, typer.Option("--dataset", help="Dataset file", show_default=False)],
    fmt: Annotated[DatasetFormat, typer.Option("--format", help="File format")] = DatasetFormat.sequences,
    protocol: Annotated[ProtocolName, typer.Option(help="Split protocol")] = ProtocolName.leave_one_out,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    config: Annotated[
        Path | None, typer.Option(help="Recommender configuration (YAML or JSON); default: the served defaults")
    ] = None,
    max_users: Annotated[int | None, typer.Option(min=1, help="Test at most this many users (random sample)")] = None,
    validation: Annotated[
        bool, typer.Option(help="Leave-one-out on the second-to-last item (for tuning; the last is dropped)")
    ] = False,
    cutoff_quantile: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="time-split: train before this quantile of event times")
    ] = 0.8,
    k: Annotated[int, typer.Option(min=1, max=1000, help="Cut-off of the ranking metrics")] = 10,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr")] = True,
    scoring: Annotated[
        ScoringName,
        typer.Option(
            help="exact: rank every item; candidates: only the retrieved candidates, as the API does on a large "
            "catalogue (engine-candidates); both: side by side"
        ),
    ] = ScoringName.exact,
) -> None:
    """Train on the training part of a split, rank every item for each test user (the API's scoring code),
    and report HR, NDCG, precision, recall, MRR and coverage for the engine and the popularity baseline.
    ``--protocol repeat`` (repeat purchases, e.g. ``--format orders``): a time split in which items bought before
    the cut-off may be the answer, against popularity and "buy again" (the customer's own most frequent items)."""
    try:
        settings = RecommenderConfig.from_file(config) if config is not None else RecommenderConfig()
        data = load_dataset(dataset, fmt.value)
        report = run_evaluation(
            data,
            protocol.value,
            settings,
            max_users=max_users,
            validation=validation,
            quantile=cutoff_quantile,
            k=k,
            progress=progress,
            scoring=scoring.value,
        )
    except ValueError as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(orjson.dumps(report.as_dict()).decode())
    else:
        typer.echo(format_report(report))


def format_report(report: EvaluationReport) -> str:
    """A readable table: one row per model, one column per metric."""
    rows = {name: model.as_dict() for name, model in report.models.items()}
    columns = list(next(iter(rows.values()))) if rows else []
    header = ["model", *columns]
    body = [[name, *(_cell(values[c]) for c in columns)] for name, values in rows.items()]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    protocol = f"{report.protocol} (validation)" if report.extra.get("validation") else report.protocol
    lines = [
        f"dataset {report.dataset}, protocol {protocol}: {report.users} test users, {report.items} items, "
        f"{report.train_interactions} training interactions",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in body]
    if "repeat_share" in report.extra:
        lines.append(
            f"test items already bought before the cut-off (repeat purchases): {report.extra['repeat_share']:.1%}"
        )
    if report.skipped_users or report.skipped_lines:
        lines.append(f"skipped: {report.skipped_users} test users, {report.skipped_lines} unreadable lines")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
