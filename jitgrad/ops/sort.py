"""Sorting: the `argsort` primitive and, over it, TensorFlow's `sort`, `argsort` and
`math.top_k` (numpy's `sort` and `argsort` in jitgrad.numpy).

One primitive, not differentiable (it returns positions): the sorted values are a gather of
the input at those positions, so their gradient is gather's (a scatter-add of the cotangent
back to where each value came from), and `top_k`'s values too.

The order is stable in both directions: equal values keep their order of position, as
TensorFlow's `top_k` promises and its `sort(stable=True)` does; eager (numpy's mergesort) and
compiled code (Numba's) agree to the position. Descending order sorts the negated value (a
float) or its complement (an integer, which cannot overflow): NaNs come last either way.
"""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, defop
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, normalize_axis
from jitgrad.ops.index import gather


def _argsort_eval(x, *, axis, descending):
    if x.dtype.kind not in "fiu":
        raise op_error("argsort", f"sorts numbers, got {x.dtype.name}", TypeError)
    if not 0 <= axis < x.ndim:
        raise op_error("argsort", f"axis {axis} is out of range for shape {x.shape}")
    return AVal(x.shape, dtypes.int64)


def sort_key(x: np.ndarray, descending: bool) -> np.ndarray:
    """What ascending order of the result sorts `x` in `descending` order, ties by position."""
    if not descending:
        return x
    return -x if x.dtype.kind == "f" else ~x


argsort_p = defop(
    "argsort",
    abstract_eval=_argsort_eval,
    impl=lambda x, *, axis, descending: np.argsort(
        sort_key(x, descending), axis=axis, kind="stable"
    ),
    vjp=NOT_DIFFERENTIABLE,
    kind="other",
    doc="The positions that sort `x` along `axis` (stable; `descending`: largest first).",
)


def sorting_positions(values, axis=-1, descending=False):
    """The positions (int64) that sort `values` along `axis`: numpy's argsort, stable."""
    return _positions("argsort", values, axis, "DESCENDING" if descending else "ASCENDING")[1]


def _positions(op: str, values, axis, direction: str):
    """(x, its sorting positions along `axis` as int64, the axis)."""
    x = as_value(values, op=op)
    if x.ndim == 0:
        raise op_error(op, "needs a tensor of at least one dimension, got a scalar")
    axis = normalize_axis(op, axis, x.ndim)
    if direction not in ("ASCENDING", "DESCENDING"):
        raise op_error(op, f"direction must be 'ASCENDING' or 'DESCENDING', got {direction!r}")
    keys = ew.cast(x, dtypes.int8) if x.dtype == dtypes.bool_ else x
    return x, bind(argsort_p, keys, axis=axis, descending=direction == "DESCENDING"), axis


def take_along_axis(x, positions, axis: int):
    """`x`'s elements at `positions` (int64, x's shape but along `axis`) along `axis`
    (numpy's take_along_axis), as one gather over the flattened tensor."""
    moved = [a for a in range(x.ndim) if a != axis] + [axis]
    xt, pt = sh.transpose(x, moved), sh.transpose(positions, moved)
    n, k = xt.shape[-1], pt.shape[-1]
    rows = int(np.prod(xt.shape[:-1], dtype=np.int64))
    starts = np.arange(rows, dtype=np.int64).reshape(xt.shape[:-1] + (1,)) * n
    flat = sh.reshape(xt, (rows * n,))
    picked = gather(flat, pt + starts, 0)
    back = np.argsort(moved)
    return sh.transpose(sh.reshape(picked, xt.shape[:-1] + (k,)), list(back))


def sort(values, axis=-1, direction="ASCENDING", name=None):
    """`values` sorted along `axis` (TensorFlow's tf.sort); differentiable (a gather).

    >>> jitgrad.sort([3.0, 1.0, 2.0], direction="DESCENDING")
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([3., 2., 1.], dtype=float32)>
    """
    x, positions, axis = _positions("sort", values, axis, direction)
    return take_along_axis(x, positions, axis)


def argsort(values, axis=-1, direction="ASCENDING", stable=False, name=None):
    """The positions that sort `values` along `axis`, as int32 (TensorFlow's tf.argsort);
    always stable."""
    return ew.cast(_positions("argsort", values, axis, direction)[1], dtypes.int32)


def top_k(input, k=1, sorted=True, name=None):  # noqa: A002 - TensorFlow's names
    """(the `k` largest values along the last axis, largest first, and their positions as
    int32) (TensorFlow's tf.math.top_k; of equal values, the lower position comes first).
    The values are differentiable."""
    x, positions, axis = _positions("top_k", input, -1, "DESCENDING")
    k = int(k)
    if not 0 <= k <= x.shape[-1]:
        raise op_error("top_k", f"k = {k} is not in [0, {x.shape[-1]}] for shape {x.shape}")
    first = sh.strided_slice(
        positions, (builtins.slice(None),) * (x.ndim - 1) + (builtins.slice(0, k),)
    )
    return take_along_axis(x, first, axis), ew.cast(first, dtypes.int32)
