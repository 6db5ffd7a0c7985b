"""numpy's array functions that ported code calls and that compose from jitgrad.numpy's core
and jitgrad's ops: truth reductions, flips, padding, splits, triangles, differences, diagonals,
grids, choices, products of arrays. Imported into `jitgrad.numpy` (its names are numpy's)."""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad import ops
from jitgrad.core.errors import op_error
from jitgrad.numpy.conversion import _truth, _unsupported, asarray
from jitgrad.ops.base import normalize_axis
from jitgrad.ops.composites import count_nonzero as _count_nonzero
from jitgrad.ops.composites import meshgrid as _meshgrid
from jitgrad.ops.shape import strided_slice

__all__ = [
    "all",
    "any",
    "broadcast_arrays",
    "count_nonzero",
    "cross",
    "diagonal",
    "diff",
    "flip",
    "kron",
    "meshgrid",
    "nan_to_num",
    "pad",
    "select",
    "split",
    "tril",
    "triu",
]


def _axes(axis):
    return list(axis) if isinstance(axis, tuple) else axis


def all(a, axis=None, out=None, keepdims=False, *, where=True):  # noqa: A001 - numpy's name
    """Whether every element over `axis` is true (not zero)."""
    _unsupported("all", out=(out, None), where=(where, True))
    return ops.reduce_all(_truth(a), _axes(axis), bool(keepdims))


def any(a, axis=None, out=None, keepdims=False, *, where=True):  # noqa: A001 - numpy's name
    """Whether any element over `axis` is true (not zero)."""
    _unsupported("any", out=(out, None), where=(where, True))
    return ops.reduce_any(_truth(a), _axes(axis), bool(keepdims))


def count_nonzero(a, axis=None, *, keepdims=False):
    """How many elements over `axis` are not zero (int64)."""
    return _count_nonzero(asarray(a), _axes(axis), bool(keepdims))


def flip(m, axis=None):
    """`m` with the order of its elements reversed along `axis` (None: every axis)."""
    x = asarray(m)
    return ops.reverse(x, list(range(x.ndim)) if axis is None else _axes(axis))


def pad(array, pad_width, mode="constant", constant_values=0):
    """`array` padded with a constant (numpy's "constant" mode); `pad_width` is an int, a pair,
    or one pair per axis."""
    if mode != "constant":
        raise op_error("pad", f"mode {mode!r} is not supported (only 'constant')")
    x = asarray(array)
    if np.ndim(constant_values):
        raise op_error("pad", "constant_values must be one number")
    widths = np.broadcast_to(np.asarray(pad_width, np.int64), (x.ndim, 2))
    return ops.pad(x, widths, constant_values=constant_values)


def split(ary, indices_or_sections, axis=0):
    """`ary` cut along `axis` into equal parts (an int, which must divide the axis) or at the
    given indices."""
    x = asarray(ary)
    axis = normalize_axis("split", axis, x.ndim)
    n = x.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        return ops.split(x, int(indices_or_sections), axis)
    cuts = [builtins.min(builtins.max(int(c), 0), n) for c in indices_or_sections]
    bounds = [0, *cuts, n]
    sizes = [builtins.max(hi - lo, 0) for lo, hi in zip(bounds[:-1], bounds[1:])]
    starts = [builtins.min(lo, n) for lo in bounds[:-1]]
    whole = [builtins.slice(None)] * x.ndim
    return [
        strided_slice(x, tuple(whole[:axis] + [builtins.slice(s, s + k)] + whole[axis + 1 :]))
        for s, k in zip(starts, sizes)
    ]


def _triangle(name: str, m, k: int, lower: bool):
    x = asarray(m)
    if x.ndim < 2:
        raise op_error(name, f"needs at least 2 dimensions, got shape {x.shape}")
    rows, cols = x.shape[-2:]
    keep = np.tri(rows, cols, k, bool) if lower else ~np.tri(rows, cols, k - 1, bool)
    return ops.where(keep, x, ops.cast(0, x.dtype))


def tril(m, k=0):
    """`m` with the elements above its k-th diagonal zeroed (over the last two axes)."""
    return _triangle("tril", m, k, lower=True)


def triu(m, k=0):
    """`m` with the elements below its k-th diagonal zeroed (over the last two axes)."""
    return _triangle("triu", m, k, lower=False)


def diff(a, n=1, axis=-1):
    """The `n`-th differences along `axis`: out[i] = a[i + 1] - a[i], `n` times."""
    x = asarray(a)
    axis = normalize_axis("diff", axis, x.ndim)
    whole = [builtins.slice(None)] * x.ndim
    for _ in range(int(n)):
        upper = tuple(whole[:axis] + [builtins.slice(1, None)] + whole[axis + 1 :])
        lower = tuple(whole[:axis] + [builtins.slice(None, -1)] + whole[axis + 1 :])
        x = ops.subtract(strided_slice(x, upper), strided_slice(x, lower))
    return x


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """`x` with NaN replaced by `nan` and infinities by `posinf`/`neginf` (default: the dtype's
    largest and smallest finite numbers)."""
    x = asarray(x)
    if x.dtype.kind != "f":
        return x
    info = np.finfo(x.dtype)
    high = info.max if posinf is None else posinf
    low = info.min if neginf is None else neginf
    x = ops.where(ops.not_equal(x, x), ops.cast(nan, x.dtype), x)
    x = ops.where(ops.equal(x, ops.cast(np.inf, x.dtype)), ops.cast(high, x.dtype), x)
    return ops.where(ops.equal(x, ops.cast(-np.inf, x.dtype)), ops.cast(low, x.dtype), x)


def broadcast_arrays(*args):
    """The arguments broadcast against each other to one shape."""
    values = [asarray(a) for a in args]
    shape = np.broadcast_shapes(*(tuple(v.shape) for v in values))
    return [ops.broadcast_to(v, shape) for v in values]


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The `offset` diagonal of the (axis1, axis2) planes, as the last axis (one gather)."""
    x = asarray(a)
    if x.ndim < 2:
        raise op_error("diagonal", f"needs at least 2 dimensions, got shape {x.shape}")
    axis1, axis2 = (
        normalize_axis("diagonal", axis1, x.ndim),
        normalize_axis("diagonal", axis2, x.ndim),
    )
    if axis1 == axis2:
        raise op_error("diagonal", f"axis1 and axis2 are both {axis1}")
    rest = [d for d in range(x.ndim) if d not in (axis1, axis2)]
    planes = ops.transpose(x, rest + [axis1, axis2])
    rows, cols = planes.shape[-2:]
    i = np.arange(builtins.max(0, -offset), builtins.max(builtins.min(rows, cols - offset), 0))
    flat = ops.reshape(planes, planes.shape[:-2] + (rows * cols,))
    return ops.gather(flat, i * cols + i + offset, planes.ndim - 2)


def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    """Coordinate grids from 1-d arrays ("xy": Cartesian, "ij": matrix indexing)."""
    if sparse:
        raise op_error("meshgrid", "sparse=True is not supported")
    return _meshgrid(*[asarray(x) for x in xi], indexing=indexing)


def select(condlist, choicelist, default=0):
    """From the first condition that holds at each element, its choice; else `default`."""
    if len(condlist) != len(choicelist):
        raise op_error("select", "condlist and choicelist must have the same length")
    choices, out = [asarray(c) for c in choicelist], asarray(default)
    weak = isinstance(default, (bool, int, float))  # numpy promotes a Python default weakly
    dtype = np.result_type(*[c.dtype for c in choices], default if weak else out.dtype)
    out = ops.cast(out, dtype)
    for condition, choice in reversed(list(zip(condlist, choices))):
        out = ops.where(asarray(condition), ops.cast(choice, dtype), out)
    return out


def kron(a, b):
    """The Kronecker product: every element of `a` times the whole of `b`, blocked."""
    x, y = asarray(a), asarray(b)
    ndim = builtins.max(x.ndim, y.ndim)
    x = ops.reshape(x, (1,) * (ndim - x.ndim) + tuple(x.shape))
    y = ops.reshape(y, (1,) * (ndim - y.ndim) + tuple(y.shape))
    spread_x = tuple(v for d in x.shape for v in (d, 1))  # x's axes interleaved with ones
    spread_y = tuple(v for d in y.shape for v in (1, d))
    product = ops.multiply(ops.reshape(x, spread_x), ops.reshape(y, spread_y))
    return ops.reshape(product, tuple(p * q for p, q in zip(x.shape, y.shape)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors along the last axis (broadcast over the others)."""
    if (axisa, axisb, axisc, axis) != (-1, -1, -1, None):
        raise op_error("cross", "only the vectors along the last axis are supported")
    x, y = asarray(a), asarray(b)
    if x.shape[-1:] != (3,) or y.shape[-1:] != (3,):
        raise op_error("cross", f"needs 3-vectors, got shapes {x.shape} and {y.shape}")
    x0, x1, x2 = ops.unstack(x, axis=-1)
    y0, y1, y2 = ops.unstack(y, axis=-1)
    return ops.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], axis=-1)
