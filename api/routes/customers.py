"""Customer profiles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import AdminCaller, ServerCaller
from api.deps import SettingsDep, StoreDep
from api.errors import NotFound
from api.models import Profile
from api.routes.segments import AnalyticsDep
from core import erasure_log
from core.clock import now_ms
from core.keyspace import customer_pid

router = APIRouter(prefix="/v1/customers", tags=["customers"])

_RFM_KEYS = ("r_score", "f_score", "m_score", "rfm_score", "rfm_total", "rfm_mean")


@router.get("/{customer_id}/profile", response_model=Profile, responses={404: {}})
async def profile(customer_id: str, store: StoreDep, analytics: AnalyticsDep, _: ServerCaller) -> dict[str, Any]:
    """The live profile: counts, recency/frequency/monetary with their 1-5 scores, segment, lifetime value, churn
    risk, recent items, cart, category affinities. Scores use the live values against the last refresh's
    quintiles, so a purchase shows at once."""
    now = now_ms()
    pid = customer_pid(customer_id)
    found = await store.profile(pid, now)
    if found is None:
        raise NotFound(f"no profile for customer {customer_id!r}")
    return with_analytics(found, await analytics.profile_analytics(pid, now))


class Erasure(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "customer_id": "cust-00000",
                    "erased_profiles": ["c:cust-00000", "a:anon-00001"],
                    "snapshot_rows": 1,
                    "training_log_entries": 12,
                }
            ]
        }
    }

    customer_id: str
    erased_profiles: list[str] = Field(description="The customer's profile id and those of the visitors who logged in")
    snapshot_rows: int = Field(description="Rows removed from the segment snapshots")
    training_log_entries: int = Field(0, description="Entries of the training log deleted")


@router.delete("/{customer_id}", response_model=Erasure)
async def forget(
    customer_id: str, store: StoreDep, analytics: AnalyticsDep, settings: SettingsDep, _: AdminCaller
) -> Erasure:
    """Erase a customer (the right to erasure): the profile, the visitors who logged in as them, their rows in the
    segment snapshots, their entries of the training log; their older events are not applied again when the
    topic is replayed. Idempotent. The same as ``ecrm forget``. Logged first (core/erasure_log.py), so a restore
    of an older backup erases the customer again."""
    await erasure_log.record(store.client, store.keys, customer_id, settings.erasure_log_file)
    erased = await store.erase(customer_id)
    rows = await analytics.store.forget_rows(erased.pids)
    return Erasure(
        customer_id=customer_id,
        erased_profiles=erased.pids,
        snapshot_rows=rows,
        training_log_entries=erased.log_entries,
    )


def with_analytics(profile: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The profile with the scores in ``rfm``, and ``segment``, ``lifetime_value``, ``churn_risk`` and the details
    (``analytics``) at the top level."""
    rfm = {**profile["rfm"], **{k: live[k] for k in _RFM_KEYS}}
    details = {k: v for k, v in live.items() if k not in _RFM_KEYS}
    return {
        **profile,
        "rfm": rfm,
        "segment": live["segment"],
        "lifetime_value": live["lifetime_value"],
        "churn_risk": live["churn_risk"],
        "analytics": details,
    }
