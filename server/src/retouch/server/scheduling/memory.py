"""The C heap capped for short-lived pixel buffers, and handed back after bursts.

Measured on a 2-core machine with 64 concurrent 2048² inpaint streams (``python -m
bench.scheduling``), glibc's defaults kept the server at 2.3 GiB once idle: freed
images stayed in the heap, spread over one arena per thread. Two settings were tried
against each other in one run (two servers taking turns, ``MALLOC_*`` variables):

- pinning the mmap threshold at 128 KiB, so every image-sized buffer is mapped and
  unmapped whole, peaked at 537 MiB and settled at 165 MiB, but the page faults of
  fresh mappings cost 10 % of the 8-client 1024² throughput (6.0 against 6.6 jobs/s);
- capping the arenas at two, leaving glibc's dynamic threshold alone, peaked at
  540 MiB and settled at 139 MiB (from 146 MiB before the burst) at full speed.

So :func:`tune_allocator` caps the arenas, and the scheduler calls :func:`trim` once its
queues have stayed empty for a second, which hands the freed heap back. Both do nothing
where the C library is not glibc, and an operator's own ``MALLOC_*`` environment
settings win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter (malloc.h)."""
ARENA_MAX = 2


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(library, "malloc_trim") or not hasattr(library, "mallopt"):
        return None
    library.malloc_trim.argtypes = [ctypes.c_size_t]
    library.malloc_trim.restype = ctypes.c_int
    library.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    library.mallopt.restype = ctypes.c_int
    return library


_GLIBC = _glibc()


def tune_allocator() -> bool:
    """Cap this process's arenas as above, unless the environment sets glibc's own
    settings; True when the cap was set. Call it once at start-up, before the worker
    threads exist."""
    if _GLIBC is None:
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        log.info("allocator: leaving glibc to the MALLOC_* environment settings")
        return False
    tuned = bool(_GLIBC.mallopt(M_ARENA_MAX, ARENA_MAX))
    if not tuned:
        log.warning("allocator: glibc refused the arena cap")
    return tuned


def trim() -> bool:
    """Return the C heap's free pages to the system; True when some were returned.
    Blocks for a few milliseconds on a large heap: call it off the event loop."""
    if _GLIBC is None:
        return False
    return bool(_GLIBC.malloc_trim(0))
