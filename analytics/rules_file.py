"""The segment rules file, re-read when it changes: the last good rules stay in force over an invalid edit.

A :class:`RulesSource` watches the file (:class:`core.watched.WatchedFile`: its modification time at most every
``check_interval_s`` seconds, and on every :meth:`RulesSource.current` call with ``force=True``, which the refresh
uses). A file that does not parse or
validate is refused with a :class:`~analytics.rules.RulesError` logged once per change and kept in
:attr:`RulesSource.error`, so the API can show it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analytics.rules import RulesError, SegmentRules, parse_rules
from core.tenant_files import TenantFiles
from core.watched import Poll, WatchedFile

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[1] / "config" / "segments.yaml"


@dataclass(frozen=True, slots=True)
class RulesStatus:
    path: str
    loaded_at: float | None
    error: str | None


class RulesSource:
    """The current rules of one file, reloaded on change."""

    def __init__(
        self,
        path: Path,
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        fallback: Path | None = DEFAULT_RULES_PATH,
    ) -> None:
        self.path = path
        self.fallback = fallback if fallback is not None and fallback != path else None
        self._file = WatchedFile(path, check_interval_s, clock)
        self._rules: SegmentRules | None = None
        self._fallback: SegmentRules | None = None
        self.loaded_at: float | None = None
        self.error: str | None = None

    def current(self, force: bool = False) -> SegmentRules:
        """The rules in force: the file's last valid version, else (never valid yet) the shipped default rules.

        Raises :class:`RulesError` only when neither can be loaded.
        """
        found = self._file.poll(force)
        if found is not None:
            self._take(found)
        if self._rules is None:
            if self.fallback is not None:
                return self._fallback_rules(self.fallback)
            raise RulesError(str(self.path), [self.error or "not loaded"])
        return self._rules

    def _fallback_rules(self, path: Path) -> SegmentRules:
        if self._fallback is None:
            self._fallback = load_rules(path)
            log.warning("using the default segment rules of %s until %s is valid", path, self.path)
        return self._fallback

    def status(self) -> RulesStatus:
        return RulesStatus(str(self.path), self.loaded_at, self.error)

    def _take(self, found: Poll) -> None:
        if isinstance(found.error, UnicodeDecodeError):
            self._refuse(f"{self.path} is not UTF-8 text: {found.error}")
            return
        if found.error is not None:
            self._refuse(f"cannot read {self.path}: {found.error.strerror or found.error}")
            return
        try:
            rules = parse_rules(found.text or "", str(self.path))
        except RulesError as exc:
            self._refuse(str(exc))
            return
        self._rules, self.error = rules, None
        self.loaded_at = time.time()
        log.info("segment rules loaded from %s (%d segments)", self.path, len(rules.names))

    def _refuse(self, message: str) -> None:
        if message != self.error:
            kept = "the previous rules stay in force" if self._rules is not None else "no rules are in force"
            log.error("%s; %s", message, kept)
        self.error = message


def load_rules(path: Path) -> SegmentRules:
    """Read and validate one rules file. Raises :class:`RulesError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"cannot read: {exc}"]) from exc
    return parse_rules(text, str(path))


SEGMENTS_NAME = "segments.yaml"


def tenant_segments(
    top_level: Path, tenants_dir: Path | None, check_interval_s: float = 2.0
) -> TenantFiles[RulesSource]:
    """Each tenant's segment rules: ``<tenants_dir>/<tenant>/segments.yaml`` when present, else the top-level file
    (whose shipped default stays the fallback of a tenant's file that never was valid)."""

    def make(path: Path, _tenant: str) -> RulesSource:
        return RulesSource(path, check_interval_s, fallback=top_level)

    return TenantFiles(RulesSource(top_level, check_interval_s), tenants_dir, SEGMENTS_NAME, make, check_interval_s)
