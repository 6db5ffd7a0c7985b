"""Bitwise operations on integers (and `&`, `|`, `^`, `~` on booleans): TensorFlow's tf.bitwise
(`bitwise_and`, `bitwise_or`, `bitwise_xor`, `invert`, `left_shift`, `right_shift`), numpy's
functions of the same names, and the `&`, `|`, `^`, `~`, `<<`, `>>` operators of tensors.

Why primitives: no arithmetic composition gives them exactly and cheaply (an and of int64 would
take 64 digit extractions). They are not differentiable: their values are integers.

On booleans `&`, `|`, `^` and `~` are the logical ops (which compiled code runs in SIMD
vectors). A shift by a count outside [0, bits of the dtype) shifts every bit out, as numpy
defines it (0; -1 for a negative value shifted right), eagerly and in compiled code, where
LLVM's shift by the width or more would be undefined. Narrow integers wrap as numpy's do.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, defop
from jitgrad.ops import elementwise as ew
from jitgrad.ops.base import as_value, binary_operands


def _integer_eval(name: str, bools: bool, arity: int):
    def abstract_eval(*avals, **params):
        if len(avals) != arity:
            raise op_error(name, f"takes {arity} operand(s), got {len(avals)}", TypeError)
        kinds = "biu" if bools else "iu"
        if any(a.dtype != avals[0].dtype for a in avals) or avals[0].dtype.kind not in kinds:
            got = ", ".join(a.dtype.name for a in avals)
            wanted = "integer or bool" if bools else "integer"
            raise op_error(name, f"expects {wanted} tensors of one dtype, got {got}", TypeError)
        return AVal(avals[0].shape, avals[0].dtype)

    return abstract_eval


def _defop(name: str, impl, template: str, bools: bool = True, arity: int = 2):
    return defop(
        name,
        abstract_eval=_integer_eval(name, bools, arity),
        impl=impl,
        vjp=NOT_DIFFERENTIABLE,
        kind="elementwise",
        # Numba computes integer operators in 64 bits: the cast back wraps as numpy's narrow ones.
        template=template,
        doc=f"numpy's {name} on integer{' or bool' if bools else ''} tensors.",
    )


bitwise_and_p = _defop("bitwise_and", np.bitwise_and, "{dtype}({0} & {1})")
bitwise_or_p = _defop("bitwise_or", np.bitwise_or, "{dtype}({0} | {1})")
bitwise_xor_p = _defop("bitwise_xor", np.bitwise_xor, "{dtype}({0} ^ {1})")
invert_p = _defop("invert", np.invert, "{dtype}(~{0})", bools=False, arity=1)
left_shift_p = _defop(
    "left_shift",
    lambda x, y, bits: np.left_shift(x, y),
    "({dtype}({0} << {1}) if 0 <= {1} < {bits} else {dtype}(0))",
    bools=False,
)
right_shift_p = _defop(
    "right_shift",
    lambda x, y, bits: np.right_shift(x, y),
    "({dtype}({0} >> {1}) if 0 <= {1} < {bits} else ({dtype}(-1) if {0} < 0 else {dtype}(0)))",
    bools=False,
)


def _bitwise(op: str, prim, on_bools, doc: str):
    """The public function of a binary bitwise primitive: booleans take the logical op."""

    def fn(x, y, name=None):
        x, y = binary_operands(op, x, y)
        if x.dtype == dtypes.bool_:
            return on_bools(x, y)
        return bind(prim, x, y)

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    return fn


bitwise_and = _bitwise(
    "bitwise_and", bitwise_and_p, ew.logical_and, "x & y, bit by bit (booleans: logical and)."
)
bitwise_or = _bitwise(
    "bitwise_or", bitwise_or_p, ew.logical_or, "x | y, bit by bit (booleans: logical or)."
)
bitwise_xor = _bitwise(
    "bitwise_xor",
    bitwise_xor_p,
    ew.not_equal,
    "x ^ y, bit by bit (booleans: true where exactly one is).",
)


def logical_xor(x, y, name=None):
    """True where exactly one of the booleans x, y is (TensorFlow's tf.math.logical_xor)."""
    x, y = binary_operands("logical_xor", x, y)
    if x.dtype != dtypes.bool_:
        raise op_error("logical_xor", f"expects bool tensors, got {x.dtype.name}", TypeError)
    return ew.not_equal(x, y)


def invert(x, name=None):
    """~x, every bit flipped (-x - 1 for signed integers; booleans: logical not)."""
    x = as_value(x, op="invert")
    if x.dtype == dtypes.bool_:
        return ew.logical_not(x)
    return bind(invert_p, x)


def left_shift(x, y, name=None):
    """x shifted left by y bits (0 when y is outside [0, bits of the dtype))."""
    x, y = binary_operands("left_shift", x, y)
    return bind(left_shift_p, x, y, bits=_bits("left_shift", x))


def right_shift(x, y, name=None):
    """x shifted right by y bits, arithmetically for signed integers (all bits out when y is
    outside [0, bits of the dtype): 0, or -1 for negative x)."""
    x, y = binary_operands("right_shift", x, y)
    return bind(right_shift_p, x, y, bits=_bits("right_shift", x))


def _bits(name: str, x) -> int:
    if x.dtype.kind not in "iu":
        raise op_error(name, f"expects integer tensors, got {x.dtype.name}", TypeError)
    return 8 * x.dtype.itemsize
