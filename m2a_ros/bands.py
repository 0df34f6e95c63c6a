"""A frame's rows split into bands worked on by a few threads.

numpy's and Pillow's pixel loops release the GIL, so the node's per-frame pixel work (camera conversion in
``m2a_ros.conversions``, colouring and blending in ``m2a_ros.outputs``) runs band by band in parallel. One shared
pool, started on first use.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

THREADS = max(1, min(4, os.cpu_count() or 1))
ROWS_MULTIPLE = 4   # band edges on multiples of 4 rows keep every band's RGB bytes 4-byte aligned (blend lanes)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="m2a_bands")
        return _pool


def row_bands(height: int, count: int) -> list[slice]:
    """``count`` (at most) contiguous row ranges covering ``height`` rows, edges on multiples of 4 rows."""
    step = -(-height // max(1, count))
    step = -(-step // ROWS_MULTIPLE) * ROWS_MULTIPLE
    return [slice(start, min(start + step, height)) for start in range(0, height, step)]


def submit_bands(work: Callable[[slice], None], height: int) -> list[Future]:
    """``work(rows)`` for each of ``THREADS`` bands, on the pool; the caller waits on the futures."""
    pool = _shared_pool()
    return [pool.submit(work, rows) for rows in row_bands(height, THREADS)]


def run_bands(work: Callable[[slice], None], height: int) -> None:
    """``work(rows)`` for every band, in parallel; returns when all are done (re-raising a band's error)."""
    for band in submit_bands(work, height):
        band.result()
