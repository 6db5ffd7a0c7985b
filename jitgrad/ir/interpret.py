"""Running a graph: the reference interpreter (numpy impls) and a replay through `bind`."""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import TupleAVal
from jitgrad.core.dispatch import bind
from jitgrad.core.tensor import Tensor
from jitgrad.ir.graph import Graph


def eval_graph(graph: Graph, *args) -> list[np.ndarray]:
    """Evaluate `graph` on numpy arrays with each op's eager implementation."""
    env = dict(graph.consts)
    env.update((v, np.asarray(a, v.aval.dtype)) for v, a in zip(graph.inputs, args))
    for e in graph.eqns:
        value = e.op.impl(*[env[v] for v in e.inputs], **e.params)
        if isinstance(e.out.aval, TupleAVal):  # control flow's results: a tuple of arrays
            env[e.out] = value
        else:
            env[e.out] = np.asarray(value, dtype=e.out.aval.dtype)
    return [env[v] for v in graph.outputs]


def replay(graph: Graph, *values) -> list:
    """Re-run `graph` through `bind` on tensors or tracers, so that tapes and traces see every
    op again (the graph-level autodiff and the eager fallback of compiled functions use it)."""
    env = {v: Tensor(c) for v, c in graph.consts.items()}
    env.update(zip(graph.inputs, values))
    for e in graph.eqns:
        env[e.out] = bind(e.op, *[env[v] for v in e.inputs], **e.params)
    return [env[v] for v in graph.outputs]


def locate_nan(graph: Graph, *args) -> None:
    """Evaluate `graph` op by op and raise at the first op that produces a NaN from inputs
    without one, naming the op and the user's source line recorded at trace time."""
    from jitgrad.core.dispatch import check_nans
    from jitgrad.core.errors import with_location

    env = dict(graph.consts)
    env.update((v, np.asarray(a, v.aval.dtype)) for v, a in zip(graph.inputs, args))
    for e in graph.eqns:
        inputs = [env[v] for v in e.inputs]
        if isinstance(e.out.aval, TupleAVal):  # a loop or branch: the op that made the NaN
            parts = env[e.out] = e.op.impl(*inputs, **e.params)
            floats = [np.ravel(p) for p in parts if np.asarray(p).dtype.kind == "f"]
            if floats:
                check_nans(
                    e.op.name,
                    inputs,
                    np.concatenate(floats),
                    lambda m, e=e: with_location(m, e.source),
                )
            continue
        if e.op.name == "tuple_get":  # a part of a result checked above
            env[e.out] = e.op.impl(*inputs, **e.params)
            continue
        value = np.asarray(e.op.impl(*inputs, **e.params), dtype=e.out.aval.dtype)
        if value.dtype.kind == "f":
            check_nans(e.op.name, inputs, value, lambda m, e=e: with_location(m, e.source))
        env[e.out] = value
