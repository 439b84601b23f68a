"""Giving freed heap memory back to the operating system between experiences.

On Linux, glibc keeps memory that PyTorch's CPU kernels free (oneDNN's buffers differ with every batch shape) inside
the process, so a long stream whose evaluation batches change shape with each experience grows its resident memory
by hundreds of MB without holding any more data (measured: 200 batch shapes through the bundled ViT, 0.93 → 2.7 GB).
``malloc_trim`` returns it; elsewhere this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        return None


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); False where there is none to call."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
