"""Fair training across tenants (issue 22; pure): who trains next when several shops are due.

Each tenant is due on its own triggers (:func:`stream.retrain.should_retrain`: never trained, N new interactions,
or T seconds with a new one). At most ``slots`` trainings run at once (``ECRM_TRAINING_CONCURRENCY``), one per
tenant; a free slot goes to the tenant that has been due the longest (the first check that found it due), ties by
name. A tenant that just trained goes to the back of the line: when it is due again, every tenant due before it
trains first. So no tenant waits for more than the trainings of the tenants due before it (at most one each),
however large one shop is and however often it is due again: no tenant starves.

A tenant with fewer than ``min_interactions`` interactions logged is never due: too small to train, it serves the
popular items (the recommender's fallback chain, as an engine without a model does). A tenant whose last training
failed waits ``backoff_ms`` before it may start again (its error is in the worker's log)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class TrainingQueue:
    slots: int
    backoff_ms: int = 60_000
    due_since: dict[str, int] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    not_before: dict[str, int] = field(default_factory=dict)

    def observe(self, tenant: str, due: bool, now_ms: int) -> None:
        """What the last check found for ``tenant`` (a running tenant is not looked at: its counts are old)."""
        if tenant in self.running:
            return
        if due:
            self.due_since.setdefault(tenant, now_ms)
        else:
            self.due_since.pop(tenant, None)

    def next(self, now_ms: int, blocked: Iterable[str] = ()) -> list[str]:
        """The tenants to start now, longest-due first, as many as there are free slots (``blocked``: tenants whose
        training lock someone else holds)."""
        free = self.slots - len(self.running)
        if free <= 0:
            return []
        skip = set(blocked) | self.running
        waiting = sorted(
            (since, tenant)
            for tenant, since in self.due_since.items()
            if tenant not in skip and self.not_before.get(tenant, 0) <= now_ms
        )
        return [tenant for _, tenant in waiting[:free]]

    def started(self, tenant: str) -> None:
        self.running.add(tenant)
        self.due_since.pop(tenant, None)

    def finished(self, tenant: str, ok: bool, now_ms: int) -> None:
        """A training ended: ``ok`` when it promoted or was refused by the holdout gate, else it failed."""
        self.running.discard(tenant)
        if ok:
            self.not_before.pop(tenant, None)
        else:
            self.not_before[tenant] = now_ms + self.backoff_ms

    def waiting(self) -> int:
        """Tenants due that are not training."""
        return sum(1 for tenant in self.due_since if tenant not in self.running)
