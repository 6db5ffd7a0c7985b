"""TensorFlow functions that ported code calls and that are short compositions of the ops
above (so they run eagerly, trace, differentiate and compile with nothing of their own):
logical reductions and float tests, reversal and rolling, repetition, grids, a few elementwise
shorthands, and three of tf.nn's helpers."""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tracer
from jitgrad.ops import elementwise as ew
from jitgrad.ops import reduce as rd
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, normalize_axes, normalize_axis
from jitgrad.ops.index import gather


# -- logical reductions and float tests ---------------------------------------------------------
def reduce_all(input_tensor, axis=None, keepdims=False, name=None):
    """Whether every element over `axis` is true (TensorFlow's logical AND reduction)."""
    x = _as_bool("reduce_all", input_tensor)
    return ew.greater(rd.reduce_min(ew.cast(x, dtypes.int8), axis, keepdims), 0)


def reduce_any(input_tensor, axis=None, keepdims=False, name=None):
    """Whether any element over `axis` is true (TensorFlow's logical OR reduction)."""
    x = _as_bool("reduce_any", input_tensor)
    return ew.greater(rd.reduce_max(ew.cast(x, dtypes.int8), axis, keepdims), 0)


def count_nonzero(input, axis=None, keepdims=False, dtype=dtypes.int64, name=None):  # noqa: A002
    """How many elements over `axis` are not zero (tf.math.count_nonzero)."""
    x = as_value(input, op="count_nonzero")
    nonzero = ew.not_equal(x, ew.cast(0, x.dtype)) if x.dtype != dtypes.bool_ else x
    return ew.cast(rd.reduce_sum(ew.cast(nonzero, dtypes.int64), axis, keepdims), dtype)


def _as_bool(op: str, value):
    x = as_value(value, op=op)
    if x.dtype != dtypes.bool_:
        raise op_error(op, f"expects a bool tensor, got {x.dtype.name} {x.shape}", TypeError)
    return x


def is_nan(x, name=None):
    """Where `x` is NaN (tf.math.is_nan)."""
    x = as_value(x, op="is_nan")
    return ew.not_equal(x, x)  # only NaN differs from itself


def is_inf(x, name=None):
    """Where `x` is +inf or -inf (tf.math.is_inf)."""
    x = as_value(x, op="is_inf")
    if x.dtype.kind != "f":
        return ew.not_equal(x, x)  # all False, in x's shape
    return ew.equal(ew.abs(x), ew.cast(np.inf, x.dtype))


def is_finite(x, name=None):
    """Where `x` is neither NaN nor infinite (tf.math.is_finite)."""
    x = as_value(x, op="is_finite")
    if x.dtype.kind != "f":
        return ew.equal(x, x)  # all True, in x's shape
    return ew.less(ew.abs(x), ew.cast(np.inf, x.dtype))


# -- elementwise shorthands ---------------------------------------------------------------------
def add_n(inputs, name=None):
    """The sum of a list of tensors of one shape and dtype (tf.math.add_n)."""
    values = [as_value(v, op="add_n") for v in inputs]
    if not values:
        raise op_error("add_n", "needs at least one tensor")
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) != 1:
        raise op_error("add_n", f"all tensors must have one shape, got {sorted(shapes)}")
    total = values[0]
    for v in values[1:]:
        total = ew.add(total, v)
    return total


def squared_difference(x, y, name=None):
    """(x - y)^2 elementwise (tf.math.squared_difference)."""
    difference = ew.subtract(x, y)
    return ew.multiply(difference, difference)


def reciprocal(x, name=None):
    """1 / x elementwise (tf.math.reciprocal)."""
    x = as_value(x, op="reciprocal")
    return ew.divide(ew.cast(1, x.dtype), x)


# -- reversal, rolling, repetition, grids -------------------------------------------------------
def reverse(tensor, axis, name=None):
    """`tensor` with the order of its elements along each of `axis` reversed (tf.reverse)."""
    x = as_value(tensor, op="reverse")
    axes = normalize_axes("reverse", axis, x.ndim)
    index = tuple(
        builtins.slice(None, None, -1) if a in axes else builtins.slice(None) for a in range(x.ndim)
    )
    return sh.strided_slice(x, index) if axes else x


def roll(input, shift, axis, name=None):  # noqa: A002
    """Elements shifted along `axis` by `shift` places, those falling off one end coming back
    at the other (tf.roll; numpy's roll); `shift` and `axis` may be lists of equal length."""
    x = as_value(input, op="roll")
    shifts = [int(s) for s in np.atleast_1d(_static("roll", "shift", shift))]
    axes = [normalize_axis("roll", int(a), x.ndim) for a in np.atleast_1d(axis)]
    if len(shifts) != len(axes):
        raise op_error("roll", f"shift {shifts} and axis {axes} must have the same length")
    for s, a in zip(shifts, axes):
        n = x.shape[a]
        if n == 0 or s % n == 0:
            continue
        cut, whole = n - s % n, [builtins.slice(None)] * x.ndim
        head = tuple(whole[:a] + [builtins.slice(0, cut)] + whole[a + 1 :])
        tail = tuple(whole[:a] + [builtins.slice(cut, n)] + whole[a + 1 :])
        x = sh.concat([sh.strided_slice(x, tail), sh.strided_slice(x, head)], a)
    return x


def repeat(input, repeats, axis=None, name=None):  # noqa: A002
    """Each element (each slice along `axis`; None: of the flattened tensor) repeated
    `repeats` times, a count for all or one per slice (tf.repeat; numpy's repeat)."""
    x = as_value(input, op="repeat")
    if axis is None:
        x, axis = sh.reshape(x, (-1,)), 0
    axis = normalize_axis("repeat", axis, x.ndim)
    counts = np.asarray(_static("repeat", "repeats", repeats), np.int64).reshape(-1)
    n = x.shape[axis]
    if counts.size == 1:
        counts = np.full(n, counts[0])
    if counts.size != n or (counts < 0).any():
        raise op_error(
            "repeat",
            f"repeats {counts.tolist()} do not fit axis {axis} of size {n} (shape {x.shape})",
        )
    return gather(x, np.repeat(np.arange(n, dtype=np.int64), counts), axis)


def meshgrid(*args, indexing="xy", name=None):
    """Coordinate grids from 1-d coordinate vectors (tf.meshgrid; numpy's meshgrid): "xy"
    (Cartesian, the first two axes swapped) or "ij" (matrix) indexing."""
    if indexing not in ("xy", "ij"):
        raise op_error("meshgrid", f"indexing must be 'xy' or 'ij', got {indexing!r}")
    vectors = [sh.reshape(as_value(a, op="meshgrid"), (-1,)) for a in args]
    shape = [v.shape[0] for v in vectors]
    if indexing == "xy" and len(vectors) > 1:
        shape[0], shape[1] = shape[1], shape[0]
    grids = []
    for k, v in enumerate(vectors):
        at = (1 - k if k < 2 else k) if indexing == "xy" and len(vectors) > 1 else k
        ones = [1] * len(vectors)
        ones[at] = v.shape[0]
        grids.append(sh.broadcast_to(sh.reshape(v, tuple(ones)), tuple(shape)))
    return grids


def _static(op: str, what: str, value):
    """`value` as a numpy array: it sets the result's shape, so it must be known when tracing."""
    if isinstance(value, Tracer):
        value._concrete(f"{op}'s {what} (it sets the result's shape) taken from the value")
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


# -- tf.nn helpers ------------------------------------------------------------------------------
def l2_normalize(x, axis=None, epsilon=1e-12, name=None):
    """x / sqrt(max(sum(x^2, axis), epsilon)) (tf.math.l2_normalize, tf.nn.l2_normalize)."""
    x = as_value(x, op="l2_normalize")
    squares = rd.reduce_sum(ew.multiply(x, x), axis, keepdims=True)
    return ew.multiply(x, ew.rsqrt(ew.maximum(squares, np.asarray(epsilon, x.dtype))))


def embedding_lookup(params, ids, max_norm=None, name=None):
    """The rows of `params` at `ids` (tf.nn.embedding_lookup of one tensor): a gather, whose
    gradient adds up the rows of repeated ids."""
    if isinstance(params, (list, tuple)):
        if len(params) != 1:
            raise op_error(
                "embedding_lookup", "sharded params (a list of tensors) are not supported"
            )
        params = params[0]
    if max_norm is not None:
        raise op_error("embedding_lookup", "max_norm is not supported")
    return gather(params, ids, 0)


def sequence_mask(lengths, maxlen=None, dtype=dtypes.bool_, name=None):
    """mask[..., j] = j < lengths[...] (tf.sequence_mask); `maxlen` defaults to the largest
    length, which must then be known when tracing."""
    lengths = as_value(lengths, op="sequence_mask")
    if maxlen is None:
        maxlen = int(np.max(_static("sequence_mask", "lengths", lengths), initial=0))
    positions = np.arange(int(_static("sequence_mask", "maxlen", maxlen)), dtype=np.int64)
    mask = ew.less(positions, sh.expand_dims(ew.cast(lengths, dtypes.int64), -1))
    return mask if np.dtype(dtypes.as_dtype(dtype)) == dtypes.bool_ else ew.cast(mask, dtype)
