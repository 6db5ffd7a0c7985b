"""Tracing a loop body or a branch into a graph, inside the trace of the function around it.

A body is traced once, in a trace nested in the current one: the enclosing function's values
and the Variables it reads become the body's *captured* inputs, which the control-flow
equation passes in explicitly (its consts)."""

from __future__ import annotations

from dataclasses import dataclass

from jitgrad.core import pytree
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ir.graph import Graph, Var
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.base import as_value


@dataclass
class Traced:
    """A traced body: `graph` takes the explicit inputs, then the captured ones; `captured` are
    the enclosing trace's tracers or Variables standing for them; `out_tree` the structure of
    what the function returned (its leaves are the graph's outputs, in order)."""

    graph: Graph
    captured: list
    out_tree: object


def trace_function(fn, in_avals: list[AVal], make_args, name: str, out_dtypes=None) -> Traced:
    """Trace `fn(*make_args(tracers))` with one tracer per aval of `in_avals`. Outputs that are
    Python scalars become constants of `out_dtypes`' dtype at their position (a carry keeps its
    dtype: `lambda c, x: (c + x, 0.0)`) or of jitgrad's weak default."""
    sub = Trace(name, parent=current_trace.get())
    token = tape_stack.set(())  # the enclosing tapes see the loop, not its body's trace
    try:
        with tracing(sub):
            inputs = [sub.new_input(a) for a in in_avals]
            out = fn(*make_args(inputs))
            leaves, tree = pytree.flatten(out)
            values = []
            for k, leaf in enumerate(leaves):
                dtype = out_dtypes[k] if out_dtypes is not None and k < len(out_dtypes) else None
                values.append(_output_value(leaf, dtype, name))
            graph = sub.to_graph(values)
    finally:
        tape_stack.reset(token)
    return Traced(graph, [v for v, _ in sub.captured], tree)


def _output_value(leaf, dtype, name: str):
    if isinstance(leaf, (Tensor, Tracer)):
        return leaf
    if isinstance(leaf, (bool, int, float)) and dtype is not None:
        return as_value(leaf, dtype, op=name)
    try:
        return as_value(leaf, op=name)
    except (TypeError, ValueError):
        raise TypeError(
            with_location(f"{name} returned {type(leaf).__name__} {leaf!r}, not a tensor")
        ) from None


def with_inputs(graph: Graph, explicit: int, captured: list, consts: list, at: int) -> Graph:
    """`graph`, whose inputs are `explicit` ones followed by one per value of `captured`,
    rearranged to take one input per value of `consts` (a superset of `captured`, compared by
    identity) inserted before explicit input `at`. Consts it does not read get fresh inputs."""
    own = dict(zip(map(id, captured), graph.inputs[explicit:]))
    const_inputs = tuple(
        own[id(c)] if id(c) in own else Var(AVal(tuple(c.shape), c.dtype)) for c in consts
    )
    ins = graph.inputs[:explicit]
    return Graph(
        ins[:at] + const_inputs + ins[at:],
        graph.eqns,
        graph.outputs,
        graph.consts,
        graph.custom_vjps,
    )


def union_by_identity(*groups: list) -> list:
    """The values of `groups`, each once (compared by identity), in order of first appearance."""
    seen, out = set(), []
    for group in groups:
        for value in group:
            if id(value) not in seen:
                seen.add(id(value))
                out.append(value)
    return out
