"""Pass/fail against the targets: the 95th percentile of each endpoint and of all requests, and the failure ratio.

Pure: works on anything shaped like locust's ``RequestStats`` (so it is checked without starting locust)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from common.config import Targets


class EntryLike(Protocol):
    """The parts of ``locust.stats.StatsEntry`` used here."""

    name: str
    num_requests: int
    num_failures: int

    def get_response_time_percentile(self, percent: float) -> int: ...


class StatsLike(Protocol):
    """The parts of ``locust.stats.RequestStats`` used here."""

    @property
    def total(self) -> EntryLike: ...

    @property
    def entries(self) -> Mapping[tuple[str, str], EntryLike]: ...


def breaches(stats: StatsLike, targets: Targets) -> list[str]:
    """Why the run missed its targets, one line per reason (empty when it met them)."""
    total = stats.total
    if total.num_requests == 0:
        return ["no request was made"]
    problems: list[str] = []
    ratio = total.num_failures / total.num_requests
    if ratio > targets.max_fail_ratio:
        problems.append(
            f"failure ratio {ratio:.2%} ({total.num_failures}/{total.num_requests}) "
            f"exceeds {targets.max_fail_ratio:.2%}"
        )
    named: Iterable[tuple[str, EntryLike]] = [
        (f"{method} {entry.name}", entry) for (_, method), entry in sorted(stats.entries.items())
    ]
    for label, entry in [*named, ("all requests", total)]:
        if entry.num_requests == 0:
            continue
        p95 = entry.get_response_time_percentile(0.95)
        if p95 > targets.p95_ms:
            problems.append(f"p95 of {label} is {p95} ms, above {targets.p95_ms:g} ms")
    return problems
