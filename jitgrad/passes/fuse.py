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

from dataclasses import dataclass, field

from jitgrad.ir.graph import Eqn, Graph, Var

REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_prod"})


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

    @property
    def groups(self) -> list[LoopGroup]:
        return [s for s in self.steps if isinstance(s, LoopGroup)]


def _is_loop_op(e: Eqn) -> bool:
    return e.op.kind == "elementwise"


def fuse(graph: Graph) -> Schedule:
    steps: list = []
    group_of: dict[Var, LoopGroup] = {}  # loop values (per-element) and the group computing them
    reduced: set[Var] = set()  # reduction results (whole values, not per-element)
    deps: dict[Var, frozenset] = {}  # groups a value depended on when it was recorded
    group_deps: dict[LoopGroup, set] = {}  # groups a group reads from, directly or via op steps
    pending: dict[Var, Eqn] = {}  # broadcasts not yet placed in a group
    by_space: dict[tuple, list] = {}  # loop groups per iteration space, in creation order

    def deps_of(v: Var) -> frozenset:
        return deps.get(v, frozenset())

    def depends_on(v: Var, group: LoopGroup) -> bool:
        """Whether `v` needs `group` to have run, following the groups' reads as they are now.

        `deps[v]` alone goes stale: with values v <- H and a group H that later joins an
        equation reading G, v depends on G too, and letting G read v would be a cycle."""
        seen: set[int] = set()
        stack = list(deps_of(v))
        while stack:
            h = stack.pop()
            if h is group:
                return True
            if id(h) not in seen:
                seen.add(id(h))
                stack.extend(group_deps[h])
        return False

    def convex(group: LoopGroup, e: Eqn) -> bool:
        for x in e.inputs:
            inside = group_of.get(x) is group and x not in reduced
            if not inside and depends_on(x, group):
                return False
        return True

    def new_group(space) -> LoopGroup:
        g = LoopGroup(tuple(space))
        steps.append(g)
        group_deps[g] = set()
        by_space.setdefault(g.space, []).append(g)
        return g

    def add_to(group: LoopGroup, e: Eqn) -> None:
        for x in e.inputs:
            b = pending.get(x)
            if b is not None and b not in group.eqns:
                group.eqns.append(b)
            group_deps[group] |= deps_of(x)
        group_deps[group].discard(group)
        group.eqns.append(e)
        group_of[e.out] = group

    def materialize(v: Var) -> None:
        """A pending broadcast needed outside a loop becomes a group of its own."""
        b = pending.pop(v, None)
        if b is not None:
            g = new_group(b.out.aval.shape)
            g.eqns.append(b)
            group_of[b.out] = g
            group_deps[g] |= deps_of(b.inputs[0])
            deps[b.out] = deps_of(b.inputs[0]) | {g}

    for e in graph.eqns:
        if e.op.name == "broadcast_to":
            pending[e.out] = e
            deps[e.out] = deps_of(e.inputs[0])
            continue
        if _is_loop_op(e):
            space = e.out.aval.shape
            candidates = [group_of[x] for x in e.inputs
                          if x in group_of and x not in reduced and group_of[x].space == space]
            # Then any other loop over the same space, most recent first: independent work
            # over one space shares a pass (Adam's moment and parameter updates, say).
            candidates = list(reversed(candidates)) + [
                g for g in reversed(by_space.get(space, [])) if g not in candidates]
            target = next((g for g in candidates if convex(g, e)), None)
            add_to(target or new_group(space), e)
        elif e.op.name in REDUCTIONS:
            x = e.inputs[0]
            g = group_of.get(x) if x not in reduced else None
            if g is None or g.space != x.aval.shape or not convex(g, e):
                g = new_group(x.aval.shape)
            add_to(g, e)
            reduced.add(e.out)
        else:
            for x in e.inputs:
                materialize(x)
            steps.append(OpStep(e))
        own = group_of.get(e.out)
        deps[e.out] = frozenset().union(*(deps_of(x) for x in e.inputs)) | (
            {own} if own is not None else frozenset())
    for v in graph.outputs:
        materialize(v)
    external = {id(s): _external_reads(s) for s in steps}
    for g in [s for s in steps if isinstance(s, LoopGroup)]:
        used_outside = set(graph.outputs).union(
            *(reads for key, reads in external.items() if key != id(g)))
        g.inputs = list(external[id(g)])
        # A broadcast inlined as an index map is not this group's output even when it is
        # needed outside: the group that materialised it writes it (writing it from every group
        # that inlines it would give one buffer several writers).
        g.outputs = [e.out for e in g.eqns if e.out in used_outside and group_of.get(e.out) is g]
    return Schedule(graph, _order(steps))


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
        for v in (s.outputs if isinstance(s, LoopGroup) else [s.eqn.out]):
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
