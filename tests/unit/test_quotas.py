"""Tenant quotas (core/quotas.py, api/quotas.py): the tenant.yaml file, validated with the field and the reason; its
hot reload keeping the last good quotas; which events of a batch may create a profile or an item."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from api.quotas import new_candidates
from core.quotas import QuotaError, Quotas, QuotaSource, parse_quotas, tenant_quotas
from core.settings import Settings

DEFAULTS = Quotas(100, 1000, 50)


def test_a_tenant_file_overrides_the_quotas_it_names_and_keeps_the_defaults_of_the_others() -> None:
    assert parse_quotas("version: 1\nquotas:\n  events_per_s: 5\n", "t.yaml", DEFAULTS) == Quotas(5, 1000, 50)
    assert parse_quotas("quotas: {profiles_max: 0, items_max: 7}\n", "t.yaml", DEFAULTS) == Quotas(100, 0, 7)
    assert parse_quotas("", "t.yaml", DEFAULTS) == DEFAULTS
    assert parse_quotas("version: 1\n", "t.yaml", DEFAULTS) == DEFAULTS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quotas: {events_per_s: -1}", "t.yaml: quotas.events_per_s: Input should be greater than or equal to 0"),
        ("quotas: {profiles_max: '10'}", "t.yaml: quotas.profiles_max: Input should be a valid integer"),
        ("quotas: {items: 3}", "t.yaml: quotas.items: Extra inputs are not permitted"),
        ("quota: {items_max: 3}", "t.yaml: quota: Extra inputs are not permitted"),
        ("version: 2", "t.yaml: version: Input should be less than or equal to 1"),
        ("- 1\n- 2", "t.yaml: (file): expected a mapping with a 'quotas:' section, got list"),
        ("quotas: [", "t.yaml: (file): not YAML"),
    ],
)
def test_an_invalid_tenant_file_names_the_field_and_the_reason(text: str, message: str) -> None:
    with pytest.raises(QuotaError) as caught:
        parse_quotas(text, "t.yaml", DEFAULTS)
    assert str(caught.value).startswith(message)


def test_an_invalid_edit_keeps_the_last_good_quotas_and_a_removed_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text("quotas: {events_per_s: 7}\n")
    source = QuotaSource(path, DEFAULTS, 0.0)
    assert source.current() == Quotas(7, 1000, 50) and source.error is None
    path.write_text("quotas: {events_per_s: many}\n")
    assert source.current() == Quotas(7, 1000, 50)
    assert source.error is not None and "quotas.events_per_s" in source.error
    path.unlink()
    assert source.current() == DEFAULTS and source.error is None


def test_each_tenant_has_its_own_quotas_over_the_settings_defaults(tmp_path: Path) -> None:
    (tmp_path / "shop-a").mkdir()
    (tmp_path / "shop-a" / "tenant.yaml").write_text("quotas: {items_max: 3}\n")
    settings = Settings(tenant_events_per_s=10, tenant_profiles_max=20, tenant_items_max=30)
    per = tenant_quotas(settings, tmp_path)
    assert per.get("shop-a").current() == Quotas(10, 20, 3)
    assert per.get("shop-b").current() == Quotas(10, 20, 30) == per.get("default").current()


def test_the_events_that_may_create_a_profile_or_an_item() -> None:
    def rec(key: str, **event: str) -> tuple[str, bytes]:
        return key, orjson.dumps(event)

    records = [
        rec("c1", customer_id="c1", anonymous_id="v9"),
        rec("v1", anonymous_id="v1"),
        rec("sku-1", item_id="sku-1"),
    ]
    types = ["purchase", "page_view", "item"]
    profiles, items = new_candidates(records, types, profiles=True, items=True)
    assert profiles == [(0, "customer_id", "c:c1"), (1, "anonymous_id", "a:v1")] and items == [(2, "sku-1")]
    assert new_candidates(records, types, profiles=False, items=True) == ([], [(2, "sku-1")])
    assert new_candidates(records, types, profiles=True, items=False)[1] == []
