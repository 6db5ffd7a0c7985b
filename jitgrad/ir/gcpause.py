"""Pausing Python's cyclic garbage collector while the front end builds a big graph.

Tracing, the passes and the executor's build allocate several objects per equation and keep
them all (a graph is one big live structure), so the collector's full collections, which
start each time the number of live objects has grown by a quarter, traverse the whole heap
again and again while finding nothing to free: at 60,000 equations they took about a third of
the front end's time. `gc_paused()` switches automatic collection off for the duration of the
block and back on after the outermost one ends, if it was on; nothing is collected meanwhile,
and the objects stay tracked, so a later collection frees whatever became garbage.

Only the main thread pauses it: a graph built on a background thread (the tape's compiled
backward) must not stop collection for the user's code running meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import threading

_depth = 0  # blocks under way (in the main thread)
_was_enabled = False
_MAIN = threading.main_thread()


@contextlib.contextmanager
def gc_paused():
    """No automatic cyclic collection inside the block, in the main thread (blocks nest)."""
    global _depth, _was_enabled
    if threading.current_thread() is not _MAIN:
        yield
        return
    if _depth == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()
