"""The trainer's parts: the holdout check's user sample, the training child's priority."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from recommender.data import Interactions
from stream.retrain import background_child
from trainer.training import holdout_split, sample_users


def _log(users: int, per_user: int) -> Interactions:
    records = [
        (f"c:u{u}", f"i{(u + k) % 40}", 1.0, 1_000 + k * users + u) for u in range(users) for k in range(per_user)
    ]
    return Interactions.from_records(records)


def test_sample_keeps_the_judged_users_and_draws_the_rest() -> None:
    log = _log(200, 5)
    keep = np.array([3, 7, 150], dtype=np.int64)
    sample = sample_users(log, keep, 50)
    users = set(np.unique(sample.users).tolist())
    assert len(users) == 50 and {3, 7, 150} <= users
    assert sample.user_ids == log.user_ids and sample.item_ids == log.item_ids
    assert len(sample) == 50 * 5  # every interaction of a drawn user, none of the others


def test_sample_of_zero_or_more_users_than_present_is_the_whole_log() -> None:
    log = _log(30, 3)
    keep = np.array([0], dtype=np.int64)
    assert sample_users(log, keep, 0) is log
    assert sample_users(log, keep, 30) is log


def test_holdout_trains_on_the_sample_and_judges_the_same_users() -> None:
    log = _log(400, 6)
    whole = holdout_split(log, 0.2, max_users=40)
    sampled = holdout_split(log, 0.2, max_users=40, train_users=100)
    assert whole is not None and sampled is not None
    assert np.array_equal(whole.test_users, sampled.test_users)
    assert len(np.unique(sampled.train.users)) == 100 < len(np.unique(whole.train.users))
    assert set(sampled.test_users.tolist()) <= set(np.unique(sampled.train.users).tolist())


def test_the_training_child_runs_at_the_lowest_priority_as_a_batch_job() -> None:
    probe = "import os; print(os.nice(0), os.sched_getscheduler(0) == os.SCHED_BATCH)"
    out = subprocess.run(
        [sys.executable, "-c", probe], preexec_fn=background_child, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["19", "True"]
