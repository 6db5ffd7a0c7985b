"""Norms and norm clipping with TensorFlow's meanings: `norm` (tf.norm), `global_norm`,
`clip_by_norm` and `clip_by_global_norm` (composites over the primitives).

Gradients at 0 are TensorFlow's: the euclidean norm is sqrt(sum(x * x)), whose gradient at
x = 0 is 0 * (1 / 0) = NaN (TensorFlow computes the same expression and gives NaN; its
`reduce_euclidean_norm` has no gradient at all). The p-norms are (sum |x|^p)^(1/p), NaN at 0 too;
the 1- and inf-norms have the subgradient 0 at 0 (|x|' = sign(x)). `clip_by_norm` and
`clip_by_global_norm` guard the zero norm as TensorFlow does, so their gradients stay finite.
"""

from __future__ import annotations

import math

from jitgrad.core.errors import op_error
from jitgrad.ops import elementwise as ew
from jitgrad.ops import reduce
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value

_VECTOR_ORDS = ("euclidean", 1, 2, math.inf)
_MATRIX_ORDS = ("euclidean", "fro", 1, 2, math.inf)


def _is_positive_real(ord) -> bool:  # noqa: A002 - numpy's and TensorFlow's name
    return isinstance(ord, (int, float)) and not isinstance(ord, bool) and ord > 0 and ord == ord


def _matrix_axes(axis, ndim: int):
    """A pair of distinct axes (the matrix norms) normalised to [0, ndim), or None."""
    if not isinstance(axis, (tuple, list)) or len(axis) != 2:
        return None
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axis):
        return None
    pair = tuple(a % ndim if -ndim <= a < ndim else None for a in axis)
    if None in pair or pair[0] == pair[1]:
        return None
    return pair


def norm(tensor, ord="euclidean", axis=None, keepdims=None, name=None):  # noqa: A002
    """TensorFlow's tf.norm: a vector norm over all elements (`axis=None`) or one axis, or a
    matrix norm over a pair of axes.

    >>> float(jitgrad.norm([3.0, 4.0]))
    5.0
    >>> float(jitgrad.norm([[1.0, -2.0], [3.0, 4.0]], ord=1, axis=[-2, -1]))   # max column sum
    6.0

    Vector orders: 'euclidean' (= 2), 1, inf and any positive real p. Matrix orders:
    'euclidean' and 'fro' (Frobenius), 1 (max column sum), inf (max row sum), 2 (the largest
    singular value). The reduced axes are kept as size 1 with `keepdims`.
    """
    x = as_value(tensor, op="norm")
    if x.dtype.kind != "f":
        raise op_error(
            "norm", f"expects a float tensor, got {x.dtype.name}{list(x.shape)}", TypeError
        )
    keepdims = bool(keepdims)
    if isinstance(axis, (tuple, list)) and len(axis) == 2:
        pair = _matrix_axes(axis, x.ndim)
        if pair is None:
            raise op_error(
                "norm",
                f"axis={axis!r} for a tensor of shape {x.shape}: a matrix norm needs 2 unique "
                "integer axes of the tensor",
            )
        if ord not in _MATRIX_ORDS:
            raise op_error(
                "norm", f"ord={ord!r} is not a matrix norm; supported: {list(_MATRIX_ORDS)}"
            )
        return _matrix_norm(x, ord, pair, keepdims)
    if axis is not None and not (isinstance(axis, int) and not isinstance(axis, bool)):
        raise op_error(
            "norm",
            f"axis={axis!r}: must be None, an integer, or a pair of unique integers",
        )
    if ord not in _VECTOR_ORDS and not _is_positive_real(ord):
        raise op_error(
            "norm",
            f"ord={ord!r} is not a vector norm; supported: 'euclidean', 1, 2, inf or a "
            "positive real",
        )
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise op_error("norm", f"axis={axis} is out of range for a tensor of shape {x.shape}")
    axes = None if axis is None else (axis % x.ndim,)
    return _vector_norm(x, ord, axes, keepdims)


def _vector_norm(x, ord, axes, keepdims: bool):  # noqa: A002
    if ord in ("euclidean", 2):
        return ew.sqrt(reduce.reduce_sum(x * x, axes, keepdims))
    magnitude = ew.abs(x)
    if ord == 1:
        return reduce.reduce_sum(magnitude, axes, keepdims)
    if ord == math.inf:
        return reduce.reduce_max(magnitude, axes, keepdims)
    return ew.pow(reduce.reduce_sum(ew.pow(magnitude, float(ord)), axes, keepdims), 1.0 / ord)


def _matrix_norm(x, ord, pair: tuple[int, int], keepdims: bool):  # noqa: A002
    rows, cols = pair
    if ord in ("euclidean", "fro"):
        return ew.sqrt(reduce.reduce_sum(x * x, pair, keepdims))
    magnitude = ew.abs(x)
    if ord == 1:  # the largest column sum: sum over the rows, then the max over the columns
        out = reduce.reduce_max(reduce.reduce_sum(magnitude, rows, True), cols, True)
    elif ord == math.inf:  # the largest row sum
        out = reduce.reduce_max(reduce.reduce_sum(magnitude, cols, True), rows, True)
    else:  # 2: the largest singular value, of the matrices moved to the last two axes
        from jitgrad.ops.matrix import svd

        batch = [a for a in range(x.ndim) if a not in pair]
        moved = sh.transpose(x, batch + [rows, cols])
        largest = reduce.reduce_max(svd(moved, compute_uv=False), -1)
        kept = [1 if a in pair else d for a, d in enumerate(x.shape)]
        out = sh.reshape(largest, tuple(kept))
    return out if keepdims else sh.squeeze(out, list(pair))


def global_norm(t_list, name=None):
    """sqrt of the sum of the squares of every element of every tensor in `t_list` (None
    entries are skipped), as tf.linalg.global_norm."""
    values = [as_value(t, op="global_norm") for t in t_list if t is not None]
    if not values:
        raise op_error("global_norm", "t_list has no tensors")
    total = None
    for v in values:
        part = reduce.reduce_sum(v * v)
        total = part if total is None else total + ew.cast(part, total.dtype)
    return ew.sqrt(total)


def clip_by_norm(t, clip_norm, axes=None, name=None):
    """t * clip_norm / max(norm(t), clip_norm), the L2 norm taken over `axes` (None: all):
    TensorFlow's tf.clip_by_norm, whose gradient stays finite at t = 0.

    >>> jitgrad.clip_by_norm([3.0, 4.0], 1.0).numpy()
    array([0.6, 0.8], dtype=float32)
    """
    x = as_value(t, op="clip_by_norm")
    if x.dtype.kind != "f":
        raise op_error(
            "clip_by_norm", f"expects a float tensor, got {x.dtype.name}{list(x.shape)}", TypeError
        )
    squares = reduce.reduce_sum(x * x, axes, keepdims=True)
    # sqrt only where the sum is positive, so that no 1/0 enters the gradient at t = 0.
    positive = ew.greater(squares, 0.0)
    safe = ew.where(positive, squares, ew.ones_like_value(squares))
    l2 = ew.where(positive, ew.sqrt(safe), squares)
    clip = as_value(clip_norm, dtype=x.dtype, op="clip_by_norm")
    return x * clip / ew.maximum(l2, clip)


def clip_by_global_norm(t_list, clip_norm, use_norm=None, name=None):
    """(t_list scaled by clip_norm / max(global_norm, clip_norm), global_norm): TensorFlow's
    tf.clip_by_global_norm. None entries stay None; an infinite or NaN norm makes every
    clipped tensor NaN, as TensorFlow's.

    >>> clipped, norm = jitgrad.clip_by_global_norm([[3.0], [4.0]], 1.0)   # norm 5
    """
    if isinstance(t_list, (str, bytes)) or not isinstance(t_list, (list, tuple)):
        raise op_error(
            "clip_by_global_norm",
            f"t_list must be a list of tensors, got {t_list!r:.60}",
            TypeError,
        )
    values = [None if t is None else as_value(t, op="clip_by_global_norm") for t in t_list]
    total = (
        global_norm(values) if use_norm is None else as_value(use_norm, op="clip_by_global_norm")
    )
    clip = as_value(clip_norm, dtype=total.dtype, op="clip_by_global_norm")
    # clip * min(1 / norm, 1 / clip), plus (norm - norm): NaN when the norm is inf or NaN.
    scale = clip * ew.minimum(1.0 / total, 1.0 / clip) + (total - total)
    clipped = [None if v is None else v * ew.cast(scale, v.dtype) for v in values]
    return clipped, total
