"""Property-based events (hypothesis) through the real collector and a real worker, on the real broker and
Redis-compatible server, with the keys of two tenants (shops): ``default`` and ``shop-2``, each batch posted with
a key of a tenant and a scope drawn per batch; the same ids are drawn for both, and each tenant has a model of its
own.

Each example is a few batches of generated events, valid and invalid (ids with key syntax, unicode, padding,
control and format characters, over-long or blank; timestamps ahead, before the floor, in epoch seconds, of the
wrong type; infinite, NaN, negative or huge money, huge quantities and line totals, too many or no lines; wrong
types, unknown fields, missing fields; numbers for ids; event ids reused within and across examples; logins),
posted with a key of a scope drawn per batch. One worker runs across all examples. A model of what must happen,
kept across examples like Redis is, predicts every outcome:

* the collector refuses each invalid event by index (422, or 413 for size), each event the key may not send with
  403, and accepts the others;
* every accepted event is applied once or found a duplicate (same sender, same profile or item, same event id),
  never dead-lettered, never lost: the applied counter and the worker's duplicate counter match the model
  exactly after each example, and nothing more arrives later;
* each profile's counts, orders and revenue are the model's (a collect key's purchase adds no order or revenue and
  counts as ``claimed_purchase``; for visitors who logged in, summed over the visitor
  and the customers they logged in as: which of them an event lands in depends on the order across partitions);
* no other profile is touched: the profile hashes and every key hold only the generated ids of its own tenant
  (the tenant's profile count is theirs; no key outside the two tenants' keyspaces exists, no key of one tenant holds
  what the other's events did), and a bystander customer of the tenant ``default`` whose id the hostile ids imitate
  is left exactly as it was;
* refused events never reach Kafka (the events topic holds exactly the accepted ones), and the same refused
  events produced straight to Kafka are dead-lettered by the worker for the same fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.kafka import make_producer
from core.keyspace import Keys, ProfileId, encode_id, tenant_of
from core.settings import Settings
from profiles import layout
from profiles.updates import profile_of
from runtime.embedded import free_port
from schemas.events import Item, Purchase, parse_event_obj
from tests.conftest import wait_for
from tests.integration.helpers import BROWSER_UA, api_client, now_ms, sync_redis, view, wait_committed, worker_metrics
from tests.integration.test_auth import KEYS, SECRETS
from tests.integration.test_bounded_input import read_dead_letters
from tests.integration.test_degradation import load
from tests.integration.test_importers import read_topic

pytestmark = pytest.mark.integration
StartWorker = Callable[[Settings], subprocess.Popen[bytes]]

EXAMPLES = 40
TENANTS = ("default", "shop-2")
TENANT_SECRETS = {"shop-2": {scope: f"shop2-{scope}-" + scope[0] * 24 for scope in SECRETS}, "default": SECRETS}
TENANT_KEYS = KEYS + "," + ",".join(f"shop-2:{s}:{secret}" for s, secret in TENANT_SECRETS["shop-2"].items())
SENDERS = [(tenant, scope) for tenant in TENANTS for scope in sorted(SECRETS)]
BYSTANDER = "victim"  # a customer no generated event may touch; the hostile ids imitate its keys
HOSTILE_CUSTOMERS = ["victim:cart", "victim}:x", "{victim}", "vïctim✓", "victim%3Acart", "c:victim", "a b\u00a0c", "7"]
HOSTILE_VISITORS = ["victim:alias", "{v}", "a:victim", "v✓", "victim"]
ITEMS = ["sku-1", "sku-2", "it{em}:%✓ x", "victim"]
CATEGORIES = ["shoes", "k}:x", "Ünï code"]
EVENT_IDS = ["e1", "order:42", "{e}", "7"]  # reused on purpose: duplicates when sender and profile match
KINDS = ["page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase", "recommendation_click"]
REFUSED_IN_IDS = ["\t", "\n", "\x00", "\x7f", "\u200b", "\u2028", "\x85"]

VALID, INVALID, EITHER = "valid", "invalid", "either"
MODELS: dict[str, Model] = {}  # the run's models, for the report of a failed check


class Filler(str):
    """A long string that shows as ``'u' * 5000`` in a falsifying example."""

    def __repr__(self) -> str:
        return f"{self[:1]!r} * {len(self)}"


class Repeated(list[Any]):
    """A long list of one element that shows as ``[x] * 1001``."""

    def __repr__(self) -> str:
        return f"[{self[0]!r}] * {len(self)}" if self else "[]"


Generated = tuple[Any, str, str]  # an event (or what stands for one), what the schema must say, what was done to it


# ----- generated events -----


def padded(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """An id with, sometimes, surrounding spaces (stripped by the schema: the same id)."""
    return st.tuples(st.sampled_from(["", " ", "\u3000"]), text, st.sampled_from(["", " "])).map("".join)


free_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=8)
numbered = st.integers(0, 10**6).map(str)
customers = padded(st.one_of(st.sampled_from(HOSTILE_CUSTOMERS), free_text, numbered.map(lambda n: f"cust-{n}")))
customers = customers.filter(lambda s: s.strip() != BYSTANDER)
visitors = padded(st.one_of(st.sampled_from(HOSTILE_VISITORS), free_text.map(lambda s: f"v{s}")))
items = st.sampled_from(ITEMS)  # few items: a cart never reaches its line limit
FRESH = itertools.count()  # fresh event ids, in the order of the (derandomized) draws: the same in every run
event_ids = st.one_of(st.sampled_from(EVENT_IDS), st.builds(lambda: f"g-{next(FRESH)}"))
money = st.integers(0, 20_000).map(lambda cents: cents / 100)


@st.composite
def timestamps(draw: st.DrawFn) -> int | str:
    """A valid time in the last 30 days, as epoch milliseconds or an ISO string with a zone."""
    ms = now_ms() - draw(st.integers(1000, 30 * 86_400_000))
    if draw(st.booleans()):
        return ms
    zone = draw(st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]))
    return datetime.fromtimestamp(ms / 1000, tz=zone).isoformat()


@st.composite
def valid_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*KINDS, "item"]))
    event: dict[str, Any] = {"type": kind, "event_id": draw(event_ids), "timestamp": draw(timestamps())}
    if kind == "item":
        event |= {"item_id": draw(items), "title": "T", "category": draw(st.sampled_from(CATEGORIES))}
        return event | {"price": draw(money), "in_stock": draw(st.booleans())}
    who = draw(st.sampled_from(["customer", "visitor", "login"]))
    if who != "visitor":
        event["customer_id"] = draw(customers)
    if who != "customer":
        event["anonymous_id"] = draw(visitors)
    if draw(st.booleans()):
        event["session_id"] = draw(st.sampled_from(["s1", "s2", "s:{3}"]))
    if kind in ("product_view", "add_to_cart", "remove_from_cart", "recommendation_click"):
        event["item_id"] = draw(items)
    if kind == "product_view" and draw(st.booleans()):
        event |= {"category": draw(st.sampled_from(CATEGORIES)), "price": draw(money)}
    elif kind == "search":
        event |= {"query": "q", "results": draw(st.lists(items, max_size=3))}
    elif kind == "add_to_cart":
        event["quantity"] = draw(st.integers(1, 5))
    elif kind == "remove_from_cart" and draw(st.booleans()):
        event["quantity"] = draw(st.integers(1, 3))
    elif kind == "purchase":
        lines = draw(st.lists(st.tuples(items, st.integers(1, 3), money), min_size=1, max_size=3))
        event |= {"order_id": draw(event_ids), "currency": "EUR"}
        event["lines"] = [{"item_id": i, "quantity": q, "unit_price": p} for i, q, p in lines]
    elif kind == "recommendation_click":
        event["recommendation_id"] = "r1"
    return event


def iso_in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def money_field(event: dict[str, Any], value: Any) -> dict[str, Any]:
    """``event`` with ``value`` as its money: a line's unit price, else its price (an unknown field where the
    type has none: refused too)."""
    if event["type"] == "purchase":
        return event | {"lines": [{**event["lines"][0], "unit_price": value}, *event["lines"][1:]]}
    return event | {"price": value}


def without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def an_id_field(event: dict[str, Any]) -> str:
    return next(f for f in ("customer_id", "anonymous_id", "item_id", "event_id") if f in event)


@st.composite
def mutated(draw: st.DrawFn, event: dict[str, Any]) -> Generated:
    """``event`` with one mutation, whether the schema must refuse it (or may take it either way), and which."""
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    return (*MUTATIONS[kind](draw, event), kind)


def _with_char(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    name, char = an_id_field(event), draw(st.sampled_from(REFUSED_IN_IDS))
    value = str(event[name])
    at = draw(st.integers(0, len(value)))
    return event | {name: value[:at] + char + value[at:]}, INVALID


def _lines(event: dict[str, Any], lines: list[Any]) -> tuple[Any, str]:
    return event | {"lines": lines}, INVALID  # (an unknown field for the types other than purchase)


LINE = {"item_id": "sku-1", "quantity": 1, "unit_price": 1.0}
MUTATIONS: dict[str, Callable[[st.DrawFn, dict[str, Any]], tuple[Any, str]]] = {
    "timestamp ahead": lambda d, e: (e | {"timestamp": iso_in(d(st.sampled_from([0.01, 13, 3650])))}, INVALID),
    "timestamp before the floor": lambda d, e: (e | {"timestamp": "0001-01-01T00:00:00+14:00"}, INVALID),
    "epoch seconds": lambda d, e: (e | {"timestamp": now_ms() // 1000}, INVALID),
    "timestamp of a wrong type": lambda d, e: (e | {"timestamp": d(st.sampled_from([True, "yesterday", [1], None]))},
                                               INVALID),  # fmt: skip
    "control character in an id": _with_char,
    "over-long id": lambda d, e: (e | {an_id_field(e): Filler("x" * 257)}, INVALID),
    "blank id": lambda d, e: (e | {an_id_field(e): d(st.sampled_from(["", "  ", "\u3000"]))}, INVALID),
    "infinite money": lambda d, e: (money_field(e, d(st.sampled_from(["inf", "-inf", "NaN", "Infinity"]))), INVALID),
    "huge money": lambda d, e: (money_field(e, d(st.sampled_from([1e300, 2e6, 1_000_000.01]))), INVALID),
    "negative money": lambda d, e: (money_field(e, -0.01), INVALID),
    "huge line total": lambda d, e: _lines(e, [{**LINE, "quantity": 20, "unit_price": 999_999}]),
    "huge quantity": lambda d, e: _lines(e, [{**LINE, "quantity": 10**7}]),
    "too many lines": lambda d, e: _lines(e, Repeated([LINE] * 1001)),
    "no lines": lambda d, e: _lines(e, []),
    "wrong type": lambda d, e: (e | {an_id_field(e): d(st.sampled_from([[1, 2], {"a": 1}, True]))}, INVALID),
    "unknown field": lambda d, e: (e | {d(st.sampled_from(["ip", "zzz", "Customer_Id"])): "10.0.0.1"}, INVALID),
    "missing field": lambda d, e: (without(e, d(st.sampled_from(["event_id", "type", "timestamp"]))), INVALID),
    "no identity": lambda d, e: ({k: v for k, v in e.items() if k not in ("customer_id", "anonymous_id")},
                                 INVALID if e["type"] != "item" else VALID),
    "unknown type": lambda d, e: (e | {"type": "hack"}, INVALID),
    "not an object": lambda d, e: (d(st.sampled_from([42, "event", None, [e]])), INVALID),
    "over-long url": lambda d, e: (e | {"url": Filler("u" * 5000)}, INVALID),
    "over the size limit": lambda d, e: (e | {"url": Filler("u" * 140_000)}, INVALID),  # 12 stay under the body limit
    "numeric customer id": lambda d, e: (e | {"customer_id": 17850} if "customer_id" in e else e, VALID),
    "quantity as text or bool": lambda d, e: (e | {"quantity": d(st.sampled_from(["3", True]))}
                                              if e["type"] == "add_to_cart" else e, EITHER),
}  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> Generated:
    event = draw(valid_event())
    if draw(st.integers(0, 2)) == 0:
        return draw(mutated(event))
    return event, VALID, event["type"]


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[tuple[str, str], list[Generated]]]:
    """1 to 3 posts, each a sender (tenant, scope) and 2 to 20 events; and in some examples one more post that tries
    every mutation on a valid event (hypothesis favours some choices: this way each is tried in any run)."""
    posts = draw(st.lists(st.tuples(st.sampled_from(SENDERS), st.lists(events(), min_size=2, max_size=20)),
                          min_size=1, max_size=3))  # fmt: skip
    if draw(st.integers(0, 3)) == 0:
        base = draw(valid_event())
        posts.append((draw(st.sampled_from(SENDERS)), [(*f(draw, base), kind) for kind, f in MUTATIONS.items()]))
    return posts


# ----- the model -----


def allowed(event: Any, scope: str) -> bool:
    if isinstance(event, Item):
        return scope == "admin"
    return event.customer_id is None or scope in ("server", "admin")


@dataclass
class Model:
    """What Redis must hold: de-duplication keys seen, each profile's counts, orders and revenue, which profiles
    logins joined (union-find), and what went where."""

    seen: set[tuple[str, ...]] = field(default_factory=set)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    revenue: Counter[str] = field(default_factory=Counter)
    parent: dict[str, str] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    accepted_ids: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[Any, set[str]]] = field(default_factory=list)  # invalid events, the fields refused
    applied: int = 0
    duplicates: int = 0
    sent: int = 0
    log: dict[str, list[str]] = field(default_factory=dict)  # the accepted events of each profile, for a failure

    def root(self, pid: str) -> str:
        self.parent.setdefault(pid, pid)
        while self.parent[pid] != pid:
            pid = self.parent[pid]
        return pid

    def join(self, a: str, b: str) -> None:
        self.parent[self.root(a)] = self.root(b)

    def accept(self, obj: dict[str, Any], scope: str) -> str:
        """Account for an accepted event; returns ``applied`` or ``duplicate``."""
        self.accepted_ids[str(obj.get("event_id"))] += 1
        event = parse_event_obj(obj)
        if isinstance(event, Item):
            key: tuple[str, ...] = ("item", event.item_id, scope, event.event_id)
            self.items.add(event.item_id)
            self.categories.add(event.category)
        else:
            own = str(profile_of(event))
            key = ("profile", own, scope, event.event_id)
            self.log.setdefault(own, []).append(f"{scope} {obj}"[:300])
            if event.customer_id is not None and event.anonymous_id is not None:
                self.log.setdefault(f"a:{event.anonymous_id}", []).append(f"(login) {scope} {obj}"[:300])
            self.root(own)
            if event.customer_id is not None and event.anonymous_id is not None:
                self.join(f"a:{event.anonymous_id}", own)
            for name in ("item_id", "category"):
                if isinstance(getattr(event, name, None), str):
                    (self.items if name == "item_id" else self.categories).add(getattr(event, name))
            self.items.update(getattr(event, "results", []))
            if isinstance(event, Purchase):
                self.items.update(line.item_id for line in event.lines)
                self.categories.update(line.category for line in event.lines if line.category)
        if key in self.seen:
            self.duplicates += 1
            return "duplicate"
        self.seen.add(key)
        self.applied += 1
        if not isinstance(event, Item):
            claimed = isinstance(event, Purchase) and scope == "collect"  # a browser's claim: no order, no money
            kind = "claimed_purchase" if claimed else event.type
            self.counts.setdefault(str(profile_of(event)), Counter())[kind] += 1
            if isinstance(event, Purchase) and not claimed:
                self.revenue[str(profile_of(event))] += event.revenue
                self.counts[str(profile_of(event))]["orders"] += 1
        return "applied"

    def groups(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for pid in self.parent:
            out.setdefault(self.root(pid), set()).add(pid)
        return out


# ----- reading what happened -----


def worker_totals(metrics_port: int) -> tuple[int, int, int] | None:
    """(duplicates, dead letters, events consumed) as the worker counted them; None while it does not answer."""
    found = worker_metrics(
        metrics_port, "ecrm_events_duplicate_total", "ecrm_events_dead_lettered_total", "ecrm_events_consumed_total"
    )
    return None if found is None else (int(found[0]), int(found[1]), int(found[2]))


def counted(metrics_port: int) -> tuple[int, int, int]:
    totals = worker_totals(metrics_port)
    assert totals is not None, "the worker's metrics do not answer"
    return totals


def bystander_dump(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every key of the bystander's profile (the whole profile is its hash), serialized (DUMP)."""
    names = [keys.profile(f"c:{BYSTANDER}"), *keys.legacy_profile_keys(f"c:{BYSTANDER}"), keys.visitors(BYSTANDER)]
    return {key: r.dump(key) for key in names}


def check_profiles(r: redis.Redis, keys: Keys, model: Model) -> None:
    """Each login group's summed counts, orders and revenue are the model's; no profile outside it exists."""
    pids = sorted(model.parent)
    with r.pipeline(transaction=False) as pipe:
        for pid in pids:
            pipe.hgetall(keys.profile(pid))
        hashes = dict(zip(pids, pipe.execute(), strict=True))
    for members in model.groups().values():
        stored: Counter[str] = Counter()
        expected: Counter[str] = Counter()
        revenue, expected_revenue = 0.0, 0.0
        for pid in members:
            h = hashes[pid]
            stored.update(layout.event_counts(h))
            stored["orders"] += int(h.get(layout.ORDERS, 0))
            revenue += float(h.get(layout.REVENUE, 0.0))
            expected.update(model.counts.get(pid, Counter()))
            expected_revenue += model.revenue[pid]
        if +stored != +expected:
            print(f"\n{keys.tenant}: the group {sorted(members)} holds {dict(stored)}, expected {dict(expected)}")
            for other, other_model in (MODELS or {keys.tenant: model}).items():
                for row in where_counts_are(r, Keys(keys.prefix, other), other_model):
                    print(f"{other}: {row[0]} holds {row[1]}, expected {row[2]}")
            for pid in sorted(members):
                for line in model.log.get(pid, []):
                    print(f"  {pid}: {line}")
        assert +stored == +expected, (sorted(members), stored, expected)
        assert revenue == pytest.approx(expected_revenue, rel=1e-9, abs=1e-6), sorted(members)
    held = {str(keys.profile_id(key)) for key in r.scan_iter(match=keys.profile_pattern(), count=1000)}
    assert held <= set(model.parent) | {f"c:{BYSTANDER}"}, held - set(model.parent)
    assert int(r.get(keys.profile_count) or 0) == len(held)  # one more per hash made, one less per hash gone


def where_counts_are(r: redis.Redis, keys: Keys, model: Model) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    """For a failed check: every profile of the tenant's keyspace whose counts differ from the model's (its stored
    and its expected counts), the profiles outside the model included."""
    out = []
    owners = {keys.profile(p): p for p in model.parent}
    for key in r.scan_iter(f"{keys.prefix}:p:{{{keys.tenant}|*", count=1000):
        if r.type(key) != "hash" or key not in owners and not key.endswith("}"):
            continue
        stored = dict(layout.event_counts(r.hgetall(key)))
        expected = {k: v for k, v in model.counts.get(owners.get(key, ""), Counter()).items() if k != "orders"}
        if stored != expected:
            out.append((key, stored, expected))
    return out


def check_keyspace(r: redis.Redis, settings: Settings, models: dict[str, Model]) -> None:
    """Every key belongs to one of the tenants, and within it is a global one, or belongs to a generated profile,
    item or category of that tenant's events (or the tenant default's bystander)."""
    prefix = settings.key_prefix
    # offsets, refused: a single node's applied offsets per partition and refused deliveries (de-duplication)
    single = {"stats:profiles", "popular", "interactions", "stats:applied", "stats:interactions", "catalogue",
              "out_of_stock", "worker:consuming", "offsets", "refused"}  # fmt: skip
    for key in r.scan_iter(f"{prefix}:*", count=1000):
        tenant = tenant_of(prefix, key)
        assert tenant in models, f"a key outside the tenants' keyspaces: {key}"
        model, head = models[tenant], f"{tenant}|"
        owners = [*model.parent, *([f"c:{BYSTANDER}"] if tenant == "default" else [])]
        tags = {head + ProfileId(p[0], p[2:]).tag for p in owners}  # type: ignore[arg-type]
        item_tags = {head + encode_id(i) for i in model.items}
        g = f"{{t:{tenant}}}:"
        categories = {f"{prefix}:{g}category:{encode_id(c)}" for c in model.categories}
        rest = key[len(prefix) + 1 :]
        if rest.startswith("p:{"):
            assert rest[3 : rest.index("}")] in tags, key
        elif rest.startswith("item:{"):
            assert rest[6 : rest.index("}")] in item_tags, key
        elif rest.startswith(f"{g}category:"):
            assert key in categories, key
        else:
            assert rest.startswith(g), key
            rest = rest.removeprefix(g)  # every global key is in the tenant's global slot
            # analytics, models, the browsers' per-period bounds
            assert rest in single or rest.startswith(("trending:", "an:", "model:", "shared:")), key


# ----- the test -----


@dataclass
class Run:
    """Figures of the run, printed at the end."""

    examples: int = 0
    events: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # event types sent valid, mutations sent


def test_generated_events_through_the_collector_and_the_worker(settings: Settings, worker_factory: StartWorker) -> None:
    metrics_port = free_port()
    settings = settings.model_copy(
        update={
            "api_keys": TENANT_KEYS,
            "rate_limit": "",
            "visitor_rate_limit": "",
            "worker_metrics_port": metrics_port,
        }
    )
    keys = Keys(settings.key_prefix)
    tenant_keys = {tenant: Keys(settings.key_prefix, tenant) for tenant in TENANTS}
    r = sync_redis(settings)
    asyncio.run(load(settings, [view(BYSTANDER, "sku-1"), view(BYSTANDER, "victim", session_id="s1")]))
    bystander = bystander_dump(r, keys)
    base_applied = int(r.get(keys.applied_count) or 0)
    worker = worker_factory(settings)
    wait_for(lambda: worker_totals(metrics_port) is not None, timeout=60, what="the worker's metrics")
    models, run = {tenant: Model() for tenant in TENANTS}, Run()
    MODELS.clear()
    MODELS.update(models)

    def applied() -> int:
        return sum(int(r.get(k.applied_count) or 0) for k in tenant_keys.values()) - base_applied

    def total(name: str) -> int:
        return sum(int(getattr(m, name)) for m in models.values())

    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        client: httpx.AsyncClient = runner.run(stack.enter_async_context(api_client(settings)))

        @hypothesis_settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # Redis and the model carry over: no shrinking
            suppress_health_check=list(HealthCheck),
        )
        @given(posts=batches())
        def example(posts: list[tuple[tuple[str, str], list[Generated]]]) -> None:
            run.examples += 1
            before = (applied(), *counted(metrics_port)[:2])
            expected_applied, expected_duplicates = total("applied"), total("duplicates")
            accepted = 0
            for (tenant, scope), generated in posts:
                model = models[tenant]
                body = [event for event, _, _ in generated]
                response = runner.run(
                    client.post("/v1/events", content=orjson.dumps(body), headers={
                        "Authorization": f"Bearer {TENANT_SECRETS[tenant][scope]}",
                        "content-type": "application/json", "User-Agent": BROWSER_UA})
                )  # fmt: skip
                assert response.status_code in (202, 403, 413, 422), response.text
                errors: dict[int, list[dict[str, Any]]] = {}
                for error in response.json()["errors"]:
                    errors.setdefault(error["index"], []).append(error)
                for index, (event, expect, what) in enumerate(generated):
                    model.sent += 1
                    run.kinds[what] += 1
                    refusals = errors.get(index, [])
                    statuses = {e["status"] for e in refusals}
                    if expect == INVALID:
                        assert statuses and statuses <= {413, 422}, f"{what}: {event!r:.1500} {refusals}"
                    if refusals:
                        run.events[f"refused {min(statuses)}"] += 1
                        if statuses <= {413, 422}:
                            model.refused.append((event, {e["field"] for e in refusals}))
                        else:  # a valid event the key may not send
                            assert statuses == {403} and expect != INVALID, (event, refusals)
                            assert not allowed(parse_event_obj(event), scope), (scope, event)
                            assert all(e["reason"].startswith("forbidden") for e in refusals), refusals
                        continue
                    assert expect != INVALID, f"accepted although invalid: {event}"
                    assert allowed(parse_event_obj(event), scope), (scope, event)
                    run.events[model.accept(event, scope)] += 1
                    accepted += 1
            expected_applied = total("applied") - expected_applied
            expected_duplicates = total("duplicates") - expected_duplicates
            assert worker.poll() is None, "the worker died"

            def done() -> tuple[int, int, int]:
                duplicates, dead, _ = counted(metrics_port)
                return applied() - before[0], duplicates - before[1], dead - before[2]

            deadline = time.monotonic() + 60
            while sum(done()) < accepted:
                assert time.monotonic() < deadline, f"lost: {done()} of {accepted} accepted events accounted for"
                time.sleep(0.05)
            assert done() == (expected_applied, expected_duplicates, 0)
            for tenant, tenant_model in models.items():
                check_profiles(r, tenant_keys[tenant], tenant_model)

        try:
            example()
        finally:
            runner.run(stack.aclose())  # (api/background.py: the app's tasks stop for sure)

    accepted_ids = sum((m.accepted_ids for m in models.values()), Counter[str]())
    wait_committed(settings, sum(accepted_ids.values()))  # all acked: anything twice or late would show now
    duplicates, dead, consumed = counted(metrics_port)
    assert (applied(), duplicates, dead) == (total("applied"), total("duplicates"), 0)
    assert consumed == total("applied") + total("duplicates")
    for tenant, tenant_model in models.items():
        check_profiles(r, tenant_keys[tenant], tenant_model)
        assert tenant_model.applied > 0, f"no event of the tenant {tenant} was applied: the test tells nothing"
    check_keyspace(r, settings, models)
    assert bystander_dump(r, keys) == bystander

    # refused events never reached Kafka: the topic holds exactly the accepted ones
    on_topic = read_topic(settings, sum(accepted_ids.values()))
    assert Counter(str(e.get("event_id")) for e in on_topic) == accepted_ids
    model = Model(refused=[x for m in models.values() for x in m.refused], accepted_ids=accepted_ids)
    model.applied, model.sent = total("applied"), total("sent")
    model.parent = {p: p for m in models.values() for p in m.parent}
    # the same refused events produced straight to Kafka: the worker refuses them too, for the same fields
    producer = make_producer(settings)
    for event, _ in model.refused:
        producer.send(settings.events_topic, value=orjson.dumps(event), key=b"refused")
    producer.flush()
    producer.close()
    letters = read_dead_letters(settings, len(model.refused))
    assert len(letters) == len(model.refused)
    for letter, (event, fields) in zip(letters, model.refused, strict=True):
        assert letter["original_size"] == len(orjson.dumps(event)), letter["event_id"]
        assert {e["field"] for e in letter["errors"]} == fields, (event, letter["errors"])
    wait_committed(settings, sum(model.accepted_ids.values()) + len(model.refused))  # the refused ones read too
    assert applied() == model.applied  # none of them was applied
    assert set(MUTATIONS) <= set(run.kinds), set(MUTATIONS) - set(run.kinds)  # every mutation was tried
    print(
        f"\nhypothesis: {run.examples} examples, {model.sent} events sent ({dict(run.events)}); "
        f"{len(model.refused)} refused events also produced straight to Kafka and dead-lettered; "
        f"{len(model.parent)} profiles checked"
    )
