"""Reading the training log (``{prefix}:interactions``, fields ``p`` profile, ``i`` item, ``w`` weight, ``t`` time)
into an :class:`~recommender.data.Interactions`, fast enough for a million entries:

* the stream is split by entry id into time ranges (:func:`id_ranges`) read by a few connections at once, so that
  Redis writes one reply while the trainer parses the last;
* each XRANGE reply is taken as the raw lists of bytes (redis-py's per-entry dicts cost more than the data) and cut
  into columns (:func:`parse_chunk`), the worker's field order by C-level ``itemgetter`` calls, any other form entry
  by entry (:func:`entry_values`);
* ids are coded by hashing the bytes (:func:`code_columns`, pandas ``factorize``) and only the distinct ones are
  decoded; weights are parsed once per distinct value.

The result is the same as reading entry by entry: ids coded in order of first appearance, the entries of erased
profiles (up to their erasure) left out, visitors who logged in mapped to their customer.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import pandas as pd
import redis

from core.keyspace import Keys, ProfileId, parse_pid
from core.redis import redis_errors
from recommender.data import Int32Array, IntArray, Interactions

RawEntry = tuple[bytes, list[bytes]]
"""One entry of an XRANGE reply as it comes: the entry id and the flat list of field names and values."""

WORKER_FIELDS = (b"p", b"i", b"w", b"t")  # the order in which profiles/apply.lua writes the fields
_NAMES = itemgetter(0, 2, 4, 6)
_COLUMNS = tuple(itemgetter(k) for k in (1, 3, 5, 7))
MAX_SEQ = 2**64 - 1  # the largest sequence number of a stream id


def entry_values(fields: Sequence[bytes]) -> tuple[bytes, bytes, bytes, bytes]:
    """Profile, item, weight and time (raw bytes) of one entry in any form it was written in: fields ``p``, ``i``,
    ``w``, ``t`` in any order, or the older tab-joined ``d``. ValueError for an entry that lacks one."""
    entry = dict(zip(fields[0::2], fields[1::2], strict=True))
    if b"d" in entry and b"p" not in entry:
        parts = entry[b"d"].split(b"\t")
        if len(parts) != 4:
            raise ValueError(f"training log entry with a malformed field d: {entry[b'd']!r}")
        return parts[0], parts[1], parts[2], parts[3]
    try:
        return entry[b"p"], entry[b"i"], entry[b"w"], entry[b"t"]
    except KeyError as exc:
        raise ValueError(f"training log entry without field {exc}") from exc


@dataclass(frozen=True, slots=True)
class LogColumns:
    """Raw columns of training-log entries, in log order."""

    profiles: list[bytes]
    items: list[bytes]
    weights: list[bytes]
    ts: list[bytes]

    def __len__(self) -> int:
        return len(self.profiles)

    @classmethod
    def concat(cls, parts: Sequence[LogColumns]) -> LogColumns:
        out = cls([], [], [], [])
        for part in parts:
            out.profiles.extend(part.profiles)
            out.items.extend(part.items)
            out.weights.extend(part.weights)
            out.ts.extend(part.ts)
        return out


def parse_chunk(rows: Sequence[RawEntry]) -> LogColumns:
    """The columns of one XRANGE reply (pure). Entries as the worker writes them are cut by C-level calls; a reply
    holding any other form is read entry by entry (:func:`entry_values`)."""
    fields = [f for _, f in rows]
    if set(map(len, fields)) <= {8} and set(map(_NAMES, fields)) <= {WORKER_FIELDS}:
        p, i, w, t = (list(map(column, fields)) for column in _COLUMNS)
        return LogColumns(p, i, w, t)
    values = [entry_values(f) for f in fields]
    return LogColumns(*(list(map(itemgetter(k), values)) for k in range(4)))


@dataclass(frozen=True, slots=True)
class CodedLog:
    """The log with profiles and items coded (in order of first appearance) and numbers parsed."""

    profiles: Int32Array
    profile_ids: tuple[str, ...]
    items: Int32Array
    item_ids: tuple[str, ...]
    weights: np.ndarray
    ts: IntArray


def _factorize(values: list[bytes]) -> tuple[Int32Array, list[bytes]]:
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    return codes.astype(np.int32), list(uniques)


def _decode(raw: list[bytes], what: str) -> tuple[str, ...]:
    try:
        return tuple(b.decode() for b in raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"training log {what} that is not UTF-8: {exc}") from exc


def code_columns(columns: LogColumns) -> CodedLog:
    """Code and parse raw columns (pure): ids hashed as bytes and decoded once each, weights parsed once per
    distinct value, times as integers. ValueError for a weight or a time that is not a number."""
    profiles, profile_raw = _factorize(columns.profiles)
    items, item_raw = _factorize(columns.items)
    weight_codes, weight_raw = _factorize(columns.weights)
    try:
        weight_values = np.array([float(w) for w in weight_raw], dtype=np.float64)
        ts = np.fromiter(map(int, columns.ts), dtype=np.int64, count=len(columns.ts))
    except ValueError as exc:
        raise ValueError(f"training log entry with a bad number: {exc}") from exc
    return CodedLog(
        profiles=profiles,
        profile_ids=_decode(profile_raw, "profile id"),
        items=items,
        item_ids=_decode(item_raw, "item id"),
        weights=weight_values[weight_codes] if len(weight_codes) else np.zeros(0, dtype=np.float64),
        ts=ts,
    )


def recode(codes: Int32Array, ids: Sequence[str]) -> tuple[Int32Array, tuple[str, ...]]:
    """Codes renumbered in order of first appearance with only the ids they use (pure)."""
    new, used = pd.factorize(codes)
    return new.astype(np.int32), tuple(ids[k] for k in used.tolist())


def to_interactions(log: CodedLog, erased: dict[str, float], alias: dict[str, str]) -> Interactions:
    """The training data (pure): entries of erased profiles up to their erasure left out, profiles mapped through
    ``alias`` (visitor -> customer profile id), ids coded in order of first appearance as
    :meth:`Interactions.from_records` does."""
    erased_at = np.array([erased.get(p, -np.inf) for p in log.profile_ids], dtype=np.float64)
    keep = log.ts > erased_at[log.profiles] if erased else np.ones(len(log.ts), dtype=bool)
    users, user_ids = _factorize_str([alias.get(p, p) for p in log.profile_ids])
    user_codes, user_ids = recode(users[log.profiles[keep]], user_ids)
    item_codes, item_ids = recode(log.items[keep], log.item_ids)
    return Interactions(
        users=user_codes,
        items=item_codes,
        weights=log.weights[keep].astype(np.float32),
        ts=log.ts[keep],
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _factorize_str(values: list[str]) -> tuple[Int32Array, tuple[str, ...]]:
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    return codes.astype(np.int32), tuple(str(u) for u in uniques)


def kept_profiles(log: CodedLog, erased: dict[str, float]) -> list[str]:
    """Profile ids with at least one entry not erased."""
    erased_at = np.array([erased.get(p, -np.inf) for p in log.profile_ids], dtype=np.float64)
    counts = np.bincount(log.profiles[log.ts > erased_at[log.profiles]], minlength=len(log.profile_ids))
    return [p for p, n in zip(log.profile_ids, counts.tolist(), strict=True) if n]


def id_ranges(first_ms: int, last_ms: int, parts: int) -> list[tuple[str, str]]:
    """Up to ``parts`` consecutive XRANGE bounds (inclusive, by entry time) that cover every id from ``first_ms``
    to ``last_ms`` (pure)."""
    if parts < 1 or last_ms < first_ms:
        raise ValueError(f"cannot split ids {first_ms}..{last_ms} into {parts} ranges")
    cuts = sorted({first_ms + (last_ms - first_ms + 1) * k // parts for k in range(parts)} | {last_ms + 1})
    return [(f"{lo}-0", f"{hi - 1}-{MAX_SEQ}") for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]


def raw_client(client: redis.Redis, key: str) -> redis.Redis:
    """A client sharing ``client``'s connections (those of the node holding ``key`` on a cluster) whose XRANGE
    replies come back as raw lists."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(key)
        client = node.redis_connection or client.get_redis_connection(node)
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.set_response_callback("XRANGE", lambda response, **_: response)
    raw.set_response_callback("XREVRANGE", lambda response, **_: response)
    return raw


def _read_range(raw: redis.Redis, key: str, start: str, end: str, chunk: int) -> LogColumns:
    parts: list[LogColumns] = []
    lo: bytes | str = start
    while True:
        with redis_errors("reading the training log"):
            rows = raw.execute_command("XRANGE", key, lo, end, "COUNT", chunk)
        if not rows:
            break
        parts.append(parse_chunk(rows))
        if len(rows) < chunk:
            break
        lo = b"(" + rows[-1][0]
    return LogColumns.concat(parts)


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def read_columns(
    client: redis.Redis, key: str, chunk: int = 10_000, readers: int = 2, after: str | None = None
) -> LogColumns:
    """Every entry of the stream ``key`` (after the id ``after`` when given) up to the newest one when the read
    starts, read in ``readers`` * 4 id ranges by ``readers`` connections at once."""
    raw = raw_client(client, key)
    with redis_errors("reading the training log"):
        first = raw.execute_command("XRANGE", key, f"({after}" if after else "-", "+", "COUNT", 1)
        last = raw.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
    if not first or not last:
        return LogColumns([], [], [], [])
    ranges = id_ranges(_entry_ms(first[0][0]), _entry_ms(last[0][0]), max(readers, 1) * 4)
    ranges[0] = (first[0][0].decode(), ranges[0][1])  # the first entry (after ``after``) on
    ranges[-1] = (ranges[-1][0], last[0][0].decode())  # a snapshot: entries added while reading wait for the next
    if readers <= 1:
        return LogColumns.concat([_read_range(raw, key, lo, hi, chunk) for lo, hi in ranges])
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="ecrm-log") as pool:
        parts = list(pool.map(lambda r: _read_range(raw, key, r[0], r[1], chunk), ranges))
    return LogColumns.concat(parts)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block: reading the log makes millions of small lists and bytes
    that live until the columns are coded, and the collector would walk all of them again and again (it tripled the
    read time). Nothing in the block makes reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_interactions(client: redis.Redis, keys: Keys, chunk: int = 10_000, readers: int = 2) -> Interactions:
    """The training log with visitors who logged in mapped to their customer, and the entries of erased profiles
    (up to their erasure) left out."""
    erased = erasures(client, keys)
    with gc_paused():
        log = code_columns(read_columns(client, keys.interactions, chunk, readers))
    return training_data(client, keys, log, erased)


def training_data(client: redis.Redis, keys: Keys, log: CodedLog, erased: dict[str, float]) -> Interactions:
    """The coded log as training data: erased entries left out, visitors who logged in mapped to their customer."""
    anonymous = sorted(who.ident for who in map(parse_pid, kept_profiles(log, erased)) if who.kind == "a")
    return to_interactions(log, erased, _aliases(client, keys, anonymous))


def erasures(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """Erased profile id -> erasure time (ms)."""
    with redis_errors("reading the erasures"):
        rows = client.zrange(keys.erasures, 0, -1, withscores=True)
    return {member.decode(): float(score) for member, score in rows}


def _aliases(client: redis.Redis, keys: Keys, anonymous: list[str]) -> dict[str, str]:
    """Visitor profile id -> the profile id of the customer the visitor last logged in as (those who did)."""
    alias: dict[str, str] = {}
    for start in range(0, len(anonymous), 10_000):
        part = anonymous[start : start + 10_000]
        with redis_errors("reading visitor aliases"):
            pipe = client.pipeline(transaction=False)
            for anon in part:
                pipe.hget(keys.alias(anon), "c")
            customers = pipe.execute()
        for anon, customer in zip(part, customers, strict=True):
            if customer is not None:
                alias[str(ProfileId("a", anon))] = str(ProfileId("c", customer.decode()))
    return alias
