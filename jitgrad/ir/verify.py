"""The IR verifier: every pass's output must satisfy these invariants."""

from __future__ import annotations

from jitgrad.ir.graph import Graph
from jitgrad.ir.subgraphs import subgraphs
from jitgrad.ir.trace import abstract_eval


class IRError(AssertionError):
    """A graph breaks an invariant: a bug in a pass or the tracer, never a user error."""


def verify(graph: Graph) -> Graph:
    """Check SSA form, definition before use, and that every equation's output type is what
    its op's shape rule says. Returns the graph, so it can wrap a pass."""
    defined = set(graph.inputs) | set(graph.consts)
    if len(defined) != len(graph.inputs) + len(graph.consts):
        raise IRError("an input is also a constant, or appears twice")
    for e in graph.eqns:
        for v in e.inputs:
            if v not in defined:
                raise IRError(f"{e.op.name}: input used before it is defined")
        if e.out in defined:
            raise IRError(f"{e.op.name}: output defined twice")
        for inner in subgraphs(e):
            verify(inner)
        expected = abstract_eval(e.op, [v.aval for v in e.inputs], e.inputs, e.params)
        if expected != e.out.aval:
            raise IRError(f"{e.op.name}: output {e.out.aval} but the rule gives {expected}")
        defined.add(e.out)
    for v in graph.outputs:
        if v not in defined:
            raise IRError("an output is never defined")
    return graph
