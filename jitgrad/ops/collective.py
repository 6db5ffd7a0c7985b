"""allreduce: the sum of a value over the processes of a data-parallel job (MPI ranks).

The op layer never imports mpi4py: the eager implementation reduces through the
communicator that `jitgrad.distributed.init()` installs here (`install_communicator`); without
one (a single process) the sum over one rank is the value itself. In a compiled kernel the
Numba backend calls MPI directly on the gradient buffer (backend/numba/mpi.py).

Only float32 and float64 are reduced natively (MPI has no half type): `allreduce` reduces a
float16 value in float32 and rounds the sum once.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.ops.base import as_value
from jitgrad.ops.structural import cast_value

REDUCED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _SingleProcess:
    """The communicator of a job of one process: the sum over one rank is the value."""

    size = 1

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return array.copy()


_communicator = _SingleProcess()


def install_communicator(communicator) -> None:
    """Route allreduce through `communicator` (`size`, `allreduce_sum(array) -> new array`);
    None restores the single-process one."""
    global _communicator
    _communicator = _SingleProcess() if communicator is None else communicator


def world_size() -> int:
    """The number of processes allreduce sums over (1 outside an MPI job)."""
    return _communicator.size


def _allreduce_eval(x):
    if x.dtype not in REDUCED_DTYPES:
        raise op_error("allreduce", f"needs float32 or float64, got {x.dtype} {x.shape}")
    return AVal(x.shape, x.dtype)


def _allreduce_vjp(g, out, x):
    # out = sum_r x_r, and every rank's loss depends on every x_r through out: the cotangent
    # of x on one rank is the sum of the cotangents of out over ranks.
    return (bind(allreduce_p, g),)


allreduce_p = defop(
    "allreduce",
    abstract_eval=_allreduce_eval,
    impl=lambda x: _communicator.allreduce_sum(np.asarray(x, order="C")),
    vjp=_allreduce_vjp,
    kind="other",
    doc="The sum of a float value over the processes of an MPI job (identity in one process).",
    collective=True,
)


def allreduce(x, op: str = "sum"):
    """The sum (op="sum") or mean (op="mean") of `x` over the processes of the job: every
    process gets the same result. The mean divides by the number of processes known when the
    call runs (or is traced).

    >>> allreduce(jitgrad.constant([1.0, 2.0]))   # one process: the value itself
    <jitgrad.Tensor: shape=(2,), dtype=float32, numpy=array([1., 2.], dtype=float32)>
    """
    x = as_value(x, op="allreduce")
    if op not in ("sum", "mean"):
        raise op_error("allreduce", f"op must be 'sum' or 'mean', got {op!r}")
    if x.dtype.kind != "f":
        raise op_error("allreduce", f"needs a float value, got {x.dtype} {x.shape}")
    if world_size() == 1:  # nothing to reduce, and no MPI call in a compiled kernel
        return x
    wide = cast_value(x, np.dtype(np.float32)) if x.dtype == np.float16 else x
    total = bind(allreduce_p, wide)
    if op == "mean":
        total = total * (1.0 / world_size())
    return cast_value(total, x.dtype)


def mean_over_ranks(grads):
    """The mean over the job's processes of every leaf of a pytree of gradients: what a
    data-parallel update applies (jit_train_step(distributed=True), DistributedOptimizer)."""
    leaves, treedef = pytree.flatten(grads)
    return pytree.unflatten(treedef, [allreduce(g, op="mean") for g in leaves])
