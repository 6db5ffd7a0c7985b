"""JAX's `lax` under its own names: the control flow (`scan(f, init, xs)`, `fori_loop`,
`while_loop(cond_fun, body_fun, init_val)`, `cond(pred, true_fun, false_fun, *operands)`,
`switch`, `map`; the top level has TensorFlow's forms where the names clash, see
jitgrad/control/api.py), the dynamic slices a loop body reads and writes with its counter
(jitgrad/ops/dynamic_slices.py), `select` and `stop_gradient`."""

from jitgrad.control.api import cond, fori_loop, map, scan, switch, while_loop  # noqa: A004
from jitgrad.ops.dynamic_slices import (
    dynamic_slice,
    dynamic_slice_in_dim,
    dynamic_update_slice,
    dynamic_update_slice_in_dim,
)
from jitgrad.ops.elementwise import stop_gradient
from jitgrad.ops.elementwise import where as _where


def select(pred, on_true, on_false):
    """`on_true` where `pred` holds, else `on_false` (lax.select: the three of one shape)."""
    return _where(pred, on_true, on_false)


__all__ = [
    "cond",
    "dynamic_slice",
    "dynamic_slice_in_dim",
    "dynamic_update_slice",
    "dynamic_update_slice_in_dim",
    "fori_loop",
    "map",
    "scan",
    "select",
    "stop_gradient",
    "switch",
    "while_loop",
]
