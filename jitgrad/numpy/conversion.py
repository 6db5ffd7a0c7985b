"""jitgrad.numpy's conversions (numpy's dtype rules) and its handling of numpy's extra
arguments: the helpers every function of the package uses, in a module of their own so that
the package's other modules (arrays.py, numeric.py) import them without importing the package.
"""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad import ops
from jitgrad.core import dtypes as _dtypes
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ops.base import as_value

_VALUES = (Tensor, Tracer)
_PY_SCALARS = (bool, int, float)
_NO_VALUE = object()  # an argument left at numpy's default


def _unsupported(fn: str, **given) -> None:
    """Refuse numpy arguments jitgrad does not implement, unless at numpy's default. Each is
    passed as name=(value, default)."""
    for name, (value, default) in given.items():
        if value is _NO_VALUE or value is default:
            continue
        if isinstance(value, (str, bool, int, float)) and type(value) is type(default):
            if value == default:
                continue
        shown = f"an array of shape {np.shape(value)}" if np.ndim(value) else repr(value)
        hint = " (tensors are immutable: use the result)" if name == "out" else ""
        raise TypeError(
            with_location(
                f"jitgrad.numpy.{fn}: {name}={shown} is not supported, only the default "
                f"{name}={default!r}{hint}"
            )
        )


def _contains_value(x) -> bool:
    if isinstance(x, _VALUES):
        return True
    return isinstance(x, (list, tuple)) and builtins.any(_contains_value(i) for i in x)


def asarray(a, dtype=None, order=None, *, copy=None, like=None):
    """`a` as a tensor with numpy's dtype rules (Python floats -> float64, ints -> int64);
    tensors and tracers pass through (cast if `dtype` differs). A list holding tensors is
    stacked, so `jnp.array([x, y])` of traced values is differentiable."""
    _unsupported("asarray", order=(order, None), like=(like, None))
    if isinstance(a, _VALUES):
        return a if dtype is None else ops.cast(a, dtype)
    if isinstance(a, (list, tuple)) and _contains_value(a):
        stacked = ops.stack([asarray(x) for x in a])
        return stacked if dtype is None else ops.cast(stacked, dtype)
    try:
        array = np.asarray(a, dtype=None if dtype is None else _dtypes.as_dtype(dtype))
    except TypeError as exc:
        raise TypeError(with_location(f"jitgrad.numpy.asarray: {exc}")) from None
    return as_value(array, op="jitgrad.numpy.asarray")


def array(object, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, like=None):  # noqa: A002
    """numpy's array (tensors are immutable, so `copy` changes nothing); see `asarray`."""
    _unsupported("array", order=(order, "K"), subok=(subok, False), like=(like, None))
    out = asarray(object, dtype)
    if ndmin > out.ndim:
        out = ops.reshape(out, (1,) * (ndmin - out.ndim) + out.shape)
    return out


def _operand(x):
    """An operand of a binary function: tensors and Python scalars as they are (the scalar is
    weak), anything else converted with numpy's rules."""
    if isinstance(x, _VALUES) or type(x) in _PY_SCALARS:
        return x
    return asarray(x)


def _operands(x, y):
    if type(x) in _PY_SCALARS and type(y) in _PY_SCALARS:
        return asarray(x), asarray(y)  # numpy: two Python floats compute in float64
    return _operand(x), _operand(y)


def _ufunc_args(fn: str, out, where, kwargs) -> None:
    """numpy's ufunc arguments: accepted at their defaults only."""
    _unsupported(fn, out=(out, None), where=(where, True))
    for name, value in kwargs.items():
        default = {"casting": "same_kind", "order": "K", "subok": True, "signature": None}
        if name not in default:
            raise TypeError(with_location(f"jitgrad.numpy.{fn}: unexpected argument {name!r}"))
        _unsupported(fn, **{name: (value, default[name])})


def _unary(name: str, fn):
    def unary(x, /, out=None, *, where=True, dtype=None, **kwargs):
        _ufunc_args(name, out, where, kwargs)
        y = fn(asarray(x))
        return y if dtype is None else ops.cast(y, dtype)

    unary.__name__ = unary.__qualname__ = name
    unary.__doc__ = f"numpy's {name} (elementwise)."
    return unary


def _binary(name: str, fn):
    def binary(x1, x2, /, out=None, *, where=True, dtype=None, **kwargs):
        _ufunc_args(name, out, where, kwargs)
        y = fn(*_operands(x1, x2))
        return y if dtype is None else ops.cast(y, dtype)

    binary.__name__ = binary.__qualname__ = name
    binary.__doc__ = f"numpy's {name} (elementwise, broadcasting)."
    return binary


def _float(x):
    """numpy computes float functions of integers in float64 (jitgrad's default is float32)."""
    return ops.cast(x, np.float64) if x.dtype.kind in "biu" else x


def _accumulator(x, dtype):
    """x in `dtype`, or in numpy's accumulator for sums and products: bools and integers
    narrower than 64 bits in int64 (numpy's uint64 for unsigned ones is int64 here: jitgrad
    holds no uint64)."""
    if dtype is not None:
        return ops.cast(x, dtype)
    if x.dtype == np.bool_ or (x.dtype.kind in "iu" and x.dtype.itemsize < 8):
        return ops.cast(x, np.int64)
    return x


INDEX = np.dtype(np.int64)  # numpy's intp on 64-bit platforms: its index arrays' dtype


def _truth(a):
    """`a` as booleans: numpy's truth of a value (nonzero)."""
    x = asarray(a)
    return x if x.dtype == np.bool_ else ops.not_equal(x, ops.cast(0, x.dtype))
