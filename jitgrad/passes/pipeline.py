"""The optimisation pipeline: simplify, fold constants, CSE and DCE to a fixed point."""

from __future__ import annotations

from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Graph
from jitgrad.ir.verify import verify
from jitgrad.passes.cse import CseMemo, cse
from jitgrad.passes.dce import dce
from jitgrad.passes.fold import fold_constants
from jitgrad.passes.simplify import simplify

MAX_ITERATIONS = 6


def optimize(graph: Graph) -> Graph:
    """The optimised graph (verified): same outputs, fewer and cheaper equations."""
    with gc_paused():
        uniform: dict = {}  # simplify's memo of uniform constants, shared by its calls
        memo = CseMemo()
        for _ in range(MAX_ITERATIONS):
            before = (len(graph.eqns), len(graph.consts))
            graph = dce(cse(fold_constants(simplify(graph, uniform)), memo))
            if (len(graph.eqns), len(graph.consts)) == before:
                break
        return verify(graph)
