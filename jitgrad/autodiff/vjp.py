"""Reverse mode as a graph-to-graph transform, built on the same backprop loop as the tape."""

from __future__ import annotations

from jitgrad.autodiff.backprop import backprop
from jitgrad.ir.graph import Graph
from jitgrad.ir.interpret import replay
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.elementwise import ones_like_value, zeros_like_value


def vjp_graph(graph: Graph, wrt: tuple[int, ...], output: int = 0) -> Graph:
    """A graph computing the outputs of `graph` followed by the gradients of the sum of output
    `output` with respect to the inputs numbered `wrt` (zeros where there is no path).
    Applying it again gives higher derivatives."""
    from jitgrad.tape import GradientTape

    trace = Trace("vjp")
    with tracing(trace):
        inputs = [trace.new_input(v.aval) for v in graph.inputs]
        with GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([inputs[i] for i in wrt])
            outputs = replay(graph, *inputs)
        target = outputs[output]
        grads = backprop(tape._eqns, [(target, ones_like_value(target))],
                         [inputs[i] for i in wrt])
        grads = [zeros_like_value(inputs[i]) if g is None else g for i, g in zip(wrt, grads)]
        return trace.to_graph(outputs + grads)
