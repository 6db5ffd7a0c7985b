"""W11's allreduce alone, as a time series: is a slow 2-rank run jitgrad's doing or the machine's?

mpi4py's Allreduce of W11's gradient size (0.81 MB of float32: W3's 203,530 parameters),
blocks of 1,000 calls between barriers; rank 0 prints each block's milliseconds per call on
one line. No jitgrad, no Numba: only MPI's shared-memory transport and the two cores.

Run: python -m jitgrad.distributed.run -n 2 perf/mpi_allreduce_series.py [blocks]

On this 2-vCPU VM (2026-12-05) one 60-block run read 0.13 ms per call for 13 blocks, then
0.46-0.50 ms for 38 blocks, then 0.13 ms again: the same calls, in the same processes, 3.6x
slower for ~20 s at a time. That is the slow mode of W11 (perf/results/issue16.md).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

GRADIENT_FLOATS = 203_530  # W3's parameters: 784 x 256 + 256 + 256 x 10 + 10
CALLS = 1_000


def main(blocks: int) -> None:
    comm = MPI.COMM_WORLD
    send = np.ones(GRADIENT_FLOATS, np.float32)
    received = np.empty_like(send)
    per_call = []
    for _ in range(blocks):
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(CALLS):
            comm.Allreduce(send, received)
        per_call.append((time.perf_counter() - start) / CALLS * 1e3)
    if comm.rank == 0:
        print(" ".join(f"{ms:.2f}" for ms in per_call))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
