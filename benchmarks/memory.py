"""``ecrm bench memory``: Redis bytes per profile for a typical history, measured at scale.

Every profile gets the same kind of history, applied through the worker's own write path (``ProfileStore.
apply_plans``, the ``apply.lua`` script): by default 20 events over 10 items in 3 sessions (17 product views, 2 add
to carts, 1 purchase of one line) from a catalogue of 10,000 items written first. The figures are growths of Redis'
``used_memory`` from after the catalogue, divided by the number of profiles: they hold everything a profile costs,
also outside its own keys (its entries in the training log), and the global keys' growth (trending, popular, the
profile count) shared out.

* **at rest** (the headline, ``bytes_per_profile``): a profile whose last event is older than the de-duplication
  window (``ECRM_DEDUPE_WINDOW_S``) -- most profiles of a shop at any time. Its de-duplication set has expired then:
  the bench deletes the sets as their expiry would, and measures again;
* **within the window** (``bytes_per_profile_in_window``): right after the events, de-duplication sets included (a
  single node's set; on a Redis Cluster each event has a marker key of its own, kept ``ECRM_DEDUPE_TTL_DAYS``).

Before the figure at rest the training log is drained into the trainer's store on disk (trainer/logstore.py), as the
worker's timer and every training do: Redis then holds only the tail not yet copied. The store's files are weighed
too (``training_log_disk_bytes_per_profile``, on disk, not in Redis).

A sample of profiles is weighed key by key (``MEMORY USAGE``, within the window) to say what dominates, and the
profile's hash field by field (``hash_fields``: what each kind of field takes of the hash's listpack, from the
listpack's encoding of each name and value; the rest of ``MEMORY USAGE`` is the key itself and the listpack's
header). ``hash_encoding`` says how many sampled hashes are listpacks (the compact form).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.keyspace import ProfileId
from core.redis import connect, connect_sync
from core.settings import Settings, isolated
from profiles.layout import AFFINITY, CART, COUNTS, ITEM, LAST_SESSION, SESSIONS
from profiles.store import ProfileStore
from profiles.updates import DIRECT, CartChange, CatalogueUpdate, Interaction, Plan
from trainer.logstore import TrainingLogStore

Echo = Callable[[str], None]
GIB = 1024**3
CATALOGUE = 10_000
BASE_TS = 1_790_000_000_000
TARGET_GIB_PER_MILLION = 0.75  # issue 20


@dataclass
class MemoryFigures:
    profiles: int
    events_per_profile: int
    items_per_profile: int
    bytes_per_profile: float  # at rest: the de-duplication window passed
    bytes_per_profile_in_window: float = 0.0  # right after the events: de-duplication sets included
    parts: dict[str, float] = field(default_factory=dict)  # bytes per profile by kind of key (sampled)
    hash_fields: dict[str, float] = field(default_factory=dict)  # listpack bytes per profile by kind of field
    hash_encoding: dict[str, int] = field(default_factory=dict)  # sampled hashes per encoding
    used_memory_bytes: int = 0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    store_bytes_per_profile: float = 0.0  # the training-log store's files on disk, after the drain
    drain_s: float = 0.0  # the drain that moved the training log out of Redis

    @property
    def gib_per_million(self) -> float:
        return self.bytes_per_profile * 1_000_000 / GIB

    @property
    def met(self) -> bool:
        return self.gib_per_million <= TARGET_GIB_PER_MILLION

    def lines(self) -> list[str]:
        out = [
            f"profiles                    {self.profiles} ({self.events_per_profile} events over "
            f"{self.items_per_profile} items each)",
            f"bytes per profile at rest   {self.bytes_per_profile:10.0f}   (the de-duplication window passed)",
            f"GiB per 1M profiles         {self.gib_per_million:10.3f}   (target <= {TARGET_GIB_PER_MILLION}: "
            f"{'met' if self.met else 'not met'})",
            f"bytes per profile in window {self.bytes_per_profile_in_window:10.0f}   (right after its events)",
            f"training log on disk        {self.store_bytes_per_profile:10.0f}   bytes per profile (the store's "
            f"files; drained from Redis in {self.drain_s:.1f}s)",
            "by kind of key (sampled within the window, MEMORY USAGE, bytes per profile):",
        ]
        out += [f"  {name:<24}{size:10.0f}" for name, size in sorted(self.parts.items(), key=lambda kv: -kv[1])]
        encodings = ", ".join(f"{n} {enc}" for enc, n in sorted(self.hash_encoding.items()))
        out.append(f"the profile hash by kind of field (listpack bytes per profile; sampled hashes: {encodings}):")
        out += [f"  {name:<24}{size:10.0f}" for name, size in sorted(self.hash_fields.items(), key=lambda kv: -kv[1])]
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "profiles": self.profiles,
            "events_per_profile": self.events_per_profile,
            "items_per_profile": self.items_per_profile,
            "bytes_per_profile": round(self.bytes_per_profile, 1),
            "redis_bytes_per_profile": round(self.bytes_per_profile, 1),
            "training_log_disk_bytes_per_profile": round(self.store_bytes_per_profile, 1),
            "training_log_drain_s": round(self.drain_s, 2),
            "gib_per_million": round(self.gib_per_million, 4),
            "target_gib_per_million": TARGET_GIB_PER_MILLION,
            "met": self.met,
            "bytes_per_profile_in_window": round(self.bytes_per_profile_in_window, 1),
            "gib_per_million_in_window": round(self.bytes_per_profile_in_window * 1_000_000 / GIB, 4),
            "parts": {name: round(size, 1) for name, size in self.parts.items()},
            "hash_fields": {name: round(size, 1) for name, size in self.hash_fields.items()},
            "hash_encoding": dict(self.hash_encoding),
            "used_memory_bytes": self.used_memory_bytes,
            "load_avg": list(self.load_avg),
        }


def event_id(profile: int, k: int) -> str:
    """A 32-hex-digit id (as long as a UUID's hex form), known again when the sample is weighed."""
    return f"{profile:016x}{k:016x}"


def history(profile: int, events: int, items: int) -> list[Plan]:
    """One profile's typical history: views over ``items`` items, two add to carts, one purchase (pure)."""
    pid = ProfileId("c", f"cust-{profile:07d}")
    own = [f"sku-{(profile * 7919 + k * 104_729) % CATALOGUE:05d}" for k in range(items)]
    plans: list[Plan] = []
    for k in range(events):
        item = own[k % items]
        kind, weight, revenue = "product_view", 1.0, None
        cart: tuple[CartChange, ...] = ()
        if k == events - 1:
            kind, weight, cart, revenue = "purchase", 5.0, (CartChange(item, 0),), 19.99
        elif k >= events - 3:
            kind, weight, cart = "add_to_cart", 3.0, (CartChange(item, 1),)
        plans.append(
            Plan(
                event_id(profile, k),
                kind,
                BASE_TS + profile * 1000 + k * 60_000,
                pid,
                session=f"s{profile}-{k * 3 // events}",
                interactions=(Interaction(item, "", weight),),
                cart=cart,
                revenue=revenue,
            )
        )
    return plans


def catalogue_plans() -> list[Plan]:
    return [
        Plan(
            uuid.uuid4().hex,
            "item",
            BASE_TS,
            catalogue=CatalogueUpdate(f"sku-{i:05d}", f"Item {i}", f"cat-{i % 50}", 9.99 + i % 90, True),
        )  # fmt: skip
        for i in range(CATALOGUE)
    ]


async def apply_all(store: ProfileStore, plans: list[Plan], chunk: int = 500, parallel: int = 4) -> None:
    """Apply ``plans`` in chunks, ``parallel`` calls in flight (one profile's plans stay in one chunk, in order)."""
    chunks = [plans[i : i + chunk] for i in range(0, len(plans), chunk)]
    for start in range(0, len(chunks), parallel):
        await asyncio.gather(*(store.apply_plans(c) for c in chunks[start : start + parallel]))


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def _int64(text: str) -> int | None:
    """The integer a listpack stores ``text`` as, or None when it stays a string (not an exact canonical int64)."""
    if not text or len(text) > 20 or text != text.strip() or (text[0] == "0" and len(text) > 1) or text == "-0":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 and str(value) == text else None


def listpack_entry_bytes(text: str) -> int:
    """The bytes of one listpack entry holding ``text`` (its encoding, data and back-length; pure)."""
    value = _int64(text)
    if value is not None:
        for bits, size in ((7, 1), (13, 2), (16, 3), (24, 4), (32, 5), (64, 9)):
            low, high = (0, 127) if bits == 7 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if low <= value <= high:
                return size + 1
    n = len(text.encode())
    size = (1 if n < 64 else 2 if n < 4096 else 5) + n
    return size + (1 if size < 128 else 2 if size < 16_384 else 3 if size < 2_097_152 else 4)


def field_kind(name: str) -> str:
    """A profile hash field's kind, for the breakdown (profiles/layout.py)."""
    kinds = {ITEM: "items (i:)", AFFINITY: "affinities (a:)", CART: "cart (k:)"}
    if name[:2] in kinds:
        return kinds[name[:2]]
    if name in (SESSIONS, LAST_SESSION):
        return "sessions (ss, sl)"
    if name.startswith("#"):
        return "counts (#i, #a, #k)"
    if name.startswith(COUNTS):
        return "event counts (n:)"
    return "counters and times"


def weigh_sample(r: redis.Redis, store: ProfileStore, sample: list[int], events: int) -> dict[str, float]:
    """Bytes per profile by kind of key, from ``MEMORY USAGE`` of every key of the sampled profiles."""
    totals: dict[str, float] = defaultdict(float)
    for profile in sample:
        pid = ProfileId("c", f"cust-{profile:07d}")
        totals["profile hash"] += r.memory_usage(store.keys.profile(pid), samples=0) or 0
        markers = [store.keys.seen(pid, DIRECT, event_id(profile, k)) for k in range(events)]  # on a cluster
        markers.append(store.keys.seen_set(pid))  # on a single node
        totals["dedupe markers"] += sum(r.memory_usage(k, samples=0) or 0 for k in markers)
        totals["visitors set"] += r.memory_usage(store.keys.visitors(pid.ident), samples=0) or 0
    return {part: size / len(sample) for part, size in totals.items()}


def weigh_fields(r: redis.Redis, store: ProfileStore, sample: list[int]) -> tuple[dict[str, float], dict[str, int]]:
    """Listpack bytes per profile by kind of field of the sampled hashes, and how many hashes per encoding."""
    totals: dict[str, float] = defaultdict(float)
    encodings: dict[str, int] = defaultdict(int)
    for profile in sample:
        key = store.keys.profile(ProfileId("c", f"cust-{profile:07d}"))
        encoding = r.object("encoding", key)
        encodings[encoding.decode() if isinstance(encoding, bytes) else str(encoding)] += 1
        for name, value in r.hgetall(key).items():
            name_s = name.decode() if isinstance(name, bytes) else str(name)
            value_s = value.decode() if isinstance(value, bytes) else str(value)
            totals[field_kind(name_s)] += listpack_entry_bytes(name_s) + listpack_entry_bytes(value_s)
    return {kind: size / len(sample) for kind, size in totals.items()}, dict(encodings)


def drain_log(settings: Settings, r: redis.Redis, echo: Echo) -> tuple[float, int]:
    """Drain the training log into a store in a temporary folder (removed after); returns the drain's seconds and
    the store's bytes on disk."""
    with tempfile.TemporaryDirectory(prefix="ecrm-bench-log-") as folder:
        store = TrainingLogStore.of(settings.model_copy(update={"training_log_dir": folder}), r)
        started = time.perf_counter()
        store.drain(echo)
        seconds = time.perf_counter() - started
        manifest = store.manifest()
        return seconds, manifest.size if manifest is not None else 0


def bench_memory(base: Settings, profiles: int, events: int, items: int, echo: Echo) -> MemoryFigures:
    settings = isolated(base)
    r = connect_sync(settings)

    async def run() -> MemoryFigures:
        store = ProfileStore(connect(settings), settings)
        echo(f"writing a catalogue of {CATALOGUE} items ...")
        await apply_all(store, catalogue_plans())
        before = used_memory(r)
        echo(f"applying {profiles} profiles x {events} events through the worker's write path ...")
        step = 2_000
        for start in range(0, profiles, step):
            plans = [p for i in range(start, min(start + step, profiles)) for p in history(i, events, items)]
            await apply_all(store, plans)
            if (start + step) % 20_000 == 0:
                echo(f"  {start + step} profiles")
        after = used_memory(r)
        sample = list(range(0, profiles, max(profiles // 200, 1)))
        echo(f"  used_memory grew by {after - before} bytes; weighing a sample of {len(sample)} profiles ...")
        parts = weigh_sample(r, store, sample, events)
        fields, encodings = weigh_fields(r, store, sample)
        log_bytes = r.memory_usage(store.keys.interactions, samples=0) or 0
        parts["training log share"] = log_bytes / profiles
        rankings = [store.keys.popular, *r.scan_iter(match=store.keys.trending(0)[:-1] + "*", count=1000)]
        parts["popular and trending share"] = sum(r.memory_usage(k, samples=0) or 0 for k in rankings) / profiles
        echo("  the de-duplication window passes: the profiles' sets go, as their expiry would take them ...")
        for start in range(0, profiles, 1000):
            r.unlink(
                *(
                    store.keys.seen_set(ProfileId("c", f"cust-{i:07d}"))
                    for i in range(start, min(start + 1000, profiles))
                )
            )
        echo("  the trainer drains the training log into its store on disk, as before every training ...")
        drain_s, store_bytes = await asyncio.to_thread(drain_log, settings, r, echo)
        at_rest = used_memory(r)
        await store.client.aclose()
        figures = MemoryFigures(
            profiles,
            events,
            items,
            (at_rest - before) / profiles,
            (after - before) / profiles,
            parts,
            fields,
            encodings,
            at_rest,
        )
        figures.store_bytes_per_profile, figures.drain_s = store_bytes / profiles, drain_s
        return figures

    figures = asyncio.run(run())
    figures.load_avg = os.getloadavg()
    return figures
