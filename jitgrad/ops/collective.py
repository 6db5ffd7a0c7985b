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
from jitgrad.core.opdef import NO_GRADIENT, defop
from jitgrad.core.row_shares import control_column, row_share, row_size, value_offsets
from jitgrad.ops.base import as_value
from jitgrad.ops.structural import cast_value

REDUCED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _SingleProcess:
    """The communicator of a job of one process: the sum over one rank is the value."""

    size = 1

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def allgather(self, array: np.ndarray) -> list:
        return [array.copy()]

    def barrier(self) -> None:
        pass


_communicator = _SingleProcess()


def install_communicator(communicator) -> None:
    """Route allreduce through `communicator` (`size`, `allreduce_sum(array) -> new array`,
    `allgather(array) -> [every rank's array]`);
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


# -- the sharded update's exchange (jit_train_step(distributed=True) on one machine) ------------
#
# Data parallelism on one machine can divide the optimizer's update among the ranks: rank q
# updates only its share of every parameter's rows (and of the optimizer state's), so it needs
# the other ranks' gradients of those rows alone (`publish_rows`, then `exchange_rows`: views
# that the update's loop sums as it goes), and every rank then needs every share of the new
# parameters (`allgather_rows`). They exchange through an `exchange` array in memory that all
# ranks of the machine map (jitgrad.distributed.shared_memory): rows 0 .. size-1 are each
# rank's published gradients, row `size` the new parameters; each row ends in a 64-byte control
# line, where the compiled ops keep a rank's exchange-point word (core/row_shares.py:
# CONTROL_BYTES; backend/numba/exchange_points.py). The ops write into that array,
# so they are only ever traced into a train step (compiler/sharded_step.py), which owns it;
# their eager forms (a train step's numpy fallback never runs them: a distributed step
# compiles first) write and read it too, and wait through the installed communicator.


def _check_exchange(op: str, exchange, values, size: int, needed: int) -> None:
    dtype = values[0].dtype
    if dtype not in REDUCED_DTYPES or any(v.dtype != dtype for v in values):
        got = ", ".join(f"{v.dtype} {tuple(v.shape)}" for v in values)
        raise op_error(op, f"needs float32 or float64 values of one dtype, got {got}")
    if any(len(v.shape) == 0 for v in values):
        raise op_error(op, "shares rows: every value needs at least one dimension")
    if exchange.dtype != dtype or len(exchange.shape) != 2 or exchange.shape[0] != size + 1:
        raise op_error(
            op,
            f"the exchange array must be {dtype} with {size + 1} rows, got {exchange.dtype} "
            f"{tuple(exchange.shape)}",
        )
    usable = control_column(exchange.shape[1], exchange.dtype.itemsize)
    if usable < needed:
        raise op_error(
            op,
            f"the exchange array's rows hold {max(usable, 0)} values before their control line, "
            f"these need {needed}: a "
            "sharded train step keeps the parameter shapes of its first call (make another "
            "jit_train_step for another model)",
        )


def _publish_eval(exchange, *values, rank, size):
    shapes = [tuple(v.shape) for v in values]
    _check_exchange("publish_rows", exchange, values, size, value_offsets(shapes)[-1])
    return AVal((), exchange.dtype)


def _publish_impl(exchange, *values, rank, size):
    offsets = value_offsets([v.shape for v in values])
    for i, v in enumerate(values):
        exchange[rank, offsets[i] : offsets[i + 1]] = np.ravel(v)
    _communicator.barrier()
    return np.zeros((), exchange.dtype)


publish_rows_p = defop(
    "publish_rows",
    abstract_eval=_publish_eval,
    impl=_publish_impl,
    vjp=NO_GRADIENT,
    kind="other",
    doc="Write this rank's values into its row of the exchange array (each whole, one after the "
    "other) and wait until every rank has; the result (zero) orders the reads after it.",
    collective=True,
)


def _exchange_rows_eval(exchange, published, *, row, start, shape):
    n = 1
    for d in shape:
        n *= d
    if row >= exchange.shape[0] or start + n > control_column(
        exchange.shape[1], exchange.dtype.itemsize
    ):
        raise op_error(
            "exchange_rows",
            f"[{row}, {start}:{start + n}] is outside the exchange array's values "
            f"({exchange.dtype} {tuple(exchange.shape)}, each row ending in a control line)",
        )
    return AVal(tuple(shape), exchange.dtype)


def _exchange_rows_impl(exchange, published, *, row, start, shape):
    n = int(np.prod(shape, dtype=np.int64))
    return exchange[row, start : start + n].reshape(shape).copy()


exchange_rows_p = defop(
    "exchange_rows",
    abstract_eval=_exchange_rows_eval,
    impl=_exchange_rows_impl,
    vjp=NO_GRADIENT,
    kind="other",
    doc="Elements [start, start + size) of row `row` of the exchange array, as `shape`: what "
    "rank `row` published there (`published`: publish_rows's result, read after it).",
    collective=True,
)


def _allgather_eval(exchange, share, *previous, rank, size, rows, offset, tag):
    full = (rows, *share.shape[1:])
    first, end = row_share(full, rank, size)
    if share.shape[0] != end - first:
        raise op_error(
            "allgather_rows",
            f"rank {rank}'s share of {full} has {end - first} rows, got {tuple(share.shape)}",
        )
    _check_exchange("allgather_rows", exchange, [share], size, offset + rows * row_size(full))
    return AVal(full, share.dtype)


def _allgather_impl(exchange, share, *previous, rank, size, rows, offset, tag):
    return np.concatenate(_communicator.allgather(np.ascontiguousarray(share)))


allgather_rows_p = defop(
    "allgather_rows",
    abstract_eval=_allgather_eval,
    impl=_allgather_impl,
    vjp=NO_GRADIENT,
    kind="other",
    doc="The whole value from every rank's share of its rows, identical on every rank (the "
    "second half of a sharded update's exchange; `tag` numbers the exchange points of a step: "
    "the gathers of one tag share one, where the first waits; the values after `share`, "
    "unread, order them: every value the point must follow, or the previous gather's result).",
    collective=True,
)
