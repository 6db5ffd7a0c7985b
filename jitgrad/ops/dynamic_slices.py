"""JAX's dynamic slices: `dynamic_slice` reads a block of static size at start indices that may
be traced (a loop counter), `dynamic_update_slice` writes one; with their `_in_dim` forms.

Why: in a loop body the position is a traced value, which `x[i:i + k]` cannot take (a slice
needs Python ints). As JAX does, the starts are clamped so that the block lies inside the
operand, never an out-of-bounds read or write. A traced start makes a gather (reading) or a
scatter (writing, ops/scatter.py) of the block's positions, differentiable both ways; known
starts make plain slices.
"""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tracer
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, normalize_axis
from jitgrad.ops.index import gather
from jitgrad.ops.scatter import _scatter_rows


def dynamic_slice(operand, start_indices, slice_sizes):
    """The block of `slice_sizes` (static) of `operand` starting at `start_indices` (ints or
    traced integer scalars), each start clamped into [0, n - size] (JAX's lax.dynamic_slice)."""
    x = as_value(operand, op="dynamic_slice")
    starts = _starts("dynamic_slice", x, start_indices)
    sizes = _sizes("dynamic_slice", x, slice_sizes)
    for axis, (start, size) in enumerate(zip(starts, sizes)):
        n = x.shape[axis]
        if isinstance(start, Tracer):
            first = ew.clip_by_value(ew.cast(start, dtypes.int64), 0, n - size)
            x = gather(x, first + np.arange(size, dtype=np.int64), axis)
        elif size != n:
            first = builtins.min(builtins.max(int(start), 0), n - size)
            index = [builtins.slice(None)] * x.ndim
            index[axis] = builtins.slice(first, first + size)
            x = sh.strided_slice(x, tuple(index))
    return x


def dynamic_update_slice(operand, update, start_indices):
    """`operand` with the block at `start_indices` (each clamped into [0, n - size]) replaced by
    `update` (JAX's lax.dynamic_update_slice)."""
    x = as_value(operand, op="dynamic_update_slice")
    u = as_value(update, op="dynamic_update_slice")
    if u.ndim != x.ndim:
        raise op_error(
            "dynamic_update_slice", f"update {u.shape} must have the rank of operand {x.shape}"
        )
    starts = _starts("dynamic_update_slice", x, start_indices)
    sizes = _sizes("dynamic_update_slice", x, u.shape)
    strides = np.cumprod((1,) + x.shape[::-1][:-1])[::-1].astype(np.int64)
    # The block's flat positions: a static grid of offsets plus the (clamped) corner's position.
    grid = np.zeros(sizes, np.int64)
    for d, k in enumerate(sizes):
        along = [1] * x.ndim
        along[d] = k
        grid = grid + np.arange(k, dtype=np.int64).reshape(along) * strides[d]
    corner, traced = 0, False
    for start, size, n, stride in zip(starts, sizes, x.shape, strides):
        if isinstance(start, Tracer):
            first = ew.clip_by_value(ew.cast(start, dtypes.int64), 0, n - size)
            corner, traced = corner + first * stride, True
        else:
            corner += builtins.min(builtins.max(int(start), 0), n - size) * int(stride)
    positions = ew.add(grid, corner) if traced else grid + corner
    u = ew.cast(u, x.dtype) if u.dtype != x.dtype else u
    out = _scatter_rows(sh.reshape(x, (x.size, 1)), positions, u, "set")
    return sh.reshape(out, x.shape)


def dynamic_slice_in_dim(operand, start_index, slice_size, axis=0):
    """dynamic_slice along one axis (the others whole)."""
    x = as_value(operand, op="dynamic_slice_in_dim")
    axis = normalize_axis("dynamic_slice_in_dim", axis, x.ndim)
    starts = [0] * x.ndim
    starts[axis] = start_index
    sizes = list(x.shape)
    sizes[axis] = slice_size
    return dynamic_slice(x, starts, sizes)


def dynamic_update_slice_in_dim(operand, update, start_index, axis):
    """dynamic_update_slice along one axis (the update spans the others)."""
    x = as_value(operand, op="dynamic_update_slice_in_dim")
    axis = normalize_axis("dynamic_update_slice_in_dim", axis, x.ndim)
    starts = [0] * x.ndim
    starts[axis] = start_index
    return dynamic_update_slice(x, update, starts)


def _starts(op: str, x, start_indices) -> list:
    starts = list(start_indices) if isinstance(start_indices, (list, tuple)) else None
    if starts is None:
        value = as_value(start_indices, op=op)
        if value.ndim != 1:
            raise op_error(op, f"start_indices must be a sequence, got shape {value.shape}")
        starts = [value[k] for k in range(value.shape[0])]
    if len(starts) != x.ndim:
        raise op_error(op, f"{len(starts)} start indices for an operand of shape {x.shape}")
    out = []
    for start in starts:
        value = start if isinstance(start, (int, np.integer)) else as_value(start, op=op)
        if not isinstance(value, (int, np.integer)):
            if value.ndim or value.dtype.kind not in "iu":
                raise op_error(
                    op, f"start indices must be integer scalars, got {value.dtype} {value.shape}"
                )
            if not isinstance(value, Tracer):
                value = int(value.numpy())
        out.append(value)
    return out


def _sizes(op: str, x, slice_sizes) -> list[int]:
    sizes = [int(k) for k in slice_sizes]
    if len(sizes) != x.ndim or any(not 0 <= k <= n for k, n in zip(sizes, x.shape)):
        raise op_error(op, f"slice sizes {sizes} do not fit an operand of shape {x.shape}")
    return sizes
