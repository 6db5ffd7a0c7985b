"""Weakly typed values: Python floats that became tensors without a dtype of their own.

A Python float argument of `jit`, `grad` or `jit_grad`, and what jitgrad's functions compute
from such values and Python scalars alone (`jitgrad.log(1.35)`, `x * 2.0` with a weak x), is
held in float64 and marked weak, so that it computes exactly as the Python float would in an
eager call: where it meets a tensor in an elementwise op it takes that tensor's dtype
(`core/dtypes.weak_scalar_dtype`: `x * w64` uses the float64 1.7 itself, `x * w32` the float32
rounding of it), and an op whose inputs are all weak gives a weak result (`dispatch.bind`).
A weak value that leaves a compiled function or a gradient transform becomes an ordinary
float32 tensor, TensorFlow's dtype for a Python float (`ops/base.py: settle_weak`); eagerly,
`jitgrad.log(1.35)` is a float64 tensor, weak.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.tensor import Tensor, Tracer


class WeakTensor(Tensor):
    """An eager weak value (float64)."""

    __slots__ = ()


class WeakTracer(Tracer):
    """A traced weak value (float64)."""

    __slots__ = ()


WEAK_TYPES = (WeakTensor, WeakTracer)


def weak_constant(value: float) -> WeakTensor:
    """A Python float as a weak tensor."""
    return WeakTensor(np.asarray(value, np.float64))


def as_weak(x):
    """`x` (a float64 Tensor or Tracer) marked weak."""
    if isinstance(x, Tracer):
        return WeakTracer(x.trace, x.var, x.variable)
    return WeakTensor(x._value)
