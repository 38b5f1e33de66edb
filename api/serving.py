"""The served model: loaded at start, swapped for a newly promoted version without a restart.

A request takes ``holder.served`` once and uses that object throughout, so a swap in the middle of a request
cannot mix versions or fail it. A background task polls the registry's ``current`` key every
``ECRM_MODEL_POLL_S`` seconds and loads a new version off the event loop. A holder serves one tenant's model (its
registry keys; its files under ``<ECRM_API_MODEL_DIR>/<prefix>@<tenant>``, the tenant ``default``'s under
``<prefix>``): the API keeps one per tenant it serves (:mod:`api.tenant_services`).

A version whose blob cannot be loaded (corrupt, truncated, missing) is logged, counted
(``ecrm_model_load_failures_total``) and skipped: the previous version keeps serving (or, at start, the
popularity fallback) until another version becomes current. The category filters built for a version are kept in
a bounded LRU cache (``ECRM_API_MASK_CACHE_SIZE`` entries, each fresh for ``MASK_CACHE_S`` seconds), so arbitrary
``?category=`` values cannot grow the process.

A version is loaded through :mod:`api.model_files`: unpacked once per host into memory-mapped files, which every
API process of the host (``ecrm api --workers N``) maps instead of holding its own copy; each process polls and
swaps on its own.

Each poll also reads which baseline, if any, the retraining gate serves for personal lists instead of the engine
(``holder.baseline``: ``popularity``, ``trending``, ``buy-again``, ``recently-viewed`` or None), and sets
``ecrm_model_baseline_served`` accordingly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import TTLCache

from api.background import cancel_and_wait
from api.model_files import ModelFiles, default_root
from core import metrics
from core.errors import StoreUnavailable
from core.keyspace import Keys
from core.redis import connect_bytes
from core.registry import AsyncRegistry
from core.settings import GATE_BASELINES, Settings
from core.tenants import DEFAULT_TENANT
from recommender.base import ItemMask
from recommender.model import Engine

log = logging.getLogger(__name__)
MASK_CACHE_S = 30.0
DEFAULT_MASK_CACHE_SIZE = 256


@dataclass
class Served:
    """One loaded model version, with a bounded cache of category masks (least recently used go first)."""

    model: Engine
    version: str
    meta: dict[str, object]
    mask_cache_size: int = DEFAULT_MASK_CACHE_SIZE
    loaded_at: float = field(default_factory=time.time)
    masks: TTLCache[str, ItemMask] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.masks = TTLCache(maxsize=self.mask_cache_size, ttl=MASK_CACHE_S)

    def mask(self, key: str, items: set[str]) -> ItemMask:
        cached = self.masks.get(key)
        if cached is not None:
            return cached
        mask = self.model.mask(items)
        self.masks[key] = mask
        return mask


def model_root(settings: Settings) -> Path:
    """The host's model folder (``ECRM_API_MODEL_DIR``, else ``ecrm-models-<uid>`` in the temp dir)."""
    return Path(settings.api_model_dir) if settings.api_model_dir else default_root()


def files_namespace(prefix: str, tenant: str) -> str:
    """The folder of a tenant's model files under the model root (a prefix holds no ``@``, so none is another's)."""
    return prefix if tenant == DEFAULT_TENANT else f"{prefix}@{tenant}"


class ModelHolder:
    def __init__(self, settings: Settings, tenant: str = DEFAULT_TENANT) -> None:
        self.settings = settings
        self.tenant = tenant  # whose model: the tenant label of the model gauges
        self._label = metrics.tenant_label(tenant)
        metrics.MODEL_AGE_SECONDS.labels(self._label).set(0)  # 0 while none is served
        self.client = connect_bytes(settings)
        self.registry = AsyncRegistry(self.client, Keys(settings.key_prefix, tenant))
        self.files = ModelFiles(model_root(settings), files_namespace(settings.key_prefix, tenant))
        self.metered = tenant == DEFAULT_TENANT  # the gauges without a tenant label (holdout, training, baseline)
        self.served: Served | None = None
        self.rejected: str | None = None  # the last version that could not be loaded (not tried again)
        self.baseline: str | None = None  # the baseline the gate serves for personal lists (None: the engine)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def refresh(self) -> bool:
        """Load the current version if it changed (and read the baseline the gate serves, if any). Returns True
        when a new version is now served."""
        await self.refresh_baseline()
        version = await self.registry.current()
        if version is None:
            if self.served is not None:
                self.served = None  # the registry was emptied: fall back to popularity
                return True
            return False
        if (self.served is not None and self.served.version == version) or version == self.rejected:
            return False
        served = await self._load(version)
        if served is None:
            return False
        old = self.served
        self.served = served
        await asyncio.to_thread(self.files.prune, version)
        log.info("now serving model %s of the tenant %s", version, self.tenant)
        self._meter(old, served)
        return True

    def _meter(self, old: Served | None, served: Served) -> None:
        version = served.version
        if old is not None:
            metrics.MODEL_VERSION.labels(old.version, self._label).set(0)  # 0 first: other processes' files
            metrics.MODEL_VERSION.remove(old.version, self._label)
        metrics.MODEL_VERSION.labels(version, self._label).set(1)
        age = self.age_s()
        if age is not None:  # at once, not at the next poll: a gauge at 0 would say "brand new"
            metrics.MODEL_AGE_SECONDS.labels(self._label).set(age)
        if not self.metered:  # the gauges below have no tenant label: the tenant default's
            return
        meta = served.meta
        holdout = meta.get("holdout", {}) if isinstance(meta, dict) else {}
        if isinstance(holdout, dict) and "ndcg@10" in holdout:
            metrics.MODEL_HOLDOUT_NDCG.labels(version).set(float(holdout["ndcg@10"]))
        training = meta.get("training", {}) if isinstance(meta, dict) else {}
        if isinstance(training, dict) and "duration_s" in training:
            metrics.MODEL_TRAINING_SECONDS.labels(version).set(float(training["duration_s"]))

    async def refresh_baseline(self) -> None:
        """Read which baseline the retraining gate serves for personal lists (None: the engine)."""
        record = await self.registry.baseline()
        baseline = record["baseline"] if record is not None and record["baseline"] in GATE_BASELINES else None
        if baseline != self.baseline:
            log.info("personal lists now served by %s", f"the {baseline} baseline" if baseline else "the engine")
        self.baseline = baseline
        for name in GATE_BASELINES if self.metered else ():
            metrics.MODEL_BASELINE_SERVED.labels(name).set(1 if name == baseline else 0)

    async def _load(self, version: str) -> Served | None:
        """The version loaded, or None when its blob is missing or cannot be read (logged, counted, and not tried
        again while it stays current). Raises StoreUnavailable when Redis fails (tried again at the next poll)."""
        try:
            if not self.files.has(version):  # the first process of this host to load it unpacks it
                loaded = await self.registry.load(version)
                if loaded is None:
                    raise ValueError("it is current but has no stored blob")
                await asyncio.to_thread(self.files.write, version, loaded.blob, loaded.meta)
            model, meta = await asyncio.to_thread(self._open, version)
        except StoreUnavailable:
            raise
        # The registry is a trust boundary: numpy, zipfile, zlib and the metadata's JSON each fail in their own way
        # on a corrupt blob, and none of them may stop the API or the version it serves.
        except Exception as exc:
            self.rejected = version
            metrics.MODEL_LOAD_FAILURES.inc()  # every tenant's: a failure is a failure
            still = self.served.version if self.served is not None else "the popularity fallback"
            what = f"model version {version} of the tenant {self.tenant}"
            log.error("%s cannot be loaded (%s); still serving %s", what, exc, still)
            return None
        return Served(model, version, meta, self.settings.api_mask_cache_size)

    def _open(self, version: str) -> tuple[Engine, dict[str, object]]:
        """The version's files opened, with what the first request would otherwise build on the event loop (the
        item id -> code index: seconds at a million items, holding every request meanwhile; the popular items)."""
        model, meta = self.files.open(version)
        warm(model)
        return model, meta

    async def start(self) -> None:
        try:
            await self.refresh()
        except (StoreUnavailable, ValueError) as exc:
            log.warning("no model loaded at start: %s", exc)
        self._task = asyncio.create_task(self._poll())

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let the poller finish its current round and leave (cancelling it in the middle of a Redis command could
        leave the client stuck); cancel it only if it does not leave within ``grace_s``."""
        self._stopping.set()
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=grace_s)
            if pending:
                await cancel_and_wait(self._task)
        await self.client.aclose()

    def age_s(self) -> float | None:
        served = self.served
        if served is None:
            return None
        created = served.meta.get("created_at")
        if isinstance(created, str):
            from datetime import datetime

            return time.time() - datetime.fromisoformat(created).timestamp()
        return time.time() - served.loaded_at

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.settings.model_poll_s)
                return  # stopping
            except TimeoutError:
                pass
            try:
                await self.refresh()
            except (StoreUnavailable, ValueError) as exc:
                if isinstance(exc, StoreUnavailable):
                    metrics.DEPENDENCY_ERRORS.labels("redis").inc()
                log.warning("model refresh failed (still serving %s): %s", self.served and self.served.version, exc)
            age = self.age_s()
            if age is not None:
                metrics.MODEL_AGE_SECONDS.labels(self._label).set(age)


def warm(model: Engine) -> None:
    """Build the model's lazily built lookups now (called in the loading thread, off the event loop)."""
    if model.n_items:
        _ = model.index, model.popular_top, model.stage_items  # each property builds and caches its value
