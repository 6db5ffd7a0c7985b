"""Constant folding.

* An equation whose inputs are all constants is evaluated when its result is small (folding
  `broadcast_to(0.0, (4096, 4096))` would bake a 64 MB array into the kernel).
* An elementwise equation whose inputs are all *uniform* (a 0-d constant broadcast to a shape)
  is evaluated once on the 0-d values and becomes a broadcast of the 0-d result, so
  `equal(broadcast(2.0), broadcast(0.0))` turns into `broadcast(False)` at any size.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal, TupleAVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import Eqn, Graph, Var

FOLD_LIMIT = 256  # elements


def fold_constants(graph: Graph) -> Graph:
    # A folded 1/0 is the inf the kernel would compute, and the kernel says nothing: numpy's
    # warning here would point into jitgrad, once, at compile time (a mean over no rows).
    with np.errstate(all="ignore"):
        return _fold(graph)


def _fold(graph: Graph) -> Graph:
    consts = dict(graph.consts)
    uniform: dict[Var, Var] = {}  # broadcast output -> its 0-d constant input
    eqns = []
    for e in graph.eqns:
        op = e.op
        inputs = e.inputs
        if op.name == "broadcast_to":
            src = inputs[0]
            if src in consts and np.asarray(consts[src]).size == 1:
                if src.aval.ndim:  # a broadcast one-element array is a broadcast scalar
                    scalar = Var(AVal((), src.aval.dtype))
                    consts[scalar] = np.asarray(consts[src]).reshape(())
                    e = Eqn(op, (scalar,), e.params, e.out, e.source)
                    src = scalar
                uniform[e.out] = src
            eqns.append(e)
            continue
        for v in inputs:
            if v not in consts:
                all_consts = False
                break
        else:
            all_consts = True
        if all_consts and isinstance(e.out.aval, TupleAVal):  # control flow: not folded
            eqns.append(e)
        elif all_consts and e.out.aval.size <= FOLD_LIMIT and not op.collective:
            value = op.impl(*[consts[v] for v in inputs], **e.params)
            consts[e.out] = np.array(value, dtype=e.out.aval.dtype)
        elif op.kind == "elementwise" and inputs and _all_uniform(inputs, uniform, consts):
            scalars = [consts[uniform.get(v, v)] for v in inputs]
            value = np.array(op.impl(*scalars, **e.params), dtype=e.out.aval.dtype)
            scalar = Var(AVal((), e.out.aval.dtype))
            consts[scalar] = value
            uniform[e.out] = scalar
            eqns.append(
                Eqn(
                    REGISTRY["broadcast_to"],
                    (scalar,),
                    {"shape": e.out.aval.shape},
                    e.out,
                    e.source,
                )
            )
        else:
            eqns.append(e)
    return Graph(graph.inputs, tuple(eqns), graph.outputs, consts)


def _all_uniform(inputs, uniform: dict, consts: dict) -> bool:
    """Whether each input is a broadcast 0-d constant or a 0-d constant."""
    for v in inputs:
        if v not in uniform and not (v in consts and not v.aval.shape):
            return False
    return True
