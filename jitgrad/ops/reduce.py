"""Reduction primitives (sum, max, prod, argmax/argmin) and composites (mean, min, variance,
std, logsumexp). Primitives reduce without keepdims; the public functions reshape for it."""

from __future__ import annotations

import math

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind, current_trace
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, Reduction, defop
from jitgrad.core.tensor import Tensor
from jitgrad.core.weak import WeakTensor
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, eager_result, normalize_axes, normalize_axis
from jitgrad.ops.structural import (
    expand_back,
    kept_shape,
    reduce_eval,
    reduce_sum_p,
    reduced_shape,
)


def _lowest(dtype: np.dtype):
    """TensorFlow's maximum of nothing: -inf, or the integer minimum."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _max_impl(x, *, axes):
    return np.max(x, axis=axes, initial=_lowest(x.dtype))


def _max_vjp(g, out, x, *, axes):
    """The gradient is split evenly among the maxima of each slice, as TensorFlow does."""
    is_max = ew.cast(ew.equal(x, expand_back(out, x, axes)), x.dtype)
    count = expand_back(bind(reduce_sum_p, is_max, axes=axes), x, axes)
    return (expand_back(g, x, axes) * is_max / count,)


reduce_max_p = defop(
    "reduce_max",
    abstract_eval=reduce_eval("reduce_max"),
    impl=_max_impl,
    vjp=_max_vjp,
    kind="reduce",
    reduction=Reduction("max", identity=_lowest),
)


def _prod_vjp(g, out, x, *, axes):
    """d prod / dx_i = prod_{k != i} x_k, exact when the slice holds zeros and differentiable
    again (a rule that returned a constant 0 off the zero would get the second derivative
    prod_{k != i, z} x_k wrong).

    Split x = a b with a = x off the zeros (1 on them) and b = x on the zeros (1 off them):
    prod_{k != i} x_k = (A / a_i) prod_{k != i} b_k with A = prod a, where the last factor is
    B = prod b off the zeros and, on a zero, the product of the other zeros: 1 if it is the
    only one; the other zero if there are two, written S - x_i with S the sum over the zeros
    so that its derivative is right too; 0 from three zeros on. Exact to every order with up
    to two zeros in a slice, to second order with more."""
    is_zero = ew.equal(x, 0.0)
    one, zero = ew.ones_like_value(x), ew.zeros_like_value(x)
    a = ew.where(is_zero, one, x)
    b = ew.where(is_zero, x, one)

    def over_slice(prim, v):
        return expand_back(bind(prim, v, axes=axes), x, axes)

    count = over_slice(reduce_sum_p, ew.cast(is_zero, x.dtype))
    other_zero = over_slice(reduce_sum_p, ew.where(is_zero, x, zero)) - x
    other_zeros = ew.where(
        ew.equal(count, 1.0), one, ew.where(ew.equal(count, 2.0), other_zero, zero)
    )
    rest = ew.where(is_zero, other_zeros, over_slice(reduce_prod_p, b))
    return (expand_back(g, x, axes) * (over_slice(reduce_prod_p, a) / a) * rest,)


reduce_prod_p = defop(
    "reduce_prod",
    abstract_eval=reduce_eval("reduce_prod"),
    impl=lambda x, *, axes: np.prod(x, axis=axes, dtype=x.dtype),
    vjp=_prod_vjp,
    kind="reduce",
    reduction=Reduction("mul", identity=lambda dtype: 1),
)


def _arg_eval(name):
    def abstract_eval(x, *, axis):
        if x.shape[axis] == 0:
            raise op_error(name, f"axis {axis} of shape {x.shape} is empty")
        return AVal(x.shape[:axis] + x.shape[axis + 1 :], dtypes.int64)

    return abstract_eval


argmax_p = defop(
    "argmax",
    abstract_eval=_arg_eval("argmax"),
    impl=lambda x, *, axis: np.argmax(x, axis=axis),
    vjp=NOT_DIFFERENTIABLE,
    kind="reduce",
)
argmin_p = defop(
    "argmin",
    abstract_eval=_arg_eval("argmin"),
    impl=lambda x, *, axis: np.argmin(x, axis=axis),
    vjp=NOT_DIFFERENTIABLE,
    kind="reduce",
)

# ---------------------------------------------------------------------------------------------
# Public functions


def _reduce(prim, name, input_tensor, axis, keepdims):
    x = as_value(input_tensor, op=name)
    if x.dtype == dtypes.bool_:
        x = ew.cast(x, dtypes.int32)
    axes = normalize_axes(name, axis, x.ndim)
    if not axes:
        out = x
    elif prim is reduce_sum_p and isinstance(x, Tensor) and _strong_and_eager(x):
        # A sum over normalized axes is valid for every shape: bind's shape rule would find
        # nothing, and took 1.5 of a small sum's 2.4 us (W6's mean).
        value = x._value
        out = eager_result(prim, (x,), {"axes": axes}, prim.impl(value, axes=axes))
    else:
        out = bind(prim, x, axes=axes)
    return sh.reshape(out, kept_shape(x.shape, axes)) if keepdims else out


def _strong_and_eager(x) -> bool:
    """Outside any trace, and not a weak value (whose float64 results bind keeps weak)."""
    return type(x) is not WeakTensor and current_trace.get() is None


def reduce_sum(input_tensor, axis=None, keepdims=False, name=None):
    """Sum over `axis` (None: all axes; an int or tuple; negative allowed)."""
    return _reduce(reduce_sum_p, "reduce_sum", input_tensor, axis, keepdims)


def reduce_max(input_tensor, axis=None, keepdims=False, name=None):
    """Maximum over `axis`; the gradient is shared evenly among ties."""
    return _reduce(reduce_max_p, "reduce_max", input_tensor, axis, keepdims)


def _flip(x):
    """An order-reversing bijection: -x for floats; ~x = -x - 1 for integers, which (unlike -x)
    does not overflow at the minimum of a signed type nor wrap 0 of an unsigned one."""
    return ew.negative(x) if x.dtype.kind == "f" else ew.negative(x) - 1


def reduce_min(input_tensor, axis=None, keepdims=False, name=None):
    """Minimum over `axis`, as flip(max(flip(x))); the gradient is shared evenly among ties.
    The minimum of nothing is +inf (or the integer maximum), as TensorFlow."""
    x = as_value(input_tensor, op="reduce_min")
    if x.dtype == dtypes.bool_:
        x = ew.cast(x, dtypes.int32)
    return _flip(_reduce(reduce_max_p, "reduce_min", _flip(x), axis, keepdims))


def reduce_prod(input_tensor, axis=None, keepdims=False, name=None):
    """Product over `axis`; exact gradients when the slice holds zeros."""
    return _reduce(reduce_prod_p, "reduce_prod", input_tensor, axis, keepdims)


def _count(x, axes) -> int:
    shape = x.shape
    return math.prod([shape[a] for a in axes])


def reduce_mean(input_tensor, axis=None, keepdims=False, name=None):
    """Mean over `axis` (sum / count; integer tensors truncate, as TensorFlow)."""
    x = as_value(input_tensor, op="reduce_mean")
    axes = normalize_axes("reduce_mean", axis, x.ndim)
    total = _reduce(reduce_sum_p, "reduce_mean", x, axes, keepdims)
    if x.dtype.kind != "f":
        return ew.cast(ew.divide(total, _count(x, axes)), x.dtype)
    return total / float(_count(x, axes))


def reduce_variance(input_tensor, axis=None, keepdims=False, name=None):
    """Population variance mean((x - mean(x))^2) over `axis`."""
    x = as_value(input_tensor, op="reduce_variance")
    centered = x - reduce_mean(x, axis, keepdims=True)
    return reduce_mean(centered * centered, axis, keepdims)


def reduce_std(input_tensor, axis=None, keepdims=False, name=None):
    """sqrt(reduce_variance)."""
    return ew.sqrt(reduce_variance(input_tensor, axis, keepdims))


def reduce_logsumexp(input_tensor, axis=None, keepdims=False, name=None):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the (finite) maximum, so
    it neither overflows nor underflows; its gradient is softmax(x)."""
    x = as_value(input_tensor, op="reduce_logsumexp")
    axes = normalize_axes("reduce_logsumexp", axis, x.ndim)
    m = ew.stop_gradient(reduce_max(x, axes, keepdims=True))
    m = ew.where(ew.less(ew.abs(m), np.inf), m, ew.zeros_like_value(m))
    out = ew.log(reduce_sum(ew.exp(x - m), axes, keepdims=True)) + m
    return out if keepdims else sh.reshape(out, reduced_shape(x.shape, axes))


def _arg(prim, name, tensor, axis, output_type):
    x = as_value(tensor, op=name)
    if x.ndim == 0:
        raise op_error(name, "needs a tensor of rank >= 1")
    axis = normalize_axis(name, 0 if axis is None else axis, x.ndim)
    out = bind(prim, x, axis=axis)
    return ew.cast(out, output_type)


def argmax(input, axis=None, output_type=dtypes.int64, name=None):  # noqa: A002
    """Index of the maximum along `axis` (default 0, as TensorFlow); not differentiable."""
    return _arg(argmax_p, "argmax", input, axis, output_type)


def argmin(input, axis=None, output_type=dtypes.int64, name=None):  # noqa: A002
    """Index of the minimum along `axis` (default 0, as TensorFlow); not differentiable."""
    return _arg(argmin_p, "argmin", input, axis, output_type)
