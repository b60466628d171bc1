"""`overnight serve`'s process-wide settings, checked in a fresh interpreter (they would outlive the test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.server import REPO_ROOT

SETTLED = textwrap.dedent(
    """
    import gc, weakref

    import overnight.api.app  # what `serve` has imported by the time it settles the heap
    from overnight.cli import settle_heap

    tracked_before = len(gc.get_objects())
    settle_heap()
    tracked_after = len(gc.get_objects())

    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    print(tracked_before, tracked_after, gc.get_freeze_count(), gc.get_threshold()[0], gone() is None)
    """
)


def test_settling_the_heap_leaves_startup_objects_out_of_collections_and_still_collects_new_garbage() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SETTLED], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    before, after, frozen, young_threshold, collected = run.stdout.split()
    # Startup's objects (tens of thousands) are frozen: a full collection no longer walks them.
    assert int(before) > 20_000
    assert int(frozen) >= int(before) - 1_000
    assert int(after) < 1_000
    assert int(young_threshold) == 50_000
    # Garbage made afterwards is still found: a reference cycle is collected.
    assert collected == "True"
