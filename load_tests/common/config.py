"""Load-test settings, read from ``ECRM_LOAD_*`` environment variables (``load_tests/run.py`` sets them from its
options; plain ``locust -f`` runs use the defaults).

| variable | default | meaning |
|---|---|---|
| ``ECRM_LOAD_P95_MS`` | 250 | target: 95th percentile of every endpoint (and of all requests), milliseconds |
| ``ECRM_LOAD_MAX_FAIL_RATIO`` | 0.01 | target: failed requests / all requests |
| ``ECRM_LOAD_CUSTOMERS`` | 200 | demo customers ``cust-00000`` ... (``ecrm up --customers``, default 200) |
| ``ECRM_LOAD_UNKNOWN_SHARE`` | 0.2 | share of widget requests for first-time visitors (popular-items fallback) |
| ``ECRM_LOAD_RECOMMENDATIONS_N`` | 10 | ``n`` a shopper asks for |
| ``ECRM_LOAD_SEED`` | unset | seed for reproducible payloads (unset: different every run) |
| ``ECRM_LOAD_API_KEY`` | unset | a ``server`` key's secret for a stack with ``ECRM_API_KEYS`` (unset: no header) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "ECRM_LOAD_"


@dataclass(frozen=True, slots=True)
class Targets:
    """What a run must meet: the process exits with 1 when it does not."""

    p95_ms: float = 250.0
    max_fail_ratio: float = 0.01


@dataclass(frozen=True, slots=True)
class LoadConfig:
    targets: Targets = Targets()
    customers: int = 200
    unknown_share: float = 0.2
    recommendations_n: int = 10
    seed: int | None = None
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        """The Authorization header of ``api_key`` (None without a key)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None


def _number(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name}={raw!r} is not a number") from exc
    if not low <= value <= high:
        raise ValueError(f"{PREFIX}{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def load_config(environ: Mapping[str, str] | None = None) -> LoadConfig:
    """The settings from the environment (``os.environ`` by default). Raises ``ValueError`` naming the variable."""
    env = os.environ if environ is None else environ
    base = LoadConfig()
    seed = env.get(PREFIX + "SEED")
    return LoadConfig(
        targets=Targets(
            p95_ms=_number(env, "P95_MS", base.targets.p95_ms, 1, 60_000),
            max_fail_ratio=_number(env, "MAX_FAIL_RATIO", base.targets.max_fail_ratio, 0, 1),
        ),
        customers=int(_number(env, "CUSTOMERS", base.customers, 1, 1_000_000)),
        unknown_share=_number(env, "UNKNOWN_SHARE", base.unknown_share, 0, 1),
        recommendations_n=int(_number(env, "RECOMMENDATIONS_N", base.recommendations_n, 1, 100)),
        seed=int(seed) if seed else None,
        api_key=env.get(PREFIX + "API_KEY", "").strip() or None,
    )
