"""`bind`: the single entry point through which every primitive runs.

Eagerly it calls the op's numpy implementation; under a trace it appends a node to the trace's
graph. Either way every recording tape whose watched values feed the op records the same
node, so one backprop loop serves the eager tape and the graph transform.
"""

from __future__ import annotations

import contextvars

import numpy as np

from jitgrad.core.aval import TupleAVal
from jitgrad.core.config import config
from jitgrad.core.errors import LeakedTracerError, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.weak import WEAK_TYPES, as_weak

# The innermost active trace (None when eager) and the stack of active tapes (outermost first).
current_trace: contextvars.ContextVar = contextvars.ContextVar("jitgrad_trace", default=None)
tape_stack: contextvars.ContextVar = contextvars.ContextVar("jitgrad_tapes", default=())


def bind(op, *args, **params):
    """Run primitive `op` on tensors/tracers `args` (already converted) with static `params`.
    A float64 result of weak inputs only is weak (core/weak.py)."""
    weak = args and type(args[0]) in WEAK_TYPES and all(type(a) in WEAK_TYPES for a in args)
    trace = current_trace.get()
    if trace is not None:
        args = tuple([trace.lift(a) for a in args])
        out = trace.emit(op, args, params)
    elif op.replay is not None:
        return op.replay(*args, **params)  # control flow: its inside is bound op by op
    else:
        for a in args:
            if isinstance(a, Tracer):
                raise LeakedTracerError(
                    with_location(
                        f"{op.name}: a traced value of shape {a.shape} was used outside the jit "
                        "trace that created it (did a jitted function store it, e.g. in a "
                        "global or a list?)"
                    )
                )
        values = [a._value for a in args]
        aval = _eager_aval(op, args, values, params)
        value = op.impl(*values, **params)
        if type(value) is not np.ndarray or value.dtype != aval.dtype:
            value = np.asarray(value, dtype=aval.dtype)
        if config.debug_nans and value.dtype.kind == "f":
            check_nans(op.name, values, value, with_location)
        out = Tensor(value)
    if weak and type(out) is Tracer and isinstance(out.var.aval, TupleAVal):
        weak = False  # a loop's or branch's tuple of results: taken apart by tuple_get
    if weak and out.dtype == np.float64:
        out = as_weak(out)
    tapes = tape_stack.get()
    if tapes:
        for tape in tapes:
            tape._maybe_record(op, args, params, out)
    return out


_MAX_EAGER_AVALS = 4096  # signatures remembered per op


def _eager_aval(op, args, values, params):
    """`op.abstract_eval` of these inputs, remembered per input shapes, dtypes and params.
    Only successful checks are remembered: an invalid call raises its error every time."""
    if len(values) == 2:  # most ops: a flat key hashes fastest
        a, b = values
        key = (a.shape, a.dtype, b.shape, b.dtype)
    else:
        key = tuple([(v.shape, v.dtype) for v in values])
    if params:
        key = (key, tuple(params.items()))
    cache = op.eager_avals
    try:
        aval = cache.get(key)
    except TypeError:  # an unhashable param value
        return op.abstract_eval(*args, **params)
    if aval is None:
        aval = op.abstract_eval(*args, **params)
        if len(cache) < _MAX_EAGER_AVALS:
            cache[key] = aval
    return aval


def check_nans(name: str, inputs, value, locate) -> None:
    """With `config.debug_nans`: raise at the first op that turns NaN-free inputs into a NaN."""
    if np.isnan(value).any() and not any(
        np.asarray(x).dtype.kind == "f" and np.isnan(x).any() for x in inputs
    ):
        shapes = ", ".join(f"{np.asarray(x).dtype.name}{list(np.shape(x))}" for x in inputs)
        raise FloatingPointError(
            locate(
                f"{name}: produced NaN from inputs without NaN ({shapes}); "
                "jitgrad.config.debug_nans is on"
            )
        )
