"""How generated code spells dtypes and typed constants."""

from __future__ import annotations

import numpy as np


def np_dtype(dtype: np.dtype) -> str:
    return "np.bool_" if dtype == np.bool_ else f"np.{dtype.name}"


def literal(value, dtype: np.dtype) -> str:
    """A typed constant: a bare `2.0` would promote float32 work to float64 in Numba."""
    value = np.asarray(value).reshape(-1)[0]
    if dtype == np.bool_:
        return repr(bool(value))
    if dtype.kind == "f":
        if np.isnan(value):
            return f"{np_dtype(dtype)}(np.nan)"
        if np.isinf(value):
            return f"{np_dtype(dtype)}({'-' if value < 0 else ''}np.inf)"
        return f"{np_dtype(dtype)}({float(value)!r})"
    return f"{np_dtype(dtype)}({int(value)})"
