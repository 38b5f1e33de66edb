"""Split protocols: which interactions train the model and which items each test user should get.

* ``leave-one-out``: each user's last interaction is the test item, everything else trains. Users with a single
  interaction are not tested; a user whose last item is already in the rest of the history is not tested
  either (it is excluded from the ranking, so only new items can be hits), and is counted as skipped.
  ``validation=True`` first drops every user's last interaction, so the second-to-last is the target: tune
  on that, report on the real split.
* ``time-split``: interactions before a cut-off time train (default: the 80% quantile of all times); a user's
  test items are the items first interacted with at or after the cut-off. Only users with a training
  history are tested.
* ``repeat``: the time split for repeat purchases: a user's test items are every item they interacted with at
  or after the cut-off, **including items of their training history** (a consumable bought again is a hit), and
  the models rank every item, the user's own history included.
* ``rolling``: what a shop lives: several consecutive time windows, each predicted from everything before it
  (:func:`rolling_windows` gives their bounds, :func:`window_splits` the two views of one window: new items
  only, as ``time-split``, and every item, as ``repeat``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recommender.data import IntArray, Interactions

Protocol = Literal["leave-one-out", "time-split", "repeat", "rolling"]
PROTOCOLS: tuple[Protocol, ...] = ("leave-one-out", "time-split", "repeat", "rolling")
View = Literal["time-split", "repeat"]
VIEWS: tuple[View, ...] = ("time-split", "repeat")


@dataclass(frozen=True, slots=True)
class Split:
    """Training log and, in CSR layout, the relevant items of each test user."""

    train: Interactions
    test_users: IntArray
    test_indptr: IntArray
    test_items: IntArray
    skipped_users: int
    cutoff_ts: int | None = None

    @property
    def n_test_users(self) -> int:
        return len(self.test_users)

    def sample(self, max_users: int | None, seed: int = 0) -> Split:
        """At most ``max_users`` test users, drawn at random (fixed seed); the training log is unchanged."""
        if max_users is None or max_users >= self.n_test_users:
            return self
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        keep = np.sort(np.random.default_rng(seed).choice(self.n_test_users, size=max_users, replace=False))
        lengths = np.diff(self.test_indptr)[keep]
        indptr = np.zeros(len(keep) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        pos = np.concatenate([np.arange(self.test_indptr[k], self.test_indptr[k + 1]) for k in keep.tolist()]).astype(
            np.int64
        )
        return Split(
            self.train, self.test_users[keep], indptr, self.test_items[pos], self.skipped_users, self.cutoff_ts
        )


def _keys(users: np.ndarray, items: np.ndarray, n_items: int) -> IntArray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def _member(keys: IntArray, pool: IntArray) -> np.ndarray:
    """Where ``keys`` occur in ``pool``: ``np.isin`` by one sort and a binary search (numpy's own isin hashes both
    arrays; on a million keys that took seconds)."""
    ordered = np.sort(pool)
    pos = np.searchsorted(ordered, keys).clip(max=max(len(ordered) - 1, 0))
    return (ordered[pos] == keys) if len(ordered) else np.zeros(len(keys), dtype=bool)


def leave_one_out(log: Interactions, *, validation: bool = False) -> Split:
    """Hold out each user's last interaction (the second-to-last with ``validation``)."""
    order = log.chronological()
    if validation:
        order = order[~_last_of_user(log.users[order])]
    users = log.users[order]
    last = _last_of_user(users)
    counts = np.bincount(users, minlength=log.n_users)
    held = last & (counts[users] >= 2)
    train_pos, test_pos = order[~held], order[held]
    train = log.select(_mask(len(log), train_pos))
    test_users = log.users[test_pos].astype(np.int64)
    test_items = log.items[test_pos].astype(np.int64)
    repeat = _member(_keys(test_users, test_items, log.n_items), _keys(train.users, train.items, log.n_items))
    test_users, test_items = test_users[~repeat], test_items[~repeat]
    by_user = np.argsort(test_users, kind="stable")
    return Split(
        train=train,
        test_users=test_users[by_user],
        test_indptr=np.arange(len(test_users) + 1, dtype=np.int64),
        test_items=test_items[by_user],
        skipped_users=int(repeat.sum()),
    )


def time_split(
    log: Interactions, *, quantile: float = 0.8, cutoff_ts: int | None = None, repeats: bool = False
) -> Split:
    """Train before the cut-off; test each user with a training history on the new items after it (with
    ``repeats``, on every item after it, those of the training history included)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    cutoff = int(np.quantile(log.ts, quantile)) if cutoff_ts is None else cutoff_ts
    before = log.ts < cutoff
    if not before.any() or before.all():
        raise ValueError(f"the cut-off {cutoff} leaves no training or no test interactions")
    train = log.select(before)
    after = (~before) & (log.weights > 0)
    keys = np.unique(_keys(log.users[after], log.items[after], log.n_items))
    train_keys = _keys(train.users, train.items, train.n_items)
    if not repeats:
        keys = keys[~_member(keys, train_keys)]
    users, items = keys // log.n_items, keys % log.n_items
    has_history = (np.bincount(train.users, minlength=log.n_users) > 0)[users]  # a lookup, not a sort
    skipped = int(len(np.unique(users[~has_history])))
    users, items = users[has_history], items[has_history]
    test_users, starts = np.unique(users, return_index=True)
    indptr = np.append(starts, len(users)).astype(np.int64)
    return Split(train, test_users.astype(np.int64), indptr, items.astype(np.int64), skipped, cutoff)


@dataclass(frozen=True, slots=True)
class Window:
    """One window of the rolling protocol: train on ``ts < start``, test on ``start <= ts < end`` (epoch ms, or
    positions for position-timed data)."""

    index: int
    start: int
    end: int


def rolling_windows(
    log: Interactions, *, windows: int = 4, quantile: float = 0.8, window_ms: int | None = None
) -> list[Window]:
    """``windows`` consecutive windows ending after the newest interaction. Their length is ``window_ms``, or by
    default the span from the ``quantile`` of event times to the newest one, cut in ``windows`` equal parts; a
    window whose training part would be empty is left out (so fewer may come back)."""
    if windows < 1:
        raise ValueError(f"windows must be at least 1, got {windows}")
    if len(log) == 0:
        raise ValueError("no interactions to split")
    newest = int(log.ts.max())
    end = newest + 1
    if window_ms is None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
        first = int(np.quantile(log.ts, quantile))
        window_ms = max((end - first) // windows, 1)
    if window_ms < 1:
        raise ValueError(f"the window length must be positive, got {window_ms}")
    oldest = int(log.ts.min())
    bounds = [(end - (windows - i) * window_ms, end - (windows - i - 1) * window_ms) for i in range(windows)]
    kept = [(start, stop) for start, stop in bounds if start > oldest]
    return [Window(i, start, stop) for i, (start, stop) in enumerate(kept)]


def window_splits(log: Interactions, window: Window) -> dict[View, Split] | None:
    """The window's two views over the same training log: ``time-split`` (each user's new items in the window)
    and ``repeat`` (every item of the window). None when the window holds no test interaction."""
    sub = log.select(log.ts < window.end)
    try:
        return {
            "time-split": time_split(sub, cutoff_ts=window.start),
            "repeat": time_split(sub, cutoff_ts=window.start, repeats=True),
        }
    except ValueError:
        return None


def _last_of_user(sorted_users: np.ndarray) -> np.ndarray:
    """True at the last position of every user in a user-sorted array."""
    last = np.ones(len(sorted_users), dtype=bool)
    last[:-1] = sorted_users[1:] != sorted_users[:-1]
    return last


def _mask(n: int, positions: IntArray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask
