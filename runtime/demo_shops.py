"""The demo's two shops (issue 22, docs/tenants.md): ``ecrm up`` hosts two small shops side by side, each a tenant
with its own keys, data, model, rules and campaigns, and serves a demo shop page for each on its own origin, each
page linking to the other.

These are the demo's own settings (``runtime/``, not ``config/``): when ``ECRM_API_KEYS`` is not set, the demo makes
a key of each scope for each shop (random secrets, printed at the start; the API still listens on loopback only).
The data of each shop is the demo's simulator with a seed of its own, so the two shops use the same item and
customer ids for different histories: what one shows never comes from the other."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from runtime.simulate import SimulationConfig

SCOPES = ("collect", "server", "admin")


@dataclass(frozen=True)
class DemoShop:
    """One demo shop: its tenant, the name its page shows, its simulator seed and size, its keys (secrets)."""

    tenant: str
    name: str
    seed: int
    customers_share: float = 1.0  # of the demo's --customers
    keys: Mapping[str, str] | None = None  # scope -> secret; None: the engine's own keys (the shop is "default")

    def key(self, scope: str) -> str:
        return (self.keys or {}).get(scope, "")

    def simulation(self, customers: int, run_id: str) -> SimulationConfig:
        """The demo's simulator for this shop (its seed; the same run id, so its events are new at every run)."""
        return SimulationConfig(
            customers=max(20, round(customers * self.customers_share)), seed=self.seed, run_id=run_id
        )


DEMO_SHOPS: tuple[DemoShop, ...] = (
    DemoShop(DEFAULT_TENANT, "ecrm demo shop", seed=7),
    DemoShop("outlet", "ecrm outlet", seed=23, customers_share=0.6),
)


def with_secrets(
    shops: Sequence[DemoShop], token: Callable[[], str] = lambda: secrets.token_urlsafe(18)
) -> tuple[DemoShop, ...]:
    """Each shop with a new secret for each scope."""
    return tuple(replace(shop, keys={scope: token() for scope in SCOPES}) for shop in shops)


def api_keys(shops: Sequence[DemoShop]) -> str:
    """``ECRM_API_KEYS`` for the shops: ``scope:secret`` for the tenant default, ``tenant:scope:secret`` for the
    others (pure)."""
    entries = []
    for shop in shops:
        for scope in SCOPES:
            if shop.key(scope):
                prefix = "" if shop.tenant == DEFAULT_TENANT else f"{shop.tenant}:"
                entries.append(f"{prefix}{scope}:{shop.key(scope)}")
    return ",".join(entries)


def demo_shops(settings: Settings, env: Mapping[str, str]) -> tuple[Settings, tuple[DemoShop, ...]]:
    """The demo's shops and the settings that host them. Two shops with keys of their own when ``ECRM_API_KEYS``
    is not set; else the one shop of the keys set (the tenant default,
    its collect key from ``ECRM_API_KEYS``)."""
    if "ECRM_API_KEYS" in env:
        return settings, (DEMO_SHOPS[0],)
    shops = with_secrets(DEMO_SHOPS)
    hosted = ",".join(shop.tenant for shop in shops if shop.tenant != DEFAULT_TENANT)
    return settings.model_copy(update={"api_keys": api_keys(shops), "tenants": hosted}), shops


def key_lines(shops: Sequence[DemoShop]) -> list[str]:
    """What the demo prints about its shops' keys (the secrets: the demo's own, on loopback)."""
    return [
        f"  {shop.name} (tenant {shop.tenant}): " + ", ".join(f"{s} {shop.key(s)}" for s in SCOPES if shop.key(s))
        for shop in shops
        if shop.keys
    ]
