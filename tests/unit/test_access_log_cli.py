"""``ecrm ingest-log`` end to end without a broker (--dry-run)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecrm.cli import app

runner = CliRunner()
LINE = (
    '203.0.113.9 - - [17/May/2015:10:05:03 +0000] "GET /presentations/vim/ HTTP/1.1" 200 10 "-" '
    '"Mozilla/5.0 (X11; Linux x86_64; rv:27.0) Gecko/20100101 Firefox/27.0"\n'
)


def test_dry_run_on_the_sample(datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECRM_LOG_SALT", "from-the-environment")
    rejects = tmp_path / "rejects.tsv"
    log = datasets / "apache_access_sample.log"
    result = runner.invoke(app, ["ingest-log", str(log), "--dry-run", "--no-progress", "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    found = re.finditer(r"^\s*([a-z_ ]+?)\s{2,}(\S.*)$", result.output, re.MULTILINE)
    summary = {m.group(1): m.group(2) for m in found}
    assert summary["lines read"] == "10000"
    assert summary["events"] == "1579"
    assert (summary["page_view"], summary["product_view"]) == ("367", "1212")
    assert (summary["assets dropped"], summary["bots dropped"], summary["errors dropped"]) == ("6538", "1527", "170")
    assert summary["rejects"].startswith("1 (see ")
    assert summary["produced"] == "nothing (dry run)"
    written = rejects.read_text().splitlines()
    assert written[0] == "line\treason\ttext"
    assert written[1].startswith("8899\tdoes not match the combined log format\t<client> - - [20/May/2015:12:05:17")
    assert "46.118.127.106" not in rejects.read_text()


@pytest.mark.parametrize("salt", [None, ""])
def test_refuses_to_run_without_a_salt(salt: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ECRM_LOG_SALT", raising=False)
    log = tmp_path / "a.log"
    log.write_text(LINE)
    args = ["ingest-log", str(log), "--dry-run", "--no-progress"] + ([] if salt is None else ["--salt", salt])
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error: a secret salt is required (--salt or ECRM_LOG_SALT)" in result.output
    assert "events" not in result.output and not (tmp_path / "a.log.rejects.tsv").exists()


def test_no_rejects_file_when_nothing_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "a.log"
    log.write_text(LINE)
    result = runner.invoke(app, ["ingest-log", str(log), "--dry-run", "--no-progress", "--salt", "s"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert not (tmp_path / "a.log.rejects.tsv").exists()


def test_the_rejects_file_goes_beside_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs, elsewhere = tmp_path / "logs", tmp_path / "cwd"
    logs.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    log = logs / "a.log"
    log.write_text(LINE + "not a log line\n")
    result = runner.invoke(app, ["ingest-log", str(log), "--dry-run", "--no-progress", "--salt", "s"])
    assert result.exit_code == 0, result.output
    assert (logs / "a.log.rejects.tsv").read_text().splitlines()[1].startswith("2\t")
    assert list(elsewhere.iterdir()) == []
    assert str(logs / "a.log.rejects.tsv") in result.output


def test_bad_patterns_file_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(LINE)
    patterns = tmp_path / "p.yaml"
    patterns.write_text("rules:\n  - name: x\n    match: '('\n    event: page_view\n")
    result = runner.invoke(app, ["ingest-log", str(log), "--dry-run", "--patterns", str(patterns), "--salt", "s"])
    assert result.exit_code == 2
    assert "error: " in result.output and "rules[0] (x): match: invalid regular expression" in result.output


def test_follow_reads_lines_appended_later_and_stops_when_idle(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(LINE)

    def grow() -> None:
        time.sleep(0.3)
        with log.open("a") as handle:
            handle.write(LINE.replace("vim", "mpi"))

    writer = threading.Thread(target=grow)
    writer.start()
    args = ["ingest-log", str(log), "--dry-run", "--no-progress", "--salt", "s", "--follow", "--poll", "0.05"]
    result = runner.invoke(app, [*args, "--max-idle", "1.0", "--rejects", str(tmp_path / "r.tsv")])
    writer.join()
    assert result.exit_code == 0, result.output
    assert "  product_view        2" in result.output
