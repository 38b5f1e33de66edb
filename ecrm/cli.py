"""The ``ecrm`` command-line tool: one entry point per role, plus the all-in-one ``ecrm up``.

Each command lives in its own module under ``ecrm/commands/``; this file only registers them.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ecrm",
    help="Real-time eCRM personalization engine (Kafka + Faust + Redis + implicit + FastAPI).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print figures (not tests).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
model_app = typer.Typer(help="Model versions: list, rollback.", no_args_is_help=True)
app.add_typer(model_app, name="model")

# --- command registrations (one line each; the commands live in ecrm/commands/) ---
from ecrm.commands import core  # noqa: E402

app.command("schema")(core.schema)
app.command("topics")(core.topics)
app.command("migrate-keys")(core.migrate_keys)
from ecrm.commands import runtime  # noqa: E402

app.command("worker")(runtime.worker)
app.command("api")(runtime.api)
app.command("simulate")(runtime.simulate)
app.command("up")(runtime.up)
from ecrm.commands import import_orders, ingest_log  # noqa: E402

app.command("ingest-log")(ingest_log.ingest_log)
app.command("import-orders")(import_orders.import_orders)
from ecrm.commands import bench  # noqa: E402

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
from ecrm.commands import analytics  # noqa: E402

app.add_typer(analytics.app, name="analytics")
from ecrm.commands import model as model_cmd  # noqa: E402

app.command("train")(model_cmd.train)
from ecrm.commands import training_log as training_log_cmd  # noqa: E402

app.add_typer(training_log_cmd.app, name="train-log")
model_app.command("list")(model_cmd.list_versions)
model_app.command("rollback")(model_cmd.rollback)
from ecrm.commands import evaluate as evaluate_cmd  # noqa: E402

app.command("evaluate")(evaluate_cmd.evaluate)
from ecrm.commands import privacy  # noqa: E402

app.command("forget")(privacy.forget)
from ecrm.commands import backup as backup_cmd  # noqa: E402

app.command("backup")(backup_cmd.backup)
app.command("restore")(backup_cmd.restore)
from ecrm.commands import rules as rules_cmd  # noqa: E402

app.add_typer(rules_cmd.app, name="rules")
from ecrm.commands import campaign as campaign_cmd  # noqa: E402

app.add_typer(campaign_cmd.app, name="campaign")
