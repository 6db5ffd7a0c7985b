"""State that a jitted function advances: random Generators (jitgrad/ops/random.py).

A Variable a traced function reads is an input of its kernel, read at every call. A state
Variable is also written: the trace records its latest value (`Trace.write_state`), the graph
returns it ahead of the function's own outputs, and the caller assigns it after each call. A
Generator's counter thus goes in, is advanced by the kernel, and comes back, so each call
draws new numbers, the same ones an eager run draws.
"""

from __future__ import annotations

from jitgrad.core import pytree


class Traced(tuple):
    """`(graph, variables, out_tree)` of a trace, and `.states`: the state Variables whose new
    values lead the graph's outputs (then `out_tree` is `(new values, function's output)`)."""

    states: list

    def __new__(cls, graph, variables, out_tree, states):
        traced = super().__new__(cls, (graph, variables, out_tree))
        traced.states = states
        return traced


def output_leaves(trace, out) -> tuple[list, object, list]:
    """(output leaves, their tree, the state Variables) of a finished trace whose function
    returned `out`: the states' latest values first, if the trace wrote any."""
    if not trace.states:
        leaves, tree = pytree.flatten(out)
        return leaves, tree, []
    variables = [variable for variable, _ in trace.states.values()]
    values = tuple(value for _, value in trace.states.values())
    leaves, tree = pytree.flatten((values, out))
    return leaves, tree, variables


def write_back(states: list, result):
    """Assign the new state values that lead `result` and return the function's output."""
    values, out = result
    for variable, value in zip(states, values):
        variable.assign(value)
    return out
