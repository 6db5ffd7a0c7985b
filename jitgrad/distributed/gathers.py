"""Collectives whose result holds every rank's part: `allgather` of arrays (a rank's
predictions on its shard of the validation set, gathered for a metric that does not add up
over shards, such as an AUC or a median), and Python objects (`allgather_object`,
`broadcast_object`: a config, a vocabulary, an early-stopping decision). Horovod and PyTorch
have the same four; they run eagerly, between compiled steps.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor
from jitgrad.core.variable import Variable
from jitgrad.distributed.world import world


def allgather(tree):
    """Every rank's value of each leaf of `tree`, concatenated along the first axis in rank
    order: the same result on every rank. The first axis may differ between ranks (a last,
    shorter batch); the other axes, the dtypes and the structure must agree (else a
    ValueError naming the first difference). A number or 0-d leaf gives a 1-d array, one
    element per rank. Numpy leaves give numpy arrays; Tensors and Variables give Tensors.

    >>> predictions = jitgrad.distributed.allgather(model(x_shard))   # every rank's rows
    """
    _eagerly("allgather")
    leaves, treedef = pytree.flatten(tree)
    paths = pytree.leaf_paths("tree", treedef)
    arrays = [_as_rows(path, leaf) for path, leaf in zip(paths, leaves)]
    comm = world().comm
    if comm is None:
        gathered = [a.copy() for a in arrays]
    else:
        mine = [(path, a.shape, a.dtype.str) for path, a in zip(paths, arrays)]
        every = comm.allgather((pytree.describe(treedef), mine))
        _check_parts(every)
        gathered = [
            _allgather_rows(comm, a, [leaves_r[k][1][0] for _, leaves_r in every])
            for k, a in enumerate(arrays)
        ]
    out = [
        Tensor(g) if isinstance(leaf, (Tensor, Variable)) else g
        for leaf, g in zip(leaves, gathered)
    ]
    return pytree.unflatten(treedef, out)


def allgather_object(obj) -> list:
    """Every rank's `obj` (any picklable object), in rank order, on every rank.

    >>> sizes = jitgrad.distributed.allgather_object(len(my_shard))
    """
    _eagerly("allgather_object")
    comm = world().comm
    return [obj] if comm is None else comm.allgather(obj)


def broadcast_object(obj, root: int = 0):
    """Rank `root`'s `obj` (any picklable object) on every rank; the others' `obj` is ignored.

    >>> config = jitgrad.distributed.broadcast_object(config)   # rank 0's
    """
    _eagerly("broadcast_object")
    w = world()
    if not isinstance(root, (int, np.integer)) or not 0 <= root < w.size:
        raise ValueError(
            f"jitgrad.distributed.broadcast_object: root must be a rank in [0, {w.size}), "
            f"got {root!r}"
        )
    return obj if w.comm is None else w.comm.bcast(obj, root=int(root))


def _eagerly(name: str) -> None:
    if current_trace.get() is not None:
        raise RuntimeError(
            with_location(
                f"jitgrad.distributed.{name} runs eagerly, not inside a compiled function: "
                "call it between steps"
            )
        )


def _as_rows(path: str, leaf) -> np.ndarray:
    """`leaf` as a C-contiguous array with at least one axis (a number: one row)."""
    if hasattr(leaf, "numpy"):
        leaf = leaf.numpy()
    elif not isinstance(leaf, (np.ndarray, np.generic, bool, int, float)):
        raise TypeError(
            f"jitgrad.distributed.allgather: {path} is a {type(leaf).__name__}; leaves must be "
            "numpy arrays or scalars, Python numbers, Tensors or Variables"
        )
    array = np.ascontiguousarray(leaf)
    if array.dtype == object:
        raise TypeError(
            f"jitgrad.distributed.allgather: {path} is {leaf!r}, not a fixed-size number"
        )
    return array.reshape(1) if array.ndim == 0 else array


def _check_parts(every: list) -> None:
    """Raise the same ValueError on every rank unless the ranks' trees agree but for the
    first axis of each leaf."""
    structure0, leaves0 = every[0]
    for rank, (structure, leaves) in enumerate(every):
        if structure != structure0:
            raise ValueError(
                with_location(
                    f"jitgrad.distributed.allgather: rank 0 has the structure {structure0}, "
                    f"rank {rank} has {structure}"
                )
            )
        for (path, shape0, dtype0), (_, shape, dtype) in zip(leaves0, leaves):
            if dtype != dtype0 or shape[1:] != shape0[1:] or len(shape) != len(shape0):
                raise ValueError(
                    with_location(
                        f"jitgrad.distributed.allgather: {path} is {np.dtype(dtype0)} {shape0} "
                        f"on rank 0 and {np.dtype(dtype)} {shape} on rank {rank}; only the "
                        "first axis may differ"
                    )
                )


def _allgather_rows(comm, array: np.ndarray, rows: list) -> np.ndarray:
    """Every rank's rows of `array` (rank r has rows[r]), concatenated: MPI_Allgatherv of
    their bytes, so any dtype arrives bitwise."""
    from mpi4py import MPI

    row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    out = np.empty((sum(rows),) + array.shape[1:], array.dtype)
    counts = [r * row_bytes for r in rows]
    comm.Allgatherv(
        [array.reshape(-1).view(np.uint8), MPI.BYTE],
        [out.reshape(-1).view(np.uint8), counts, MPI.BYTE],
    )
    return out
