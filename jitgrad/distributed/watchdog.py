"""A bound on how long a rank waits for the others: `jitgrad.distributed.init(timeout=...)`.

Why: a collective returns only once every rank has called it. A rank that stops calling them
(it caught an exception from a step and went on, its loop ended a batch early, it hangs on a
file) leaves the others waiting forever: inside MPI, or spinning at a sharded step's exchange
points, where no exception can reach them. A rank that dies, or raises out of the script,
already ends the job (world.py's excepthook, the launcher). This ends the rest: a thread in each
rank watches the collectives the rank is in, says so on stderr each minute that one has not
returned, and after `timeout` seconds ends the job (MPI_Abort) with a message that says where
the rank waited. PyTorch's process groups do the same (a timeout of 30 minutes for Gloo and
MPI, 10 for NCCL), and Horovod's stall check warns each minute.

A wait is counted, not timed: entering and leaving a collective each bump a counter (`WAITS`:
a few integer additions on the hot path of a compiled distributed step); the thread samples it
every `poll` seconds, and a wait has lasted since the first sample that saw the counter where
it is now, with a collective open.

It needs the waiting thread to release the GIL while it waits (mpi4py's calls do, and the
compiled kernels are nogil), and MPI_Abort from another thread (mpi4py asks for
MPI_THREAD_MULTIPLE).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

from jitgrad.core.errors import entry_point

DEFAULT_TIMEOUT = 1800.0  # seconds: PyTorch's default for its Gloo and MPI process groups
TIMEOUT_VARIABLE = "JITGRAD_DISTRIBUTED_TIMEOUT"
SAY_EVERY = 60.0  # seconds between the warnings of one wait (Horovod's stall check)

# The blocking collectives of mpi4py's Intracomm that jitgrad calls, watched by `watched_comm`.
_COLLECTIVES = (
    "Allgather",
    "Allgatherv",
    "Allreduce",
    "Barrier",
    "Bcast",
    "Split_type",
    "allgather",
    "allreduce",
    "barrier",
    "bcast",
)


class Waits:
    """The collectives this process is in: `depth` open ones (a collective may call another),
    `moves` entries and exits so far; `what` the outermost one, entered by thread `thread`.
    `reports_itself`: the outermost one says itself, each minute, which rank it waits for (a
    sharded step's exchange points, backend/numba/exchange_points.py)."""

    __slots__ = ("depth", "moves", "what", "reports_itself", "thread")

    def __init__(self):
        self.depth = self.moves = 0
        self.what, self.reports_itself, self.thread = "", False, None

    def enter(self, what: str, reports_itself: bool = False) -> None:
        if self.depth == 0:
            self.what, self.reports_itself = what, reports_itself
            self.thread = threading.get_ident()
        self.depth += 1
        self.moves += 1

    def leave(self) -> None:
        self.depth -= 1
        self.moves += 1


WAITS = Waits()


class Watchdog:
    """Samples `waits` each `poll` seconds (`check`); `run` is the watching thread's loop."""

    def __init__(self, waits: Waits, timeout: float, rank: int, abort, say=None):
        self.waits, self.rank, self.abort = waits, rank, abort
        self.say = say or _say
        self.set_timeout(timeout)
        self._moves, self._since, self._said = -1, 0.0, 0

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        self.poll = min(1.0, timeout / 4)

    def check(self, now: float) -> str | None:
        """The message that ends the job when the open wait has lasted `timeout` seconds at
        `now`; says a warning each SAY_EVERY seconds before that (unless the wait says itself)."""
        waits = self.waits
        moves = waits.moves
        if waits.depth == 0 or moves != self._moves:
            self._moves, self._since, self._said = moves, now, 0
            return None
        waited = now - self._since
        if waited >= self.timeout:
            return (
                f"jitgrad.distributed: rank {self.rank} has waited {waited:.0f} s for the other "
                f"ranks in {self._where()}, the timeout: another rank stopped calling the "
                "collectives (it caught an exception and went on, or its loop ended early) or "
                "hangs. Ending the job. The timeout is jitgrad.distributed.init(timeout=seconds) "
                f"or {TIMEOUT_VARIABLE}."
            )
        if not waits.reports_itself and waited >= (self._said + 1) * SAY_EVERY:
            self._said += 1
            ends = "" if math.isinf(self.timeout) else f" The job ends after {self.timeout:.0f} s."
            self.say(
                f"jitgrad.distributed: rank {self.rank} has waited {waited:.0f} s for the other "
                f"ranks in {self._where()}; every rank must make the same collective calls in "
                f"the same order.{ends}"
            )
        return None

    def _where(self) -> str:
        """The wait, the jitgrad function the user called, and the user's line (from the
        waiting thread's stack)."""
        called, line = entry_point(sys._current_frames().get(self.waits.thread))
        where = self.waits.what
        if called is not None and where.startswith("MPI's"):
            where += f" in {called}"
        return f"{where} ({line})" if line else where

    def run(self) -> None:
        while True:
            time.sleep(self.poll)
            message = self.check(time.monotonic())
            if message is not None:
                self.say(message)
                self.abort()
                return


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def resolve_timeout(timeout) -> float:
    """Seconds: `timeout` if given, else $JITGRAD_DISTRIBUTED_TIMEOUT, else DEFAULT_TIMEOUT;
    math.inf waits forever."""
    where = "jitgrad.distributed.init: timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_VARIABLE)
        if text is None:
            return DEFAULT_TIMEOUT
        where = f"${TIMEOUT_VARIABLE}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{where} must be a number of seconds, got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{where} must be a number of seconds, got {timeout!r}")
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"{where} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def start(comm, timeout: float) -> Watchdog | None:
    """Watch this process's collectives on a daemon thread; none for an infinite timeout."""
    if math.isinf(timeout):
        return None
    dog = Watchdog(WAITS, timeout, comm.Get_rank(), lambda: _abort(comm))
    threading.Thread(target=dog.run, name="jitgrad-collective-watchdog", daemon=True).start()
    return dog


def _abort(comm) -> None:
    try:
        comm.Abort(1)  # ends every rank; does not return
    finally:
        os._exit(1)  # an MPI that cannot abort from this thread: the launcher ends the others


def watched_comm(comm):
    """`comm` (an mpi4py Intracomm) whose blocking collectives enter and leave WAITS."""
    from mpi4py import MPI

    def watched(name):
        method = getattr(MPI.Intracomm, name)

        def call(self, *args, **kwargs):
            WAITS.enter(f"MPI's {name}")
            try:
                return method(self, *args, **kwargs)
            finally:
                WAITS.leave()

        call.__name__ = name
        return call

    cls = type("WatchedIntracomm", (MPI.Intracomm,), {n: watched(n) for n in _COLLECTIVES})
    return cls(comm)
