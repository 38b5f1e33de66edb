"""Several API processes on one port (``ecrm api --workers N``): uvicorn's process manager starts, watches and
restarts them; this module prepares what they share besides the model files (:mod:`api.model_files`): the folder
of prometheus-client's multiprocess mode, so that ``/metrics`` answers for all of them whichever one is asked."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.metrics import MULTIPROC_ENV


@contextmanager
def metrics_dir() -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the processes about to start: the one given (emptied of a previous run's
    files, as prometheus-client asks), or a new private folder removed afterwards."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="ecrm-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
