"""The campaigns file, re-read when it changes: the last good campaigns stay in force over an invalid edit.

The same mechanism as the business rules (:mod:`merchandising.source`, :class:`core.watched.WatchedFile`): the
file's modification time is checked at most every ``check_interval_s`` seconds; a changed file is parsed and
compiled once. A refused file is logged once per change with the campaign, the field and the reason, kept in
:attr:`CampaignsSource.error` for the API and shown by the ``ecrm_campaigns_file_valid`` gauge (0). No file means
no campaigns. The API and the worker each read the file (ECRM_CAMPAIGNS_FILE).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from core import metrics
from core.tenant_files import TenantFiles
from core.tenants import DEFAULT_TENANT
from core.watched import Poll, WatchedFile
from merchandising.campaigns import NO_CAMPAIGNS, CampaignsError, CampaignSet, parse_campaigns

log = logging.getLogger(__name__)

DEFAULT_CAMPAIGNS_PATH = Path(__file__).resolve().parents[1] / "config" / "campaigns.yaml"


class CampaignsSource:
    """The campaigns in force of one file (or none: ``path`` None), reloaded on change."""

    def __init__(
        self,
        path: Path | None,
        check_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.path = path
        self.tenant = tenant  # whose file: the gauge's tenant label
        self._file = WatchedFile(path, check_interval_s, clock) if path is not None else None
        self._campaigns: CampaignSet = NO_CAMPAIGNS
        self.loaded_at: float | None = None
        self.error: str | None = None
        self._valid = metrics.CAMPAIGNS_FILE_VALID.labels(metrics.tenant_label(tenant))
        self._valid.set(1)

    def current(self, force: bool = False) -> CampaignSet:
        found = self._file.poll(force) if self._file is not None else None
        if found is not None and self.path is not None:
            self._take(self.path, found)
        return self._campaigns

    def _take(self, path: Path, found: Poll) -> None:
        if isinstance(found.error, FileNotFoundError):
            if self._campaigns.campaigns:
                log.warning("campaigns file %s is gone: no campaigns are running", path)
            self._set(NO_CAMPAIGNS)
            return
        if found.error is not None:
            self._refuse(f"{path}: cannot read: {found.error}")
            return
        try:
            campaigns = parse_campaigns(found.text or "", str(path))
        except CampaignsError as exc:
            self._refuse(str(exc))
            return
        self._set(campaigns)
        log.info("campaigns loaded from %s (%d campaigns)", path, len(campaigns.campaigns))

    def _set(self, campaigns: CampaignSet) -> None:
        self._campaigns, self.error = campaigns, None
        self.loaded_at = time.time()
        self._valid.set(1)

    def _refuse(self, message: str) -> None:
        if message != self.error:
            kept = len(self._campaigns.campaigns)
            log.error("campaigns refused: %s; the previous campaigns stay in force (%d campaigns)", message, kept)
        self.error = message
        self._valid.set(0)


def load_campaigns(path: Path) -> CampaignSet:
    """Read and validate one campaigns file. Raises :class:`CampaignsError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignsError(str(path), [f"(file): cannot read: {exc}"]) from exc
    return parse_campaigns(text, str(path))


def campaigns_path(configured: str | None) -> Path:
    """ECRM_CAMPAIGNS_FILE, else config/campaigns.yaml of the installation."""
    return Path(configured) if configured else DEFAULT_CAMPAIGNS_PATH


CAMPAIGNS_NAME = "campaigns.yaml"


def tenant_campaigns(
    top_level: Path | None, tenants_dir: Path | None, check_interval_s: float = 2.0
) -> TenantFiles[CampaignsSource]:
    """Each tenant's campaigns: ``<tenants_dir>/<tenant>/campaigns.yaml`` when present, else the top-level file."""

    return TenantFiles.loaded(
        lambda path, interval, tenant: CampaignsSource(path, interval, tenant=tenant),
        top_level,
        tenants_dir,
        CAMPAIGNS_NAME,
        check_interval_s,
    )
