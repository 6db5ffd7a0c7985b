"""Functional index updates: TensorFlow's `tensor_scatter_nd_update/add/sub` and `scatter_nd`,
and JAX's `x.at[index].set(v)` / `.add(v)` / `.get()`.

Why compositions and no primitive of their own: each is `scatter_add` (gather's transpose,
already eager, traced, differentiated and compiled) of the updates into a zero tensor, plus an
`add` or a `where`, so they run everywhere the primitives run, and their gradients (to the
tensor, and to the updates through gather) come from those.

Rows: every update writes one row of the tensor seen as (rows, inner): `tensor_scatter_nd_*`'s
indices address the leading axes (inner = the trailing ones, as TensorFlow's slices), and
`.at[index]` addresses single elements (inner = 1) through the flat positions of `x[index]`.

Repeated rows: `add` sums their updates (TensorFlow and JAX alike). `set` writes the last one
when the index is known while tracing (numpy's `a[i] = v`), and the mean of the repeated
updates when the index is a traced value: TensorFlow applies them "in an unspecified order",
JAX leaves the result unspecified; the mean is at least deterministic, and exact when the
repeated updates are equal.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.core.tensor import Tracer
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value
from jitgrad.ops.index import (
    _as_indices,
    _check_index_impl,
    check_bounds,
    check_index,
    gather,
    gather_p,
    getitem,
    scatter_add_p,
)


def _extreme_eval(x, updates, rows, *, mode):
    if updates.dtype != x.dtype or x.ndim != 2 or updates.ndim != 2 or rows.ndim != 1:
        raise op_error(
            f"scatter_{mode}",
            f"needs (rows, n) {x.dtype} values, (k, n) updates and k row indices, got "
            f"{x.dtype} {x.shape}, {updates.dtype} {updates.shape}, {rows.dtype} {rows.shape}",
        )
    if rows.dtype.kind not in "iu" or updates.shape != (rows.shape[0], x.shape[1]):
        raise op_error(f"scatter_{mode}", f"updates {updates.shape} do not fit rows {rows.shape}")
    return AVal(x.shape, x.dtype)


def _extreme_impl(x, updates, rows, *, mode):
    check_bounds(f"scatter_{mode}", rows, x.shape[0], 0, x.shape)
    out = x.copy()
    with np.errstate(invalid="ignore"):  # a NaN wins, as in compiled code: no warning
        (np.maximum if mode == "max" else np.minimum).at(out, rows, updates)
    return out


def _extreme_vjp(g, out, x, updates, rows, *, mode):
    """The cotangent goes to what the result equals (x's element, or the updates that won),
    shared evenly among ties, as reduce_max's."""
    from_x = ew.equal(x, out)
    picked = bind(gather_p, out, rows, axis=0)
    from_updates = ew.equal(updates, picked)
    ties = ew.add(
        ew.cast(from_x, g.dtype),
        bind(scatter_add_p, ew.cast(from_updates, g.dtype), rows, axis=0, shape=x.shape),
    )
    share = g / ew.maximum(ties, np.ones((), g.dtype))
    dx = ew.where(from_x, share, ew.zeros_like_value(share))
    picked_share = bind(gather_p, share, rows, axis=0)
    dupdates = ew.where(from_updates, picked_share, ew.zeros_like_value(picked_share))
    return dx, dupdates, None


scatter_extreme_p = defop(
    "scatter_extreme",
    abstract_eval=_extreme_eval,
    impl=_extreme_impl,
    vjp=_extreme_vjp,
    kind="index",
    raises=True,
    doc="`x` (rows, n) with each row `rows[j]` combined with `updates[j]` by maximum (mode "
    '"max") or minimum ("min"), numpy\'s maximum.at: repeated rows combine all their updates.',
)


def tensor_scatter_nd_update(tensor, indices, updates, name=None):
    """`tensor` with the slices addressed by the last axis of `indices` replaced by `updates`
    (shape `indices.shape[:-1] + tensor.shape[indices.shape[-1]:]`).

    >>> jitgrad.tensor_scatter_nd_update([1.0, 2.0, 3.0], [[0], [2]], [9.0, 8.0])
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([9., 2., 8.], dtype=float32)>
    """
    return _scatter_nd("tensor_scatter_nd_update", tensor, indices, updates, "set")


def tensor_scatter_nd_add(tensor, indices, updates, name=None):
    """`tensor` plus `updates` at the slices addressed by the last axis of `indices`
    (repeated indices add up)."""
    return _scatter_nd("tensor_scatter_nd_add", tensor, indices, updates, "add")


def tensor_scatter_nd_sub(tensor, indices, updates, name=None):
    """`tensor` minus `updates` at the slices addressed by the last axis of `indices`."""
    updates = ew.negative(as_value(updates, op="tensor_scatter_nd_sub"))
    return _scatter_nd("tensor_scatter_nd_sub", tensor, indices, updates, "add")


def tensor_scatter_nd_max(tensor, indices, updates, name=None):
    """`tensor` with each addressed slice the maximum of itself and its updates
    (tf.tensor_scatter_nd_max; repeated indices take the maximum of all)."""
    return _scatter_nd("tensor_scatter_nd_max", tensor, indices, updates, "max")


def tensor_scatter_nd_min(tensor, indices, updates, name=None):
    """`tensor` with each addressed slice the minimum of itself and its updates."""
    return _scatter_nd("tensor_scatter_nd_min", tensor, indices, updates, "min")


def scatter_nd(indices, updates, shape, name=None):
    """Zeros of `shape` plus `updates` at the slices addressed by the last axis of `indices`
    (repeated indices add up), TensorFlow's scatter_nd."""
    updates = as_value(updates, op="scatter_nd")
    shape = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    zeros = sh.broadcast_to(ew.cast(0.0, updates.dtype), shape)
    return _scatter_nd("scatter_nd", zeros, indices, updates, "add")


def _scatter_nd(op: str, tensor, indices, updates, mode: str):
    x = as_value(tensor, op=op)
    idx = _as_indices(indices, op)
    depth = idx.shape[-1] if idx.ndim else 0
    if idx.ndim == 0 or depth > x.ndim:
        raise op_error(
            op, f"indices of shape {idx.shape} cannot address a tensor of shape {x.shape}"
        )
    lead, inner = x.shape[:depth], x.shape[depth:]
    updates = _updates(op, updates, x, idx.shape[:-1] + inner)
    strides = np.cumprod((1,) + lead[::-1][:-1])[::-1].astype(np.int64)
    if isinstance(idx, Tracer):
        from jitgrad.ops.reduce import reduce_sum

        # [0, 4] on a 3x3 tensor would otherwise flatten to 4, a valid but wrong row.
        checked = check_index(idx, lead, op) if depth else idx
        rows = reduce_sum(ew.cast(checked, dtypes.int64) * strides, -1)
    else:
        known = np.asarray(idx.numpy(), np.int64)
        if depth:
            _check_index_impl(known, sizes=lead, caller=op, what="index", axis=0, negative=False)
        rows = (known * strides).sum(-1)
    rows_shape = (int(np.prod(lead, dtype=np.int64)), int(np.prod(inner, dtype=np.int64)))
    out = _scatter_rows(sh.reshape(x, rows_shape), rows, updates, mode)
    return sh.reshape(out, x.shape)


def _updates(op: str, updates, x, shape: tuple):
    """`updates` in `x`'s dtype (cast, as numpy's `a[i] = v` and JAX's `.at` do) and of
    `shape` (broadcast from a scalar or a smaller shape)."""
    updates = as_value(updates, op=op)
    if updates.dtype != x.dtype:
        updates = ew.cast(updates, x.dtype)
    if updates.shape != shape:
        try:
            np.broadcast_shapes(updates.shape, shape)
        except ValueError:
            raise op_error(
                op, f"updates of shape {updates.shape} do not fit the addressed shape {shape}"
            ) from None
        updates = sh.broadcast_to(updates, shape)
    return updates


def _scatter_rows(x2, rows, updates, mode: str):
    """`x2` (rows, inner) with `updates` (len(rows) x inner values, in `rows`' order) added to
    or set into its rows `rows`: int64 indices, all in range, of any shape; a numpy array when
    they are known now, else a traced value."""
    count = int(np.prod(rows.shape, dtype=np.int64))
    updates = sh.reshape(updates, (count, x2.shape[1]))
    if mode in ("max", "min"):
        flat_rows = (
            rows.reshape(count) if isinstance(rows, np.ndarray) else sh.reshape(rows, (count,))
        )
        return bind(scatter_extreme_p, x2, updates, as_value(flat_rows), mode=mode)
    if isinstance(rows, np.ndarray):
        rows = rows.reshape(count)
        if mode == "set":  # numpy's rule: the last update of a row wins
            last = count - 1 - np.unique(rows[::-1], return_index=True)[1]
            rows, updates = rows[last], gather(updates, last, 0)
        new_rows = bind(scatter_add_p, updates, as_value(rows), axis=0, shape=x2.shape)
        if mode == "add":
            return x2 + new_rows
        written = np.zeros((x2.shape[0], 1), bool)
        written[rows] = True
        return ew.where(written, new_rows, x2)
    rows = sh.reshape(rows, (count,))
    total = bind(scatter_add_p, updates, rows, axis=0, shape=x2.shape)
    if mode == "add":
        return x2 + total
    counting = x2.dtype if x2.dtype.kind == "f" else np.dtype(np.float32)
    ones = sh.broadcast_to(ew.cast(1.0, counting), (count,))
    hits = sh.reshape(bind(scatter_add_p, ones, rows, axis=0, shape=(x2.shape[0],)), (-1, 1))
    if x2.dtype.kind == "f":  # repeated traced rows: the mean of their updates
        total = total / ew.maximum(hits, 1.0)
    return ew.where(ew.greater(hits, 0.0), total, x2)


class IndexUpdates:
    """`x.at`: `x.at[index]` names the elements of `x[index]` for a functional update (JAX's
    `.at`). Any index `x[index]` takes works: ints, slices, None, `...`, integer arrays, and
    traced integer values under jit."""

    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x

    def __getitem__(self, index):
        return IndexUpdate(self.x, index)

    def __repr__(self) -> str:
        return f"IndexUpdates({self.x!r})"


class IndexUpdate:
    """`x.at[index]`: `.set(v)`, `.add(v)`, `.max(v)`, `.min(v)` and `.get()` return new
    tensors; `x` is unchanged."""

    __slots__ = ("x", "index")

    def __init__(self, x, index):
        self.x, self.index = as_value(x, op="at"), index

    def get(self):
        """`x[index]`."""
        return getitem(self.x, self.index)

    def set(self, values):
        """`x` with `x[index]` replaced by `values` (broadcast to its shape)."""
        return self._update(values, "set", "at[...].set")

    def add(self, values):
        """`x` with `values` added to `x[index]` (repeated elements add up)."""
        return self._update(values, "add", "at[...].add")

    def max(self, values):  # noqa: A003 - JAX's name
        """`x` with `x[index]` the maximum of itself and `values` (of all, where repeated)."""
        return self._update(values, "max", "at[...].max")

    def min(self, values):  # noqa: A003 - JAX's name
        """`x` with `x[index]` the minimum of itself and `values` (of all, where repeated)."""
        return self._update(values, "min", "at[...].min")

    def _update(self, values, mode: str, op: str):
        x = self.x
        positions = _flat_positions(x.shape, self.index)
        updates = _updates(op, values, x, positions.shape)
        out = _scatter_rows(sh.reshape(x, (x.size, 1)), positions, updates, mode)
        return sh.reshape(out, x.shape)


def _flat_positions(shape: tuple, index):
    """The flat positions (int64) of the elements of `x[index]` for an `x` of `shape`, in the
    shape of `x[index]`: numpy's indexing applied to an array of positions, now when the index
    is known (a numpy array), else as getitem of a traced index (a traced value)."""
    positions = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(item, Tracer) for item in items):
        return getitem(positions, index)
    known = tuple(item.numpy() if hasattr(item, "numpy") else item for item in items)
    try:
        return positions[known if isinstance(index, tuple) else known[0]]
    except IndexError as exc:
        raise op_error("at", f"{exc} (a tensor of shape {tuple(shape)})", IndexError) from None
