"""Keep freed memory in the process, so camera-size arrays reuse pages instead of faulting in fresh ones.

glibc hands blocks above its mmap threshold (dynamic, from 128 KiB up to 32 MiB) back to the kernel when they are
freed, and trims the heap when its free top exceeds the trim threshold. Every frame allocates a dozen 2-12 MB
arrays (pictures, blends, message buffers) and frees them again, so each one comes back as fresh pages the kernel
must fault in and zero: measured with ``m2a bench node`` at 1024x2048 on the development VM, that was more than
half of the node's render time (``frame_messages``: ~80 ms with glibc's defaults, ~25 ms with these settings).
The cost is that the process keeps up to ``trim_threshold`` of freed memory for reuse.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1   # glibc malloc.h
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap and keep up to ``trim_threshold`` bytes of it
    when freed. True where glibc applied both settings; False elsewhere (another C library: nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
