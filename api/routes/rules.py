"""The business rules in force (``config/rules.yaml``, docs/rules.md): what is loaded and why an edit was refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from api.auth import RequireAdmin
from api.models import RulesOverview
from api.tenancy import request_tenant
from core.tenant_files import TenantFiles
from merchandising.rules import ACTIONS
from merchandising.source import RulesSource

router = APIRouter(prefix="/v1/rules", tags=["rules"], dependencies=[RequireAdmin])


def rules_overview(source: RulesSource) -> dict[str, Any]:
    """The file, when its rules were loaded, the refusal of its last edit (null when it is in force), the rules."""
    status = source.status()
    rules = source.current()
    loaded = datetime.fromtimestamp(status.loaded_at, tz=UTC).isoformat() if status.loaded_at else None
    return {
        "path": status.path,
        "valid": status.error is None,
        "error": status.error,
        "loaded_at": loaded,
        "rules": [
            {
                "name": rule.name,
                "placements": sorted(rule.placements) if rule.placements is not None else None,
                "segments": sorted(rule.segments) if rule.segments is not None else None,
                "from": rule.spec.from_.isoformat() if rule.spec.from_ else None,
                "until": rule.spec.until.isoformat() if rule.spec.until else None,
                "actions": [a for a in ACTIONS if getattr(rule.spec, a) is not None],
            }
            for rule in rules.rules
        ],
    }


@router.get("", response_model=RulesOverview)
async def rules_in_force(request: Request) -> dict[str, Any]:
    """The rules in force. ``valid`` is false and ``error`` names the rule, the field and the reason when the last
    edit of the file was refused: the previous rules (listed) then stay in force. A tenant's key sees its tenant's
    file (``<ECRM_TENANTS_DIR>/<tenant>/rules.yaml`` when present, else the top-level file)."""
    files: TenantFiles[RulesSource] = request.app.state.rules
    return rules_overview(files.get(request_tenant()))
