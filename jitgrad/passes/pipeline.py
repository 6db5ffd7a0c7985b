"""The optimisation pipeline: simplify, fold constants, CSE and DCE to a fixed point; with
control flow, also inside loop bodies and branches, summed ys accumulated in the loop
(passes/accumulate.py), scalar recurrences grouped by their own carry (passes/recurrence.py), and
loop-invariant work hoisted out of loops (passes/loops.py)."""

from __future__ import annotations

from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Graph
from jitgrad.ir.verify import verify
from jitgrad.passes.accumulate import fold_summed_ys
from jitgrad.passes.cse import CseMemo, cse
from jitgrad.passes.dce import dce
from jitgrad.passes.fold import fold_constants
from jitgrad.passes.loops import (
    hoist_invariants,
    merge_loops,
    optimize_bodies,
    prune_loops,
    unstack_broadcasts,
)
from jitgrad.passes.recurrence import shorten_recurrences
from jitgrad.passes.simplify import simplify

MAX_ITERATIONS = 6


def optimize(graph: Graph) -> Graph:
    """The optimised graph (verified): same outputs, fewer and cheaper equations."""
    with gc_paused():
        has_control = any(e.op.name in ("loop", "cond") for e in graph.eqns)
        if has_control:
            graph = merge_loops(graph)
        graph = _to_fixed_point(graph, has_control)
        if has_control:
            graph = optimize_bodies(fold_summed_ys(graph), optimize)
            graph = hoist_invariants(shorten_recurrences(graph))
            graph = _to_fixed_point(graph, has_control)
        return verify(graph)


def _to_fixed_point(graph: Graph, has_control: bool) -> Graph:
    uniform: dict = {}  # simplify's memo of uniform constants, shared by its calls
    memo = CseMemo()
    for _ in range(MAX_ITERATIONS):
        before = (len(graph.eqns), len(graph.consts))
        graph = dce(cse(fold_constants(simplify(graph, uniform)), memo))
        if has_control:
            graph = dce(prune_loops(unstack_broadcasts(graph)))
        if (len(graph.eqns), len(graph.consts)) == before:
            break
    return graph
