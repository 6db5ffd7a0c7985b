"""Equations that hold graphs: control flow (`loop`, `cond`) keeps its bodies as static params.

Passes and the verifier treat such an equation as one op whose params include graphs; they
reach the graphs through these two functions, so that they need to know nothing else about
the op (the layout of a loop's params is documented in jitgrad/control/primitives.py).

A param named `extends` refers to another equation's graph (a loop's gradient names the loop
it extends, see passes/loops.merge_loops); it is not held, so these functions skip it."""

from __future__ import annotations

from collections.abc import Callable

from jitgrad.ir.graph import Eqn, Graph

REFERENCE = "extends"


def subgraphs(eqn: Eqn) -> list[Graph]:
    """The graphs held in `eqn`'s params (a param may be a graph or a tuple of graphs)."""
    found = []
    for key, value in eqn.params.items():
        if key == REFERENCE:
            continue
        if isinstance(value, Graph):
            found.append(value)
        elif isinstance(value, tuple) and value and isinstance(value[0], Graph):
            found.extend(value)
    return found


def has_subgraphs(eqn: Eqn) -> bool:
    return bool(subgraphs(eqn))


def map_subgraphs(eqn: Eqn, transform: Callable[[Graph], Graph]) -> Eqn:
    """`eqn` with `transform` applied to each graph in its params (the same equation if no
    graph changed)."""
    params, changed = {}, False
    for key, value in eqn.params.items():
        if key == REFERENCE:
            new = value
        elif isinstance(value, Graph):
            new = transform(value)
        elif isinstance(value, tuple) and value and isinstance(value[0], Graph):
            new = tuple(transform(g) for g in value)
            new = value if all(a is b for a, b in zip(new, value)) else new
        else:
            new = value
        changed |= new is not value
        params[key] = new
    if not changed:
        return eqn
    return Eqn(eqn.op, eqn.inputs, params, eqn.out, eqn.source)


def collective_ops(graph: Graph) -> set[str]:
    """The names of the collective ops (OpDef.collective: MPI, or the ranks' shared memory)
    that `graph` calls, in loop bodies and branches too."""
    found = set()
    for eqn in graph.eqns:
        if eqn.op.collective:
            found.add(eqn.op.name)
        for sub in subgraphs(eqn):
            found |= collective_ops(sub)
    return found
