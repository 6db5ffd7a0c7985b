"""Fusion: partition a graph into loop groups and single structured ops, in a valid order.

A `LoopGroup` is a convex set of elementwise equations over one iteration space (its output
shape), plus the `broadcast_to`s it reads (index maps, never materialised unless something
outside a loop needs them) and reduction epilogues (sum/max/prod of a value computed in the
loop, accumulated in a register or an output row). Forward and backward work over the same
space therefore share one pass over memory: in `mean(tanh(x*w + b)**2)` the value and both
gradients come out of one loop.

Convexity: an equation may join group G only if none of its inputs from outside G depends on
G (otherwise G would have to run both before and after that input). "Depends" is judged on the
groups as they are when the question is asked: groups keep growing, and a group that gained an
input after a value was recorded makes that value depend on whatever the new input depends on.
"""

from __future__ import annotations

from jitgrad.core.opdef import OpDef
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.ir.schedule import LoopGroup, OpStep, Schedule


def is_structured(op: OpDef) -> bool:
    """Whether fusion leaves `op` as an OpStep of its own, for a backend emitter to write:
    elementwise ops and reductions run inside loops, and `broadcast_to` is an index map of
    the loops that read it (or a loop of its own, see `_Grouping.materialize`)."""
    return op.kind != "elementwise" and op.reduction is None and op.name != "broadcast_to"


def fuse(graph: Graph) -> Schedule:
    """Partition `graph` into loop groups and structured op steps, in an order that runs.

    Four steps: grouping places each equation, in graph order, in a loop group (or an op step
    of its own) without breaking convexity; materialisation turns the broadcasts needed outside
    a loop into loops of their own; `_connect` then fills each group's inputs and outputs, and
    `_order` schedules the steps."""
    grouping = _Grouping()
    for e in graph.eqns:
        grouping.place(e)
    for v in graph.outputs:
        grouping.materialize(v)
    _connect(grouping.steps, grouping.group_of, graph.outputs)
    return Schedule(graph, _order(grouping.steps))


class _Grouping:
    """The steps made so far and what convexity needs to know about them.

    Groups keep growing as equations join them, so the dependencies of a value are recorded
    as the groups it read (`deps`), and followed through the groups' own reads (`group_deps`)
    each time convexity is asked (`depends_on`)."""

    def __init__(self):
        self.steps: list = []  # LoopGroup | OpStep, in creation order
        self.group_of: dict[Var, LoopGroup] = {}  # loop values (per element) -> their group
        self.reduced: set[Var] = set()  # reduction results (whole values, not per element)
        self.deps: dict[Var, frozenset] = {}  # groups a value depended on when it was recorded
        self.group_deps: dict[LoopGroup, set] = {}  # groups a group reads, directly or not
        self.pending: dict[Var, Eqn] = {}  # broadcasts not yet placed in a group
        self.by_space: dict[tuple, list] = {}  # loop groups per iteration space, oldest first

    # -- grouping ----------------------------------------------------------------------------
    def place(self, e: Eqn) -> None:
        """Put `e` where it runs: pending (a broadcast), a loop group, or an op step."""
        if e.op.name == "broadcast_to":
            self.pending[e.out] = e
            self.deps[e.out] = self.deps_of(e.inputs[0])
            return
        if e.op.kind == "elementwise":
            self.place_elementwise(e)
        elif e.op.reduction is not None:
            self.place_reduction(e)
        else:
            for x in e.inputs:
                self.materialize(x)
            self.steps.append(OpStep(e))
        own = self.group_of.get(e.out)
        self.deps[e.out] = frozenset().union(*(self.deps_of(x) for x in e.inputs)) | (
            {own} if own is not None else frozenset()
        )

    def place_elementwise(self, e: Eqn) -> None:
        """Into the group of one of its inputs over the same space, else any other group over
        that space, most recent first (independent work over one space shares a pass: Adam's
        moment and parameter updates, say), else a new group; the first that stays convex."""
        space = e.out.aval.shape
        candidates = [
            self.group_of[x]
            for x in e.inputs
            if x in self.group_of and x not in self.reduced and self.group_of[x].space == space
        ]
        candidates = list(reversed(candidates)) + [
            g for g in reversed(self.by_space.get(space, [])) if g not in candidates
        ]
        target = next((g for g in candidates if self.convex(g, e)), None)
        self.add_to(target or self.new_group(space), e)

    def place_reduction(self, e: Eqn) -> None:
        """As an epilogue of the loop that computes its input, if that loop runs over the
        input's whole shape and stays convex; else in a new loop over the input."""
        x = e.inputs[0]
        g = self.group_of.get(x) if x not in self.reduced else None
        if g is None or g.space != x.aval.shape or not self.convex(g, e):
            g = self.new_group(x.aval.shape)
        self.add_to(g, e)
        self.reduced.add(e.out)

    def new_group(self, space) -> LoopGroup:
        g = LoopGroup(tuple(space))
        self.steps.append(g)
        self.group_deps[g] = set()
        self.by_space.setdefault(g.space, []).append(g)
        return g

    def add_to(self, group: LoopGroup, e: Eqn) -> None:
        """`e` joins `group`, with the pending broadcasts it reads (inlined as index maps)."""
        for x in e.inputs:
            b = self.pending.get(x)
            if b is not None and b not in group.eqns:
                group.eqns.append(b)
            self.group_deps[group] |= self.deps_of(x)
        self.group_deps[group].discard(group)
        group.eqns.append(e)
        self.group_of[e.out] = group

    # -- convexity ---------------------------------------------------------------------------
    def convex(self, group: LoopGroup, e: Eqn) -> bool:
        """Whether `group` stays convex with `e`: none of the inputs `e` reads from outside
        the group (a reduction's result counts as outside) depends on the group."""
        for x in e.inputs:
            inside = self.group_of.get(x) is group and x not in self.reduced
            if not inside and self.depends_on(x, group):
                return False
        return True

    def deps_of(self, v: Var) -> frozenset:
        return self.deps.get(v, frozenset())

    def depends_on(self, v: Var, group: LoopGroup) -> bool:
        """Whether `v` needs `group` to have run, following the groups' reads as they are now.

        `deps[v]` alone goes stale: with values v <- H and a group H that later joins an
        equation reading G, v depends on G too, and letting G read v would be a cycle."""
        seen: set[int] = set()
        stack = list(self.deps_of(v))
        while stack:
            h = stack.pop()
            if h is group:
                return True
            if id(h) not in seen:
                seen.add(id(h))
                stack.extend(self.group_deps[h])
        return False

    # -- materialisation ---------------------------------------------------------------------
    def materialize(self, v: Var) -> None:
        """A pending broadcast needed outside a loop (by an op step, or as a graph output)
        becomes a group of its own, which writes it."""
        b = self.pending.pop(v, None)
        if b is not None:
            g = self.new_group(b.out.aval.shape)
            g.eqns.append(b)
            self.group_of[b.out] = g
            self.group_deps[g] |= self.deps_of(b.inputs[0])
            self.deps[b.out] = self.deps_of(b.inputs[0]) | {g}


# -- scheduling ------------------------------------------------------------------------------
def _connect(steps: list, group_of: dict, graph_outputs: list) -> None:
    """Fill each loop group's inputs (what it reads from outside) and outputs (what it computes
    and a graph output or another step reads).

    A broadcast inlined as an index map is not a group's output even when it is needed
    outside: the group that materialised it writes it (writing it from every group that
    inlines it would give one buffer several writers)."""
    external = {id(s): _external_reads(s) for s in steps}
    for g in [s for s in steps if isinstance(s, LoopGroup)]:
        used_outside = set(graph_outputs).union(
            *(reads for key, reads in external.items() if key != id(g))
        )
        g.inputs = list(external[id(g)])
        g.outputs = [e.out for e in g.eqns if e.out in used_outside and group_of.get(e.out) is g]


def _eqns_of(step) -> list[Eqn]:
    return step.eqns if isinstance(step, LoopGroup) else [step.eqn]


def _external_reads(step) -> dict:
    """The values a step reads that it does not compute itself (ordered, as dict keys)."""
    eqns = _eqns_of(step)
    own = {e.out for e in eqns}
    return {x: None for e in eqns for x in e.inputs if x not in own}


def _order(steps: list) -> list:
    """Topological order of the steps, as close to the recorded order as possible."""
    producer: dict[Var, object] = {}
    for s in steps:
        for v in s.outputs if isinstance(s, LoopGroup) else [s.eqn.out]:
            producer[v] = s
    needs: dict[int, set] = {}
    for s in steps:
        needs[id(s)] = {id(producer[x]) for x in _external_reads(s) if x in producer}
    done: set[int] = set()
    ordered = []
    remaining = list(steps)
    while remaining:
        for k, s in enumerate(remaining):
            if needs[id(s)] <= done:
                ordered.append(s)
                done.add(id(s))
                del remaining[k]
                break
        else:
            raise AssertionError("internal error: fusion produced a cycle")
    return ordered
