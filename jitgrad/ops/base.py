"""Helpers shared by the op modules: argument conversion, broadcasting, axes, and the eager
fast lane of the elementwise ops."""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.config import config
from jitgrad.core.convert import broadcast, to_array
from jitgrad.core.dispatch import check_nans, current_trace, tape_stack
from jitgrad.core.errors import op_error, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.weak import WEAK_TYPES, WeakTensor, weak_constant
from jitgrad.ops.structural import broadcast_to_p, broadcast_value, cast_value

VALUE_TYPES = (Tensor, Tracer)
PYTHON_SCALARS = (bool, int, float)


def as_value(x, dtype=None, op: str = "constant"):
    """A Tensor or Tracer for `x` (tensors pass through; Python/numpy values are converted)."""
    if isinstance(x, VALUE_TYPES):
        return x if dtype is None else cast_value(x, dtypes.as_dtype(dtype))
    return Tensor(to_array(x, dtype, op))


def as_operand(x, op: str):
    """`as_value` for the operand of an elementwise function: a Python float is weak (so
    `jitgrad.log(1.35) * x64` computes log in float64, core/weak.py)."""
    return weak_constant(x) if type(x) is float else as_value(x, op=op)


def scalar_like(value, like) -> Tensor:
    """A 0-d constant of `like`'s dtype (for weak scalars inside composites and VJP rules)."""
    return Tensor(np.asarray(value, dtype=like.dtype))


def broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcast of `shapes`, or an error naming the op and the shapes."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        dims = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(dims) > 1:
            listed = " and ".join(str(s) for s in shapes)
            raise op_error(op, f"shapes {listed} cannot be broadcast together")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


_UNARY = object()
_WEAK = (float, int)  # Python scalars (bool is not int here: `type(y) in`)


def eager_elementwise(op, x, y=_UNARY):
    """The fast lane of the elementwise ops: `op` on float tensors of one shape and dtype, or
    on a float tensor and a Python scalar (either side), outside any trace. None when the call
    is not that: the op then takes the general path (conversion, promotion, broadcasting, bind).

    Such calls are valid by construction, so the shape rule is skipped: in a training step of
    small ops the general path's layers cost more than the numpy work."""
    if current_trace.get() is not None or type(x) is WeakTensor or type(y) is WeakTensor:
        return None
    if y is _UNARY:
        if not isinstance(x, Tensor) or x._value.dtype.kind != "f":
            return None
        args, value = (x,), op.impl(x._value)
    elif isinstance(x, Tensor) and isinstance(y, Tensor):
        xv, yv = x._value, y._value
        if xv.dtype is not yv.dtype or xv.dtype.kind != "f":
            return None
        if xv.shape != yv.shape:
            if yv.ndim == 0:
                y = _scalar_operand(y, xv.shape)
            elif xv.ndim == 0:
                x = _scalar_operand(x, yv.shape)
            else:
                return None
        args, value = (x, y), op.impl(xv, yv)
    elif isinstance(x, Tensor) and type(y) in _WEAK:
        y, args = _weak_operand(y, x)
        if args is None:
            return None
        value = op.impl(x._value, y)
        args = (x, args)
    elif isinstance(y, Tensor) and type(x) in _WEAK:
        x, args = _weak_operand(x, y)
        if args is None:
            return None
        value = op.impl(x, y._value)
        args = (args, y)
    else:
        return None
    return eager_result(op, args, {}, value)


def eager_result(op, args, params, value) -> Tensor:
    """What `bind` ends an eager call with, for a fast lane that computed `value` itself: the
    result as a Tensor (of an ndarray), the NaN check of `config.debug_nans`, and the op
    recorded by every tape on the stack. Only for calls valid by construction: bind's shape
    rule is skipped."""
    if type(value) is not np.ndarray:
        value = np.asarray(value)
    if config.debug_nans and value.dtype.kind == "f":
        check_nans(op.name, [a._value for a in args], value, with_location)
    out = Tensor(value)
    tapes = tape_stack.get()
    if tapes:
        for tape in tapes:
            tape._maybe_record(op, args, params, out)
    return out


def _scalar_operand(tensor, shape):
    """A 0-d tensor next to one of `shape`: broadcast by a recorded op when a tape records
    (recorded elementwise ops have operands of equal shapes), else left to numpy.

    The broadcast is made and recorded here, not through `bind`: a 0-d float tensor outside
    any trace broadcasts to every shape, so bind's checks have nothing to find, and they took
    half of `x + b` under a tape (W6: 10.8 us against 1.4 untaped)."""
    if not tape_stack.get():
        return tensor
    return eager_result(
        broadcast_to_p, (tensor,), {"shape": shape}, broadcast(tensor._value, shape)
    )


def _weak_operand(scalar, tensor):
    """(numpy scalar for impl, Tensor to record) for a Python scalar next to a float tensor;
    (None, None) if the tensor is not float. The recorded constant has the tensor's shape
    (recorded elementwise ops have operands of equal shapes); untaped, numpy broadcasts."""
    array = tensor._value
    if array.dtype.kind != "f":
        return None, None
    value = np.asarray(scalar, array.dtype)
    recorded = broadcast(value, array.shape) if tape_stack.get() and array.shape else value
    return value, Tensor(recorded)


def binary_operands(op: str, x, y):
    """Convert, promote (Python scalars are weak) and broadcast two operands of a binary op."""
    if (
        isinstance(x, VALUE_TYPES)
        and isinstance(y, VALUE_TYPES)
        and x.shape == y.shape
        and x.dtype == y.dtype
    ):
        return x, y  # the common case, first: nothing to do
    # type(), not isinstance: np.float64 subclasses float but is a strong numpy scalar.
    x_weak = type(x) in PYTHON_SCALARS and type(y) not in PYTHON_SCALARS
    y_weak = type(y) in PYTHON_SCALARS and type(x) not in PYTHON_SCALARS
    if type(x) in WEAK_TYPES or type(y) in WEAK_TYPES:
        x, y = _weak_operands(op, x, y)
    elif x_weak:
        y = as_value(y, op=op)
        x = _weak_constant(x, y, op)
    elif y_weak:
        x = as_value(x, op=op)
        y = _weak_constant(y, x, op)
    else:
        x, y = as_value(x, op=op), as_value(y, op=op)
    if x.dtype != y.dtype:
        dt = dtypes.promote(x.dtype, y.dtype)
        x, y = cast_value(x, dt), cast_value(y, dt)
    return broadcast_all(op, x, y)


def _weak_constant(value, other, op: str) -> Tensor:
    """A Python scalar as a tensor next to `other`. Eagerly it is made at `other`'s shape
    directly (a broadcast view: no recorded broadcast op, which no tape could need since the
    constant is fresh); under a trace it stays 0-d, so kernels read it as a literal."""
    array = to_array(value, dtypes.weak_scalar_dtype(value, other.dtype), op)
    if other.shape and current_trace.get() is None and array.dtype == other.dtype:
        array = broadcast(array, other.shape)
    return Tensor(array)


def _weak_operands(op: str, x, y):
    """Operands of which one at least is a weak value (core/weak.py): weak against weak (or
    a Python scalar) stays weak, in float64, as Python's own float arithmetic; a weak value
    against a tensor takes the dtype a Python float would (the tensor's, or float32 next to
    integers), so `x * w64` is exact where the eager call was."""
    x_weak, y_weak = _is_weak(x), _is_weak(y)
    if x_weak and y_weak:
        return _weak_value(x, op), _weak_value(y, op)
    if x_weak:
        y = as_value(y, op=op)
        return cast_value(_weak_value(x, op), dtypes.weak_scalar_dtype(1.0, y.dtype)), y
    x = as_value(x, op=op)
    return x, cast_value(_weak_value(y, op), dtypes.weak_scalar_dtype(1.0, x.dtype))


def _is_weak(x) -> bool:
    return type(x) in WEAK_TYPES or type(x) in PYTHON_SCALARS


def _weak_value(x, op: str):
    if type(x) in WEAK_TYPES:
        return x
    if type(x) is bool:
        return as_value(x, op=op)  # a bool is data, not a number to weaken
    return weak_constant(float(x))


def settle_weak(x):
    """`x`, a float32 tensor if it is weak: what a weak value becomes when it leaves a compiled
    function or a gradient transform (TensorFlow's dtype for a Python float)."""
    return cast_value(x, dtypes.float32) if type(x) in WEAK_TYPES else x


def broadcast_all(op: str, *xs):
    """Insert explicit `broadcast_to` nodes so that every operand has the common shape."""
    shapes = [x.shape for x in xs]
    first = shapes[0]
    if all(s == first for s in shapes):
        return xs
    shape = broadcast_shapes(op, *shapes)
    return tuple(broadcast_value(x, shape) for x in xs)


def normalize_axes(op: str, axis, ndim: int) -> tuple[int, ...]:
    """`axis` (None, int or sequence, negative allowed) as a sorted tuple of distinct axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, VALUE_TYPES):
        axis = np.asarray(axis).tolist()
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise op_error(op, f"axis must be an int or a tuple of ints, got {axis!r}", TypeError)
        if not -ndim <= a < max(ndim, 1) or (ndim == 0 and a not in (0, -1)):
            raise op_error(op, f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise op_error(op, f"axis {axis!r} repeats an axis")
    return tuple(sorted(out)) if ndim else ()


def normalize_axis(op: str, axis, ndim: int) -> int:
    """One axis in [0, ndim); `axis` may be negative."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise op_error(op, f"axis must be an int, got {axis!r}", TypeError)
    if not -ndim <= axis < ndim:
        raise op_error(op, f"axis {axis} is out of range for a tensor of rank {ndim}")
    return int(axis) % ndim


def require_float(op: str, *xs) -> None:
    for x in xs:
        if x.dtype.kind != "f":
            raise op_error(
                op, f"expects a float tensor, got {x.dtype.name} of shape {x.shape}", TypeError
            )
