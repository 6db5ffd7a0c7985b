"""The four primitives that the conversion layer (ops/base.py) and each other's VJP rules need:
cast, broadcast_to, reshape and reduce_sum. broadcast_to's VJP is a sum and reduce_sum's a
broadcast, so they are defined together, below every other op module: the public functions
(`cast` in elementwise.py, `broadcast_to`/`reshape` in shape.py, `reduce_sum` in reduce.py)
convert their arguments and bind these. Helpers here take tensors or tracers as they are."""

from __future__ import annotations

import math

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.convert import broadcast
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import Reduction, defop


def cast_value(x, dtype):
    """`x` (a tensor or tracer) as `dtype`."""
    return x if x.dtype == dtype else bind(cast_p, x, dtype=dtype)


def broadcast_value(x, shape: tuple[int, ...]):
    """`x` (a tensor or tracer) broadcast to `shape`."""
    return x if x.shape == shape else bind(broadcast_to_p, x, shape=shape)


def reshape_value(x, shape: tuple[int, ...]):
    """`x` (a tensor or tracer) with the same elements in `shape`."""
    return x if x.shape == shape else bind(reshape_p, x, shape=shape)


# ---------------------------------------------------------------------------------------------
# cast


def _cast_eval(x, *, dtype):
    return AVal(x.shape, dtype)


def _cast_vjp(g, out, x, *, dtype):
    if x.dtype.kind != "f" or dtype.kind != "f":
        return (None,)
    return (cast_value(g, x.dtype),)


cast_p = defop(
    "cast",
    abstract_eval=_cast_eval,
    impl=lambda x, *, dtype: x.astype(dtype),
    vjp=_cast_vjp,
    kind="elementwise",
    template="{dtype}({0})",
)

# ---------------------------------------------------------------------------------------------
# broadcast_to: the one place where un-broadcasting (a sum) lives.


def _broadcast_eval(x, *, shape):
    lead = len(shape) - x.ndim
    ok = lead >= 0 and all(d in (1, s) for d, s in zip(x.shape, shape[lead:]))
    if not ok:
        raise op_error("broadcast_to", f"cannot broadcast shape {x.shape} to {shape}")
    return AVal(shape, x.dtype)


def broadcast_axes(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of `out_shape` that broadcasting `in_shape` to it created or stretched."""
    lead = len(out_shape) - len(in_shape)
    stretched = (lead + i for i, d in enumerate(in_shape) if d == 1 and out_shape[lead + i] != 1)
    return tuple(range(lead)) + tuple(stretched)


def _broadcast_vjp(g, out, x, *, shape):
    summed = bind(reduce_sum_p, g, axes=broadcast_axes(x.shape, shape))
    return (reshape_value(summed, x.shape),)


broadcast_to_p = defop(
    "broadcast_to", abstract_eval=_broadcast_eval, impl=broadcast, vjp=_broadcast_vjp, kind="shape"
)


# ---------------------------------------------------------------------------------------------
# reshape


def _reshape_eval(x, *, shape):
    if math.prod(shape) != x.size:
        raise op_error("reshape", f"cannot reshape a tensor of shape {x.shape} into {shape}")
    return AVal(shape, x.dtype)


reshape_p = defop(
    "reshape",
    abstract_eval=_reshape_eval,
    impl=lambda x, *, shape: np.reshape(x, shape),
    vjp=lambda g, out, x, *, shape: (reshape_value(g, x.shape),),
    kind="shape",
)


# ---------------------------------------------------------------------------------------------
# reduce_sum (without keepdims: the public functions reshape for it)


def reduced_shape(shape, axes):
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def kept_shape(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def reduce_eval(name):
    """The shape rule of reduction `name` (reduce_sum, reduce_max, ...) over `axes`."""

    def abstract_eval(x, *, axes):
        if x.dtype == dtypes.bool_:
            raise op_error(name, "expects a numeric tensor, got bool", TypeError)
        return AVal(reduced_shape(x.shape, axes), x.dtype)

    return abstract_eval


def expand_back(g, x, axes):
    """A reduced cotangent broadcast back over the input's shape."""
    return broadcast_value(reshape_value(g, kept_shape(x.shape, axes)), x.shape)


reduce_sum_p = defop(
    "reduce_sum",
    abstract_eval=reduce_eval("reduce_sum"),
    impl=lambda x, *, axes: np.add.reduce(x, axis=axes, dtype=x.dtype),  # np.sum, less a layer
    vjp=lambda g, out, x, *, axes: (expand_back(g, x, axes),),
    kind="reduce",
    reduction=Reduction("add", identity=lambda dtype: 0),
)
