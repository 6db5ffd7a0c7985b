"""passes/recurrence.py: recurrences of scalar carries as polynomials grouped by the output's
own carry. The rewritten loop computes the same values (to rounding), and its carry is a few
operations from itself."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.core.aval import AVal
from jitgrad.ir.interpret import eval_graph
from jitgrad.ir.trace import Trace, tracing
from jitgrad.passes import optimize
from jitgrad.passes.recurrence import shorten_recurrences

F64 = np.dtype("float64")


def trace(fn, *shapes):
    t = Trace(fn.__name__)
    with tracing(t):
        ins = [t.new_input(AVal(s, F64)) for s in shapes]
        out = fn(*ins)
        return t.to_graph(list(out) if isinstance(out, (list, tuple)) else [out])


def loops(graph):
    return [e for e in graph.eqns if e.op.name == "loop"]


def chains_between(loop) -> dict:
    """{(carry j, carry k): the longest chain of equations from carry input j to output k}."""
    p = loop.params
    body, n_consts, n_carry = p["body"], p["n_consts"], p["n_carry"]
    carries = body.inputs[1 + n_consts : 1 + n_consts + n_carry]
    found = {}
    for j, carry in enumerate(carries):
        length = {carry: 0}
        for e in body.eqns:
            reached = [length[v] for v in e.inputs if v in length]
            if reached:
                length[e.out] = 1 + max(reached)
        for k, out in enumerate(body.outputs[:n_carry]):
            if out in length:
                found[j, k] = length[out]
    return found


def self_chains(loop) -> list[int]:
    """For each carry: the longest chain of equations from its input to its output."""
    chains = chains_between(loop)
    return [chains.get((k, k), 0) for k in range(loop.params["n_carry"])]


def rotation(theta, u):
    """A damped rotation driven by u: a two-state linear recurrence whose new state is
    written with long chains (each state passes through several products and sums)."""
    a, b = theta[0], theta[1]

    def step(carry, u_t):
        x, y = carry
        x2 = x + 0.1 * (-(a * x) + b * y) + u_t
        y2 = y - 0.1 * (b * x + a * (y + u_t))
        return (x2, y2), x2 * x2

    (x, y), squares = jg.lax.scan(step, (u[0], u[1]), u)
    return x + 2.0 * y + jg.reduce_sum(squares)


def test_linear_forward_recurrence_is_rewritten_and_computes_the_same():
    graph = trace(rotation, (2,), (7,))
    before = [self_chains(e) for e in loops(graph)]
    rewritten = shorten_recurrences(graph)
    after = [self_chains(e) for e in loops(rewritten)]
    assert max(before[0]) > 3 and max(after[0]) <= 3, (before, after)
    rng = np.random.default_rng(0)
    for _ in range(5):
        args = (rng.uniform(0.1, 1.0, 2), rng.standard_normal(7))
        for x, y in zip(eval_graph(graph, *args), eval_graph(rewritten, *args), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13)


def lotka_volterra(theta, obs):
    """W8a's loss, 30 Euler steps: the adjoint loop of its gradient is linear in the
    cotangents with chains of 7 operations before the pass."""
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]

    def step(carry, o):
        x, y = carry
        x, y = x + 0.01 * (a * x - b * x * y), y + 0.01 * (d * x * y - c * y)
        return (x, y), (x - o[0]) ** 2 + (y - o[1]) ** 2

    _, errors = jg.lax.scan(step, (jg.constant(10.0, F64), jg.constant(5.0, F64)), obs)
    return jg.reduce_sum(errors)


def test_adjoint_loop_carries_are_a_few_operations_from_themselves():
    theta = np.array([1.1, 0.4, 0.4, 0.1])
    obs = np.random.default_rng(0).uniform(1, 10, (30, 2))
    vg = jg.jit_grad(lotka_volterra, wrt=0)
    graph = vg.lower(theta, obs)._compiled.graph
    reverse = [e for e in loops(graph) if e.params["reverse"]]
    assert reverse
    assert max(self_chains(reverse[0])) <= 3
    value, grad = vg(theta, obs)
    with jg.GradientTape() as tape:
        t = jg.Variable(theta)
        eager = lotka_volterra(t, jg.constant(obs))
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(grad), tape.gradient(eager, t).numpy(), rtol=1e-11)


@pytest.mark.parametrize(
    "step",
    [
        lambda c, u: (c * c + u, c),  # a carry times a carry
        lambda c, u: (c + u * 2.0, c),  # an accumulator: one add from itself already
        lambda c, u: (jg.exp(c) * 0.5 + u, c),  # not linear
    ],
    ids=["product", "accumulator", "exp"],
)
def test_what_is_not_a_long_linear_chain_stays(step):
    def f(u):
        return jg.lax.scan(step, u[0], u)[1]

    graph = optimize(trace(f, (5,)))
    assert shorten_recurrences(graph) is graph


def test_array_carries_stay():
    def f(w, u):
        def step(h, u_t):
            return h * w + 0.1 * (h + u_t), h

        return jg.lax.scan(step, u[0], u)[1]

    graph = optimize(trace(f, (3,), (4, 3)))
    assert shorten_recurrences(graph) is graph


def test_a_polynomial_step_is_grouped_by_its_own_carry():
    """W8a's Euler step `x + dt (a x - b x y)` becomes `x ((1 + dt a) - (dt b) y)`: one
    operation from x (was 5) and three from y (was 4); y's step likewise. The squared error
    the step also computes reads the new value, so the old computation is gone."""
    graph = trace(lotka_volterra, (4,), (30, 2))
    rewritten = shorten_recurrences(graph)
    (before,), (after,) = loops(graph), loops(rewritten)
    chains, new_chains = chains_between(before), chains_between(after)
    assert (chains[0, 0], chains[1, 0], chains[1, 1], chains[0, 1]) == (5, 4, 4, 5)
    assert (new_chains[0, 0], new_chains[1, 0], new_chains[1, 1], new_chains[0, 1]) == (1, 3, 1, 3)
    produced = {e.out for e in after.params["body"].eqns}
    assert not produced & set(before.params["body"].outputs[:2])
    rng = np.random.default_rng(0)
    for _ in range(5):
        args = (rng.uniform(0.1, 1.0, 4), rng.uniform(1, 10, (30, 2)))
        for x, y in zip(eval_graph(graph, *args), eval_graph(rewritten, *args), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12)


def test_a_carry_times_itself_in_a_product_stays():
    """`x y x` is not multilinear: the output keeps its form."""

    def f(u):
        step = lambda c, u_t: (((c[0] * c[1]) * c[0] + u_t, c[1] + u_t), u_t)
        (x, y), _ = jg.lax.scan(step, (u[0], u[1]), u)
        return x + y

    graph = optimize(trace(f, (5,)))
    assert shorten_recurrences(graph) is graph
