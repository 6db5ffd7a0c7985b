"""The front end on big graphs (trace, backward, optimize, fuse, the numpy executor): the
shortcuts that make it fast give exactly what the plain algorithms give.

* equations keep the user's line: the backward pass finds it once instead of per op, and a
  custom gradient's own ops still name the rule's line;
* the garbage collector pauses while a graph is built, and is restored after;
* simplify stops as soon as no rule can fire, and gives what rounds over the whole graph give;
* fusion's scheduling equals the quadratic reference it replaced;
* the executor's registers drop dead values and compute what the reference interpreter does.
"""

from __future__ import annotations

import gc
import inspect
import threading

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.ir.trace as trace_module
from jitgrad.core.aval import AVal
from jitgrad.ir.execute import make_executor
from jitgrad.ir.graph import Eqn, Var, format_graph
from jitgrad.ir.interpret import eval_graph
from jitgrad.ir.schedule import LoopGroup, OpStep
from jitgrad.ir.trace import Trace, tracing
from jitgrad.passes import cse, dce, fold_constants, optimize
from jitgrad.passes.fuse import _connect, _external_reads, _Grouping, _order, fuse
from jitgrad.passes.simplify import MAX_ROUNDS, _one_round, simplify

HERE = "test_frontend.py"
F32 = np.dtype("float32")


def ode(steps: int):
    """The unrolled Lotka-Volterra fit of issue 12, `steps` Euler steps."""
    obs = np.random.default_rng(0).uniform(1, 10, size=(steps, 2))

    def loss(theta):
        a, b, c, d = theta[0], theta[1], theta[2], theta[3]
        x, y = 10.0, 5.0
        total = 0.0
        for t in range(steps):
            x, y = x + 0.01 * (a * x - b * x * y), y + 0.01 * (d * x * y - c * y)
            total = total + (x - obs[t, 0]) ** 2 + (y - obs[t, 1]) ** 2
        return total

    return loss


THETA = np.array([1.1, 0.4, 0.4, 0.1])


def traced_grad(fn, *args):
    graph, _, _ = jg.jit_grad(fn)._trace(args)
    return graph


def trace_graph(fn, *shapes, dtype=F32):
    t = Trace(fn.__name__)
    with tracing(t):
        ins = [t.new_input(AVal(s, dtype)) for s in shapes]
        out = fn(*ins)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        return t.to_graph(outs)


def line_of(fn, text: str) -> int:
    source, first = inspect.getsourcelines(fn)
    return first + next(k for k, line in enumerate(source) if text in line)


def line_in_this_file(text: str) -> int:
    with open(__file__) as fh:
        return 1 + next(k for k, line in enumerate(fh) if text in line)


# ---------------------------------------------------------------------------------------------
# Source lines


@jg.custom_gradient
def scaled_gradient(x):
    def grad_fn(dy):
        return dy * 3.0  # the custom rule's line

    return x * 1.0, grad_fn


def with_custom_rule(theta):
    a = theta[0] * 2.0  # forward line
    return scaled_gradient(a) * a


def test_backward_ops_name_the_line_that_asked_for_the_gradient():
    graph = traced_grad(with_custom_rule, THETA)
    asked = line_of(traced_grad, "_trace(args)")  # the innermost line outside jitgrad
    sources = {e.source for e in graph.eqns}
    assert f"{HERE}:{line_of(with_custom_rule, 'forward line')}" in sources
    assert f"{HERE}:{line_in_this_file('# the custom rule')}" in sources
    assert f"{HERE}:{asked}" in sources
    assert all(s.startswith(HERE) for s in sources)


@pytest.mark.parametrize("fn", [with_custom_rule, ode(3)], ids=["custom rule", "ode"])
def test_known_frames_give_what_the_whole_stack_gives(monkeypatch, fn):
    """The backward pass's shortcut (user_frame stops at append_backward's frame) names the
    same line for every op as walking the whole stack does."""
    fast = [e.source for e in traced_grad(fn, THETA).eqns]

    class Forgetful(dict):  # knows no frame: every op walks the whole stack
        def __setitem__(self, key, value):
            pass

    init = Trace.__init__

    def forgetful_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.known_frames = Forgetful()

    monkeypatch.setattr(Trace, "__init__", forgetful_init)
    slow = [e.source for e in traced_grad(fn, THETA).eqns]
    assert fast == slow


def test_replayed_forward_keeps_its_lines():
    graph = traced_grad(ode(2), THETA)
    forward = line_of(ode, "x, y = x + 0.01")
    assert sum(e.source == f"{HERE}:{forward}" for e in graph.eqns) >= 2 * 8


def test_shape_rules_are_remembered_but_an_invalid_call_raises_every_time(monkeypatch):
    monkeypatch.setattr(trace_module, "_MAX_ENTRIES", 3)  # full, it starts over
    for _ in range(3):
        with pytest.raises(ValueError, match="matmul"):
            trace_graph(lambda x, y: x @ y, (2, 3), (4, 5))
    graph = trace_graph(lambda x, y: jg.tanh(x @ y) * 2.0 + x @ y, (2, 3), (3, 2))
    assert [e.out.aval.shape for e in graph.eqns] == [(2, 2)] * 6
    assert len(trace_module._AVALS) <= 3


# ---------------------------------------------------------------------------------------------
# The garbage collector


def test_tracing_pauses_the_collector_and_restores_it():
    seen = []

    def f(x):
        seen.append(gc.isenabled())
        return x * 2.0

    assert gc.isenabled()
    graph = trace_graph(f, (3,))
    assert seen == [False] and gc.isenabled()
    optimize(graph)
    make_executor(graph)
    assert gc.isenabled()
    gc.disable()
    try:
        trace_graph(f, (3,))
        assert seen[-1] is False and not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_tracing_in_another_thread_leaves_the_collector_running():
    seen = []

    def f(x):
        seen.append(gc.isenabled())
        return x * 2.0

    worker = threading.Thread(target=trace_graph, args=(f, (3,)))
    worker.start()
    worker.join()
    assert seen == [True] and gc.isenabled()


# ---------------------------------------------------------------------------------------------
# simplify


def full_rounds(graph):
    """simplify as rounds over the whole graph until one changes nothing (the reference)."""
    for _ in range(MAX_ROUNDS):
        graph, _, made = _one_round(graph, {}, None)
        if made is None:
            break
    return graph


def pipeline_reference(graph):
    for _ in range(6):
        before = (len(graph.eqns), len(graph.consts))
        graph = dce(cse(fold_constants(full_rounds(graph))))
        if (len(graph.eqns), len(graph.consts)) == before:
            break
    return graph


def chains(x):
    y = jg.negative(jg.negative(x * -1.0)) ** 2.0
    z = jg.reshape(jg.reshape(jg.reshape(y, (6,)), (3, 2)), (2, 3))
    w = jg.where(jg.ones((2, 3), jg.bool), z**0.5, z) ** -1.0
    return jg.stop_gradient(w) * 1.0 + -0.0, jg.transpose(jg.transpose(w, (1, 0)), (1, 0))


GRAPHS = {
    "ode": lambda: traced_grad(ode(4), THETA),
    "chains": lambda: trace_graph(chains, (2, 3)),
    "chains grad": lambda: traced_grad(
        lambda x: jg.reduce_sum(chains(x)[0] * chains(x)[1]), np.ones((2, 3), np.float32)
    ),
    "mlp grad": lambda: traced_grad(
        lambda w, x: jg.reduce_mean(jg.tanh(x @ w) ** 2),
        np.ones((3, 4), np.float32),
        np.ones((5, 3), np.float32),
    ),
}


@pytest.mark.parametrize("name", GRAPHS)
def test_simplify_equals_full_rounds(name):
    graph = GRAPHS[name]()
    assert format_graph(simplify(graph)) == format_graph(full_rounds(graph))
    assert format_graph(optimize(graph)) == format_graph(pipeline_reference(graph))


# ---------------------------------------------------------------------------------------------
# Fusion's scheduling


class ReferenceGrouping:
    """fuse.py's grouping as it was before it kept dependencies as bit sets: every
    convexity question walks the groups' reads (cubic on an unrolled RNN)."""

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


def connect_reference(steps, group_of, graph_outputs):
    external = {id(s): _external_reads(s) for s in steps}
    for g in [s for s in steps if isinstance(s, LoopGroup)]:
        used_outside = set(graph_outputs).union(
            *(reads for key, reads in external.items() if key != id(g))
        )
        g.inputs = list(external[id(g)])
        g.outputs = [e.out for e in g.eqns if e.out in used_outside and group_of.get(e.out) is g]


def order_reference(steps):
    producer = {}
    for s in steps:
        for v in s.outputs if isinstance(s, LoopGroup) else [s.eqn.out]:
            producer[v] = s
    needs = {id(s): {id(producer[x]) for x in _external_reads(s) if x in producer} for s in steps}
    done, ordered, remaining = set(), [], list(steps)
    while remaining:
        for k, s in enumerate(remaining):
            if needs[id(s)] <= done:
                ordered.append(s)
                done.add(id(s))
                del remaining[k]
                break
    return ordered


def fuse_reference(graph):
    grouping = ReferenceGrouping()
    for e in graph.eqns:
        grouping.place(e)
    for v in graph.outputs:
        grouping.materialize(v)
    connect_reference(grouping.steps, grouping.group_of, graph.outputs)
    return order_reference(grouping.steps)


def describe(steps) -> list:
    """Each step as the eqns it runs (by identity) and a group's inputs and outputs."""
    return [
        (tuple(map(id, s.eqns)), tuple(s.inputs), tuple(s.outputs))
        if isinstance(s, LoopGroup)
        else id(s.eqn)
        for s in steps
    ]


def rnn(h, w, xs):
    for t in range(6):
        h = jg.tanh(h @ w + xs[t]) * 0.5 + h * 0.5
    return jg.reduce_sum(h * h)


@pytest.mark.parametrize("name", ["rnn", "ode"])
def test_fusion_schedule_equals_the_reference(name):
    if name == "rnn":
        args = (np.ones((2, 3), np.float32), np.ones((3, 3), np.float32) * 0.1)
        args += (np.ones((6, 2, 3), np.float32),)
        graph = optimize(traced_grad(rnn, *args))
    else:
        graph = optimize(traced_grad(ode(5), THETA))
    grouping = _Grouping()
    for e in graph.eqns:
        grouping.place(e)
    for v in graph.outputs:
        grouping.materialize(v)
    steps = grouping.steps
    connect_reference(steps, grouping.group_of, graph.outputs)
    expected = [(list(s.inputs), list(s.outputs)) for s in steps if isinstance(s, LoopGroup)]
    _connect(steps, grouping.group_of, graph.outputs)
    assert [(s.inputs, s.outputs) for s in steps if isinstance(s, LoopGroup)] == expected
    assert [id(s) for s in _order(steps)] == [id(s) for s in order_reference(steps)]
    assert len(fuse(graph).steps) == len(steps)


def adam_like(w, m, v, g):
    """Independent updates over one space share a group; a matmul in the middle breaks it."""
    m2 = m * 0.9 + g * 0.1
    v2 = v * 0.99 + g * g * 0.01
    u = m2 / (jg.sqrt(v2) + 1e-8)
    w2 = w - u * 0.01
    z = (w2 @ jg.transpose(w2)) * 2.0
    return w2 + jg.reduce_sum(z, axis=1, keepdims=True), m2, v2


def stale_reads(x, y):
    """A group (of h) that gains a read (of g's group) after another group (of k) read it:
    k then depends on g's group too, so w may not join it (that would be a cycle)."""
    h = jg.exp(x)  # group H over (2, 3)
    k = jg.transpose(h) * 2.0  # group K over (3, 2) reads H
    g = jg.sin(y)  # group G over (6,)
    h2 = h * jg.reshape(g, (2, 3))  # joins H: H now reads G, and so does K
    w = g + jg.reshape(k, (6,))  # may not join G
    return h2, w


FUSION_GRAPHS = {
    "stale reads": lambda: trace_graph(stale_reads, (2, 3), (6,)),
    "rnn": lambda: traced_grad(
        rnn,
        np.ones((2, 3), np.float32),
        np.ones((3, 3), np.float32) * 0.1,
        np.ones((6, 2, 3), np.float32),
    ),
    "ode": lambda: traced_grad(ode(5), THETA),
    "adam": lambda: trace_graph(adam_like, (4, 4), (4, 4), (4, 4), (4, 4)),
    "mlp grad": GRAPHS["mlp grad"],
    "chains grad": GRAPHS["chains grad"],
    "softmax grad": lambda: traced_grad(
        lambda x, w: jg.reduce_sum(jg.nn.log_softmax(x @ w) * jg.exp(x @ w), axis=0)[0],
        np.ones((4, 3), np.float32),
        np.ones((3, 5), np.float32),
    ),
}


@pytest.mark.parametrize("name", FUSION_GRAPHS)
@pytest.mark.parametrize("optimized", [True, False], ids=["optimized", "traced"])
def test_fusion_equals_the_reference_grouping(name, optimized):
    graph = FUSION_GRAPHS[name]()
    graph = optimize(graph) if optimized else graph
    assert describe(fuse(graph).steps) == describe(fuse_reference(graph))


# ---------------------------------------------------------------------------------------------
# The executor


def test_executor_of_a_big_graph_equals_the_interpreter():
    graph = traced_grad(ode(30), THETA)
    for g in (graph, optimize(graph)):
        got = make_executor(g)([THETA])
        expected = eval_graph(g, THETA)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_executor_drops_big_dead_values_at_once():
    def f(x, w):
        big = jg.exp(x) * w  # dead after the sum, its register not reused at once
        return jg.reduce_sum(big), jg.reduce_max(x)

    x = np.ones(20_000, np.float32)
    graph = trace_graph(f, (20_000,), (20_000,))
    run = make_executor(graph)
    assert "clear" in run.listing()
    got = run([x, x])
    for a, b in zip(got, eval_graph(graph, x, x)):
        np.testing.assert_array_equal(a, b)


def test_executor_checks_the_number_of_inputs():
    run = make_executor(trace_graph(lambda x: x * 2.0, (3,)))
    with pytest.raises(ValueError, match="expected 1 inputs, got 2"):
        run([np.ones(3, np.float32)] * 2)
