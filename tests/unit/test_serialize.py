"""Model blobs (recommender/serialize.py): npz read by ``np.load``, arrays that shrink deflated, the rest stored."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from recommender.serialize import compressible, load, npy_bytes, save


def test_random_floats_are_not_worth_compressing_and_repeats_are() -> None:
    rng = np.random.default_rng(0)
    assert not compressible(npy_bytes(rng.standard_normal(50_000).astype(np.float32)))
    assert compressible(npy_bytes(np.repeat(np.arange(100, dtype=np.int32), 500)))


def test_a_blob_keeps_every_array_and_deflates_only_those_that_shrink() -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "factors": rng.standard_normal((500, 16)).astype(np.float32),
        "indices": np.tile(np.arange(200, dtype=np.int32), 50),
        "empty": np.zeros(0, dtype=np.int64),
    }
    blob = save("engine", arrays)
    back = load("engine", blob)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        methods = {info.filename: info.compress_type for info in zf.infolist()}
    assert methods["factors.npy"] == zipfile.ZIP_STORED and methods["indices.npy"] == zipfile.ZIP_DEFLATED
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # a plain npz
        assert np.array_equal(npz["indices"], arrays["indices"])


def test_a_blob_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not 'other'"):
        load("other", save("engine", {"a": np.ones(3)}))
