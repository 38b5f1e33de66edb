"""Analytics configuration, read from the same ``ECRM_`` environment variables as :class:`core.settings.Settings`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.btyd import Variant
from analytics.rules_file import DEFAULT_RULES_PATH


class AnalyticsSettings(BaseSettings):
    """Each field is the environment variable ``ECRM_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="ECRM_", extra="ignore")

    segments_file: Path = Field(DEFAULT_RULES_PATH, description="Segment rules (YAML), re-read when it changes")
    segments_check_interval_s: float = Field(2.0, ge=0, description="Longest time between checks of the rules file")
    analytics_interval_s: float = Field(900.0, ge=0, description="Seconds between refreshes in the worker (0: off)")
    analytics_lock_ttl_s: float = Field(600.0, gt=0, description="Longest a refresh may hold the refresh lock")
    analytics_snapshot_keep_s: float = Field(
        86_400.0, gt=0, description="How long a replaced segment snapshot stays readable for running exports"
    )
    analytics_model: Variant = Field(Variant.MBGNBD, description="Purchase model: mbgnbd (default) or bgnbd")
    clv_horizon_days: float = Field(365.0, gt=0, description="Horizon of the customer lifetime value")
    analytics_min_customers: int = Field(20, ge=2, description="Fewest purchasing customers to fit the models")
    analytics_min_repeat_customers: int = Field(5, ge=1, description="Fewest repeat buyers to fit the models")
    analytics_scan_count: int = Field(1000, ge=10, description="Profiles read per Redis round trip")
