"""Common-subexpression elimination: one equation per (op, inputs, params), and one constant
per small value."""

from __future__ import annotations

import numpy as np

from jitgrad.ir.graph import Eqn, Graph

_SMALL_CONST = 64  # constants up to this many elements are compared by value


class CseMemo:
    """What cse computes once per object in the passes of one `optimize`: the value key of
    each constant Var (a constant Var always stands for the same value), and the params key of
    each params dict (kept alive with it, so that its id stays its own)."""

    def __init__(self):
        self.const_keys: dict = {}  # Var -> (dtype, shape, bytes), or None for a large one
        self.params_keys: dict = {}  # id(params) -> (params, params key)


def cse(graph: Graph, memo: CseMemo | None = None) -> Graph:
    memo = CseMemo() if memo is None else memo
    const_keys = memo.const_keys
    params_keys = memo.params_keys
    replace: dict = {}
    consts: dict = {}
    by_value: dict = {}
    for v, c in graph.consts.items():
        c = np.asarray(c)
        if v in const_keys:
            key = const_keys[v]
        else:
            key = const_keys[v] = (
                (c.dtype.str, c.shape, c.tobytes()) if c.size <= _SMALL_CONST else None
            )
        if key is not None:
            if key in by_value:
                replace[v] = by_value[key]
                continue
            by_value[key] = v
        consts[v] = c
    seen: dict = {}
    eqns = []
    for e in graph.eqns:
        inputs = e.inputs
        if replace:
            for v in inputs:
                if v in replace:
                    inputs = tuple([replace.get(x, x) for x in inputs])
                    break
        params = e.params
        if params:
            entry = params_keys.get(id(params))
            if entry is None:
                entry = params_keys[id(params)] = (params, e.params_key())
            pkey = entry[1]
        else:
            pkey = ()
        key = (e.op.name, inputs, pkey)
        if key in seen:
            replace[e.out] = seen[key]
            continue
        seen[key] = e.out
        eqns.append(e if inputs is e.inputs else Eqn(e.op, inputs, e.params, e.out, e.source))
    outputs = tuple([replace.get(v, v) for v in graph.outputs])
    return Graph(graph.inputs, tuple(eqns), outputs, consts)
