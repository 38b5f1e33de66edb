"""Per-tenant configuration files (core/tenant_files.py): which file serves a tenant, a tenant's own file taking over
and handing back, and a refused edit of one tenant's file leaving every other tenant's rules alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.rules_file import DEFAULT_RULES_PATH, tenant_segments
from core.tenant_files import TenantFiles, tenant_path
from core.tenants import TenantError
from merchandising.campaign_source import tenant_campaigns
from merchandising.source import RulesSource, tenant_rules

RULE = "version: 1\nrules:\n  - name: {name}\n    exclude: {{category: [{category}]}}\n"
BAD = "version: 1\nrules:\n  - name: broken\n    pin: [{item_id: x, position: 0}]\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def files(tmp_path: Path, clock: Clock) -> TenantFiles[RulesSource]:
    top = tmp_path / "rules.yaml"
    top.write_text(RULE.format(name="top", category="x"))

    def make(path: Path, tenant: str) -> RulesSource:
        return RulesSource(path, 0.0, tenant=tenant)

    return TenantFiles(RulesSource(top, 0.0), tmp_path / "tenants", "rules.yaml", make, 2.0, clock)


def names(source: RulesSource) -> list[str]:
    return source.current().names


def test_a_tenant_without_its_own_file_uses_the_top_level_one_until_it_has_one(tmp_path: Path) -> None:
    clock = Clock()
    per = files(tmp_path, clock)
    assert names(per.get("shop-a")) == ["top"] and per.own_file("shop-a") is None
    own = tenant_path(tmp_path / "tenants", "shop-a", "rules.yaml")
    own.parent.mkdir(parents=True)
    own.write_text(RULE.format(name="a-only", category="a"))
    assert names(per.get("shop-a")) == ["top"]  # looked at again only after the check interval
    clock.now = 2.0
    assert names(per.get("shop-a")) == ["a-only"] and per.own_file("shop-a") == own
    assert names(per.get("shop-b")) == ["top"] and names(per.get("default")) == ["top"]
    own.unlink()
    clock.now = 4.0
    assert names(per.get("shop-a")) == ["top"]  # its file gone: the top-level file serves it again


def test_the_default_tenant_is_served_by_the_top_level_files(tmp_path: Path) -> None:
    per = files(tmp_path, Clock())
    own = tenant_path(tmp_path / "tenants", "default", "rules.yaml")
    own.parent.mkdir(parents=True)
    own.write_text(RULE.format(name="ignored", category="a"))
    assert names(per.get("default", force=True)) == ["top"]


def test_a_refused_edit_of_one_tenants_file_keeps_its_last_good_rules_and_touches_no_other(tmp_path: Path) -> None:
    clock = Clock()
    per = files(tmp_path, clock)
    for tenant, category in (("shop-a", "a"), ("shop-b", "b")):
        path = tenant_path(tmp_path / "tenants", tenant, "rules.yaml")
        path.parent.mkdir(parents=True)
        path.write_text(RULE.format(name=f"{tenant}-rule", category=category))
    assert names(per.get("shop-a")) == ["shop-a-rule"] and names(per.get("shop-b")) == ["shop-b-rule"]
    tenant_path(tmp_path / "tenants", "shop-a", "rules.yaml").write_text(BAD)
    a, b = per.get("shop-a"), per.get("shop-b")
    assert names(a) == ["shop-a-rule"] and a.error is not None and "rule 'broken'" in a.error
    assert names(b) == ["shop-b-rule"] and b.error is None
    assert per.shared.error is None and names(per.shared) == ["top"]
    assert {s.error is not None for s in per.sources()} == {True, False}


def test_a_tenant_name_that_could_name_another_folder_is_refused(tmp_path: Path) -> None:
    per = files(tmp_path, Clock())
    for bad in ("../x", "Shop", "a/b", ""):
        with pytest.raises(TenantError):
            per.get(bad)


def test_single_serves_every_tenant_with_one_source(tmp_path: Path) -> None:
    source = RulesSource(None)
    per = TenantFiles.of(source)
    assert per.get("shop-a") is source and per.get("default") is source and TenantFiles.of(per) is per


def test_each_kind_of_file_resolves_per_tenant(tmp_path: Path) -> None:
    folder = tmp_path / "tenants"
    (folder / "shop-a").mkdir(parents=True)
    top_rules, top_campaigns, top_segments = (tmp_path / n for n in ("rules.yaml", "campaigns.yaml", "segments.yaml"))
    top_rules.write_text(RULE.format(name="top", category="x"))
    (folder / "shop-a" / "rules.yaml").write_text(RULE.format(name="mine", category="a"))
    campaign = (
        "version: 1\ncampaigns:\n  - name: {name}\n    goal: purchase\n    placements: [personal]\n"
        "    from: '2020-01-01T00:00:00Z'\n    until: '2099-01-01T00:00:00Z'\n"
        "    variants: [{{name: x, weight: 1}}, {{name: y, weight: 1}}]\n"
    )
    top_campaigns.write_text(campaign.format(name="everyone"))
    (folder / "shop-a" / "campaigns.yaml").write_text(campaign.format(name="a-sale"))
    top_segments.write_text(DEFAULT_RULES_PATH.read_text())
    (folder / "shop-a" / "segments.yaml").write_text("this: is: not yaml")
    rules = tenant_rules(top_rules, folder, 0.0)
    campaigns = tenant_campaigns(top_campaigns, folder, 0.0)
    segments = tenant_segments(top_segments, folder, 0.0)
    assert rules.get("shop-a").current().names == ["mine"] and rules.get("shop-b").current().names == ["top"]
    assert campaigns.get("shop-a").current().names == ["a-sale"]
    assert campaigns.get("shop-b").current().names == ["everyone"]
    # shop-a's segment file never was valid: the top-level rules serve it meanwhile, and the error is kept
    mine = segments.get("shop-a")
    assert mine.current().names == segments.get("shop-b").current().names and mine.error is not None


def test_the_analytics_refresh_of_a_tenant_uses_its_own_segment_rules(tmp_path: Path) -> None:
    from analytics.refresh import make_refresher
    from analytics.settings import AnalyticsSettings
    from core.settings import Settings

    own = tenant_path(tmp_path, "shop-a", "segments.yaml")
    own.parent.mkdir(parents=True)
    own.write_text(DEFAULT_RULES_PATH.read_text())
    settings = Settings(tenants_dir=str(tmp_path))
    cfg = AnalyticsSettings(segments_check_interval_s=0.0)
    assert make_refresher(settings, cfg, "shop-a").rules.path == own
    assert make_refresher(settings, cfg, "shop-b").rules.path == cfg.segments_file
    assert make_refresher(settings, cfg).rules.path == cfg.segments_file
