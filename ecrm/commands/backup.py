"""``ecrm backup FILE`` and ``ecrm restore FILE`` (runtime/backup.py; the file format and the guarantees are in its
docstring and docs/operations.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from core.errors import ConfigError, StoreRefused, StoreUnavailable, TrainingError
from core.redis import connect_sync
from core.settings import Settings, get_settings
from ecrm.commands.errors import error_line
from ecrm.commands.tenant import OptionalTenant


def backup(
    file: Annotated[Path, typer.Argument(help="The backup file to write (a .tar.gz)", show_default=False)],
    tenant: OptionalTenant = None,
) -> None:
    """Back up the engine: every key under its prefix (profiles, visitors, catalogue, models, analytics, campaign
    counters), of every shop or of the one ``--tenant`` names, the configuration files in force and a manifest, in
    one file. Works on one node or a Redis Cluster, while the engine runs."""
    from runtime.backup import backup as run_backup

    settings = get_settings()
    started = time.perf_counter()
    try:
        total = _dbsize(settings)
        with tqdm(total=total, desc="backup", unit="key", file=sys.stderr, mininterval=1.0) as bar:
            manifest = run_backup(settings, file, bar.update, tenant)
    except (StoreUnavailable, StoreRefused, TrainingError, OSError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    counts = manifest.counts
    size = file.stat().st_size
    typer.echo(
        f"backed up {counts.get('keys', 0)} keys ({counts.get('customers', 0)} customers, "
        f"{counts.get('visitors', 0)} visitors, {counts.get('items', 0)} items, {len(manifest.models)} model "
        f"versions, {len(manifest.config)} configuration files) of "
        f"{f'the tenant {tenant}' if tenant else 'every tenant'} to {file}: {size / 1e6:.1f} MB in "
        f"{time.perf_counter() - started:.1f}s"
    )
    if manifest.training_log:
        typer.echo(
            f"training-log store: {manifest.training_log['entries']} entries in "
            f"{len(manifest.training_log['files'])} files included"
        )
    else:
        from trainer.logstore import store_dir

        typer.echo(
            f"note: no training-log store under {store_dir(settings).parent} on this host: the backup holds the Redis "
            "tail of the training log only (run it where ECRM_TRAINING_LOG_DIR is mounted to include the history)"
        )
    if not manifest.quiet:
        typer.echo(
            f"note: {manifest.applied_after - manifest.applied_before} events were applied while the backup ran: "
            "a key copied early may miss them while a later one has them. For an exact backup, take it while no "
            "events arrive (docs/operations.md, 'Backups')"
        )


def restore(
    file: Annotated[Path, typer.Argument(help="A backup file written by `ecrm backup`", show_default=False)],
    with_config: Annotated[
        bool, typer.Option("--with-config", help="Also write the backup's configuration files over the ones in force")
    ] = False,
    tenant: OptionalTenant = None,
) -> None:
    """Replace the engine's keys by a backup's: of one shop when ``--tenant`` names it or the backup holds one shop
    only (the other shops' keys are left as they are), else of every shop. Refuses a backup of a newer engine,
    upgrades an older key layout (as `ecrm migrate-keys`), and erases again every customer erased since the backup
    was taken. Events applied since the backup are not in the restored state."""
    from runtime.backup import BackupError, read_manifest
    from runtime.backup import restore as run_restore

    settings = get_settings()
    started = time.perf_counter()
    try:
        manifest = read_manifest(file)
        total = int(manifest.counts.get("keys", 0))
        with tqdm(total=total, desc="restore", unit="key", file=sys.stderr, mininterval=1.0) as bar:
            done = run_restore(
                settings, file, bar.update, with_config, phase=lambda text: bar.write(text), tenant=tenant
            )
    except (BackupError, ConfigError, StoreUnavailable, StoreRefused, TrainingError, OSError) as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"restored {done.written} keys from {file} (taken {_when(done.manifest.started_ms)} by engine "
        f"{done.manifest.engine_version}, key layout {done.manifest.key_layout}) in "
        f"{time.perf_counter() - started:.1f}s; {done.deleted} keys deleted first, "
        f"{done.expired} not written (expired, or of a customer erased since)"
    )
    if done.migrated is not None:
        typer.echo(
            f"upgraded the key layout: {done.migrated.moved} global keys, {done.migrated.markers} markers moved, "
            f"{done.migrated.folded} older profile keys folded into {done.migrated.profiles} profile hashes, "
            f"{done.migrated.to_tenant} keys moved into the tenant default"
        )
    typer.echo(f"erased again {len(done.erased_again)} customer(s) erased since the backup")
    if done.config_written:
        typer.echo(f"configuration files written: {', '.join(done.config_written)}")
    elif done.manifest.config:
        typer.echo("configuration files left as they are (--with-config writes the backup's)")


def _dbsize(settings: Settings) -> int | None:
    """Keys on the node, an upper bound of the backup's for the progress bar (None on a cluster)."""
    if settings.redis_cluster:
        return None
    client = connect_sync(settings)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
