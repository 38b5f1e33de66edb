"""The API's shared model files (api/model_files.py): unpacked once, mapped, pruned; corrupt blobs refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.model_files import ModelFiles
from recommender import Engine, Interactions, RecommenderConfig


@pytest.fixture(scope="module")
def blob() -> bytes:
    records = [(f"u{u}", f"i{(u * 7 + k) % 40}", 1.0, 1_700_000_000_000 + k) for u in range(60) for k in range(5)]
    return Engine(RecommenderConfig(factors=4, iterations=3)).fit(Interactions.from_records(records)).to_bytes()


def test_a_version_is_unpacked_once_and_opened_by_anyone(tmp_path: Path, blob: bytes) -> None:
    files = ModelFiles(tmp_path, "shop")
    assert not files.has("v1")
    files.write("v1", blob, {"created_at": "2026-01-01T00:00:00Z"})
    files.write("v1", blob, {"other": 1})  # a second process, late: no-op, the first copy stays
    assert files.has("v1")
    model, meta = ModelFiles(tmp_path, "shop").open("v1")
    assert meta == {"created_at": "2026-01-01T00:00:00Z"}
    assert model.recommend([("i3", 1.0, 0)], 3) == Engine.from_bytes(blob).recommend([("i3", 1.0, 0)], 3)
    assert [p.name for p in (tmp_path / "shop").iterdir()] == ["v1"]  # no private folder left behind


def test_corrupt_blobs_and_unsafe_names_are_refused(tmp_path: Path, blob: bytes) -> None:
    files = ModelFiles(tmp_path, "shop")
    with pytest.raises(ValueError, match="not a recommender model blob"):
        files.write("v2", blob[:100], {})
    assert not files.has("v2") and list((tmp_path / "shop").iterdir()) == []
    with pytest.raises(ValueError, match="safe folder name"):
        files.write("../escape", blob, {})


def test_prune_keeps_the_newest_and_the_served(tmp_path: Path, blob: bytes) -> None:
    files = ModelFiles(tmp_path, "shop", keep=2)
    for k, version in enumerate(["v1", "v2", "v3", "v4"]):
        files.write(version, blob, {})
        os.utime(files.path(version), (1000 + k, 1000 + k))
    stale = tmp_path / "shop" / ".v5.123.abcdef"
    stale.mkdir()
    os.utime(stale, (1000, 1000))
    files.prune(serving="v1")
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == ["v1", "v3", "v4"]
