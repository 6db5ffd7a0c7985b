"""Indexing: gather and its transpose scatter_add (primitives), and `x[...]` built on them and
on strided slices. Repeated indices accumulate in the gradient."""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, defop
from jitgrad.core.tensor import Tracer
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import VALUE_TYPES, as_value, normalize_axis


def _gather_eval(x, idx, *, axis):
    if idx.dtype.kind not in "iu":
        raise op_error("gather", f"indices must be integers, got {idx.dtype.name}", TypeError)
    if not 0 <= axis < x.ndim:
        raise op_error("gather", f"axis {axis} is out of range for shape {x.shape}")
    return AVal(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype)


def out_of_bounds(idx: np.ndarray, n: int, negative: bool) -> np.ndarray:
    """Which entries of `idx` do not address an axis of size `n` (`negative`: numpy's -n..-1
    count from the end)."""
    low = -n if negative else 0
    return (idx < low) | (idx >= n)


def check_bounds(op: str, idx: np.ndarray, n: int, axis: int, shape, negative=True) -> None:
    """Raise IndexError naming `op`, the first bad index, the axis and its size."""
    if idx.size:
        bad = out_of_bounds(idx, n, negative)
        if bad.any():
            raise op_error(
                op,
                f"index {idx[bad].ravel()[0]} is out of bounds for axis {axis} "
                f"of size {n} (shape {tuple(shape)})",
                IndexError,
            )


def _gather_impl(x, idx, *, axis):
    check_bounds("gather", idx, x.shape[axis], axis, x.shape)
    return np.take(x, idx, axis=axis)


def _scatter_add_impl(g, idx, *, axis, shape):
    check_bounds("scatter_add (the gradient of gather)", idx, shape[axis], axis, shape)
    out = np.zeros(shape, g.dtype)
    moved = np.moveaxis(out, axis, 0)
    g_moved = np.moveaxis(g.reshape(shape[:axis] + (idx.size,) + shape[axis + 1 :]), axis, 0)
    np.add.at(moved, idx.ravel(), g_moved)
    return out


def _check_index_eval(idx, *, sizes, caller, what, axis, negative):
    if idx.dtype.kind not in "iu":
        raise op_error(caller, f"{what}s must be integers, got {idx.dtype.name}", TypeError)
    if len(sizes) > 1 and (idx.ndim == 0 or idx.shape[-1] != len(sizes)):
        raise op_error(caller, f"{what}s of shape {idx.shape} cannot address {len(sizes)} axes")
    return AVal(idx.shape, idx.dtype)


def _check_index_impl(idx, *, sizes, caller, what, axis, negative):
    columns = [idx] if len(sizes) == 1 else [idx[..., d] for d in range(len(sizes))]
    for d, (column, n) in enumerate(zip(columns, sizes)):
        bad = out_of_bounds(column, n, negative)
        if bad.any():
            raise op_error(
                caller,
                f"{what} {column[bad].ravel()[0]} {index_range(axis + d, n, negative, what)}",
                IndexError,
            )
    return idx


def index_range(axis: int, n: int, negative: bool, what: str) -> str:
    """The end of an index error: numpy's wording for indices, TensorFlow's for labels."""
    if what == "index":
        return f"is out of bounds for axis {axis} of size {n}"
    return f"is outside the valid range [{-n if negative else 0}, {n})"


gather_p = defop(
    "gather",
    abstract_eval=_gather_eval,
    impl=_gather_impl,
    vjp=lambda g, out, x, idx, *, axis: (
        bind(scatter_add_p, g, idx, axis=axis, shape=x.shape),
        None,
    ),
    kind="index",
    raises=True,
)
scatter_add_p = defop(
    "scatter_add",
    abstract_eval=lambda g, idx, *, axis, shape: AVal(shape, g.dtype),
    impl=_scatter_add_impl,
    vjp=lambda g, out, ct, idx, *, axis, shape: (bind(gather_p, g, idx, axis=axis), None),
    kind="index",
    raises=True,
    doc="Zeros of `shape` plus `g` added at `idx` along `axis` (gather's VJP).",
)
check_index_p = defop(
    "check_index",
    abstract_eval=_check_index_eval,
    impl=_check_index_impl,
    vjp=NOT_DIFFERENTIABLE,
    kind="index",
    raises=True,
    doc="`idx` itself, once every entry is checked to lie in [0, size) ([-size, size) with "
    "`negative`): one size for all entries, or one per position of the last axis "
    "(gather_nd's rows). Raises IndexError naming `caller` (the public op), eagerly and "
    "in compiled code, where an out-of-range index would otherwise read a wrong element "
    "(composite indices, labels).",
)


def _as_indices(indices, op):
    idx = as_value(indices, op=op)
    if idx.dtype.kind not in "iu":
        raise op_error(op, f"indices must be integers, got {idx.dtype.name}", TypeError)
    return idx


def gather(params, indices, axis=None, batch_dims=0, name=None):
    """Take slices of `params` along `axis` (default 0) at `indices`."""
    if batch_dims:
        raise op_error("gather", "batch_dims is not supported")
    x = as_value(params, op="gather")
    axis = normalize_axis("gather", 0 if axis is None else axis, x.ndim)
    return bind(gather_p, x, _as_indices(indices, "gather"), axis=axis)


def check_index(
    indices, sizes, op: str, what: str = "index", axis: int = 0, negative: bool = False
):
    """`indices` (integers), checked to lie in [0, size) (or [-size, size) with `negative`)
    for `sizes`: one size for every entry, or one per position of the last axis (then for
    axes axis, axis+1, ...). IndexError naming `op` and the bad `what` otherwise."""
    idx = _as_indices(indices, op)
    return bind(
        check_index_p,
        idx,
        sizes=tuple(int(n) for n in sizes),
        caller=op,
        what=what,
        axis=axis,
        negative=negative,
    )


def take(a, indices, axis=None):
    """numpy's take: like gather, on the flattened array when `axis` is None."""
    x = as_value(a, op="take")
    if axis is None:
        x, axis = sh.reshape(x, (-1,)), 0
    return gather(x, indices, axis)


def gather_nd(params, indices, batch_dims=0, name=None):
    """Gather slices of `params` addressed by the last axis of `indices` (TensorFlow's rule),
    as one gather over the flattened leading axes."""
    if batch_dims:
        raise op_error("gather_nd", "batch_dims is not supported")
    x = as_value(params, op="gather_nd")
    idx = _as_indices(indices, "gather_nd")
    depth = idx.shape[-1] if idx.ndim else 0
    if idx.ndim == 0 or depth > x.ndim:
        raise op_error(
            "gather_nd", f"indices of shape {idx.shape} cannot address params of shape {x.shape}"
        )
    lead = x.shape[:depth]
    if depth:
        # [0, 4] on a 3x3 input would otherwise flatten to 4, a valid but wrong element.
        idx = check_index(idx, lead, "gather_nd")
    strides = np.cumprod((1,) + lead[::-1][:-1])[::-1] if depth else np.zeros(0)
    flat = ew.cast(idx, dtypes.int64) * np.asarray(strides, np.int64)
    from jitgrad.ops.reduce import reduce_sum

    flat = reduce_sum(flat, -1)
    merged = sh.reshape(x, (int(np.prod(lead, dtype=np.int64)),) + x.shape[depth:])
    return gather(merged, flat, 0)


def one_hot(indices, depth, on_value=None, off_value=None, axis=None, dtype=None, name=None):
    """A one-hot encoding of integer `indices`; out-of-range indices give an all-off row.
    Without `dtype`, the dtype of `on_value` (or `off_value`), else float32, as TensorFlow."""
    idx = _as_indices(indices, "one_hot")
    if dtype is None:
        given = [v for v in (on_value, off_value) if v is not None]
        dtype = as_value(given[0], op="one_hot").dtype if given else dtypes.float32
    dtype = dtypes.as_dtype(dtype)
    on = np.asarray(1 if on_value is None else on_value, dtype)
    off = np.asarray(0 if off_value is None else off_value, dtype)
    classes = np.arange(int(depth), dtype=idx.dtype)
    hot = ew.equal(sh.expand_dims(idx, -1), classes)
    # A boolean mask is `hot` itself (not `where(hot, True, False)`, a select in the kernel).
    out = hot if dtype == dtypes.bool_ and on and not off else ew.where(hot, on, off)
    if axis is not None and axis != -1:
        out = sh.transpose(out, _move_last_to(axis, out.ndim))
    return out


def _move_last_to(axis: int, ndim: int) -> list[int]:
    axis = axis % ndim
    perm = list(range(ndim - 1))
    perm.insert(axis, ndim - 1)
    return perm


# ---------------------------------------------------------------------------------------------
# x[index]


def _is_array_index(item) -> bool:
    if isinstance(item, Tracer) and item.dtype != dtypes.bool_:
        return True  # value unknown at trace time: a gather (exact for a 0-d index too)
    if isinstance(item, VALUE_TYPES):
        return item.ndim > 0 or item.dtype == dtypes.bool_
    return isinstance(item, (list, np.ndarray))


def getitem(x, index):
    """x[index] with numpy semantics for basic slices, ints, None, `...` and integer arrays
    (their broadcast axes replace the indexed axes when those are adjacent, else come first).
    Boolean masks work eagerly only: under `jit` the result's shape would depend on data."""
    x = as_value(x, op="getitem")
    items = list(index) if isinstance(index, tuple) else [index]
    items = _expand_ellipsis(x, _expand_bool_masks(x, items))
    # With an integer array present, integer scalars are advanced indices too (numpy's rule:
    # they broadcast with the arrays and count in the placement rule), so make them 0-d arrays.
    advanced = any(_is_array_index(i) for i in items)

    # Basic part: slices for every consumed axis, then reshape for ints and None.
    slices, out_shape_ops, arrays, axis = [], [], [], 0
    for item in items:
        if item is None:
            out_shape_ops.append(("new", None))
            continue
        dim = x.shape[axis]
        if advanced and not isinstance(item, builtins.slice) and not _is_array_index(item):
            item = np.asarray(_static_int(item, dim, axis, x.shape), dtypes.int64)
        if _is_array_index(item):
            slices.append(builtins.slice(None))
            arrays.append((len(out_shape_ops), axis, item))
            out_shape_ops.append(("array", axis))
        elif isinstance(item, builtins.slice):
            slices.append(item)
            out_shape_ops.append(("keep", axis))
        else:
            i = _static_int(item, dim, axis, x.shape)
            slices.append(builtins.slice(i, i + 1))
            out_shape_ops.append(("drop", axis))
        axis += 1
    y = sh.strided_slice(x, tuple(slices))
    shape = []
    for kind, ax in out_shape_ops:
        if kind == "new":
            shape.append(1)
        elif kind in ("keep", "array"):
            shape.append(y.shape[ax])
    # Map source axes to result axes for the array part.
    result_axis = {}
    pos = 0
    for kind, ax in out_shape_ops:
        if kind in ("keep", "array"):
            result_axis[ax] = pos
        if kind != "drop":
            pos += 1
    y = sh.reshape(y, tuple(shape))
    if not arrays:
        return y
    return _gather_arrays(y, [(result_axis[ax], item) for _, ax, item in arrays])


def _expand_ellipsis(x, items):
    """The index with `...` (at most one) and the missing trailing axes as full slices."""
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise op_error("getitem", "an index can only have a single ellipsis ('...')", IndexError)
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > x.ndim:
        raise op_error(
            "getitem", f"too many indices ({consumed}) for a tensor of shape {x.shape}", IndexError
        )
    fill = [builtins.slice(None)] * (x.ndim - consumed)
    for pos, item in enumerate(items):
        if item is Ellipsis:
            return items[:pos] + fill + items[pos + 1 :]
    return items + fill


def _static_int(item, dim, axis, shape) -> int:
    if isinstance(item, Tracer):
        item._concrete("indexing with the value")
    if not (
        isinstance(item, (int, np.integer))
        or getattr(item, "dtype", None) is not None
        and np.dtype(item.dtype).kind in "iu"
    ):
        raise op_error(
            "getitem",
            f"only integers, slices, None, ... and integer arrays are valid indices, got {item!r}",
            IndexError,
        )
    try:
        i = int(item)
    except (TypeError, ValueError):
        raise op_error("getitem", f"unsupported index {item!r}", TypeError) from None
    if not -dim <= i < dim:
        raise op_error(
            "getitem",
            f"index {i} is out of bounds for axis {axis} of size {dim} (shape {shape})",
            IndexError,
        )
    return i % dim


def _expand_bool_masks(x, items):
    out = []
    for item in items:
        mask = item if isinstance(item, (np.ndarray, *VALUE_TYPES)) else None
        if mask is not None and mask.dtype == dtypes.bool_:
            if isinstance(mask, Tracer):
                mask._concrete("boolean-mask indexing with the value")
            out.extend(np.nonzero(np.asarray(mask)))
        else:
            out.append(item)
    return out


def _gather_arrays(y, arrays):
    """Apply integer-array indices (already on result axes) with numpy's placement rule: the
    broadcast index axes replace the indexed axes if those are adjacent, else they go first."""
    axes = [ax for ax, _ in arrays]
    if axes != list(range(axes[0], axes[0] + len(axes))):
        y = sh.transpose(y, axes + [a for a in range(y.ndim) if a not in axes])
        axes = list(range(len(axes)))
    idxs = [_as_indices(item, "getitem") for _, item in arrays]
    first = axes[0]
    if len(idxs) == 1:
        return gather(y, idxs[0], first)
    # Several arrays: broadcast them and gather on the merged axes with a flat index.
    from jitgrad.ops.base import broadcast_all

    idxs = broadcast_all("getitem", *[ew.cast(i, dtypes.int64) for i in idxs])
    dims = [y.shape[a] for a in axes]
    flat = None
    for axis, (i, d) in enumerate(zip(idxs, dims), start=first):
        # Checked before merging: [0, 4] on 3x3 would flatten to the valid index 4.
        i = check_index(i, (d,), "getitem", axis=axis, negative=True)
        i = ew.where(ew.less(i, 0), i + d, i)
        flat = i if flat is None else flat * d + i
    merged = sh.reshape(y, y.shape[:first] + (int(np.prod(dims)),) + y.shape[axes[-1] + 1 :])
    return gather(merged, flat, first)
