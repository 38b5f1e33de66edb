"""The rules file, re-read when it changes: the last good rules stay in force over an invalid edit.

Like the segment rules (:mod:`analytics.rules_file`): the file's modification time is checked at most every
``check_interval_s`` seconds (a ``stat``, never a read, on the hot path); a changed file is parsed and compiled
once. A refused file is logged once per change with the rule, the field and the reason, kept in
:attr:`RulesSource.error` for the API, and shown by the ``ecrm_rules_file_valid`` gauge (0). No file at all means
no rules (not an error): the engine then serves exactly what the model and the built-in exclusions give.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import metrics
from merchandising.rules import EMPTY, RulesError, RuleSet, parse_rules

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[1] / "config" / "rules.yaml"

_Stamp = tuple[int, int]  # (mtime_ns, size)


@dataclass(frozen=True, slots=True)
class RulesStatus:
    path: str
    loaded_at: float | None
    error: str | None
    rules: list[str]


class RulesSource:
    """The rules in force of one file (or none: ``path`` None), reloaded on change."""

    def __init__(
        self, path: Path | None, check_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._rules: RuleSet = EMPTY
        self._stamp: _Stamp | None = None
        self._checked_at = float("-inf")
        self.loaded_at: float | None = None
        self.error: str | None = None
        metrics.RULES_FILE_VALID.set(1)
        metrics.RULES_IN_FORCE.set(0)

    def current(self, force: bool = False) -> RuleSet:
        now = self._clock()
        if self.path is not None and (force or now - self._checked_at >= self.check_interval_s):
            self._checked_at = now
            self._reload_if_changed(self.path)
        return self._rules

    def status(self) -> RulesStatus:
        return RulesStatus(str(self.path) if self.path else "", self.loaded_at, self.error, self._rules.names)

    def _reload_if_changed(self, path: Path) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self._stamp is not None or self.error is not None or self.loaded_at is None:
                if self._rules.rules:
                    log.warning("rules file %s is gone: no rules are in force", path)
                self._set(EMPTY, None)
            return
        except OSError as exc:
            self._refuse(None, f"{path}: cannot read: {exc.strerror or exc}")
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            rules = parse_rules(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(stamp, f"{path}: cannot read: {exc}")
            return
        except RulesError as exc:
            self._refuse(stamp, str(exc))
            return
        self._set(rules, stamp)
        log.info("business rules loaded from %s (%d rules)", path, len(rules.rules))

    def _set(self, rules: RuleSet, stamp: _Stamp | None) -> None:
        for name in rules.names:
            metrics.RULES_APPLIED.labels(name)  # each rule's counter exists from the start, at 0
        self._rules, self._stamp, self.error = rules, stamp, None
        self.loaded_at = time.time()
        metrics.RULES_FILE_VALID.set(1)
        metrics.RULES_IN_FORCE.set(len(rules.rules))

    def _refuse(self, stamp: _Stamp | None, message: str) -> None:
        if message != self.error:
            kept = len(self._rules.rules)
            log.error("business rules refused: %s; the previous rules stay in force (%d rules)", message, kept)
        self.error = message
        metrics.RULES_FILE_VALID.set(0)
        if stamp is not None:
            self._stamp = stamp


def load_rules(path: Path) -> RuleSet:
    """Read and validate one rules file (``ecrm rules check``). Raises :class:`RulesError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"(file): cannot read: {exc}"]) from exc
    return parse_rules(text, str(path))
