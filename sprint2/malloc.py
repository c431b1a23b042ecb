"""glibc malloc settings for training: keep freed tensor memory mapped instead of handing it back.

TensorFlow's CPU allocator takes tensor buffers from malloc. Under glibc's defaults, buffers of a few
MB are mmap'ed and unmapped again, and freed heap tops are trimmed, so a training step can fault its
activations in page by page every time: on a 2-core VM whole epochs ran at half speed, with three
quarters of the CPU time spent in the kernel. A fixed mmap threshold at glibc's largest value and a
high trim threshold keep those pages mapped for reuse (the price: a higher resident set size).
Light: ctypes only, no TensorFlow.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

#: mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap: glibc refuses more than 32 MiB on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of a heap is returned to the kernel only beyond this size.
TRIM_THRESHOLD = 1 << 30
#: Set to "0" to keep glibc's defaults (for a side-by-side comparison).
ENV_SWITCH = "SPRINT2_KEEP_FREED_MEMORY"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Applies MMAP_THRESHOLD and TRIM_THRESHOLD once per process; True when they are in force.

    A no-op (False) off glibc Linux, when mallopt refuses, or when ENV_SWITCH is "0".
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_SWITCH, "1") == "0":
        logger.info("%s=0: glibc's malloc defaults kept", ENV_SWITCH)
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    applied = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
    if not applied:
        logger.warning("mallopt refused the training thresholds; glibc's defaults stay")
    _applied = applied
    return applied
