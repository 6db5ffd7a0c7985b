"""Common-subexpression elimination: one equation per (op, inputs, params), and one constant
per small value."""

from __future__ import annotations

import numpy as np

from jitgrad.ir.graph import Eqn, Graph

_SMALL_CONST = 64  # constants up to this many elements are compared by value


def cse(graph: Graph) -> Graph:
    replace: dict = {}
    consts: dict = {}
    by_value: dict = {}
    for v, c in graph.consts.items():
        c = np.asarray(c)
        if c.size <= _SMALL_CONST:
            key = (c.dtype.str, c.shape, c.tobytes())
            if key in by_value:
                replace[v] = by_value[key]
                continue
            by_value[key] = v
        consts[v] = c
    seen: dict = {}
    eqns = []
    for e in graph.eqns:
        inputs = tuple(replace.get(v, v) for v in e.inputs)
        key = (e.op.name, inputs, e.params_key())
        if key in seen:
            replace[e.out] = seen[key]
            continue
        seen[key] = e.out
        eqns.append(e if inputs == e.inputs else Eqn(e.op, inputs, e.params, e.out, e.source))
    outputs = tuple(replace.get(v, v) for v in graph.outputs)
    return Graph(graph.inputs, tuple(eqns), outputs, consts)
