"""numpy's array-building and index-making functions that compose from jitgrad's ops: flips and
rotations, stacking and blocks, inserting and deleting, index grids (indices, mgrid, ix_,
triu_indices, unravel_index, ...), and numpy's dtype helpers. Imported into `jitgrad.numpy`.

Shapes are static, as `jit` needs them: the positions that insert, delete and resize move
data between are worked out by numpy's own function on an array of positions (so its rules
and errors are numpy's), and the data moves in one gather, which the gradient scatters back.
The index grids are constants. Dtypes are numpy's: joined arrays take numpy's result_type
(jitgrad's concat would promote int32 with float32 to float32), index arrays are int64.
Indices that may be traced (unravel_index, ravel_multi_index, choose) are checked eagerly with
numpy's ValueError, and under `jit` when the compiled function runs, as jitgrad's indexing
checks them (an IndexError naming the function, the index and the size).
"""

from __future__ import annotations

import builtins
import math

import numpy as np
from numpy import can_cast, dtype, finfo, iinfo, promote_types

from jitgrad import ops
from jitgrad.core import dtypes as _dtypes
from jitgrad.core.errors import TracerError, op_error, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.numpy.arrays import flip
from jitgrad.numpy.conversion import _PY_SCALARS, _VALUES, INDEX, _truth, _unsupported, asarray
from jitgrad.numpy.selection import _selected
from jitgrad.ops.base import as_value, normalize_axis
from jitgrad.ops.index import check_index

__all__ = [
    "append",
    "astype",
    "atleast_3d",
    "block",
    "can_cast",
    "choose",
    "column_stack",
    "compress",
    "copy",
    "delete",
    "diag_indices",
    "diag_indices_from",
    "diagflat",
    "dstack",
    "dtype",
    "empty",
    "empty_like",
    "finfo",
    "fliplr",
    "flipud",
    "geomspace",
    "iinfo",
    "indices",
    "insert",
    "iscomplexobj",
    "isrealobj",
    "ix_",
    "logspace",
    "mgrid",
    "ogrid",
    "promote_types",
    "ravel_multi_index",
    "resize",
    "rot90",
    "tri",
    "tril_indices",
    "tril_indices_from",
    "triu_indices",
    "triu_indices_from",
    "unravel_index",
]


# ---------------------------------------------------------------------------------------------
# Helpers


def _static(fn: str, what: str, value):
    """`value` as numpy sees it: a tensor's data; a traced value, which sets shapes here, is
    refused."""
    if isinstance(value, Tracer):
        value._concrete(f"{fn}'s {what} (it sets the result's shape) taken from the value")
    return np.asarray(value) if isinstance(value, Tensor) else value


def _by_numpy(fn: str, call):
    """numpy's own `call` (on static positions or numbers), its errors naming `fn` and the
    user's line."""
    try:
        return call()
    except (IndexError, ValueError, TypeError) as exc:
        raise type(exc)(with_location(f"{fn}: {exc}")) from None


def _constant(fn: str, value):
    """numpy's static result (an array or a tuple of them) as tensors."""
    if isinstance(value, tuple):
        return tuple(as_value(v, op=fn) for v in value)
    return as_value(value, op=fn)


def _dtype(fn: str, dtype):
    """A dtype argument checked to be one jitgrad holds (None: numpy's choice)."""
    return None if dtype is None else _by_numpy(fn, lambda: _dtypes.as_dtype(dtype))


def _joined(fn: str, xs, axis: int):
    """numpy's concatenate of the tensors `xs` along `axis`, in numpy's result dtype."""
    if not xs:
        raise op_error(fn, "needs at least one array to concatenate")
    shapes = [tuple(x.shape) for x in xs]
    ndim = len(shapes[0])
    if ndim == 0:
        raise op_error(fn, "zero-dimensional arrays cannot be concatenated")
    axis = normalize_axis(fn, axis, ndim)
    if builtins.any(
        len(s) != ndim or s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]
        for s in shapes
    ):
        raise op_error(fn, f"shapes {shapes} differ outside axis {axis}")
    result = np.result_type(*[x.dtype for x in xs])
    return ops.concat([ops.cast(x, result) for x in xs], axis)


def _integers(fn: str, value, message: str = "only int indices permitted"):
    x = asarray(value)
    if x.dtype.kind not in "biu":
        raise op_error(fn, f"{message}, got {x.dtype}", TypeError)
    return ops.cast(x, INDEX)


def _in_bounds(fn: str, idx, n: int, message: str, axis: int = 0):
    """`idx` (int64), checked to lie in [0, n): eagerly numpy's ValueError (`message`, which
    may name the first bad index as {}); traced, when the compiled function runs, as
    jitgrad's indexing checks indices (an IndexError naming `fn`, the index and `n`)."""
    if isinstance(idx, Tracer):
        return check_index(idx, [n], fn, axis=axis)
    values = np.asarray(idx)
    bad = (values < 0) | (values >= n)
    if bad.any():
        raise op_error(fn, message.format(values[bad].ravel()[0]))
    return idx


def _on_cpu(fn: str, device) -> None:
    if device not in (None, "cpu"):
        raise ValueError(
            with_location(
                f"{fn}: device={device!r} is not supported; jitgrad computes "
                "on the CPU (numpy's device='cpu')"
            )
        )


# ---------------------------------------------------------------------------------------------
# Flips, rotations, stacking


def flipud(m):
    """`m` upside down: reversed along axis 0."""
    x = asarray(m)
    if x.ndim < 1:
        raise op_error("flipud", "input must be >= 1-d, got a 0-d array")
    return flip(x, 0)


def fliplr(m):
    """`m` left to right: reversed along axis 1."""
    x = asarray(m)
    if x.ndim < 2:
        raise op_error("fliplr", f"input must be >= 2-d, got shape {x.shape}")
    return flip(x, 1)


def rot90(m, k=1, axes=(0, 1)):
    """`m` rotated by 90 degrees `k` times in the plane of `axes`, from the first axis towards
    the second (numpy's direction): flips and a transpose."""
    x = asarray(m)
    axes = tuple(axes)
    if len(axes) != 2:
        raise op_error("rot90", f"len(axes) must be 2, got axes={axes}")
    first, second = axes
    if not (-x.ndim <= first < x.ndim and -x.ndim <= second < x.ndim):
        raise op_error("rot90", f"axes={axes} out of range for an array of shape {x.shape}")
    first, second = first % x.ndim, second % x.ndim
    if first == second:
        raise op_error("rot90", f"axes must be different, got axes={axes}")
    k = int(k) % 4
    if k == 0:
        return x
    if k == 2:
        return flip(x, (first, second))
    perm = list(range(x.ndim))
    perm[first], perm[second] = second, first
    if k == 1:
        return ops.transpose(flip(x, second), perm)
    return flip(ops.transpose(x, perm), second)


def atleast_3d(*arys):
    """Each array with at least 3 axes: (N,) becomes (1, N, 1) and (M, N) becomes (M, N, 1);
    a tuple for several arrays."""
    out = []
    for a in arys:
        x = asarray(a)
        if x.ndim < 3:
            shape = {0: (1, 1, 1), 1: (1, *x.shape, 1), 2: (*x.shape, 1)}[x.ndim]
            x = ops.reshape(x, shape)
        out.append(x)
    return out[0] if len(out) == 1 else tuple(out)


def column_stack(tup):
    """1-d arrays as the columns of a 2-d array (2-d arrays are joined as they are)."""
    xs = []
    for a in tup:
        x = asarray(a)
        xs.append(ops.reshape(x, (x.size, 1)) if x.ndim < 2 else x)
    return _joined("column_stack", xs, 1)


def dstack(tup):
    """The arrays joined along a third axis (after atleast_3d)."""
    xs = [atleast_3d(a) for a in tup]
    return _joined("dstack", xs, 2)


def block(arrays):
    """An array assembled from nested lists of blocks: the innermost lists are joined along
    the last axis, the lists of them along the one before, and so on; each block first gets
    leading axes of length 1 up to the result's rank."""
    depth = _block_depth(arrays, "arrays")
    if depth == 0:
        return asarray(arrays)
    leaves = []

    def collect(item, level):
        if level == depth:
            leaves.append(asarray(item))
        else:
            for i in item:
                collect(i, level + 1)

    collect(arrays, 0)
    ndim = builtins.max(depth, *(x.ndim for x in leaves))
    result = np.result_type(*[x.dtype for x in leaves])
    leaves.reverse()

    def build(item, level):
        if level == depth:
            x = leaves.pop()
            return ops.cast(ops.reshape(x, (1,) * (ndim - x.ndim) + tuple(x.shape)), result)
        return _joined("block", [build(i, level + 1) for i in item], level - depth)

    return build(arrays, 0)


def _block_depth(item, where: str) -> int:
    """How deep the lists of `item` nest (0 for a block), checked to be equal everywhere and
    not empty; `where` names `item` (arrays[1][0]) for the errors."""
    if isinstance(item, tuple):
        raise op_error(
            "block",
            f"{where} is a tuple: only lists arrange blocks (numpy's block does not convert "
            "tuples to arrays)",
            TypeError,
        )
    if not isinstance(item, list):
        return 0
    if not item:
        raise op_error("block", f"the list at {where} cannot be empty")
    depths = [_block_depth(i, f"{where}[{n}]") for n, i in enumerate(item)]
    for n, d in enumerate(depths):
        if d != depths[0]:
            raise op_error(
                "block",
                f"list depths are mismatched: {where}[0] holds lists {depths[0]} deep, but "
                f"{where}[{n}] {d} deep",
            )
    return depths[0] + 1


# ---------------------------------------------------------------------------------------------
# Inserting, deleting, resizing: numpy's positions, one gather


def append(arr, values, axis=None):
    """`values` joined after `arr` along `axis` (None: both flattened)."""
    x, v = asarray(arr), asarray(values)
    if axis is None:
        x, v, axis = ops.reshape(x, (-1,)), ops.reshape(v, (-1,)), 0
    return _joined("append", [x, v], axis)


def insert(arr, obj, values, axis=None):
    """`arr` with `values` (cast to arr's dtype, broadcast as numpy does) inserted before the
    positions `obj` along `axis` (None: flattened). `obj` is static: an int, a slice or a
    sequence of ints. Differentiable in `arr` and `values`."""
    x, v = asarray(arr), asarray(values)
    obj = _static("insert", "obj", obj)
    # Where numpy puts each entry: >= 0, the flat position in arr; < 0, -1 - that in values.
    placed = _by_numpy(
        "insert",
        lambda: np.insert(
            np.arange(x.size).reshape(x.shape),
            obj,
            -1 - np.arange(v.size).reshape(v.shape),
            axis,
        ),
    )
    source = ops.concat([ops.reshape(x, (-1,)), ops.reshape(ops.cast(v, x.dtype), (-1,))], 0)
    return ops.gather(source, np.where(placed >= 0, placed, x.size - 1 - placed))


def delete(arr, obj, axis=None):
    """`arr` without the entries at the positions `obj` along `axis` (None: flattened). `obj`
    is static: an int, a slice, a sequence of ints or a boolean mask. Differentiable."""
    x = asarray(arr)
    obj = _static("delete", "obj", obj)
    kept = _by_numpy("delete", lambda: np.delete(np.arange(x.size).reshape(x.shape), obj, axis))
    return ops.gather(ops.reshape(x, (-1,)), kept)


def resize(a, new_shape):
    """An array of `new_shape` filled with `a`'s entries (flattened) repeated in order; zeros
    if `a` is empty. Differentiable."""
    x = asarray(a)
    shape = _static("resize", "new_shape", new_shape)
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    positions = _by_numpy("resize", lambda: np.resize(np.arange(x.size), shape))
    if x.size == 0:
        return ops.fill(positions.shape, np.zeros((), x.dtype))
    return ops.gather(ops.reshape(x, (-1,)), positions)


def diagflat(v, k=0):
    """A matrix with the flattened `v` on its k-th diagonal, zeros elsewhere: one gather from
    `v` and a zero (its gradient a scatter)."""
    x = ops.reshape(asarray(v), (-1,))
    n = x.shape[0] + builtins.abs(k)
    rows, cols = np.indices((n, n))
    pick = np.where(cols - rows == k, np.minimum(rows, cols), x.shape[0])  # x.shape[0]: the 0
    return ops.gather(ops.concat([x, ops.zeros((1,), x.dtype)], 0), pick)


def choose(a, choices, out=None, mode="raise"):
    """`choices[a[i]][i]` for every i (all broadcast together): from which choice each entry
    comes. `mode`: what an index outside [0, len(choices)) does: "raise" (under jit, when the
    compiled function runs), "wrap" (modulo) or "clip". Differentiable in the choices."""
    _unsupported("choose", out=(out, None))
    idx = _integers("choose", a, "a must hold integers")
    items = list(ops.unstack(choices) if isinstance(choices, _VALUES) else choices)
    if not items:
        raise op_error("choose", "choices is a 0-length sequence")
    n = len(items)
    if mode == "raise":
        message = f"invalid entry in choice array: {{}} is not in [0, {n})"
        idx = _in_bounds("choose", idx, n, message)
    elif mode == "wrap":
        idx = ops.mod(idx, ops.cast(n, INDEX))
    elif mode == "clip":
        idx = ops.minimum(ops.maximum(idx, ops.cast(0, INDEX)), ops.cast(n - 1, INDEX))
    else:
        raise op_error("choose", f"mode must be one of 'clip', 'raise', or 'wrap', got {mode!r}")
    # numpy promotes a Python scalar among the choices weakly (NEP 50).
    result = np.result_type(*[c if type(c) in _PY_SCALARS else asarray(c).dtype for c in items])
    values = [ops.cast(asarray(c), result) for c in items]
    shape = _by_numpy("choose", lambda: np.broadcast_shapes(idx.shape, *(c.shape for c in values)))
    out = ops.broadcast_to(values[-1], shape)
    for j in range(n - 2, -1, -1):
        out = ops.where(ops.equal(idx, ops.cast(j, INDEX)), values[j], out)
    return out


def compress(condition, a, axis=None, out=None, *, size=None, fill_value=0):
    """The slices of `a` along `axis` (None: flattened) where the 1-d `condition` is true; a
    shorter condition leaves the rest out. Their count depends on the values: under jit, pass
    JAX's `size=` (that many slices, padded with `fill_value`), as for extract.
    Differentiable in `a`."""
    _unsupported("compress", out=(out, None))
    x = asarray(a)
    if axis is None:
        x, axis = ops.reshape(x, (-1,)), 0
    axis = normalize_axis("compress", axis, x.ndim)
    mask = _truth(asarray(condition))
    if mask.ndim != 1:
        raise op_error("compress", f"condition must be a 1-d array, got shape {mask.shape}")
    n, m = x.shape[axis], mask.shape[0]
    if m < n:
        mask = ops.concat([mask, ops.fill((n - m,), np.False_)], 0)
    elif m > n:
        if isinstance(mask, Tracer):
            raise op_error(
                "compress",
                f"a traced condition of {m} entries for an axis of {n}: numpy requires the "
                f"ones past {n} to be false, which their values decide; pass condition[:{n}]",
            )
        extra = np.flatnonzero(np.asarray(mask)[n:])
        if extra.size:
            raise op_error(
                "compress",
                f"index {n + extra[0]} is out of bounds for axis {axis} with size {n}",
                IndexError,
            )
        mask = mask[:n]
    positions, valid = _selected(mask, size, "compress")
    count = positions.shape[0]
    shape = x.shape[:axis] + (count,) + x.shape[axis + 1 :]
    fill = ops.cast(asarray(fill_value), x.dtype)
    if n == 0:
        return ops.broadcast_to(fill, shape)
    picked = ops.gather(x, positions, axis)
    return ops.where(ops.reshape(valid, (count,) + (1,) * (x.ndim - axis - 1)), picked, fill)


# ---------------------------------------------------------------------------------------------
# Index arrays (int64, numpy's intp) and grids: constants, except the conversions of indices


def tri(N, M=None, k=0, dtype=float, *, like=None):  # noqa: N803 - numpy's names
    """Ones at and below the k-th diagonal of an N x M array, zeros above."""
    _unsupported("tri", like=(like, None))
    dtype = _dtype("tri", dtype)
    return _constant("tri", _by_numpy("tri", lambda: np.tri(N, M, k, dtype)))


def triu_indices(n, k=0, m=None):
    """The (rows, columns) of an n x m array's entries at and above its k-th diagonal."""
    return _constant("triu_indices", _by_numpy("triu_indices", lambda: np.triu_indices(n, k, m)))


def tril_indices(n, k=0, m=None):
    """The (rows, columns) of an n x m array's entries at and below its k-th diagonal."""
    return _constant("tril_indices", _by_numpy("tril_indices", lambda: np.tril_indices(n, k, m)))


def _matrix_shape(fn: str, arr) -> tuple[int, int]:
    x = asarray(arr)
    if x.ndim != 2:
        raise op_error(fn, f"input array must be 2-d, got shape {x.shape}")
    return x.shape


def triu_indices_from(arr, k=0):
    """triu_indices for the 2-d array `arr`'s shape."""
    rows, cols = _matrix_shape("triu_indices_from", arr)
    return triu_indices(rows, k, cols)


def tril_indices_from(arr, k=0):
    """tril_indices for the 2-d array `arr`'s shape."""
    rows, cols = _matrix_shape("tril_indices_from", arr)
    return tril_indices(rows, k, cols)


def diag_indices(n, ndim=2):
    """The indices of the main diagonal of an n x ... x n array of `ndim` axes."""
    return _constant("diag_indices", _by_numpy("diag_indices", lambda: np.diag_indices(n, ndim)))


def diag_indices_from(arr):
    """diag_indices for `arr`'s shape (at least 2 axes, all of one length)."""
    x = asarray(arr)
    if x.ndim < 2:
        raise op_error("diag_indices_from", f"input array must be at least 2-d, got {x.shape}")
    if len(set(x.shape)) != 1:
        raise op_error(
            "diag_indices_from", f"all dimensions of input must be of equal length, got {x.shape}"
        )
    return diag_indices(x.shape[0], x.ndim)


def indices(dimensions, dtype=int, sparse=False):
    """The coordinates of every entry of an array of shape `dimensions`, stacked (one grid per
    axis), or with `sparse` a tuple of broadcastable ranges."""
    dtype = _dtype("indices", dtype)
    grid = _by_numpy("indices", lambda: np.indices(dimensions, dtype, sparse))
    return _constant("indices", grid)


def ix_(*args):
    """Open meshes from 1-d sequences: the k-th reshaped to lie along axis k, so that
    `x[ix_(rows, cols)]` picks the cross product. A boolean sequence stands for its true
    positions (eagerly only: under jit their number is unknown)."""
    out = []
    for k, a in enumerate(args):
        x = asarray(a)
        if x.size == 0 and not isinstance(a, (np.ndarray, *_VALUES)):
            x = ops.cast(x, INDEX)  # numpy's: an empty list of no dtype holds indices
        if x.ndim != 1:
            raise op_error("ix_", f"cross index must be 1-dimensional, got shape {x.shape}")
        if x.dtype == np.bool_:
            if isinstance(x, Tracer):
                raise TracerError(
                    with_location(
                        "ix_: a boolean array stands for its true positions, "
                        "whose number the values decide, which do not exist while jit traces "
                        "the function: pass the positions (integers)"
                    )
                )
            x = as_value(np.flatnonzero(np.asarray(x)), op="ix_")
        out.append(ops.reshape(x, (1,) * k + (x.shape[0],) + (1,) * (len(args) - k - 1)))
    return tuple(out)


def unravel_index(indices, shape, order="C"):
    """The coordinates, one int64 array per axis of `shape` (static), of the flat `indices`
    (which may be traced) of an array of that shape, in `order` "C" (row-major) or "F"."""
    if order not in ("C", "F"):
        raise op_error("unravel_index", f"order must be 'C' or 'F', got {order!r}")
    dims = _dims("unravel_index", shape)
    size = math.prod(dims)
    idx = _integers("unravel_index", indices)
    message = f"index {{}} is out of bounds for an array of size {size}"
    rest = _in_bounds("unravel_index", idx, size, message)
    coordinates = {}
    axes = list(range(len(dims)))
    for axis in reversed(axes) if order == "C" else axes:  # the fastest-varying axis first
        extent = ops.cast(dims[axis], INDEX)
        last = len(coordinates) == len(dims) - 1
        coordinates[axis] = rest if last else ops.mod(rest, extent)
        rest = ops.floordiv(rest, extent)
    return tuple(coordinates[axis] for axis in axes)


def ravel_multi_index(multi_index, dims, mode="raise", order="C"):
    """The flat indices (int64) of the coordinates `multi_index` (one integer array per axis
    of `dims`, broadcast together; they may be traced) in an array of shape `dims`, in
    `order` "C" or "F". `mode` (one, or one per axis): what a coordinate outside its axis
    does: "raise" (under jit, when the compiled function runs), "wrap" or "clip"."""
    if order not in ("C", "F"):
        raise op_error("ravel_multi_index", f"order must be 'C' or 'F', got {order!r}")
    dims = _dims("ravel_multi_index", dims)
    coordinates = list(
        ops.unstack(multi_index) if isinstance(multi_index, _VALUES) else multi_index
    )
    if len(coordinates) != len(dims):
        raise op_error(
            "ravel_multi_index",
            f"multi_index must be a sequence of length {len(dims)} (one per axis of {dims}), "
            f"got {len(coordinates)}",
        )
    modes = list(mode) if isinstance(mode, (tuple, list)) else [mode] * len(dims)
    if len(modes) != len(dims):
        raise op_error("ravel_multi_index", f"{len(modes)} modes for the {len(dims)} axes {dims}")
    coordinates = [_integers("ravel_multi_index", c) for c in coordinates]
    shape = _by_numpy(
        "ravel_multi_index", lambda: np.broadcast_shapes(*(c.shape for c in coordinates))
    )
    strides = [math.prod(dims[a + 1 :] if order == "C" else dims[:a]) for a in range(len(dims))]
    flat = ops.fill(shape, np.zeros((), INDEX))
    for axis, (c, n, m, stride) in enumerate(zip(coordinates, dims, modes, strides)):
        if m == "raise":
            message = f"invalid entry in coordinates array: {{}} on axis {axis} of size {n}"
            c = _in_bounds("ravel_multi_index", c, n, message, axis)
        elif m == "wrap":
            c = ops.mod(c, ops.cast(n, INDEX))
        elif m == "clip":
            c = ops.minimum(ops.maximum(c, ops.cast(0, INDEX)), ops.cast(n - 1, INDEX))
        else:
            raise op_error(
                "ravel_multi_index", f"mode must be one of 'clip', 'raise', or 'wrap', got {m!r}"
            )
        flat = flat + c * ops.cast(stride, INDEX)
    return flat


def _dims(fn: str, shape) -> tuple[int, ...]:
    """A static shape; numpy's error for one with a zero (no entry to address)."""
    dims = tuple(int(d) for d in np.atleast_1d(_static(fn, "shape", shape)))
    if 0 in dims:
        raise op_error(fn, f"cannot unravel if the shape has zero entries, got {dims}")
    return dims


class _Grid:
    """numpy's mgrid (dense: the coordinate grids stacked) or ogrid (open: a tuple of
    broadcastable ranges), as constant tensors: `mgrid[0:3, 0:4]`; a complex step (`0:1:5j`)
    is a number of points, the stop included. The bounds are Python numbers."""

    def __init__(self, grid, name: str):
        self._grid, self._name = grid, name

    def __getitem__(self, key):
        return _constant(self._name, _by_numpy(self._name, lambda: self._grid[key]))


mgrid = _Grid(np.mgrid, "mgrid")
ogrid = _Grid(np.ogrid, "ogrid")


# ---------------------------------------------------------------------------------------------
# Creation, copies and dtypes


def empty(shape, dtype=None, order="C", *, device=None, like=None):
    """numpy's uninitialised array: zeros here (tensors are immutable, so the contents are
    never written later, and zeros are contents numpy could give)."""
    _unsupported("empty", order=(order, "C"), like=(like, None))
    _on_cpu("empty", device)
    shape = tuple(int(d) for d in np.atleast_1d(_static("empty", "shape", shape)))
    return as_value(np.zeros(shape, _dtype("empty", dtype)), op="empty")


def empty_like(prototype, /, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """Zeros of `prototype`'s shape and dtype (or `shape`, `dtype`), as `empty`."""
    _unsupported("empty_like", order=(order, "K"))
    _on_cpu("empty_like", device)
    x = asarray(prototype)
    shape = x.shape if shape is None else _static("empty_like", "shape", shape)
    dtype = x.dtype if dtype is None else _dtype("empty_like", dtype)
    return as_value(np.zeros(shape, dtype), op="empty_like")


def copy(a, order="K", subok=False):
    """A new tensor equal to `a` (a Variable's current value), through which gradients
    flow."""
    _unsupported("copy", order=(order, "K"), subok=(subok, False))
    return ops.identity(asarray(a))


def astype(x, dtype, /, *, copy=True, device=None):
    """`x` cast to `dtype` (floats to integers truncate towards zero, as numpy). `copy` changes
    nothing: tensors are immutable."""
    _on_cpu("astype", device)
    return ops.cast(asarray(x), dtype)


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    """base ** linspace(start, stop, num): from static numbers, as jitgrad.numpy's
    linspace."""
    start, stop = _static("logspace", "start", start), _static("logspace", "stop", stop)
    base, dtype = _static("logspace", "base", base), _dtype("logspace", dtype)
    values = _by_numpy(
        "logspace", lambda: np.logspace(start, stop, num, endpoint, base, dtype, axis)
    )
    return _constant("logspace", values)


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    """`num` numbers from `start` to `stop` in a geometric progression: from static numbers,
    as jitgrad.numpy's linspace."""
    start, stop = _static("geomspace", "start", start), _static("geomspace", "stop", stop)
    dtype = _dtype("geomspace", dtype)
    values = _by_numpy("geomspace", lambda: np.geomspace(start, stop, num, endpoint, dtype, axis))
    return _constant("geomspace", values)


def iscomplexobj(x) -> bool:
    """Whether `x`'s dtype is complex (never for a tensor: jitgrad has no complex dtypes)."""
    dt = x.dtype if isinstance(x, (*_VALUES, np.ndarray, np.generic)) else np.asarray(x).dtype
    return dt.kind == "c"


def isrealobj(x) -> bool:
    """Whether `x`'s dtype is not complex."""
    return not iscomplexobj(x)
