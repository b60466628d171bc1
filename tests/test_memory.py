"""Reading this process's resident memory, and giving the C heap's free pages back (real glibc, real
/proc: nothing mocked)."""

from __future__ import annotations

import sys

import pytest

from overnight import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

MIB = 1 << 20


def test_resident_memory_follows_what_the_process_touches() -> None:
    before = memory.resident_bytes()
    assert before is not None and before > 10 * MIB
    block = bytearray(64 * MIB)  # zero-filled: every page is touched
    during = memory.resident_bytes()
    assert during is not None and during - before > 60 * MIB
    del block  # this big a block is mapped apart and given back as soon as it is freed
    after = memory.resident_bytes()
    assert after is not None and during - after > 60 * MIB


@pytest.mark.skipif(not memory.HEAP_TRIMMABLE, reason="no glibc malloc_trim here")
def test_trimming_gives_back_free_heap_pages_that_live_objects_pin() -> None:
    """64 KiB blocks come from the heap (glibc maps only bigger ones apart), and a small block kept after
    each one pins the heap below it: freeing the big ones leaves their pages resident until a trim."""
    big, pins = [], []
    for _ in range(2048):  # 128 MiB
        big.append(bytearray(64 * 1024))
        pins.append(bytearray(1024))
    del big
    pinned = memory.resident_bytes()
    assert memory.trim_heap()
    trimmed = memory.resident_bytes()
    assert pinned is not None and trimmed is not None
    assert pinned - trimmed > 100 * MIB, f"{pinned // MIB} MiB resident before the trim, {trimmed // MIB} after"
    assert len(pins) == 2048
