"""Abstract values: what the compiler knows about an array without its data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AVal:
    """Shape and dtype of an array; the type of every value in the IR."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def short(self) -> str:
        """`f32[3,2]`, the jaxpr-like spelling used by the IR printer."""
        dims = ",".join(str(d) for d in self.shape)
        return f"{_SHORT.get(self.dtype.name, self.dtype.name)}[{dims}]"


_SHORT = {
    "float16": "f16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "bool": "bool",
}


def aval_key(value) -> tuple:
    """The hashable key of an array, Tensor or AVal's type: its shape and dtype."""
    return value.shape, value.dtype.char
