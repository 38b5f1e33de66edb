"""Per-tenant configuration files (issue 22, docs/tenants.md): ``<tenants dir>/<tenant>/<name>`` when present, else
the top-level file.

:class:`TenantFiles` keeps one hot-reloaded source per tenant (rules, campaigns, segment rules: whatever ``make``
builds from a path) beside the shared source of the top-level file. Which one serves a tenant is decided again at
most every ``check_interval_s`` seconds (a ``stat`` of the tenant's file, never a read): a tenant's file created
later takes over, one deleted hands the tenant back to the top-level file. Each source keeps its own last good
version and its own error, so a refused edit of one shop's file never touches another shop.

The tenant ``default`` is served by the top-level files (they are its files, and every other tenant's fallback)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from core.tenants import DEFAULT_TENANT, validate_tenant

S = TypeVar("S")


class Watched(Protocol):
    """A hot-reloaded file's source: ``current(force=True)`` reads it now (and keeps the last good version)."""

    def current(self, force: bool = ...) -> object: ...


W = TypeVar("W", bound=Watched)

DEFAULT_TENANTS_DIR = Path(__file__).resolve().parents[1] / "config" / "tenants"


def tenant_path(tenants_dir: Path, tenant: str, name: str) -> Path:
    """Where the file ``name`` of ``tenant`` lives (pure; the name is checked, so it names no other folder)."""
    return tenants_dir / validate_tenant(tenant) / name


def tenants_dir(configured: str | None) -> Path:
    """``ECRM_TENANTS_DIR``, else ``config/tenants`` of the installation."""
    return Path(configured) if configured else DEFAULT_TENANTS_DIR


@dataclass(slots=True)
class _Choice(Generic[S]):
    checked_at: float
    own: S | None  # the tenant's own file's source, None while it has none


class TenantFiles(Generic[S]):
    """The source of each tenant: its own file's when present, else ``shared`` (the top-level file's)."""

    def __init__(
        self,
        shared: S,
        tenants_dir: Path | None,
        name: str,
        make: Callable[[Path, str], S],
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.tenants_dir = tenants_dir
        self.name = name
        self._make = make
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._choices: dict[str, _Choice[S]] = {}

    @classmethod
    def loaded(
        cls,
        source: Callable[[Path | None, float, str], W],
        top_level: Path | None,
        tenants_dir: Path | None,
        name: str,
        check_interval_s: float = 2.0,
    ) -> TenantFiles[W]:
        """Each tenant's ``source(path, check_interval_s, tenant)`` of its own file ``name`` when present, else of
        ``top_level`` (the tenant ``default``'s, every tenant's fallback); every source is read once at its creation
        (an error is reported at once)."""

        def read(path: Path | None, tenant: str) -> W:
            made = source(path, check_interval_s, tenant)
            made.current(force=True)
            return made

        return TenantFiles(read(top_level, DEFAULT_TENANT), tenants_dir, name, read, check_interval_s)

    @classmethod
    def single(cls, source: S) -> TenantFiles[S]:
        """One source for every tenant (no per-tenant folder): a single-shop engine, a command, a test."""
        return cls(source, None, "", lambda _path, _tenant: source)

    @classmethod
    def of(cls, source: S | TenantFiles[S]) -> TenantFiles[S]:
        """``source`` as per-tenant files (:meth:`single` when it is one source)."""
        return source if isinstance(source, TenantFiles) else cls.single(source)

    def get(self, tenant: str, force: bool = False) -> S:
        """The source serving ``tenant`` (``force``: look at the tenant's folder now)."""
        if tenant == DEFAULT_TENANT or self.tenants_dir is None:
            return self.shared
        now = self._clock()
        choice = self._choices.get(tenant)
        if choice is None or force or now - choice.checked_at >= self.check_interval_s:
            choice = self._choose(tenant, choice, now)
        return choice.own if choice.own is not None else self.shared

    def sources(self) -> list[S]:
        """Every source in use: the top-level file's, then each tenant's own (as of the last look)."""
        return [self.shared, *(c.own for c in self._choices.values() if c.own is not None)]

    def own_file(self, tenant: str) -> Path | None:
        """The tenant's own file when it has one (as of the last look), else None (the top-level file serves it)."""
        choice = self._choices.get(tenant)
        return None if choice is None or choice.own is None or self.tenants_dir is None else self.path_of(tenant)

    def path_of(self, tenant: str) -> Path:
        assert self.tenants_dir is not None
        return tenant_path(self.tenants_dir, tenant, self.name)

    def _choose(self, tenant: str, choice: _Choice[S] | None, now: float) -> _Choice[S]:
        path = self.path_of(tenant)
        try:
            os.stat(path)
            present = True
        except FileNotFoundError:
            present = False
        except OSError:  # there but unreadable: its source reports why, and keeps its last good version
            present = True
        own = choice.own if choice is not None else None
        if present and own is None:
            own = self._make(path, tenant)
        elif not present:
            own = None
        choice = _Choice(now, own)
        self._choices[tenant] = choice
        return choice
