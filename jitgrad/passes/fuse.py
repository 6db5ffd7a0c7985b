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
from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.ir.order import stable_topological_order
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
    with gc_paused():
        grouping = _Grouping()
        for e in graph.eqns:
            grouping.place(e)
        for v in graph.outputs:
            grouping.materialize(v)
        _connect(grouping.steps, grouping.group_of, graph.outputs)
        return Schedule(graph, _order(grouping.steps))


class _Grouping:
    """The steps made so far and what convexity needs to know about them.

    Groups keep growing as equations join them, so what a value depends on is kept as the
    few groups it reads directly (`base`: its own group, or for an op step's result the
    groups its inputs read), and each group's `up`, the set of groups it depends on through
    the groups' reads as they are now (itself included), is kept up to date as groups gain
    reads: a value depends on exactly the union of its base groups' `up`. Sets of groups are
    Python ints used as bit sets, bit k for the k-th group made; convexity is then a few bit
    operations however many groups there are (an unrolled RNN makes thousands)."""

    def __init__(self):
        self.steps: list = []  # LoopGroup | OpStep, in creation order
        self.group_of: dict[Var, LoopGroup] = {}  # loop values (per element) -> their group
        self.reduced: set[Var] = set()  # reduction results (whole values, not per element)
        self.groups: list[LoopGroup] = []  # in creation order: group k is bit k
        self.index: dict[LoopGroup, int] = {}
        self.base: dict[Var, frozenset] = {}  # value -> numbers of the groups it reads
        self.up: list[int] = []  # per group: the groups it depends on, itself included
        self.own: list[frozenset] = []  # per group k: {k}, the base of its values
        self.readers: list[set] = []  # per group: the groups whose `up` holds its own
        self.inlined: list[set] = []  # per group: the broadcasts it inlines
        self.pending: dict[Var, Eqn] = {}  # broadcasts not yet placed in a group
        self.by_space: dict[tuple, int] = {}  # loop groups per iteration space

    # -- grouping ----------------------------------------------------------------------------
    def place(self, e: Eqn) -> None:
        """Put `e` where it runs: pending (a broadcast), a loop group, or an op step."""
        op = e.op
        base = self.base
        if op.name == "broadcast_to":
            self.pending[e.out] = e
            base[e.out] = base.get(e.inputs[0], _NONE)
            return
        if op.kind == "elementwise":
            self.place_elementwise(e)
        elif op.reduction is not None:
            self.place_reduction(e)
        else:
            for x in e.inputs:
                self.materialize(x)
            self.steps.append(OpStep(e))
        own = self.group_of.get(e.out)
        if own is not None:
            # It joined `own`, which reads all it reads.
            base[e.out] = self.own[self.index[own]]
        else:
            base[e.out] = _union([base.get(x, _NONE) for x in e.inputs])

    def place_elementwise(self, e: Eqn) -> None:
        """Into the group of one of its inputs over the same space, else any other group over
        that space, most recent first (independent work over one space shares a pass: Adam's
        moment and parameter updates, say), else a new group; the first that stays convex.

        A group over the space that computes none of its inputs stays convex unless one of
        them depends on it: the most recent such group is the highest bit of the space's
        groups minus everything the inputs depend on."""
        space = e.out.aval.shape
        group_of = self.group_of
        reduced = self.reduced
        own = []
        for x in e.inputs:
            g = group_of.get(x)
            if g is not None and g.space == space and x not in reduced:
                own.append(g)
        for g in reversed(own):
            if self.convex(g, e):
                self.add_to(g, e)
                return
        candidates = self.by_space.get(space, 0) & ~self.reach(e.inputs)
        for g in own:
            candidates &= ~(1 << self.index[g])
        if candidates:
            self.add_to(self.groups[candidates.bit_length() - 1], e)
        else:
            self.add_to(self.new_group(space), e)

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
        k = len(self.groups)
        self.steps.append(g)
        self.groups.append(g)
        self.index[g] = k
        self.up.append(1 << k)
        self.own.append(frozenset((k,)))
        self.readers.append(set())
        self.inlined.append(set())
        self.by_space[g.space] = self.by_space.get(g.space, 0) | (1 << k)
        return g

    def add_to(self, group: LoopGroup, e: Eqn) -> None:
        """`e` joins `group`, with the pending broadcasts it reads (inlined as index maps)."""
        k = self.index[group]
        inlined = self.inlined[k]
        for x in e.inputs:
            b = self.pending.get(x)
            if b is not None and b not in inlined:
                inlined.add(b)
                group.eqns.append(b)
        self.reads(k, e.inputs)
        group.eqns.append(e)
        self.group_of[e.out] = group

    def reads(self, k: int, values) -> None:
        """Group `k` reads `values`: it depends on all they depend on, and so does every
        group that depends on it."""
        up, readers, base = self.up, self.readers, self.base
        gained = 0
        for x in values:
            for h in base.get(x, _NONE):
                if h != k:
                    readers[h].add(k)
                    gained |= up[h]
        if gained & ~up[k]:
            up[k] |= gained
            stack = [k]
            while stack:
                h = stack.pop()
                for r in readers[h]:
                    if up[h] & ~up[r]:
                        up[r] |= up[h]
                        stack.append(r)

    # -- convexity ---------------------------------------------------------------------------
    def convex(self, group: LoopGroup, e: Eqn) -> bool:
        """Whether `group` stays convex with `e`: none of the inputs `e` reads from outside
        the group (a reduction's result counts as outside) depends on the group."""
        k = self.index[group]
        group_of, reduced, base, up = self.group_of, self.reduced, self.base, self.up
        for x in e.inputs:
            if group_of.get(x) is group and x not in reduced:
                continue  # inside
            for h in base.get(x, _NONE):
                if up[h] >> k & 1:
                    return False
        return True

    def reach(self, values) -> int:
        """The groups `values` depend on, following the groups' reads as they are now."""
        up, base = self.up, self.base
        bits = 0
        for x in values:
            for h in base.get(x, _NONE):
                bits |= up[h]
        return bits

    # -- materialisation ---------------------------------------------------------------------
    def materialize(self, v: Var) -> None:
        """A pending broadcast needed outside a loop (by an op step, or as a graph output)
        becomes a group of its own, which writes it."""
        b = self.pending.pop(v, None)
        if b is not None:
            g = self.new_group(b.out.aval.shape)
            g.eqns.append(b)
            self.group_of[b.out] = g
            k = self.index[g]
            self.reads(k, b.inputs)
            self.base[b.out] = self.own[k]


_NONE: frozenset = frozenset()


def _union(sets: list) -> frozenset:
    """The union of frozensets, without a copy when one of them holds all the others."""
    result = _NONE
    for d in sets:
        if d is result or not d:
            continue
        if not result or result < d:
            result = d
        elif not d <= result:
            result = result | d
    return result


# -- scheduling ------------------------------------------------------------------------------
def _connect(steps: list, group_of: dict, graph_outputs: list) -> None:
    """Fill each loop group's inputs (what it reads from outside) and outputs (what it computes
    and a graph output or another step reads).

    A broadcast inlined as an index map is not a group's output even when it is needed
    outside: the group that materialised it writes it (writing it from every group that
    inlines it would give one buffer several writers).

    "Another step reads" is "some step reads from outside itself": a group's own external
    reads never include what it computes."""
    external = [_external_reads(s) for s in steps]
    used_outside = set(graph_outputs)
    for reads in external:
        used_outside.update(reads)
    for g, reads in zip(steps, external):
        if isinstance(g, LoopGroup):
            g.inputs = list(reads)
            g.outputs = [
                e.out for e in g.eqns if e.out in used_outside and group_of.get(e.out) is g
            ]


def _eqns_of(step) -> list[Eqn]:
    return step.eqns if isinstance(step, LoopGroup) else [step.eqn]


def _external_reads(step) -> dict:
    """The values a step reads that it does not compute itself (ordered, as dict keys)."""
    eqns = _eqns_of(step)
    own = {e.out for e in eqns}
    return {x: None for e in eqns for x in e.inputs if x not in own}


def _order(steps: list) -> list:
    """Topological order of the steps, as close to the recorded order as possible: at each
    point the earliest recorded step whose inputs are ready."""
    producer: dict[Var, int] = {}
    for k, s in enumerate(steps):
        for v in s.outputs if isinstance(s, LoopGroup) else [s.eqn.out]:
            producer[v] = k
    needs = [{producer[x] for x in _external_reads(s) if x in producer} for s in steps]
    return [steps[k] for k in stable_topological_order(needs)]
