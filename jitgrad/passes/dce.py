"""Dead-code elimination: drop equations and constants no output depends on."""

from __future__ import annotations

from jitgrad.ir.graph import Graph


def dce(graph: Graph) -> Graph:
    needed = set(graph.outputs)
    update = needed.update
    kept = []
    for e in reversed(graph.eqns):
        if e.out in needed:
            kept.append(e)
            update(e.inputs)
    kept.reverse()
    consts = {v: c for v, c in graph.consts.items() if v in needed}
    return Graph(graph.inputs, tuple(kept), graph.outputs, consts)
