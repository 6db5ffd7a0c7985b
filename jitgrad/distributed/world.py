"""The job: which process this is, how many there are, and what happens when one fails.

`init()` joins the MPI job this process was started in (by `mpiexec`, `srun`, or
`python -m jitgrad.distributed.run`), or, without a launcher, makes this process a job of one:
then mpi4py is not even imported, and every collective is the identity. mpi4py is imported
here (and in the Numba backend) only, lazily.

A rank that raises must not leave the others waiting forever in their next collective: `init`
installs an excepthook that prints the traceback and calls MPI_Abort, which ends every rank
of the job (the launcher then exits non-zero). A rank that stops making collective calls
without raising (it caught the exception) is ended by the others' watchdogs after the
timeout (watchdog.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.config import config
from jitgrad.core.errors import with_location
from jitgrad.distributed import watchdog
from jitgrad.ops.collective import install_communicator

# Variables that MPI launchers set in the processes they start (Open MPI, MPICH/Hydra and
# Intel MPI, PMIx launchers such as Slurm's srun --mpi=pmix).
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LAUNCHER_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


class _World:
    """This process's view of the job: `comm` is mpi4py's COMM_WORLD, or None in a job of
    one process."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        # This process's place among the ranks of its machine (init sets them).
        self.local_rank, self.local_size = 0, 1
        self.watchdog = None

    def watch(self, timeout: float) -> None:
        """Bound this rank's waits in collectives by `timeout` seconds (watchdog.py)."""
        if self.watchdog is None:
            self.watchdog = watchdog.start(self.comm, timeout)
        else:
            self.watchdog.set_timeout(timeout)


class _MPICommunicator:
    """What the op layer's eager allreduce needs (ops/collective.py), over mpi4py."""

    def __init__(self, comm):
        self.comm = comm
        self.size = comm.Get_size()

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        from mpi4py import MPI

        out = np.empty_like(array)
        self.comm.Allreduce(array, out, op=MPI.SUM)
        return out

    def allgather(self, array: np.ndarray) -> list:
        return self.comm.allgather(array)

    def barrier(self) -> None:
        self.comm.Barrier()


_world: _World | None = None


def _launched_by_mpi() -> bool:
    return any(name in os.environ for name in _LAUNCHER_SIZE_VARIABLES + _LAUNCHER_RANK_VARIABLES)


def init(timeout: float | None = None) -> None:
    """Join the MPI job this process runs in; without one (no `mpiexec`), a job of one process.
    Idempotent: later calls only set a timeout they are given.

    `timeout`: the seconds a rank waits in a collective (a distributed step's exchange, an
    allreduce, a barrier) for the other ranks before it ends the job with an error saying where
    it waited (default: $JITGRAD_DISTRIBUTED_TIMEOUT, else 1800; math.inf waits forever). Each
    minute of a wait is said on stderr. A rank that stops making collective calls (it caught an
    exception from a step and went on, its loop ended early) would otherwise leave the others
    waiting forever. Make it longer than rank 0's longest work between steps (an evaluation, a
    checkpoint) and than a step's first compile.

    >>> jitgrad.distributed.init()
    >>> jitgrad.distributed.rank(), jitgrad.distributed.size()
    (0, 1)
    """
    global _world
    seconds = watchdog.resolve_timeout(timeout)
    if _world is not None:
        if timeout is not None and _world.size > 1:
            _world.watch(seconds)
        return
    if not _launched_by_mpi():
        _world = _World(None)
        return
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "jitgrad.distributed: this process was started by an MPI launcher, but mpi4py is "
            'not installed; install the extra: pip install "jitgrad[distributed]"'
        ) from exc
    comm = watchdog.watched_comm(MPI.COMM_WORLD)
    _world = _World(comm)
    install_communicator(_MPICommunicator(comm))
    if _world.size > 1:
        sys.excepthook = _abort_on_exception(comm)
        _world.watch(seconds)
        machine = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks of this machine
        try:
            _world.local_rank, _world.local_size = machine.Get_rank(), machine.Get_size()
            _share_the_cpus(machine)
        finally:
            machine.Free()


def _share_the_cpus(machine) -> None:
    """Give each rank an equal share of the CPUs it may run on with other ranks of its machine.

    Why: a launcher that does not bind the ranks (mpiexec --bind-to none, Open MPI's binding of
    each of 3 or more ranks to a whole socket, srun without --cpu-bind) lets every rank see all
    the CPUs, and each would run a thread per CPU in its kernels: 8 ranks on 8 cores, 64
    threads. A rank's share is its CPUs over the ranks whose CPUs overlap its own (itself
    included). Not when the threads were set (NUMBA_NUM_THREADS, config.num_threads), and
    nothing changes for ranks bound to CPUs of their own (jitgrad.distributed.run's binding)."""
    if not hasattr(os, "sched_getaffinity"):  # not on Linux (the same on every rank)
        return
    mine = os.sched_getaffinity(0)
    # Collective on every rank of `machine`, whatever its own threads setting: none may skip it.
    everyone = machine.allgather(sorted(mine))
    sharing = sum(1 for cpus in everyone if mine.intersection(cpus))
    if sharing > 1 and config.num_threads is None:
        config.num_threads = max(1, len(mine) // sharing)


def _abort_on_exception(comm):
    """An excepthook that reports the exception, then ends the whole job (MPI_Abort): the
    other ranks would otherwise wait forever for this one in their next collective."""

    def hook(kind, value, tb):
        rank = comm.Get_rank()
        sys.stderr.write(f"jitgrad.distributed: rank {rank} raised; aborting the job\n")
        sys.stderr.write("".join(traceback.format_exception(kind, value, tb)))
        sys.stderr.flush()
        comm.Abort(1)  # does not return

    return hook


def world() -> _World:
    """The job, joining it first if needed."""
    if _world is None:
        init()
    return _world


def rank() -> int:
    """This process's number in the job, 0 to size() - 1 (0 in a job of one)."""
    return world().rank


def size() -> int:
    """The number of processes in the job (1 without an MPI launcher)."""
    return world().size


def local_rank() -> int:
    """This process's number among the ranks on its machine, 0 to local_size() - 1: for work
    done once per machine (a dataset downloaded to local disk, a per-machine log)."""
    return world().local_rank


def local_size() -> int:
    """The number of ranks on this process's machine (1 in a job of one)."""
    return world().local_size


def is_main() -> bool:
    """Whether this is rank 0: the process that logs, evaluates and writes checkpoints.

    >>> if jitgrad.distributed.is_main():
    ...     print(f"epoch {epoch}: loss {loss:.3f}")
    """
    return world().rank == 0


def barrier() -> None:
    """Wait until every rank has reached this call."""
    comm = world().comm
    if comm is not None:
        comm.Barrier()


def check_same_structure(what: str, tree, name: str = "tree") -> None:
    """Raise the same ValueError on every rank unless `tree` (called `name` in the message's
    leaf paths) has the same structure, leaf shapes and dtypes on all of them (one allgather
    of a short description). Collectives on mismatched buffers would otherwise sum unrelated
    numbers, fail deep inside MPI, or hang."""
    comm = world().comm
    if comm is None:
        return
    mine = signature(name, tree)
    every = comm.allgather(mine)
    for other_rank, other in enumerate(every):
        if other != every[0]:
            raise ValueError(
                with_location(
                    f"jitgrad.distributed: {what} differs between ranks: "
                    f"{_first_difference(every[0], other, other_rank)}"
                )
            )


def check_same_values(what: str, tree, name: str = "tree") -> None:
    """Raise the same ValueError on every rank unless every leaf of `tree` (same structure on
    every rank: check_same_structure first) holds the same bytes on all of them (one
    allgather of a digest per leaf).

    Why: data-parallel training keeps the ranks' parameters identical by applying the same
    averaged gradients to the same values. Ranks that start apart (each seeded with its rank,
    a checkpoint loaded on rank 0 only) stay apart forever on the MPI_Allreduce path, and the
    sharded update silently mixes their rows; neither is an error anywhere else. DDP
    broadcasts rank 0's parameters when it wraps a model; here the user does it, once."""
    comm = world().comm
    if comm is None:
        return
    leaves, treedef = pytree.flatten(tree)
    mine = tuple(_digest(leaf) for leaf in leaves)
    every = comm.allgather(mine)
    paths = pytree.leaf_paths(name, treedef)
    for index, path in enumerate(paths):
        apart = [r for r, digests in enumerate(every) if digests[index] != every[0][index]]
        if apart:
            ranks = ", ".join(map(str, apart))
            raise ValueError(
                with_location(
                    f"jitgrad.distributed: {what}: {path} holds other values on rank(s) "
                    f"{ranks} than on rank 0. Every rank must start from the same values: "
                    f"call `{name} = jitgrad.distributed.broadcast({name})` before the first step"
                )
            )


def _digest(leaf) -> bytes:
    """16 bytes that differ, but for a hash collision, when `leaf`'s dtype, shape or bytes do."""
    array = np.ascontiguousarray(leaf.numpy() if hasattr(leaf, "numpy") else np.asarray(leaf))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.view(np.uint8).reshape(-1).data if array.size else b"")
    return digest.digest()


def signature(name: str, tree) -> tuple:
    """(structure, ((path, shape, dtype), ...)) of a pytree of arrays or tensors."""
    leaves, treedef = pytree.flatten(tree)
    paths = pytree.leaf_paths(name, treedef)
    described = tuple(
        (path, tuple(np.shape(leaf)), str(getattr(leaf, "dtype", type(leaf).__name__)))
        for path, leaf in zip(paths, leaves)
    )
    return pytree.describe(treedef), described


def _first_difference(first: tuple, other: tuple, other_rank: int) -> str:
    (structure0, leaves0), (structure, leaves) = first, other
    for (path0, shape0, dtype0), (path, shape, dtype) in zip(leaves0, leaves):
        if (path0, shape0, dtype0) != (path, shape, dtype):
            return (
                f"rank 0 has {path0} {dtype0} {shape0}, rank {other_rank} has {path} {dtype} "
                f"{shape}"
            )
    return f"rank 0 has the structure {structure0}, rank {other_rank} has {structure}"
