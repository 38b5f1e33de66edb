"""The documents stay true to the code: every setting is documented and passed through by docker-compose."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.settings import AnalyticsSettings
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(f"ECRM_{name.upper()}" for name in [*Settings.model_fields, *AnalyticsSettings.model_fields])


@pytest.mark.parametrize("document", ["docs/deployment.md", "docker-compose.yml"])
def test_every_setting_is_in(document: str) -> None:
    text = (REPO / document).read_text()
    assert [name for name in NAMES if name not in text] == []
