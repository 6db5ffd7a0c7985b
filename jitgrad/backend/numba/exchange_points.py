"""The exchange points of a sharded update (emit.py: publish_rows, allgather_rows): a barrier of
the ranks of one machine through the exchange array they all map, with no MPI call.

Why not MPI: an exchange point was an MPI_Allreduce of two int64. It costs ~1 us alone, but
8-16 us right after the update loop or the parameters' copy had moved their ~0.4 MB between
the cores (W11, rdtsc around each point of the 2-rank step: five points took 45-68 us of its
1.1 ms). Here each rank owns one cache line, the end of its gradient row of the exchange array
(core/row_shares.py: CONTROL_BYTES), and a point costs the transfer of that line.

The word in a rank's line counts the points it has passed and names the last one:
`(count << 16) | tag`. At a point, a rank writes `count + 1` and its tag (a release store after
a full fence: everything it wrote before, its gradients or new rows, is visible to whoever
sees the word), then waits until every other rank's word shows that count (an acquire load:
what they wrote before it is visible now) or the next one (that rank has passed this point
already, after checking the tags). The same count with another tag means the ranks' compiled
steps differ: every rank that sees it raises rather than read a share that was not written.

Waiting spins (with the CPU's pause) for SPIN_POLLS polls, ~40 us, longer than the usual wait
when every rank has a core (W11: 1-20 us); then it yields the core between polls, so that a job
with more ranks than cores lets the rank it waits for run; after ~10 ms it sleeps between
polls, so that a long wait (rank 0 writing a checkpoint between steps) leaves the core to
others. A rank that waits a minute (counted from the end of the spinning) says so on stdout, once a
minute, naming the rank it waits for. A rank that dies or raises ends the job (MPI aborts,
mpiexec kills the others): the waiting rank is killed, not left waiting. A rank that stopped
calling the step without raising leaves the others waiting here until their watchdog's
timeout ends the job (jitgrad/distributed/watchdog.py; the kernel releases the GIL).
"""

import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jitgrad.core.row_shares import CONTROL_BYTES

# Polls of another rank's word that only spin (4096 pauses take ~37 us on session 22's Xeon);
# then polls that yield the core first, up to YIELD_POLLS; then polls that sleep SLEEP_US first.
SPIN_POLLS = 4096
YIELD_POLLS = SPIN_POLLS + 10_000
SLEEP_US = 100
# A rank that has waited this long at one point says so, and again after each as long.
SAY_AFTER_SECONDS = 60
_TAG_BITS = 16  # a step has at most 2^16 points (emit.py checks)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

_sched_yield = types.ExternalFunction("sched_yield", types.int32())
_usleep = types.ExternalFunction("usleep", types.int32(types.uint32))
_time = types.ExternalFunction("time", types.int64(types.intp))  # time(NULL): seconds


@intrinsic
def _store_release(typingctx, address, value):
    """*(int64 *)address = value, after every earlier load and store of this thread (a full
    fence, which also orders a BLAS kernel's non-temporal stores before it)."""
    sig = types.void(types.uintp, types.int64)

    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.fence("seq_cst")
        builder.store_atomic(args[1], pointer, ordering="release", align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _load_acquire(typingctx, address):
    """*(int64 *)address, before every later load and store of this thread."""
    sig = types.int64(types.uintp)

    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(pointer, ordering="acquire", align=8)

    return sig, codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 `pause`; nothing elsewhere): a polling loop leaves the
    core's resources to its sibling and does not flood the other core with reads."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def exchange_point(exchange, rank, tag, say_after=SAY_AFTER_SECONDS):
    """Wait until every rank has reached exchange point `tag` of its step; every rank's writes
    to the exchange array (and anywhere else) before its point are then visible to all. All
    ranks raise if any reached another point: reading a share that was not written yet would
    be a wrong number, not an error. A wait of `say_after` seconds is said on stdout."""
    size = exchange.shape[0] - 1
    row_bytes = exchange.shape[1] * exchange.itemsize
    base = exchange.ctypes.data + row_bytes - CONTROL_BYTES  # rank 0's control line
    mine = base + rank * row_bytes
    count = (_load_acquire(mine) >> _TAG_BITS) + 1
    _store_release(mine, (count << _TAG_BITS) | tag)
    for other in range(size):
        if other == rank:
            continue
        address = base + other * row_bytes
        polls, said = 0, 0
        while True:
            word = _load_acquire(address)
            passed = word >> _TAG_BITS
            if passed > count:
                break
            if passed == count:
                if word & ((1 << _TAG_BITS) - 1) != tag:
                    raise RuntimeError(
                        "sharded update: the ranks reached different exchange points of their "
                        "step (their compiled steps differ); exchange point",
                        tag,
                    )
                break
            polls += 1
            if polls < SPIN_POLLS:
                _pause()
                continue
            # The wait is timed from the end of the spinning: on a loaded machine the yielding
            # polls alone can outlast `say_after`.
            if polls == SPIN_POLLS:
                said = _time(0)
            elif _time(0) - said >= say_after:
                said = _time(0)
                print(
                    "jitgrad: rank",
                    rank,
                    "is still waiting for rank",
                    other,
                    "at exchange point",
                    tag,
                    "of a sharded step (every rank must call the step as often as the others)",
                )
            if polls < YIELD_POLLS:
                _sched_yield()
            else:
                _usleep(SLEEP_US)
