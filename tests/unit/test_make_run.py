"""``make run PORT=...`` starts the API on that port (the command make would run, checked with ``make -n``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def planned(*args: str) -> str:
    make = shutil.which("make")
    assert make is not None, "make is needed by `make run` itself"
    # -n: print, do not run; -o: take the install stamp as up to date, so only the run line is printed
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    done = subprocess.run(
        [make, "-n", "-C", str(REPO), "-o", ".venv/.installed", "run", *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_takes_a_port() -> None:
    assert "ecrm up --port 8123" in planned("PORT=8123")


def test_make_run_defaults_to_8000() -> None:
    assert "ecrm up --port 8000" in planned()
