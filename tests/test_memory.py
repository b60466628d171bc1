"""Reading this process's resident memory, and giving the C heap's free pages back (real glibc, real
/proc: nothing mocked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from overnight import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def test_resident_memory_follows_what_the_process_touches() -> None:
    before = memory.resident_bytes()
    assert before is not None and before > 10 * MIB
    block = bytearray(64 * MIB)  # zero-filled: every page is touched
    during = memory.resident_bytes()
    assert during is not None and during - before > 60 * MIB
    del block  # this big a block is mapped apart and given back as soon as it is freed
    after = memory.resident_bytes()
    assert after is not None and during - after > 60 * MIB


# Run in a fresh interpreter, whose heap grows from the top as it allocates: in a long-lived process, earlier
# frees leave holes that the small blocks would fill, and freeing the big ones would shrink the heap at once.
_PINNED_HEAP = """
import json
from overnight import memory
big, pins = [], []
for _ in range(2048):  # 128 MiB
    big.append(bytearray(64 * 1024))
    pins.append(bytearray(1024))
del big
pinned = memory.resident_bytes()
trimmed = memory.resident_bytes() if memory.trim_heap() else None
print(json.dumps([pinned, trimmed, len(pins)]))
"""


@pytest.mark.skipif(not memory.HEAP_TRIMMABLE, reason="no glibc malloc_trim here")
def test_trimming_gives_back_free_heap_pages_that_live_objects_pin() -> None:
    """64 KiB blocks come from the heap (glibc maps only bigger ones apart), and a small block kept after
    each one pins the heap below it: freeing the big ones leaves their pages resident until a trim."""
    out = subprocess.run([sys.executable, "-c", _PINNED_HEAP], capture_output=True, text=True, check=True, cwd=ROOT)
    pinned, trimmed, pins = json.loads(out.stdout)
    assert pins == 2048 and trimmed is not None, out.stdout
    assert pinned - trimmed > 100 * MIB, f"{pinned // MIB} MiB resident before the trim, {trimmed // MIB} after"
