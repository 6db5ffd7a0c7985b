"""Dtypes and the one promotion rule.

jitgrad's dtypes are numpy dtypes, so `jitgrad.float32 == np.float32` and arrays pass through
unchanged. Promotion between two tensors:

* bool < integers < floats; a float meets an integer or bool -> the float's dtype
  (int32 + float32 -> float32, unlike numpy's float64, like JAX);
* two of the same kind -> the wider (numpy's rule);
* a Python scalar is *weak*: it takes the tensor's dtype (`2.0 * x32` stays float32);
  a Python float meeting an integer tensor gives float32. So are the Python scalars of a
  nested list next to tensors (`constant([x32, 2.0])` is float32);
* numpy arrays and numpy scalars are not weak: they keep their dtype (`np.ones(3) * x32` is
  float64), as `constant` keeps it.
"""

from __future__ import annotations

import numpy as np

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
# Only for random keys and bits (jitgrad.random): the Philox generator works in 32-bit words.
uint32 = np.dtype("uint32")
bool_ = np.dtype("bool")

SUPPORTED = frozenset({float16, float32, float64, int8, int16, int32, int64, uint8, uint32, bool_})


def as_dtype(dtype) -> np.dtype:
    """Normalise `dtype` (a numpy dtype, type or name) and reject what jitgrad cannot hold."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"not a dtype: {dtype!r}") from None
    if dt not in SUPPORTED:
        raise TypeError(
            f"dtype {dt} is not supported (jitgrad holds bool, integers and float16/32/64)"
        )
    return dt


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """The result dtype of a binary op between two tensors (see the module docstring)."""
    if a == b:
        return a
    a_float, b_float = a.kind == "f", b.kind == "f"
    if a_float != b_float:
        return a if a_float else b
    return np.promote_types(a, b)


def weak_scalar_dtype(value, other: np.dtype) -> np.dtype:
    """The dtype a Python scalar takes next to a tensor of dtype `other`."""
    if isinstance(value, bool):
        return other
    if isinstance(value, float) and other.kind != "f":
        return float32
    return other
