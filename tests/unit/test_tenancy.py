"""The caller's tenant in the API (api/tenancy.py): a caller without one acts for the default tenant; a command acts
for the tenant it names within a block, and only there."""

from __future__ import annotations

import pytest

from api.auth import Caller
from api.tenancy import acting_for, request_tenant, tenant_of
from core.scopes import Scope
from core.tenants import TenantError


def test_a_caller_without_a_tenant_acts_for_the_default_one() -> None:
    assert tenant_of(Caller(Scope.ADMIN, "admin", "key:x")) == "default"


def test_a_command_acts_for_its_tenant_within_the_block_only() -> None:
    assert request_tenant() == "default"
    with acting_for("shop-a"):
        assert request_tenant() == "shop-a"
        with acting_for("shop-b"):
            assert request_tenant() == "shop-b"
        assert request_tenant() == "shop-a"
    assert request_tenant() == "default"
    with pytest.raises(TenantError), acting_for("../shop"):
        pass
    assert request_tenant() == "default"
