"""JAX's `lax` control flow under its own names: `jitgrad.lax.scan(f, init, xs)`,
`fori_loop`, `while_loop(cond_fun, body_fun, init_val)`, `cond(pred, true_fun, false_fun,
*operands)`, `switch` and `map`. The top level has TensorFlow's forms where the names clash
(`jitgrad.scan`, `jitgrad.while_loop`); see jitgrad/control/api.py."""

from jitgrad.control.api import cond, fori_loop, map, scan, switch, while_loop  # noqa: A004

__all__ = ["cond", "fori_loop", "map", "scan", "switch", "while_loop"]
