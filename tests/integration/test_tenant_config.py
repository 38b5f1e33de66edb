"""Per-tenant configuration through the real API (issue 22): two shops with their own rules and campaigns files
under ECRM_TENANTS_DIR, a third on the top-level files; a refused edit of one shop's file leaves it on its last good
rules and every other shop serving, with the refusal reported for that shop only.

The caller's tenant: see tests/integration/tenant_callers.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from tests.integration.helpers import app_client
from tests.integration.tenant_callers import tenant_keys_for
from tests.integration.test_rules import ids, shop, sku

pytestmark = pytest.mark.integration

CAMPAIGN = """version: 1
campaigns:
  - name: {name}
    goal: purchase
    from: "2020-01-01T00:00:00Z"
    until: "2099-01-01T00:00:00Z"
    placements: [personal]
    variants: [{{name: x, weight: 50}}, {{name: y, weight: 50}}]
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tenants_settings(settings: Settings, tmp_path: Path) -> Settings:
    top = tmp_path / "top"
    write(top / "rules.yaml", "version: 1\nrules: []\n")
    write(top / "campaigns.yaml", "version: 1\ncampaigns: []\n")
    folder = tmp_path / "tenants"
    write(folder / "shop-a" / "rules.yaml", "version: 1\nrules:\n  - name: no-a\n    exclude: {category: [a]}\n")
    write(folder / "shop-a" / "campaigns.yaml", CAMPAIGN.format(name="a-sale"))
    write(folder / "shop-b" / "rules.yaml", "version: 1\nrules:\n  - name: no-b\n    exclude: {category: [b]}\n")
    return settings.model_copy(
        update={
            "rules_file": str(top / "rules.yaml"),
            "campaigns_file": str(top / "campaigns.yaml"),
            "tenants_dir": str(folder),
            "tenants": "shop-a,shop-b",
            "rules_check_interval_s": 0.0,
            "campaigns_check_interval_s": 0.0,
            "campaign_metrics_s": 0.0,
        }
    )


async def personal(client: httpx.AsyncClient, tenant: str) -> dict[str, object]:
    resp = await client.get("/v1/customers/shopper/recommendations", params={"n": 10}, headers={"x-tenant": tenant})
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


def items(body: dict[str, object]) -> list[str]:
    return ids(body["items"])  # type: ignore[arg-type]


async def test_each_tenant_is_served_by_its_own_rules_and_campaigns(settings: Settings, tmp_path: Path) -> None:
    for tenant in ("default", "shop-a", "shop-b"):  # the same catalogue and history in each shop's own keys
        await shop(settings, tenant)
    async with app_client(tenants_settings(settings, tmp_path)) as (app, client):
        tenant_keys_for(app)
        a, b, default = [await personal(client, t) for t in ("shop-a", "shop-b", "default")]
        assert items(a) == [sku(i) for i in (5, 6, 7, 8, 9, 10, 11, 12)]  # shop-a: no category a
        assert items(b) == [sku(i) for i in (1, 2, 3, 4, 9, 10, 11, 12)]  # shop-b: no category b
        assert items(default) == [sku(i) for i in range(1, 11)]  # the top-level file: no rules
        assert a["campaign"] == "a-sale" and b["campaign"] is None and default["campaign"] is None
        listed = {t: (await client.get("/v1/campaigns", headers={"x-tenant": t})).json() for t in ("shop-a", "shop-b")}
        assert [c["name"] for c in listed["shop-a"]["campaigns"]] == ["a-sale"]
        assert listed["shop-b"]["campaigns"] == [] and listed["shop-b"]["path"].endswith("top/campaigns.yaml")
        rules = (await client.get("/v1/rules", headers={"x-tenant": "shop-b"})).json()
        assert [r["name"] for r in rules["rules"]] == ["no-b"] and rules["path"].endswith("shop-b/rules.yaml")


async def test_a_refused_file_of_one_tenant_leaves_the_others_serving(settings: Settings, tmp_path: Path) -> None:
    for tenant in ("shop-a", "shop-b"):
        await shop(settings, tenant)
    configured = tenants_settings(settings, tmp_path)
    async with app_client(configured) as (app, client):
        tenant_keys_for(app)
        before_a, before_b = items(await personal(client, "shop-a")), items(await personal(client, "shop-b"))
        bad = "version: 1\nrules:\n  - name: broken-pin\n    pin: [{item_id: sku-01, position: 0}]\n"
        (Path(str(configured.tenants_dir)) / "shop-a" / "rules.yaml").write_text(bad)
        assert items(await personal(client, "shop-a")) == before_a  # its last good rules stay in force
        assert items(await personal(client, "shop-b")) == before_b
        status_a = (await client.get("/v1/rules", headers={"x-tenant": "shop-a"})).json()
        status_b = (await client.get("/v1/rules", headers={"x-tenant": "shop-b"})).json()
        assert status_a["valid"] is False and "rule 'broken-pin'" in status_a["error"]
        assert [r["name"] for r in status_a["rules"]] == ["no-a"]
        assert status_b["valid"] is True and status_b["error"] is None
        assert (await client.get("/health/ready")).json()["rules"] == "refused"
        text = (await client.get("/metrics")).text
        assert 'ecrm_rules_file_valid{tenant="shop-a"} 0.0' in text
        assert 'ecrm_rules_file_valid{tenant="shop-b"} 1.0' in text
        assert 'ecrm_rules_file_valid{tenant="default"} 1.0' in text
        # the requests were labelled with their tenant
        assert 'route="/v1/customers/{customer_id}/recommendations",status="200",tenant="shop-b"' in text
