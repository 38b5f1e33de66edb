"""The Redis keyspace, in one place. Every reader and writer builds key names here.

A profile id is ``c:<customer_id>`` for a known customer or ``a:<anonymous_id>`` for a visitor.

| key | type | holds |
|---|---|---|
| ``{p}:p:{pid}`` | hash | counts ``n:<type>``, ``first_seen``, ``last_seen``, ``orders``, ``revenue``, ... |
| ``{p}:p:{pid}:recent`` | zset | item -> last interaction time (ms), bounded, newest first |
| ``{p}:p:{pid}:cart`` | hash | item -> quantity |
| ``{p}:p:{pid}:aff`` | hash | category -> forward-decayed affinity (landmark ``aff_L`` in the profile hash) |
| ``{p}:p:{pid}:items`` | hash | item -> summed interaction weight (recommender input) |
| ``{p}:p:{pid}:items_ts`` | hash | item -> last interaction time (ms) |
| ``{p}:p:{pid}:bought`` | hash | item -> last purchase time (ms) |
| ``{p}:p:{pid}:sess`` | HyperLogLog | session ids |
| ``{p}:seen:{event_id}`` | string | de-duplication marker (TTL) |
| ``{p}:alias:{anonymous_id}`` | string | customer id the visitor logged in as |
| ``{p}:profiles`` | zset | pid -> last seen (ms) |
| ``{p}:trending:{era}`` | zset | item -> forward-decayed popularity for that era's landmark |
| ``{p}:popular`` | zset | item -> all-time weight |
| ``{p}:item:{item_id}`` | hash | catalogue: title, category, price, in_stock, updated |
| ``{p}:catalogue`` | set | item ids |
| ``{p}:out_of_stock`` | set | item ids the catalogue marks as not in stock |
| ``{p}:interactions`` | stream | field ``d`` = pid TAB item TAB weight TAB ts: the training log |
| ``{p}:category:{category}`` | set | item ids of a category |
| ``{p}:stats:applied`` | string | count of events applied (all workers) |
| ``{p}:stats:interactions`` | string | count of interactions logged (the retraining trigger) |
| ``{p}:model:current`` | string | the served model version |
| ``{p}:model:versions`` | list | promoted versions, newest first (rollback history) |
| ``{p}:model:blob:{v}`` / ``{p}:model:meta:{v}`` | string | a version's npz bytes / JSON metadata and metrics |
| ``{p}:model:trained`` | hash | interaction count and time of the last training |
| ``{p}:model:lock`` | string | held while a training runs |
"""

from __future__ import annotations

from dataclasses import dataclass

TRENDING_ERA_HALF_LIVES = 64  # one era spans this many half-lives: stored scores stay within 2**±64


def customer_pid(customer_id: str) -> str:
    return f"c:{customer_id}"


def anonymous_pid(anonymous_id: str) -> str:
    return f"a:{anonymous_id}"


def trending_era(ts_ms: int, half_life_ms: float) -> int:
    """The era of a time: forward-decay landmarks move once per era so that stored scores never overflow."""
    return int(ts_ms // (half_life_ms * TRENDING_ERA_HALF_LIVES))


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "ecrm"

    def profile(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}"

    def recent(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:recent"

    def cart(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:cart"

    def affinity(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:aff"

    def items(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:items"

    def items_ts(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:items_ts"

    def bought(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:bought"

    def sessions(self, pid: str) -> str:
        return f"{self.prefix}:p:{pid}:sess"

    def alias(self, anonymous_id: str) -> str:
        return f"{self.prefix}:alias:{anonymous_id}"

    @property
    def profiles(self) -> str:
        return f"{self.prefix}:profiles"

    def trending(self, era: int) -> str:
        return f"{self.prefix}:trending:{era}"

    @property
    def popular(self) -> str:
        return f"{self.prefix}:popular"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}"

    @property
    def catalogue(self) -> str:
        return f"{self.prefix}:catalogue"

    @property
    def out_of_stock(self) -> str:
        return f"{self.prefix}:out_of_stock"

    @property
    def interactions(self) -> str:
        return f"{self.prefix}:interactions"

    def category(self, category: str) -> str:
        return f"{self.prefix}:category:{category}"

    @property
    def applied_count(self) -> str:
        return f"{self.prefix}:stats:applied"

    @property
    def interactions_count(self) -> str:
        return f"{self.prefix}:stats:interactions"

    @property
    def model_current(self) -> str:
        return f"{self.prefix}:model:current"

    @property
    def model_versions(self) -> str:
        return f"{self.prefix}:model:versions"

    def model_blob(self, version: str) -> str:
        return f"{self.prefix}:model:blob:{version}"

    def model_meta(self, version: str) -> str:
        return f"{self.prefix}:model:meta:{version}"

    @property
    def model_trained(self) -> str:
        return f"{self.prefix}:model:trained"

    @property
    def model_lock(self) -> str:
        return f"{self.prefix}:model:lock"
