"""Fair training across tenants (stream/training_queue.py, pure): the longest-due tenant first, at most the
configured trainings at once, no tenant starved by a large one always due, a failed tenant backing off, a tenant
too small to train never due."""

from __future__ import annotations

import random

from core.registry import TrainingStatus
from core.settings import Settings
from stream.retrain import Trainings, train_command
from stream.training_queue import TrainingQueue


def test_the_longest_due_tenant_goes_first_ties_by_name() -> None:
    q = TrainingQueue(slots=1)
    q.observe("b", True, 5)
    q.observe("c", True, 3)
    q.observe("a", True, 5)
    assert q.next(10) == ["c"]
    q.started("c")
    assert q.next(11) == []  # the one slot is taken
    q.finished("c", True, 12)
    assert q.next(12) == ["a"]


def test_at_most_the_configured_trainings_run_at_once() -> None:
    q = TrainingQueue(slots=2)
    for i, tenant in enumerate("abcd"):
        q.observe(tenant, True, i)
    first = q.next(10)
    assert first == ["a", "b"]
    for tenant in first:
        q.started(tenant)
    assert q.next(11) == [] and q.waiting() == 2
    q.finished("b", True, 12)
    assert q.next(12) == ["c"]


def test_a_running_tenant_is_not_queued_again_and_a_tenant_no_longer_due_leaves_the_line() -> None:
    q = TrainingQueue(slots=2)
    q.observe("a", True, 0)
    q.started("a")
    q.observe("a", True, 1)  # its counts are those before the training: ignored
    assert "a" not in q.due_since
    q.observe("b", True, 2)
    q.observe("b", False, 3)
    assert q.next(4) == []


def test_a_failed_tenant_backs_off_and_a_locked_one_waits_without_losing_its_place() -> None:
    q = TrainingQueue(slots=1, backoff_ms=1000)
    q.observe("a", True, 0)
    q.started("a")
    q.finished("a", False, 10)
    q.observe("a", True, 11)
    q.observe("b", True, 12)
    assert q.next(20) == ["b"]  # a is in its back-off
    assert q.next(20, blocked=["b"]) == []  # b's lock is held elsewhere, a still backs off
    assert q.next(1010, blocked=["b"]) == ["a"]


def test_a_large_tenant_always_due_never_starves_the_others() -> None:
    """One slot; the large shop is due again at every check; small shops become due at random times. Every small
    shop starts within as many trainings as there are tenants after it became due."""
    rng = random.Random(7)
    tenants = ["big", *(f"small-{i}" for i in range(5))]
    q = TrainingQueue(slots=1)
    became_due: dict[str, int] = {}
    waits: list[int] = []
    trainings = 0
    for now in range(1, 400):
        q.observe("big", True, now)
        for tenant in tenants[1:]:
            if tenant not in q.running and tenant not in became_due and rng.random() < 0.1:
                became_due[tenant] = trainings
                q.observe(tenant, True, now)
        for tenant in q.next(now):
            q.started(tenant)
            if tenant in became_due:
                waits.append(trainings - became_due.pop(tenant))
        trainings += 1
        for tenant in list(q.running):  # each training lasts one check
            q.finished(tenant, True, now)
    assert len(waits) > 20 and max(waits) <= len(tenants)
    assert trainings - sum(1 for _ in waits) > 0  # the large shop trained too


def test_a_tenant_too_small_to_train_is_never_due() -> None:
    trainings = Trainings(Settings(training_min_interactions=100), ("default",), None)  # type: ignore[arg-type]
    assert not trainings.due(TrainingStatus(99, None, None, False), 0)
    assert trainings.due(TrainingStatus(100, None, None, False), 0)
    assert not trainings.due(TrainingStatus(150, 150, 0, False), 1)  # nothing new


def test_the_training_command_names_the_tenant() -> None:
    assert train_command("default")[-1] == "train"
    assert train_command("shop-a")[-3:] == ["train", "--tenant", "shop-a"]
