"""Quotas per tenant (issue 22, docs/tenants.md): events per second at the collector, profiles, catalogue items.

The defaults come from the settings (``ECRM_TENANT_EVENTS_PER_S``, ``ECRM_TENANT_PROFILES_MAX``,
``ECRM_TENANT_ITEMS_MAX``; 0 is unlimited); a tenant's ``tenant.yaml`` (in ``ECRM_TENANTS_DIR/<tenant>/``) overrides
any of them in its ``quotas:`` section::

    version: 1
    quotas:
      events_per_s: 200       # 0: unlimited
      profiles_max: 50000
      items_max: 5000

The file is re-read when it changes (:class:`QuotaSource`, on :class:`core.watched.WatchedFile`); an invalid edit is
refused with the field and the reason, and the last good quotas stay in force (the defaults until one was valid)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.settings import Settings
from core.tenant_files import TenantFiles
from core.watched import Poll, WatchedFile

log = logging.getLogger(__name__)

TENANT_FILE = "tenant.yaml"


@dataclass(frozen=True, slots=True)
class Quotas:
    """A tenant's quotas; 0 is unlimited."""

    events_per_s: int = 0
    profiles_max: int = 0
    items_max: int = 0


class QuotaError(ValueError):
    """An invalid ``tenant.yaml``: the path, then each field and why."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.problems = problems


class _QuotaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    events_per_s: int | None = Field(None, ge=0, le=10_000_000)
    profiles_max: int | None = Field(None, ge=0)
    items_max: int | None = Field(None, ge=0)


class _TenantFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(1, ge=1, le=1)
    quotas: _QuotaSpec = _QuotaSpec()


def parse_quotas(text: str, path: str, defaults: Quotas) -> Quotas:
    """The quotas a ``tenant.yaml`` gives, each unset one the default (pure). Raises :class:`QuotaError`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise QuotaError(path, [f"(file): not YAML: {exc}"]) from exc
    if data is None:
        return defaults
    if not isinstance(data, dict):
        raise QuotaError(path, [f"(file): expected a mapping with a 'quotas:' section, got {type(data).__name__}"])
    try:
        spec = _TenantFile.model_validate(data).quotas
    except ValidationError as exc:
        raise QuotaError(
            path, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        ) from exc
    return Quotas(
        defaults.events_per_s if spec.events_per_s is None else spec.events_per_s,
        defaults.profiles_max if spec.profiles_max is None else spec.profiles_max,
        defaults.items_max if spec.items_max is None else spec.items_max,
    )


class QuotaSource:
    """The quotas in force of one tenant: its ``tenant.yaml`` when there is one (``path``), else the defaults."""

    def __init__(
        self,
        path: Path | None,
        defaults: Quotas,
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.defaults = defaults
        self._file = WatchedFile(path, check_interval_s, clock) if path is not None else None
        self._quotas = defaults
        self.error: str | None = None

    def current(self, force: bool = False) -> Quotas:
        found = self._file.poll(force) if self._file is not None else None
        if found is not None and self.path is not None:
            self._take(self.path, found)
        return self._quotas

    def _take(self, path: Path, found: Poll) -> None:
        if isinstance(found.error, FileNotFoundError):
            self._quotas, self.error = self.defaults, None
            return
        if found.error is not None:
            self._refuse(f"{path}: cannot read: {found.error}")
            return
        try:
            self._quotas = parse_quotas(found.text or "", str(path), self.defaults)
        except QuotaError as exc:
            self._refuse(str(exc))
            return
        self.error = None
        log.info("tenant quotas loaded from %s: %s", path, self._quotas)

    def _refuse(self, message: str) -> None:
        if message != self.error:
            log.error("tenant quotas refused: %s; the previous quotas stay in force (%s)", message, self._quotas)
        self.error = message


def default_quotas(settings: Settings) -> Quotas:
    """The quotas of a tenant without a ``tenant.yaml`` (``ECRM_TENANT_*``)."""
    return Quotas(settings.tenant_events_per_s, settings.tenant_profiles_max, settings.tenant_items_max)


def tenant_quotas(settings: Settings, tenants_dir: Path | None) -> TenantFiles[QuotaSource]:
    """Each tenant's quotas: its ``<tenants_dir>/<tenant>/tenant.yaml`` over the defaults, re-read when it changes.
    The tenant ``default`` has the defaults (its files are the top-level ones, and there is no top-level
    ``tenant.yaml``)."""
    defaults = default_quotas(settings)
    interval = settings.rules_check_interval_s

    def make(path: Path, _tenant: str) -> QuotaSource:
        source = QuotaSource(path, defaults, interval)
        source.current(force=True)
        return source

    return TenantFiles(QuotaSource(None, defaults), tenants_dir, TENANT_FILE, make, interval)
