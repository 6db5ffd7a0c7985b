"""numpy's functions whose result has as many entries as the values select: nonzero,
flatnonzero, argwhere, extract and unique (and `where(condition)`, in jitgrad.numpy's `where`).
Imported into `jitgrad.numpy`.

Why `size=`: a compiled function's shapes are fixed when it is traced, before any value exists.
Under `jit` these take JAX's `size=`: the result has `size` entries, the first `size`
selections, then `fill_value`; without it they refuse to be traced. Eagerly the values are
there, and the size is what they select, as numpy's result.

How: the positions of the selected entries, in order, are the first ones of a stable argsort
of "not selected" (ops.sort's primitive: eager, traced, compiled, batched), and their count
says where the padding starts. unique sorts the values (NaNs last), marks the first of each
run of equal values (NaNs equal to each other: numpy's equal_nan=True) and selects those. The
values that unique and extract return are gathers of the input, so gradients flow back to the
entries they came from; positions are integers, with no gradient.
"""

from __future__ import annotations

import operator

import numpy as np

from jitgrad import ops
from jitgrad.core.errors import TracerError, with_location
from jitgrad.core.tensor import Tracer
from jitgrad.numpy.conversion import INDEX, _truth, _unsupported, asarray
from jitgrad.ops.composites import is_nan
from jitgrad.ops.sort import sorting_positions

__all__ = ["argwhere", "extract", "flatnonzero", "nonzero", "unique"]


def nonzero(a, *, size=None, fill_value=None):
    """The indices of `a`'s nonzero entries, a tuple of one int64 array per axis (numpy's
    order: row-major). `size` (needed under jit): return that many, padded with `fill_value`
    (default 0; a tuple gives one per axis).

    >>> jnp.nonzero(jnp.array([0.0, 2.0, 0.0, 3.0]))
    (<jitgrad.Tensor: shape=(2,), dtype=int64, numpy=array([1, 3])>,)
    """
    x = asarray(a)
    if x.ndim == 0:
        raise ValueError(
            with_location(
                "jitgrad.numpy.nonzero: a 0-d array has no axis to index (numpy refuses it "
                "too); use nonzero(atleast_1d(a))"
            )
        )
    fills = _fills("nonzero", fill_value, x.ndim)
    positions, valid = _selected(_truth(x), size, "nonzero")
    coordinates, rest = [], positions
    for axis in range(x.ndim - 1, -1, -1):  # the flat positions, unravelled (row-major)
        extent = ops.cast(x.shape[axis], INDEX)
        coordinates.append(ops.mod(rest, extent) if axis else rest)
        rest = ops.floordiv(rest, extent)
    coordinates.reverse()
    return tuple(_padded(c, valid, fill) for c, fill in zip(coordinates, fills))


def flatnonzero(a, *, size=None, fill_value=None):
    """The positions of `a`'s nonzero entries in `a.ravel()` (int64); `size`/`fill_value` as
    in `nonzero`."""
    return nonzero(ops.reshape(asarray(a), (-1,)), size=size, fill_value=fill_value)[0]


def argwhere(a, *, size=None, fill_value=None):
    """The indices of `a`'s nonzero entries as rows, int64 of shape (count, a.ndim); `size` /
    `fill_value` as in `nonzero`."""
    x = asarray(a)
    if x.ndim == 0:  # numpy: one row of no columns if the value is nonzero, else none
        rows = _result_size("argwhere", size, ops.cast(_truth(x), INDEX))
        return ops.fill((rows, 0), np.zeros((), INDEX))
    return ops.stack(nonzero(x, size=size, fill_value=fill_value), axis=1)


def extract(condition, arr, *, size=None, fill_value=0):
    """`arr.ravel()`'s entries where `condition.ravel()` is true (numpy's extract); `size`
    (needed under jit) entries, padded with `fill_value`. Differentiable in `arr`."""
    flat = ops.reshape(asarray(arr), (-1,))
    mask = ops.reshape(_truth(asarray(condition)), (-1,))
    if mask.shape[0] != flat.shape[0]:
        raise ValueError(
            with_location(
                f"jitgrad.numpy.extract: condition has {mask.shape[0]} entries and arr "
                f"{flat.shape[0]}; they must have as many"
            )
        )
    positions, valid = _selected(mask, size, "extract")
    if flat.shape[0] == 0:
        return ops.fill((positions.shape[0],), np.asarray(fill_value, flat.dtype))
    return _padded(ops.gather(flat, positions), valid, fill_value)


def unique(
    ar,
    return_index=False,
    return_inverse=False,
    return_counts=False,
    axis=None,
    *,
    equal_nan=True,
    size=None,
    fill_value=None,
    sorted=True,  # noqa: A002 - numpy's name; the result is sorted whatever it says
):
    """The sorted distinct values of `ar` (flattened), and on request the position of each
    one's first occurrence (`return_index`), the index of each entry's value among them
    (`return_inverse`, `ar`'s shape, as numpy 2) and how often each occurs (`return_counts`).
    NaNs count as one value unless `equal_nan=False`. `size` (needed under jit): that many
    values, padded with `fill_value` (default: the smallest value, as JAX), and the counts
    with zeros. Differentiable in the values (a gather of `ar`).

    >>> jnp.unique(jnp.array([3, 1, 3, 2]))
    <jitgrad.Tensor: shape=(3,), dtype=int64, numpy=array([1, 2, 3])>
    """
    _unsupported("unique", axis=(axis, None))
    x = asarray(ar)
    flat = ops.reshape(x, (-1,))
    n = flat.shape[0]
    if n == 0:
        rows = 0 if size is None else _result_size("unique", size, None)
        empty = ops.fill((rows,), np.asarray(0 if fill_value is None else fill_value, x.dtype))
        extras = [ops.fill((rows,), np.zeros((), INDEX))] * (return_index + return_counts)
        if return_inverse:
            extras.insert(int(return_index), ops.fill(x.shape, np.zeros((), INDEX)))
        return (empty, *extras) if extras else empty
    order = sorting_positions(flat)  # stable, NaNs last
    ordered = ops.gather(flat, order)
    first = _first_of_runs(ordered, equal_nan)
    starts, valid = _selected(first, size, "unique")
    values = _padded(ops.gather(ordered, starts), valid, fill_value)
    results = [values]
    if return_index:
        results.append(ops.gather(order, starts))
    if return_inverse:
        rank_in_order = ops.cumsum(ops.cast(first, INDEX)) - 1
        inverse = ops.gather(rank_in_order, sorting_positions(order))  # order's inverse
        results.append(ops.reshape(inverse, x.shape))
    if return_counts:
        # Where each value's run starts, then where the next one does (n after the last).
        bounds, inside = _selected(first, starts.shape[0] + 1, "unique")
        bounds = ops.where(inside, bounds, ops.cast(n, INDEX))
        results.append(bounds[1:] - bounds[:-1])
    return results[0] if len(results) == 1 else tuple(results)


def _first_of_runs(ordered, equal_nan: bool):
    """Whether each entry of a sorted 1-d array differs from the one before it."""
    differs = ops.not_equal(ordered[1:], ordered[:-1])
    if equal_nan and ordered.dtype.kind == "f":
        both_nan = ops.logical_and(is_nan(ordered[1:]), is_nan(ordered[:-1]))
        differs = ops.logical_and(differs, ops.logical_not(both_nan))
    return ops.concat([ops.fill((1,), np.bool_(True)), differs], 0)


def _selected(mask, size, fn: str):
    """(the flat positions of the true entries of the 1-d `mask`, in order, the first `size` of
    them, padded with 0; whether each of those is a true entry's)."""
    mask = ops.reshape(mask, (-1,))
    n = mask.shape[0]
    count = ops.reduce_sum(ops.cast(mask, INDEX))
    size = _result_size(fn, size, count)
    positions = sorting_positions(ops.logical_not(mask)) if n else ops.fill((0,), np.int64(0))
    if size <= n:
        positions = positions[:size]
    else:
        positions = ops.concat([positions, ops.fill((size - n,), np.zeros((), INDEX))], 0)
    valid = ops.less(ops.range(size, dtype=INDEX), count)
    return ops.where(valid, positions, ops.cast(0, INDEX)), valid


def _result_size(fn: str, size, count) -> int:
    """`size`, checked; else the number selected, known only outside a trace."""
    if size is None:
        if isinstance(count, Tracer):
            raise TracerError(
                with_location(
                    f"jitgrad.numpy.{fn}: how many entries it returns depends on the values, "
                    "which do not exist while jit traces the function: pass size= (how many to "
                    "return) and fill_value= (what pads them), as in JAX"
                )
            )
        return int(count)
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(
            with_location(f"jitgrad.numpy.{fn}: size must be an integer, got {size!r}")
        ) from None
    if size < 0:
        raise ValueError(with_location(f"jitgrad.numpy.{fn}: size must be >= 0, got {size}"))
    return size


def _fills(fn: str, fill_value, ndim: int) -> list:
    if fill_value is None:
        return [0] * ndim
    if isinstance(fill_value, (tuple, list)):
        if len(fill_value) != ndim:
            raise ValueError(
                with_location(
                    f"jitgrad.numpy.{fn}: fill_value has {len(fill_value)} entries for an "
                    f"array of {ndim} axes; give one, or one per axis"
                )
            )
        return list(fill_value)
    return [fill_value] * ndim


def _padded(values, valid, fill_value):
    if fill_value is None:
        return values
    fill = ops.cast(asarray(fill_value), values.dtype)
    return ops.where(valid, values, fill)
