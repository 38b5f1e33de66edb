"""``ecrm simulate`` run twice adds new events: the same data under new event ids, unless the run id is repeated."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from ecrm.cli import app

runner = CliRunner()
SMALL = ["simulate", "--customers", "3", "--visitors", "2", "--items", "10", "--days", "1"]


def _events(tmp_path: Path, name: str, *extra: str) -> list[dict[str, object]]:
    out = tmp_path / name
    result = runner.invoke(app, [*SMALL, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_each_run_gets_new_event_ids_and_the_same_data(tmp_path: Path) -> None:
    first, second = _events(tmp_path, "a"), _events(tmp_path, "b")
    assert len(first) == len(second) > 10
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}
    assert [(e["type"], e.get("item_id")) for e in first] == [(e["type"], e.get("item_id")) for e in second]


def test_the_same_run_id_repeats_the_ids(tmp_path: Path) -> None:
    first, second = _events(tmp_path, "a", "--run-id", "r1"), _events(tmp_path, "b", "--run-id", "r1")
    assert [e["event_id"] for e in first] == [e["event_id"] for e in second]
