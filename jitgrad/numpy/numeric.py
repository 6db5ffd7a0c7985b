"""numpy's numeric functions that compose from jitgrad's ops: arctan2, heaviside, sinc,
polyval, trapezoid, and the order statistics (quantile, percentile, median) over a sort.
Imported into `jitgrad.numpy`. Each keeps its gradient finite where its value is (the wheres
divide by a safe denominator, never by the zero they exclude)."""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad import ops
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tracer
from jitgrad.numpy.arrays import diff
from jitgrad.numpy.conversion import _float, _unsupported, asarray
from jitgrad.ops.base import binary_operands, normalize_axis
from jitgrad.ops.shape import strided_slice

__all__ = [
    "arctan2",
    "heaviside",
    "median",
    "percentile",
    "polyval",
    "quantile",
    "sinc",
    "trapezoid",
]


def _floats(name: str, *values):
    return [_float(v) for v in binary_operands(name, *values)]


def arctan2(x1, x2, /):
    """The angle of the point (x2, x1) in (-pi, pi], quadrant by quadrant; 0 at the origin."""
    y, x = _floats("arctan2", x1, x2)
    zero = ops.cast(0, x.dtype)
    safe_x = ops.where(ops.equal(x, zero), ops.cast(1, x.dtype), x)
    base = ops.arctan(y / safe_x)
    pi = np.asarray(np.pi, x.dtype)
    half = ops.where(ops.less(y, zero), -pi / 2, pi / 2)
    half = ops.where(ops.equal(y, zero), zero, half)  # the origin: 0
    left = base + ops.where(ops.less(y, zero), -pi, pi)  # x < 0: across the negative axis
    return ops.where(ops.greater(x, zero), base, ops.where(ops.less(x, zero), left, half))


def heaviside(x1, x2, /):
    """0 where x1 < 0, 1 where x1 > 0, x2 where x1 == 0."""
    x, at_zero = _floats("heaviside", x1, x2)
    zero = ops.cast(0, x.dtype)
    step = ops.where(ops.greater(x, zero), ops.cast(1, x.dtype), zero)
    return ops.where(ops.equal(x, zero), at_zero, step)


def sinc(x, /):
    """sin(pi x) / (pi x), and 1 at 0 (the gradient there is its limit, 0)."""
    x = _float(asarray(x))
    zero = ops.equal(x, ops.cast(0, x.dtype))
    scaled = ops.where(zero, ops.cast(1, x.dtype), x) * np.asarray(np.pi, x.dtype)
    return ops.where(zero, ops.cast(1, x.dtype), ops.sin(scaled) / scaled)


def polyval(p, x):
    """The polynomial with coefficients `p` (highest power first) at `x`, by Horner's rule."""
    coefficients = asarray(p)
    if coefficients.ndim != 1:
        raise op_error("polyval", f"coefficients must be 1-d, got shape {coefficients.shape}")
    x = asarray(x)
    value = ops.zeros_like(x)  # numpy's start: the result has x's shape
    for k in range(coefficients.shape[0]):
        value = value * x + coefficients[k]
    return value


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """The integral of `y` along `axis` by the trapezoid rule, at sample points `x` (1-d, or
    y's shape) or spaced `dx` apart."""
    values = _float(asarray(y))
    axis = normalize_axis("trapezoid", axis, values.ndim)
    heights = (_cut(values, axis, 1, None) + _cut(values, axis, None, -1)) / 2.0
    if x is None:
        return ops.reduce_sum(heights, axis) * dx
    points = asarray(x)
    widths = diff(points, axis=-1 if points.ndim == 1 else axis)
    if points.ndim == 1:
        widths = ops.reshape(widths, widths.shape + (1,) * (values.ndim - 1 - axis))
    return ops.reduce_sum(heights * widths, axis)


def _cut(x, axis: int, start, stop):
    index = [builtins.slice(None)] * x.ndim
    index[axis] = builtins.slice(start, stop)
    return strided_slice(x, tuple(index))


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False):
    """The `q`-quantiles over `axis` (None: all), numpy's "linear" method: between the sorted
    values at floor and ceil of q (n - 1). `q` is a number or 1-d, known when tracing; the
    result has q's shape first. Differentiable (a gather of a sort)."""
    _unsupported("quantile", out=(out, None), method=(method, "linear"))
    if isinstance(q, Tracer):
        q._concrete("quantile's q (it picks the sorted positions) taken from the value")
    given = q.numpy() if hasattr(q, "numpy") else q
    levels = np.asarray(given, np.float64)
    if levels.ndim > 1 or ((levels < 0) | (levels > 1)).any():
        raise op_error("quantile", f"q must be a number or 1-d, in [0, 1], got {levels.tolist()}")
    x = _float(asarray(a))
    # numpy's result dtype: a Python number q is weak, an array q takes part (float64 for a list)
    weak = isinstance(q, (int, float)) and not isinstance(q, np.generic)  # np.float64 is a float
    dtype = x.dtype if weak else np.result_type(x.dtype, np.asarray(given))
    every_axis = (1,) * x.ndim if axis is None else None  # keepdims' shape when flattened
    if axis is None:
        x, axis = ops.reshape(x, (-1,)), 0
    axis = normalize_axis("quantile", axis, x.ndim)
    n = x.shape[axis]
    if n == 0:
        raise op_error("quantile", f"axis {axis} of shape {x.shape} is empty")
    ordered = ops.sort(x, axis)  # NaNs last; numpy's answer for a slice holding one is NaN
    has_nan = ops.reduce_any(ops.not_equal(x, x), [axis], keepdims=True)
    nan = np.asarray(np.nan, x.dtype)
    picks = []
    for level in levels.reshape(-1):
        position = level * (n - 1)
        low, high = int(np.floor(position)), int(np.ceil(position))
        below, above = _cut(ordered, axis, low, low + 1), _cut(ordered, axis, high, high + 1)
        weight = float(position - low)  # a Python float: weak, x keeps its dtype (numpy's)
        pick = ops.where(has_nan, nan, below + (above - below) * weight)
        if not keepdims:
            pick = ops.squeeze(pick, [axis])
        elif every_axis is not None:
            pick = ops.reshape(pick, every_axis)
        picks.append(pick)
    result = picks[0] if levels.ndim == 0 else ops.stack(picks)
    return result if result.dtype == dtype else ops.cast(result, dtype)


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False):
    """quantile at q / 100."""
    if isinstance(q, Tracer):
        q._concrete("percentile's q (it picks the sorted positions) taken from the value")
    if isinstance(q, (int, float)) and not isinstance(q, np.generic):
        levels = q / 100.0  # stays a Python number: weak for the result's dtype, as numpy's
    else:
        levels = np.asarray(q.numpy() if hasattr(q, "numpy") else q) / 100.0
    return quantile(a, levels, axis, out, overwrite_input, method, keepdims)


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The middle value over `axis` (the mean of the two middle ones for an even count)."""
    return quantile(a, 0.5, axis, out, overwrite_input, "linear", keepdims)
