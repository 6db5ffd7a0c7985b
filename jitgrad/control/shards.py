"""The `shards` primitive: a body graph run on equal slices of a batch, on several cores at once.

    shards[body, shards, in_axes, out_kinds](*inputs) -> (*outs)

* `body`: graph `(*inputs') -> (*outs')`, where input k' is input k itself (`in_axes[k]` None:
  replicated) or its slice of `size / shards` rows along axis 0 (`in_axes[k]` 0);
* output j is the shards' `outs'[j]` concatenated along axis 0 (`out_kinds[j]` "concat": a
  per-example value) or summed in shard order (`out_kinds[j]` "sum": each shard's part of a sum
  over the batch, a loss or a weight's gradient).

The sharding pass (jitgrad/passes/shard.py) makes it, after differentiation and optimisation,
so it has no gradient. Its numpy form and its eager replay (through `bind`, as a loop's) run
the shards one after another; the Numba backend runs them in a parallel loop.
"""

from __future__ import annotations

import numpy as np

from jitgrad.control.layout import aval_of
from jitgrad.control.primitives import run_graph
from jitgrad.core.aval import AVal, TupleAVal
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NO_GRADIENT, defop
from jitgrad.ir.interpret import replay
from jitgrad.ops.shape import concat


def shards_abstract_eval(*inputs, body, shards, in_axes, out_kinds):
    avals = [aval_of(x) for x in inputs]
    if len(in_axes) != len(avals) or len(body.inputs) != len(avals):
        raise op_error("shards", f"{len(avals)} inputs for a body of {len(body.inputs)}")
    for k, (a, axis, v) in enumerate(zip(avals, in_axes, body.inputs)):
        expected = a.shape if axis is None else _slice_shape(a.shape, shards)
        if axis not in (None, 0) or expected != v.aval.shape or a.dtype != v.aval.dtype:
            raise op_error("shards", f"input {k} {a.short()} for a body input {v.aval.short()}")
    if len(out_kinds) != len(body.outputs):
        raise op_error("shards", f"{len(out_kinds)} output kinds for {len(body.outputs)} outputs")
    outs = []
    for v, kind in zip(body.outputs, out_kinds):
        a = v.aval
        if kind == "concat" and a.ndim:
            outs.append(AVal((a.shape[0] * shards, *a.shape[1:]), a.dtype))
        elif kind == "sum":
            outs.append(a)
        else:
            raise op_error("shards", f"output kind {kind!r} for {a.short()}")
    return TupleAVal(tuple(outs))


def _slice_shape(shape: tuple, shards: int) -> tuple:
    if not shape or shape[0] % shards:
        return ()  # matches no body input: the check above reports it
    return (shape[0] // shards, *shape[1:])


def shards_impl(*inputs, body, shards, in_axes, out_kinds):
    """The shards one after another, their outputs combined as the kernel combines them."""
    parts = []
    for s in range(shards):
        args = []
        for x, axis in zip(inputs, in_axes):
            if axis is None:
                args.append(x)
            else:
                size = np.shape(x)[0] // shards
                args.append(x[s * size : (s + 1) * size])
        parts.append(run_graph(body, *args))
    outs = []
    for j, kind in enumerate(out_kinds):
        values = [np.asarray(p[j]) for p in parts]
        if kind == "concat":
            outs.append(np.concatenate(values))
        else:
            total = values[0].copy()
            for value in values[1:]:
                total += value
            outs.append(total)
    return tuple(outs)


def shards_replay(*inputs, body, shards, in_axes, out_kinds):
    """Eagerly: the shards one after another through `bind` (a tape records their ops)."""
    parts = []
    for s in range(shards):
        args = []
        for x, axis in zip(inputs, in_axes):
            size = x.shape[0] // shards if axis == 0 else 0
            args.append(x if axis is None else x[s * size : (s + 1) * size])
        parts.append(replay(body, *args))
    outs = []
    for j, kind in enumerate(out_kinds):
        values = [p[j] for p in parts]
        if kind == "concat":
            outs.append(concat(values, 0))
        else:
            total = values[0]
            for value in values[1:]:
                total = total + value
            outs.append(total)
    return tuple(outs)


shards_p = defop(
    "shards",
    abstract_eval=shards_abstract_eval,
    impl=shards_impl,
    vjp=NO_GRADIENT,
    kind="other",
    replay=shards_replay,
    doc="A body graph run on slices of a batch at once; made by the sharding pass.",
)
