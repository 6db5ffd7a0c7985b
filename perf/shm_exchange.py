"""W11's gradient exchange on one host: Open MPI's Allreduce against a shared-memory window
(MPI.Win.Allocate_shared) where each rank's gradients already lie and each rank sums only its
half ("rs only": what a sharded update needs) or then copies the whole sum ("rs+copy": what
every rank's full update needs). Measured in session 20 for issue 16 (perf/gaps.md).

    mpiexec -n 2 python perf/shm_exchange.py
"""

import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
n = 203_530  # W11's gradient floats (0.81 MB)
half = n // 2
win = MPI.Win.Allocate_shared(n * 4 * (3 if rank == 0 else 0), 4, comm=comm)
buf, _ = win.Shared_query(0)
shared = np.ndarray(buffer=buf, dtype=np.float32, shape=(3, n))  # rank 0's grads, rank 1's, the sum
rng = np.random.default_rng(rank)
mine = shared[rank]
mine[:] = rng.standard_normal(n).astype(np.float32)  # the kernel would write its gradients here
lo, hi = (0, half) if rank == 0 else (half, n)
out = np.empty(n, np.float32)


def write_gradients():
    """What a step's kernel does before the exchange: write this rank's gradients (here, the
    same values again), which takes their lines from the other core's cache."""
    np.multiply(mine, np.float32(1), out=mine)


def reduce_scatter_gather():
    write_gradients()
    comm.Barrier()  # both ranks' gradients written
    np.add(shared[0, lo:hi], shared[1, lo:hi], out=shared[2, lo:hi])  # my half of the sum
    comm.Barrier()  # both halves summed
    out[:] = shared[2]  # the whole sum (or: the update reads it in place)


def sharded_only():  # the update would read only its half: no allgather of the sum
    write_gradients()
    comm.Barrier()
    np.add(shared[0, lo:hi], shared[1, lo:hi], out=shared[2, lo:hi])
    comm.Barrier()


ref = np.empty(n, np.float32)
comm.Allreduce(shared[rank].copy(), ref, op=MPI.SUM)
reduce_scatter_gather()
res = {}
for _ in range(5):
    for name, f in (
        ("rs+copy", reduce_scatter_gather),
        ("rs only", sharded_only),
        ("mpi", lambda: (write_gradients(), comm.Allreduce(mine, ref, op=MPI.SUM))),
        ("writing alone", write_gradients),
    ):
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(500):
            f()
        res.setdefault(name, []).append((time.perf_counter() - t) / 500 * 1e3)
if rank == 0:
    for k, v in res.items():
        print(k, "ms per exchange:", " ".join(f"{x:.3f}" for x in v))
win.Free()
