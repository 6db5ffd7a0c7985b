"""Turning Python values (scalars, nested lists, numpy arrays, tensors) into arrays.

Python floats become float32 and Python ints int32, as in TensorFlow, and so do nested lists
of them; numpy arrays and numpy scalars keep their dtype; `dtype=` casts.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def broadcast(x, shape: tuple[int, ...]) -> np.ndarray:
    """np.broadcast_to(x, shape) (a read-only view); for a 0-d `x` the stride-0 view is made by
    the ndarray constructor directly, a quarter of np.broadcast_to's cost (a Python function:
    ~2 us, more than most small ops). A view, not a filled copy: numpy computes `x ** 2` with
    a stride-0 exponent as exactly as with a scalar one, and not with a contiguous one."""
    if x.ndim == 0:
        base = x if type(x) is np.ndarray else np.asarray(x)
        out = np.ndarray(shape, base.dtype, base, 0, (0,) * len(shape))
        out.flags.writeable = False
        return out
    return np.broadcast_to(x, shape)


def to_array(value, dtype=None, op: str = "constant") -> np.ndarray:
    """`value` as a numpy array of a supported dtype, or a clear TypeError/ValueError."""
    target = None if dtype is None else dtypes.as_dtype(dtype)
    if isinstance(value, Tensor):
        array = value._value
    elif isinstance(value, Tracer):
        value._concrete(f"{op}()")
    elif isinstance(value, (np.ndarray, np.generic)):
        if isinstance(value, np.ma.MaskedArray):
            raise TypeError(
                with_location(
                    f"{op}: a masked array would lose its mask; pass x.filled(value) or x.data"
                )
            )
        array = np.asarray(value)
    elif isinstance(value, bool):
        array = np.asarray(value)
    elif isinstance(value, int):
        try:
            array = np.asarray(value, dtype=np.int64 if target is None else target)
        except OverflowError:
            raise OverflowError(
                with_location(
                    f"{op}: the Python int {_describe(value)} does not fit in "
                    f"{'int64' if target is None else target}"
                )
            ) from None
        if target is None:
            array = _python_int(array, op)
    elif isinstance(value, float):
        array = np.asarray(value, dtype=np.float32 if target is None else target)
    elif isinstance(value, (list, tuple)):
        array = _from_sequence(value, op)
    elif hasattr(value, "__array__"):  # numpy's array protocol: pandas, xarray, PIL images
        array = np.asarray(value)
    else:
        raise TypeError(
            with_location(
                f"{op}: cannot convert {type(value).__name__} {_describe(value)} to a tensor"
            )
        )
    if not array.dtype.isnative:  # e.g. big-endian data read from a file: numpy's values
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype not in dtypes.SUPPORTED:
        raise TypeError(
            with_location(
                f"{op}: dtype {array.dtype} of {_describe(value)} is not supported "
                "(jitgrad holds bool, integers and float16/32/64)"
            )
        )
    if target is not None and array.dtype != target:
        array = array.astype(target)
    return array


def _python_int(array: np.ndarray, op: str) -> np.ndarray:
    if (
        np.iinfo(np.int32).min <= array.min(initial=0)
        and array.max(initial=0) <= np.iinfo(np.int32).max
    ):
        return array.astype(np.int32)
    return array


def _from_sequence(value, op: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise ValueError(
            with_location(f"{op}: nested list {_describe(value)} is ragged or malformed ({exc})")
        ) from None
    if array.dtype == object or array.dtype.kind in "USc":
        raise TypeError(
            with_location(f"{op}: cannot convert {_describe(value)} to a numeric tensor")
        )
    strong, has_float = _leaf_dtypes(value)
    if strong is None:
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64:
            array = _python_int(array, op)
    else:
        # numpy's own rule would let a Python float next to a float32 leaf make float64;
        # jitgrad's rule (dtypes.py) keeps Python scalars weak, as in binary ops.
        dtype = dtypes.weak_scalar_dtype(1.0, strong) if has_float else strong
        if array.dtype != dtype:
            array = array.astype(dtype)
    return array


def _leaf_dtypes(value) -> tuple[np.dtype | None, bool]:
    """(the promoted dtype of the numpy arrays/tensors in a nested list, or None if it holds
    only Python scalars; whether it holds a Python float)."""
    strong, has_float = None, False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (np.ndarray, np.generic, Tensor)):
            dt = np.asarray(item).dtype
            strong = dt if strong is None else dtypes.promote(strong, dt)
        elif isinstance(item, float):
            has_float = True
    return strong, has_float
