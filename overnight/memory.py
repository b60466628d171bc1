"""This process's memory as the operating system sees it, and giving back what is free.

After a burst of work (a big create, a batch run, a big download) Python has freed what the work held,
but glibc keeps most of it: it returns memory to the system only from the top of its heap, and any
small object still alive above a freed region pins the whole region. `malloc_trim(0)` returns every
free page wherever it lies. Where there is no glibc (musl, macOS) there is nothing to call, and
`trim_heap` does nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """Resident memory of this process (Linux), or None where the system does not say."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded, the C library's among them
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_trim = _malloc_trim()
HEAP_TRIMMABLE = _trim is not None


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system; whether there were any (False without glibc).

    The call runs without the GIL (ctypes releases it), but holds the heap's lock meanwhile."""
    return _trim is not None and bool(_trim(0))
