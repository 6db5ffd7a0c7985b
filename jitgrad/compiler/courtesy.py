"""The compile thread gives way to the user's threads.

CPython shares the GIL fairly: a thread that wants it gets it within the switch interval
(5 ms). So a background job of 0.2-0.5 s of Python work (building the tape's backward graph,
optimising and emitting a kernel, loading it) took half of every training step it ran beside:
the eager tape's 2nd iteration took 21 ms instead of 10. The tape's jobs on the compile thread
therefore run under a profile hook that, after every `SLICE` seconds of their work, releases
the GIL (`time.sleep(0)`). A user thread waiting for it then runs until its own switch interval
ends, so a job takes ~SLICE / (SLICE + 5 ms), about a tenth, of a busy user thread's time, and
takes longer itself (the tape's build: 0.22 -> 0.6 s, while its steps run op by op at full
speed). A jitted function's jobs do not: its calls meanwhile run on the slower numpy fallback,
and the sooner its kernel serves the better (background.start).

When nobody takes the GIL at those points (`QUIET_YIELDS` releases in a row come straight
back: the user thread is waiting, in `fn.wait()` or at exit) the hook removes itself, since
its own cost, a Python call per function call (~2.5x on a job), then buys nothing.
"""

from __future__ import annotations

import sys
import time

SLICE = 0.0005  # seconds of work between two releases of the GIL
CHECK_EVERY = 64  # profile events between two readings of the clock
QUIET = 0.0001  # a release shorter than this: no other thread took the GIL
QUIET_YIELDS = 3
# The clock and the release of the GIL (module names, so that a test can give a fake clock).
clock = time.perf_counter
release = time.sleep


def run_courteously(job, *args):
    """`job(*args)`, giving the GIL away as above. A thread someone already profiles is left
    to their profiler."""
    if sys.getprofile() is not None:
        return job(*args)
    sys.setprofile(_make_hook())
    try:
        return job(*args)
    finally:
        sys.setprofile(None)


def _make_hook():
    read_clock, give_way = clock, release
    events, since, quiet = 0, read_clock(), 0

    def hook(frame, event, arg):
        nonlocal events, since, quiet
        events += 1
        if events % CHECK_EVERY:
            return
        now = read_clock()
        if now - since < SLICE:
            return
        give_way(0)
        since = read_clock()
        if since - now >= QUIET:
            quiet = 0
            return
        quiet += 1
        if quiet >= QUIET_YIELDS:
            sys.setprofile(None)  # nobody is waiting for the GIL: full speed

    return hook
