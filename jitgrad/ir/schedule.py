"""A fused graph's schedule: what the fusion pass produces and a backend runs. Each step is
either a loop group (elementwise equations over one iteration space, with reductions as
epilogues and broadcasts as index maps) or one structured op, in execution order."""

from __future__ import annotations

from dataclasses import dataclass, field

from jitgrad.ir.graph import Eqn, Graph, Var


@dataclass(eq=False)
class LoopGroup:
    space: tuple[int, ...]
    eqns: list[Eqn] = field(default_factory=list)
    # Filled at the end of `fuse`: values read from outside, values needed outside.
    inputs: list[Var] = field(default_factory=list)
    outputs: list[Var] = field(default_factory=list)

    def op_names(self) -> list[str]:
        return [e.op.name for e in self.eqns]


@dataclass(eq=False)
class OpStep:
    eqn: Eqn


@dataclass
class Schedule:
    graph: Graph
    steps: list  # LoopGroup | OpStep, in execution order
