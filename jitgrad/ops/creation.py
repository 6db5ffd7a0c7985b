"""Creation functions (not differentiable): constants and ranges.

Under `jit` they produce constants of the compiled function. Random tensors are in
jitgrad/ops/random.py: their draws stay random under `jit`."""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.convert import to_array
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ops.base import as_value


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(d) for d in np.asarray(shape, dtype=np.int64).reshape(-1))


def constant(value, dtype=None, shape=None, name=None) -> Tensor:
    """A tensor holding `value` (Python floats -> float32, ints -> int32, numpy keeps dtype).

    >>> jitgrad.constant(3.0)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=3.0>
    """
    array = to_array(value, dtype)
    if shape is not None:
        array = (
            np.broadcast_to(array, _shape(shape)).copy()
            if array.size == 1
            else np.reshape(array, _shape(shape))
        )
    return Tensor(array)


def convert_to_tensor(value, dtype=None, dtype_hint=None, name=None):
    """TensorFlow's `tf.convert_to_tensor`: a tensor (or traced value) of the requested dtype
    passes through as it is, so a tape or a trace still sees it (a Variable reads as itself);
    anything else becomes a constant (`dtype_hint` is used when no dtype is forced)."""
    if isinstance(value, (Tensor, Tracer)):
        if dtype is None or dtypes.as_dtype(dtype) == value.dtype:
            return value
        raise op_error(
            "convert_to_tensor",
            f"a {value.dtype.name} tensor of shape {value.shape} is not {dtypes.as_dtype(dtype)}",
        )  # TensorFlow's ValueError
    if dtype is None and dtype_hint is not None:
        try:
            return constant(value, dtype_hint)
        except (TypeError, ValueError):
            return constant(value)
    return constant(value, dtype)


def zeros(shape, dtype=dtypes.float32, name=None) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtypes.as_dtype(dtype)))


def ones(shape, dtype=dtypes.float32, name=None) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtypes.as_dtype(dtype)))


def _filled_like(x, value, dtype):
    """Eagerly a fresh array; under jit a broadcast 0-d constant, so that a kernel never
    carries a large constant array (and loops read it as a scalar)."""
    dtype = dtypes.as_dtype(dtype or x.dtype)
    if isinstance(x, Tracer):
        from jitgrad.ops.shape import broadcast_to

        return broadcast_to(Tensor(np.asarray(value, dtype)), x.shape)
    return Tensor(np.full(x.shape, value, dtype))


def zeros_like(input, dtype=None, name=None):  # noqa: A002
    return _filled_like(as_value(input, op="zeros_like"), 0, dtype)


def ones_like(input, dtype=None, name=None):  # noqa: A002
    return _filled_like(as_value(input, op="ones_like"), 1, dtype)


def fill(dims, value, name=None) -> Tensor:
    value = to_array(value, op="fill")
    return Tensor(np.full(_shape(dims), value, value.dtype))


def eye(num_rows, num_columns=None, batch_shape=None, dtype=dtypes.float32, name=None) -> Tensor:
    out = np.eye(num_rows, num_columns, dtype=dtypes.as_dtype(dtype))
    if batch_shape is not None:
        out = np.broadcast_to(out, _shape(batch_shape) + out.shape).copy()
    return Tensor(out)


def range(start, limit=None, delta=1, dtype=None, name=None) -> Tensor:  # noqa: A001
    """TensorFlow's range: int32 for Python ints, float32 if any bound is a Python float."""
    if limit is None:
        start, limit = 0, start
    values = [start, limit, delta]
    if dtype is None:
        dtype = dtypes.float32 if any(isinstance(v, float) for v in values) else dtypes.int32
    if delta == 0:
        raise op_error("range", "delta must not be 0")
    return Tensor(np.arange(start, limit, delta, dtype=dtypes.as_dtype(dtype)))


def linspace(start, stop, num, name=None, axis=0) -> Tensor:
    """`num` evenly spaced values from start to stop inclusive: float32 for Python floats,
    float64 for integers (TensorFlow's rule: `linspace(-2, 2, 5)` is float64)."""
    start_a, stop_a = to_array(start), to_array(stop)
    dtype = dtypes.promote(start_a.dtype, stop_a.dtype)
    if dtype.kind != "f":
        dtype = dtypes.float64
    # Computed in float64 then rounded once, so the end points are exact.
    return Tensor(
        np.linspace(
            start_a.astype(np.float64), stop_a.astype(np.float64), int(num), axis=axis
        ).astype(dtype)
    )


lin_space = linspace
