"""``ecrm evaluate``: offline evaluation of the engine against the baselines a shop would try (popularity, trending,
buy-again, recently viewed) on a dataset file, under leave-one-out, time-split, repeat or the rolling protocol."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import orjson
import typer

from core.settings import get_settings
from ecrm.commands.errors import error_line
from recommender.config import RecommenderConfig
from recommender.evaluation.protocols import Protocol
from recommender.evaluation.runner import EvaluationReport, RollingReport, evaluate_rolling
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
    rolling = "rolling"


MAX_WINDOWS = 52
_DAY_MS = 86_400_000


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
    windows: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WINDOWS,
            help="rolling: consecutive windows, each predicted from all before it (bounds the "
            "run: the engine is fitted once per window)",
        ),
    ] = 4,
    window_days: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="rolling: length of a window in days; default: the time after --cutoff-quantile cut in --windows "
            "equal parts (needed for position-timed data such as --format sequences)",
            show_default=False,
        ),
    ] = None,
    half_life_hours: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="trending baseline's half-life; default: the engine's ECRM_TRENDING_HALF_LIFE_HOURS",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train on the training part of a split, rank every item for each test user (the API's scoring code), and
    report HR, NDCG, precision, recall, MRR and coverage for the engine and the baselines a shop would try
    (popularity, trending; under repeat and the rolling protocol's repeat view also buy-again and recently
    viewed), naming the best baseline and the engine's ratio to it. ``--protocol repeat`` (repeat purchases, e.g.
    ``--format orders``): a time split in which items bought before the cut-off may be the answer.
    ``--protocol rolling``: several consecutive time windows, each predicted from all that came before it,
    reported per window and averaged, in both views (time-split: new items only; repeat: every item)."""
    half_life = half_life_hours if half_life_hours is not None else get_settings().trending_half_life_hours
    try:
        settings = RecommenderConfig.from_file(config) if config is not None else RecommenderConfig()
        data = load_dataset(dataset, fmt.value)
        report: EvaluationReport | RollingReport
        if protocol is ProtocolName.rolling:
            if validation or scoring is not ScoringName.exact:
                raise ValueError("--validation and --scoring apply to the other protocols, not to rolling")
            report = evaluate_rolling(
                data,
                settings,
                windows=windows,
                window_ms=round(window_days * _DAY_MS) if window_days is not None else None,
                quantile=cutoff_quantile,
                max_users=max_users,
                k=k,
                progress=progress,
                half_life_hours=half_life,
                echo=(lambda line: typer.echo(line, err=True)) if progress else None,
            )
        else:
            report = run_evaluation(
                data,
                cast(Protocol, protocol.value),
                settings,
                max_users=max_users,
                validation=validation,
                quantile=cutoff_quantile,
                k=k,
                progress=progress,
                scoring=scoring.value,
                half_life_hours=half_life,
            )
    except ValueError as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(orjson.dumps(report.as_dict()).decode())
    elif isinstance(report, RollingReport):
        typer.echo(format_rolling(report))
    else:
        typer.echo(format_report(report))


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One row per model, one column per metric."""
    columns = list(next(iter(rows.values()))) if rows else []
    header = ["model", *columns]
    body = [[name, *(_cell(values.get(c, "")) for c in columns)] for name, values in rows.items()]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return lines


def verdict(summary: dict[str, Any], k: int) -> str | None:
    """``best baseline: trending; engine / trending: NDCG@10 1.23x, HR@10 1.05x`` from a report's comparison."""
    best = summary.get("best_baseline")
    if best is None:
        return None
    ratios = summary.get("engine_ratio", {})
    parts = [
        f"{label}@{k} " + (f"{value:.2f}x" if value is not None else "n/a (the baseline scored 0)")
        for label, value in (("NDCG", ratios.get(f"ndcg@{k}")), ("HR", ratios.get(f"hr@{k}")))
    ]
    return f"best baseline: {best}; engine / {best}: {', '.join(parts)}"


def format_report(report: EvaluationReport) -> str:
    """A readable table: one row per model, one column per metric; then the best baseline and the engine's ratio."""
    protocol = f"{report.protocol} (validation)" if report.extra.get("validation") else report.protocol
    lines = [
        f"dataset {report.dataset}, protocol {protocol}: {report.users} test users, {report.items} items, "
        f"{report.train_interactions} training interactions",
        *table({name: model.as_dict() for name, model in report.models.items()}),
    ]
    line = verdict(report.as_dict(), report.k)
    if line:
        lines.append(line)
    if "repeat_share" in report.extra:
        lines.append(
            f"test items already bought before the cut-off (repeat purchases): {report.extra['repeat_share']:.1%}"
        )
    if report.skipped_users or report.skipped_lines:
        lines.append(f"skipped: {report.skipped_users} test users, {report.skipped_lines} unreadable lines")
    return "\n".join(lines)


def format_rolling(report: RollingReport) -> str:
    """Per window and view one line of NDCG@k per model; then per view the averaged table and the verdict."""
    k = report.k
    lines = [f"dataset {report.dataset}, protocol rolling: {len(report.windows)} windows, {report.items} items"]
    for window in report.windows:
        data = window.as_dict()
        for view, figures in data["views"].items():
            ndcg = ", ".join(f"{name} {values[f'ndcg@{k}']:.4f}" for name, values in figures["models"].items())
            ratio = figures.get("engine_ratio", {}).get(f"ndcg@{k}")
            lines.append(
                f"window {data['window']} {view}: {figures['users']} users; NDCG@{k} {ndcg}; best baseline "
                f"{figures.get('best_baseline', 'n/a')}, engine ratio {ratio if ratio is not None else 'n/a'}"
            )
    for view, summary in report.averages().items():
        lines.append(
            f"average over {summary['windows']} windows, view {view} "
            f"({'new items only' if view == 'time-split' else 'every item'}; {summary['users']} test users in all):"
        )
        lines += table(summary["models"])
        line = verdict(summary, k)
        if line:
            lines.append(line)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
