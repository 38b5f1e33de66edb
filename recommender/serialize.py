"""npz packing helpers: strings, JSON and sparse matrices as plain arrays (``allow_pickle=False`` throughout)."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import scipy.sparse as sp

FORMAT = "ecrm-recommender"
COMPRESS_LEVEL = 1


def pack_strings(values: Sequence[str]) -> dict[str, np.ndarray]:
    """UTF-8 bytes of all strings and their end offsets (compact, unlike a fixed-width unicode array)."""
    encoded = [v.encode("utf-8") for v in values]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64) if encoded else np.zeros(0, dtype=np.int64)
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return {"ids_utf8": blob, "ids_end": ends}


def unpack_strings(arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    raw = arrays["ids_utf8"].tobytes()
    ends = arrays["ids_end"].tolist()
    starts = [0, *ends[:-1]]
    return tuple(raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True))


def pack_json(value: Any) -> np.ndarray:
    return np.frombuffer(orjson.dumps(value), dtype=np.uint8)


def unpack_json(array: np.ndarray) -> Any:
    return orjson.loads(array.tobytes())


def pack_csr(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    # indptr as int32 while it fits: scipy would otherwise widen the indices to int64 at load (a copy of them,
    # which a memory-mapped model must not make)
    small = m.nnz < np.iinfo(np.int32).max
    return {
        f"{prefix}_data": m.data.astype(np.float32),
        f"{prefix}_indices": m.indices.astype(np.int32 if small else np.int64),
        f"{prefix}_indptr": m.indptr.astype(np.int32 if small else np.int64),
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def unpack_csr(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    m = sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape)
    m.check_format(full_check=True)
    return m


def npy_bytes(array: np.ndarray) -> bytes:
    """One array in the ``.npy`` format (what an npz member holds)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def compressible(data: bytes, sample: int = 1 << 16, ratio: float = 0.9) -> bool:
    """Whether deflate shrinks ``data`` below ``ratio`` of its size, judged on its first ``sample`` bytes (dense
    float factors and the candidate index hardly shrink: compressing them costs time and saves nothing)."""
    head = data[:sample]
    return len(zlib.compress(head, COMPRESS_LEVEL)) < ratio * len(head)


def save(kind: str, arrays: dict[str, np.ndarray]) -> bytes:
    """An npz blob tagged with the format and the model kind (``np.load`` reads it). Members that shrink are
    deflated at level 1 (``COMPRESS_LEVEL``: most of the gain of the default 6 at a fraction of the time), the
    rest stored as they are."""
    buf = io.BytesIO()
    header = {"format": pack_json({"format": FORMAT, "kind": kind, "version": 1})}
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        for name, array in (header | arrays).items():
            data = npy_bytes(array)
            method = zipfile.ZIP_DEFLATED if compressible(data) else zipfile.ZIP_STORED
            zf.writestr(f"{name}.npy", data, compress_type=method, compresslevel=COMPRESS_LEVEL)
    return buf.getvalue()


def load(kind: str, blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of a blob made by :func:`save` for ``kind``; ValueError when it is anything else."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = unpack_json(arrays.pop("format"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a recommender model blob: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a recommender model blob")
    if header.get("kind") != kind:
        raise ValueError(f"model blob holds a {header.get('kind')!r} model, not {kind!r}")
    return arrays


def unpack_to_dir(kind: str, blob: bytes, path: Path) -> None:
    """The arrays of a blob made by :func:`save` as uncompressed ``.npy`` files in the new folder ``path``, for
    :func:`load_dir` to memory-map. ValueError when the blob is anything else."""
    arrays = load(kind, blob)
    path.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(path / f"{name}.npy", array, allow_pickle=False)


def load_dir(path: Path) -> dict[str, np.ndarray]:
    """The arrays written by :func:`unpack_to_dir`, memory-mapped: processes that load the same folder share one
    copy of them in the page cache. Copy-on-write (``mmap_mode="c"``), because implicit's solver asks for writable
    buffers though it never writes: a page would be copied only if written, and the files never change."""
    try:
        return {p.stem: np.load(p, mmap_mode="c", allow_pickle=False) for p in sorted(path.glob("*.npy"))}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read model files in {path}: {exc}") from exc
