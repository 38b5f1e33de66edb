"""Thread limits, so that training and batch scoring do not fight the serving processes for the cores.

implicit's own fit uses ``num_threads`` (config); the BLAS library behind numpy is limited with threadpoolctl.
A serving process calls :func:`pin_blas_threads` once at start-up (the same as ``OPENBLAS_NUM_THREADS=1`` and
``OMP_NUM_THREADS=1``);
training wraps its work in :func:`blas_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


def pin_blas_threads(n: int = 1) -> None:
    """Limit the BLAS and OpenMP thread pools of this process (numpy's BLAS; faiss's candidate search) to ``n``
    threads from now on: a serving process scales by processes, and idle OpenMP threads would spin on a core."""
    if n < 1:
        raise ValueError(f"BLAS threads must be at least 1, got {n}")
    threadpool_limits(limits=n, user_api="blas")
    threadpool_limits(limits=n, user_api="openmp")


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit the BLAS thread pools to ``n`` threads inside the block, then restore them."""
    if n < 1:
        raise ValueError(f"BLAS threads must be at least 1, got {n}")
    with threadpool_limits(limits=n, user_api="blas"):
        yield
