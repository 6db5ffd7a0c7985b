"""Collectives on pytrees of numpy arrays, Tensors and Variables: eagerly (between compiled
steps, in a GradientTape loop), and `allreduce` inside a function being compiled too (a
jitgrad.function train step in Horovod's pattern), where it becomes the kernel's allreduce.

A leaf that can be written (a writeable numpy array, a Variable) is updated in place and
returned as itself; a Tensor (immutable) is replaced by a new Tensor, and a number (a Python
float, int or bool, a numpy scalar) by a number of its type. Sums over ranks are
MPI's, in the leaf's dtype; float16 (no MPI type) is summed in float32 and rounded once, and a
mean is the sum times 1/size rounded to the dtype, as the compiled train step computes it.
"""

from __future__ import annotations

import warnings

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor
from jitgrad.core.variable import Variable
from jitgrad.distributed.world import check_same_structure, world
from jitgrad.ops.collective import allreduce as allreduce_value

# op -> the dtype kinds it reduces (numpy's dtype.kind)
_OPS = {"sum": "fiu", "mean": "f", "max": "fiub", "min": "fiub", "product": "fiu"}
_KIND_NAMES = {
    "fiu": "float and integer values",
    "f": "float values",
    "fiub": "float, integer and boolean values",
}
_TRACED_OPS = ("sum", "mean")


def broadcast(tree, root: int = 0):
    """Every rank gets rank `root`'s values of `tree` (same structure, shapes and dtypes on
    every rank, else a ValueError naming the first difference); typically the initial
    parameters, so that every rank starts from the same model.

    >>> params = jitgrad.distributed.broadcast(params)   # numpy leaves are overwritten in place
    """
    w = world()
    _check_root(root, w.size)
    if w.comm is None:
        return tree
    if current_trace.get() is not None:
        raise RuntimeError(
            with_location(
                "jitgrad.distributed.broadcast runs eagerly, not inside a compiled function: "
                "broadcast the initial values before the first step"
            )
        )
    check_same_structure("broadcast: tree", tree)
    leaves, treedef = pytree.flatten(tree)
    out = []
    for leaf in leaves:
        array, write_back = _buffer(leaf, "broadcast")
        w.comm.Bcast(array.reshape(-1).view(np.uint8), root=root)  # bytes: any dtype, bitwise
        out.append(write_back(array))
    return pytree.unflatten(treedef, out)


def allreduce(tree, op: str = "sum"):
    """The sum, mean, maximum, minimum or product over ranks of each leaf of `tree`; every rank
    gets the same values. Sums, maxima, minima and products take integer leaves too (a count
    of correct predictions), maxima and minima booleans (any, all); a mean takes floats.
    Inside a compiled function, float sums and means only (the kernel's MPI_Allreduce).

    >>> grads = jitgrad.distributed.allreduce(grads, op="mean")
    >>> correct = jitgrad.distributed.allreduce(int((pred == y).sum()))   # over the ranks
    """
    if not isinstance(op, str) or op not in _OPS:
        raise ValueError(
            f"jitgrad.distributed.allreduce: op must be one of {', '.join(map(repr, _OPS))}, "
            f"got {op!r}"
        )
    w = world()
    leaves, treedef = pytree.flatten(tree)
    for path, leaf in zip(pytree.leaf_paths("tree", treedef), leaves):
        dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
        if dtype.kind not in _OPS[op]:
            raise TypeError(
                f"jitgrad.distributed.allreduce: {path} is {dtype} {np.shape(leaf)}; op={op!r} "
                f"reduces {_KIND_NAMES[_OPS[op]]}"
            )
    if w.comm is None:
        return tree
    if current_trace.get() is not None:
        if op not in _TRACED_OPS:
            raise RuntimeError(
                with_location(
                    f"jitgrad.distributed.allreduce: op={op!r} runs eagerly; inside a compiled "
                    "function the kernel's allreduce takes op='sum' or 'mean'"
                )
            )
        return pytree.unflatten(treedef, [_traced_allreduce(leaf, op) for leaf in leaves])
    check_same_structure("allreduce: tree", tree)
    from mpi4py import MPI

    mpi_op = {"max": MPI.MAX, "min": MPI.MIN, "product": MPI.PROD}.get(op, MPI.SUM)
    out = []
    for leaf in leaves:
        array, write_back = _buffer(leaf, "allreduce")
        widened = array.dtype == np.float16  # no MPI type: in float32, rounded once
        if widened:
            wide = array.astype(np.float32)
        elif array.dtype == np.bool_:  # MPI's MAX and MIN take integers, not logicals
            wide = array.view(np.uint8)
        else:
            wide = array
        w.comm.Allreduce(MPI.IN_PLACE, wide, op=mpi_op)
        if op == "mean":
            np.multiply(wide, wide.dtype.type(1.0 / w.size), out=wide)
        if widened:
            array[...] = wide
        out.append(write_back(array))
    return pytree.unflatten(treedef, out)


def _traced_allreduce(leaf, op: str):
    """Inside a function being compiled (jitgrad.function, jit): `leaf`'s sum or mean as the
    allreduce op, which its kernel runs as MPI_Allreduce at every call (Horovod's pattern in a
    tf.function). A Variable is assigned the result; any other leaf is replaced by it (a trace
    cannot write into a numpy array). No structure check: it would be a collective at trace
    time, and one rank may retrace alone (an uneven last batch)."""
    value = allreduce_value(leaf, op)
    if isinstance(leaf, Variable):
        leaf.assign(value)
        return leaf
    return value


def allreduce_gradients(grads):
    """The mean over ranks of a tape's gradients (a list or pytree of Tensors; None entries
    stay None), for `optimizer.apply_gradients`: Horovod's pattern in a GradientTape loop.

    >>> grads = tape.gradient(loss, model.trainable_variables)
    >>> grads = jitgrad.distributed.allreduce_gradients(grads)
    >>> opt.apply_gradients(zip(grads, model.trainable_variables))
    """
    return allreduce(grads, op="mean")


def _buffer(leaf, op: str):
    """(a C-contiguous writeable array holding `leaf`'s value, a function giving the result leaf
    from it): the array itself when it can be written in place, else a copy."""
    if isinstance(leaf, np.ndarray) and leaf.flags.writeable:
        if leaf.flags.c_contiguous:
            return leaf, lambda array: array
        copy = np.ascontiguousarray(leaf)

        def into_leaf(array):
            leaf[...] = array
            return leaf

        return copy, into_leaf
    if isinstance(leaf, Variable):

        def assign(array):
            leaf.assign(array)
            return leaf

        return np.array(leaf.numpy(), order="C"), assign
    if isinstance(leaf, Tensor):
        return np.array(leaf.numpy(), order="C"), Tensor
    if isinstance(leaf, np.ndarray):  # read-only: a new array
        return np.array(leaf, order="C"), lambda array: array
    if isinstance(leaf, np.generic):  # a numpy scalar: one of its type
        return np.array(leaf), lambda array: array[()]
    if isinstance(leaf, (bool, int, float)):  # a Python number (a loss to log, a seed): its type
        array = np.array(leaf)
        if array.dtype == object:
            raise TypeError(f"jitgrad.distributed.{op}: the integer {leaf} needs more than 64 bits")
        return array, lambda array, kind=type(leaf): kind(array.item())
    raise TypeError(
        f"jitgrad.distributed.{op}: leaves must be numpy arrays or scalars, Python numbers, "
        f"Tensors or Variables, got {type(leaf).__name__}"
    )


def _check_root(root: int, size: int) -> None:
    if not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(
            f"jitgrad.distributed.broadcast: root must be a rank in [0, {size}), got {root!r}"
        )


def shard(*arrays):
    """This rank's rows of a global batch: the arrays (same first dimension) split into
    size() consecutive parts as evenly as possible (np.array_split), part rank() for this
    rank. One array in, one array out; several in, a tuple out.

    >>> xb, yb = jitgrad.distributed.shard(x_global_batch, y_global_batch)

    A batch whose rows do not divide by size() gives ranks one row more than others, and
    warns (see `warn_if_uneven`).
    """
    if not arrays:
        raise ValueError("jitgrad.distributed.shard: needs at least one array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        shapes = ", ".join(str(np.shape(a)) for a in arrays)
        raise ValueError(
            f"jitgrad.distributed.shard: arrays must have the same length, got shapes {shapes}"
        )
    rows = lengths.pop()
    warn_if_uneven(rows, f"jitgrad.distributed.shard: a batch of {_rows(rows)}", stacklevel=3)
    lo, hi = shard_bounds(rows)
    parts = tuple(a[lo:hi] for a in arrays)
    return parts[0] if len(parts) == 1 else parts


def warn_if_uneven(rows: int, what: str, stacklevel: int = 2) -> None:
    """Warn (on rank 0) when a global batch of `rows` does not split evenly over the ranks.

    Why: a distributed step averages the ranks' gradients with equal weights (as Horovod and
    PyTorch's DDP do). When the ranks' shares differ by a row, a row of a smaller share
    weighs more, and the step no longer makes the update one process makes on the global
    batch (W3's step, batches of 128 and 127 rows: parameters 9e-5 apart after three steps,
    against 1.5e-8 with even shares). A global batch divisible by size(), and `drop_last=True`
    in `jitgrad.data.batches`, keep the two equal."""
    w = world()
    if rows % w.size == 0 or w.rank != 0:
        return
    small = rows // w.size
    warnings.warn(
        f"{what} does not divide over {w.size} ranks: shares of {small} and {small + 1} rows, "
        "whose gradients the ranks average with equal weights, so this is not the update one "
        f"process makes on all {_rows(rows)} (use a global batch divisible by {w.size})",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def shard_bounds(rows: int) -> tuple[int, int]:
    """[lo, hi): the rows of `rows` that this rank reads (np.array_split's parts)."""
    w = world()
    base, extra = divmod(rows, w.size)
    lo = w.rank * base + min(w.rank, extra)
    return lo, lo + base + (w.rank < extra)
