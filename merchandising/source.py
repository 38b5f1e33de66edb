"""The rules file, re-read when it changes: the last good rules stay in force over an invalid edit.

Like the segment rules (:mod:`analytics.rules_file`), through :class:`core.watched.WatchedFile`: the file's
modification time is checked at most every ``check_interval_s`` seconds (a ``stat``, never a read, on the hot
path); a changed file is parsed and compiled once. A refused file is logged once per change with the rule, the
field and the reason, kept in :attr:`RulesSource.error` for the API, and shown by the ``ecrm_rules_file_valid``
gauge (0). No file at all means no rules (not an error): the engine then serves exactly what the model and the
built-in exclusions give.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import metrics
from core.tenant_files import TenantFiles
from core.tenants import DEFAULT_TENANT
from core.watched import Poll, WatchedFile
from merchandising.rules import EMPTY, RulesError, RuleSet, parse_rules

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[1] / "config" / "rules.yaml"


@dataclass(frozen=True, slots=True)
class RulesStatus:
    path: str
    loaded_at: float | None
    error: str | None
    rules: list[str]


class RulesSource:
    """The rules in force of one file (or none: ``path`` None), reloaded on change."""

    def __init__(
        self,
        path: Path | None,
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.path = path
        self.tenant = tenant  # whose file: the gauges' tenant label
        self._file = WatchedFile(path, check_interval_s, clock) if path is not None else None
        self._rules: RuleSet = EMPTY
        self.loaded_at: float | None = None
        self.error: str | None = None
        self._valid = metrics.RULES_FILE_VALID.labels(metrics.tenant_label(tenant))
        self._in_force = metrics.RULES_IN_FORCE.labels(metrics.tenant_label(tenant))
        self._valid.set(1)
        self._in_force.set(0)

    def current(self, force: bool = False) -> RuleSet:
        found = self._file.poll(force) if self._file is not None else None
        if found is not None and self.path is not None:
            self._take(self.path, found)
        return self._rules

    def status(self) -> RulesStatus:
        return RulesStatus(str(self.path) if self.path else "", self.loaded_at, self.error, self._rules.names)

    def _take(self, path: Path, found: Poll) -> None:
        if isinstance(found.error, FileNotFoundError):  # reported once per disappearance (core.watched)
            if self._rules.rules:
                log.warning("rules file %s is gone: no rules are in force", path)
            self._set(EMPTY)
            return
        if isinstance(found.error, OSError) and found.gone:
            self._refuse(f"{path}: cannot read: {found.error.strerror or found.error}")
            return
        if found.error is not None:
            self._refuse(f"{path}: cannot read: {found.error}")
            return
        try:
            rules = parse_rules(found.text or "", str(path))
        except RulesError as exc:
            self._refuse(str(exc))
            return
        self._set(rules)
        log.info("business rules loaded from %s (%d rules)", path, len(rules.rules))

    def _set(self, rules: RuleSet) -> None:
        for name in rules.names:
            metrics.RULES_APPLIED.labels(name)  # each rule's counter exists from the start, at 0
        self._rules, self.error = rules, None
        self.loaded_at = time.time()
        self._valid.set(1)
        self._in_force.set(len(rules.rules))

    def _refuse(self, message: str) -> None:
        if message != self.error:
            kept = len(self._rules.rules)
            log.error("business rules refused: %s; the previous rules stay in force (%d rules)", message, kept)
        self.error = message
        self._valid.set(0)


RULES_NAME = "rules.yaml"


def rules_path(configured: str | None) -> Path:
    """ECRM_RULES_FILE, else config/rules.yaml of the installation."""
    return Path(configured) if configured else DEFAULT_RULES_PATH


def tenant_rules(
    top_level: Path | None, tenants_dir: Path | None, check_interval_s: float = 2.0
) -> TenantFiles[RulesSource]:
    """Each tenant's business rules: ``<tenants_dir>/<tenant>/rules.yaml`` when present, else the top-level file."""

    return TenantFiles.loaded(
        lambda path, interval, tenant: RulesSource(path, interval, tenant=tenant),
        top_level,
        tenants_dir,
        RULES_NAME,
        check_interval_s,
    )


def load_rules(path: Path) -> RuleSet:
    """Read and validate one rules file (``ecrm rules check``). Raises :class:`RulesError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"(file): cannot read: {exc}"]) from exc
    return parse_rules(text, str(path))
