"""The ``ecrm`` command-line tool: one entry point per role, plus the all-in-one ``ecrm up``.

Each command lives in its own module under ``ecrm/commands/``; this file only registers them. A run imports only
the module of the command it runs (:func:`main`: ``ecrm worker`` does not load the evaluation's, the campaigns' or
the benchmarks' libraries, about 2.5 s of CPU at every start); ``ecrm``, ``ecrm --help`` and an unknown command get
the whole tool, as does :data:`app` (``from ecrm.cli import app``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

HELP = "Real-time eCRM personalization engine (Kafka + Faust + Redis + implicit + FastAPI)."


def _core(app: typer.Typer) -> None:
    from ecrm.commands import core

    app.command("schema")(core.schema)
    app.command("topics")(core.topics)
    app.command("migrate-keys")(core.migrate_keys)


def _runtime(app: typer.Typer) -> None:
    from ecrm.commands import runtime

    app.command("worker")(runtime.worker)
    app.command("api")(runtime.api)
    app.command("simulate")(runtime.simulate)
    app.command("up")(runtime.up)


def _importers(app: typer.Typer) -> None:
    from ecrm.commands import import_orders, ingest_log

    app.command("ingest-log")(ingest_log.ingest_log)
    app.command("import-orders")(import_orders.import_orders)


def _bench(app: typer.Typer) -> None:
    from ecrm.commands import bench

    bench_app = typer.Typer(help="Benchmarks that print figures (not tests).", no_args_is_help=True)
    app.add_typer(bench_app, name="bench")
    bench_app.command("ingest")(bench.ingest)
    bench_app.command("train")(bench.train)
    bench_app.command("memory")(bench.memory)
    bench_app.command("api")(bench.api)
    bench_app.command("freshness")(bench.freshness)
    bench_app.command("auth")(bench.auth)
    bench_app.command("campaigns")(bench.campaigns)
    bench_app.command("tenant-slots")(bench.tenant_slots)
    bench_app.command("hung-redis")(bench.hung_redis)
    bench_app.command("backup")(bench.backup)
    bench_app.command("tenants")(bench.tenants)
    bench_app.command("analytics-scan")(bench.analytics_scan)


def _analytics(app: typer.Typer) -> None:
    from ecrm.commands import analytics

    app.add_typer(analytics.app, name="analytics")


def _model(app: typer.Typer) -> None:
    from ecrm.commands import model as model_cmd

    app.command("train")(model_cmd.train)
    model_app = typer.Typer(help="Model versions: list, rollback.", no_args_is_help=True)
    app.add_typer(model_app, name="model")
    model_app.command("list")(model_cmd.list_versions)
    model_app.command("rollback")(model_cmd.rollback)


def _training_log(app: typer.Typer) -> None:
    from ecrm.commands import training_log as training_log_cmd

    app.add_typer(training_log_cmd.app, name="train-log")


def _evaluate(app: typer.Typer) -> None:
    from ecrm.commands import evaluate as evaluate_cmd

    app.command("evaluate")(evaluate_cmd.evaluate)


def _privacy(app: typer.Typer) -> None:
    from ecrm.commands import privacy

    app.command("forget")(privacy.forget)


def _backup(app: typer.Typer) -> None:
    from ecrm.commands import backup as backup_cmd

    app.command("backup")(backup_cmd.backup)
    app.command("restore")(backup_cmd.restore)


def _rules(app: typer.Typer) -> None:
    from ecrm.commands import rules as rules_cmd

    app.add_typer(rules_cmd.app, name="rules")


def _campaign(app: typer.Typer) -> None:
    from ecrm.commands import campaign as campaign_cmd

    app.add_typer(campaign_cmd.app, name="campaign")


# --- command registrations: the top-level names each registers, in the order of the tool's help ---
COMMANDS: list[tuple[tuple[str, ...], Callable[[typer.Typer], None]]] = [
    (("schema", "topics", "migrate-keys"), _core),
    (("worker", "api", "simulate", "up"), _runtime),
    (("ingest-log", "import-orders"), _importers),
    (("bench",), _bench),
    (("analytics",), _analytics),
    (("train", "model"), _model),
    (("train-log",), _training_log),
    (("evaluate",), _evaluate),
    (("forget",), _privacy),
    (("backup", "restore"), _backup),
    (("rules",), _rules),
    (("campaign",), _campaign),
]


def build(command: str | None = None) -> typer.Typer:
    """The tool with the module of ``command`` (a top-level command name) registered, or every module (None, or a
    name no module registers: the help lists them all)."""
    tool = typer.Typer(name="ecrm", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False)

    @tool.callback()
    def _root() -> None:  # a group even with one command registered: ``ecrm worker`` keeps its name
        pass

    chosen = [register for names, register in COMMANDS if command in names]
    for register in chosen or [register for _, register in COMMANDS]:
        register(tool)
    return tool


def command_of(argv: list[str]) -> str | None:
    """The top-level command an argument list names: its first argument that is not an option (the tool's own
    options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> None:
    """The ``ecrm`` entry point (``python -m ecrm`` too)."""
    build(command_of(sys.argv[1:]))(prog_name="ecrm")


def __getattr__(name: str) -> Any:
    """``app``: the whole tool, built on first use (the tests' ``CliRunner``)."""
    if name == "app":
        whole = build()
        globals()["app"] = whole
        return whole
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
