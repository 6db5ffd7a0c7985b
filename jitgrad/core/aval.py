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
        """`f32[3,2]`, the jaxpr-like spelling used by the IR printer; `f32[?,2]` for a stack
        whose length is known only at run time (see `DYNAMIC`)."""
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{_SHORT.get(self.dtype.name, self.dtype.name)}[{dims}]"


# The leading dimension of a residual stack filled by a while loop: its length is the loop's
# trip count, known only when the loop has run. Such values flow only between loops (the
# forward loop that fills the stack and the reverse loop that reads it), never to other ops.
DYNAMIC = None


@dataclass(frozen=True, slots=True)
class TupleAVal:
    """The type of a value holding several arrays: the results of a control-flow primitive
    (`loop`, `cond`), taken apart by `tuple_get`. No other op reads one."""

    avals: tuple[AVal, ...]

    def short(self) -> str:
        return "(" + ", ".join(a.short() for a in self.avals) + ")"


_SHORT = {
    "float16": "f16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint32": "u32",
    "bool": "bool",
}


def aval_key(value) -> tuple:
    """The hashable key of an array, Tensor or AVal's type: its shape and dtype."""
    return value.shape, value.dtype.char
