"""passes/accumulate.py: a scan's ys that only a sum over the steps reads become an
accumulating carry; the values stay the stacked sum's (to rounding)."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.core.aval import AVal
from jitgrad.ir.graph import format_graph
from jitgrad.ir.interpret import eval_graph
from jitgrad.ir.trace import Trace, tracing
from jitgrad.passes import optimize
from jitgrad.passes.accumulate import fold_summed_ys


def trace(fn, *avals):
    t = Trace(fn.__name__)
    with tracing(t):
        out = fn(*[t.new_input(a) for a in avals])
        return t.to_graph(list(out) if isinstance(out, (list, tuple)) else [out])


def loops(graph):
    return [e for e in graph.eqns if e.op.name == "loop"]


def squares_total(xs, reverse=False):
    def step(c, x):
        c = 0.5 * c + x
        return c, c * c

    last, squares = jg.lax.scan(step, xs[0] * 0.0, xs, reverse=reverse)
    return jg.reduce_sum(squares) + last


def reference(xs, reverse=False):
    c, total = 0.0, 0.0
    for x in xs[::-1] if reverse else xs:
        c = 0.5 * c + float(x)
        total += c * c
    return total + c


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_summed_ys_become_a_carry(dtype, reverse):
    graph = trace(lambda xs: squares_total(xs, reverse), AVal((9,), np.dtype(dtype)))
    folded = fold_summed_ys(graph)
    (before,), (after,) = loops(graph), loops(folded)
    assert after.params["n_carry"] == before.params["n_carry"] + 1
    accumulator = after.out.aval.avals[1 + before.params["n_carry"]]
    assert accumulator.shape == () and accumulator.dtype == np.float64  # float32 too
    assert not any(e.op.name == "reduce_sum" for e in optimize(folded).eqns)
    xs = np.random.default_rng(0).standard_normal(9).astype(dtype)
    (value,) = eval_graph(folded, xs)
    assert value.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(value, reference(xs, reverse), rtol=rtol)


def test_array_ys_sum_into_an_array_carry_and_compile():
    def f(xs):
        def step(c, x):
            return c + x, jg.tanh(c * x)

        return jg.reduce_sum(jg.lax.scan(step, xs[0], xs)[1], axis=0)

    xs = np.random.default_rng(1).standard_normal((6, 3))
    graph = trace(f, AVal((6, 3), np.dtype(np.float64)))
    (loop,) = loops(fold_summed_ys(graph))
    assert loop.out.aval.avals[2] == AVal((3,), np.dtype(np.float64))
    expected = np.zeros(3)
    c = xs[0].copy()
    for x in xs:
        expected += np.tanh(c * x)
        c = c + x
    np.testing.assert_allclose(np.asarray(jg.jit(f)(xs)), expected, rtol=1e-13)


def test_ys_read_otherwise_stay_stacked():
    def f(xs):
        def step(c, x):
            return c + x, c * x

        ys = jg.lax.scan(step, xs[0], xs)[1]
        return jg.reduce_sum(ys) + ys[2]

    graph = trace(f, AVal((5,), np.dtype(np.float64)))
    assert fold_summed_ys(graph) is graph


def test_zero_length_scan_sums_to_zero():
    def f(xs):
        return jg.reduce_sum(jg.lax.scan(lambda c, x: (c, x * 2.0), 1.0, xs)[1])

    assert float(jg.jit(f)(np.zeros(0))) == 0.0


def test_gradient_through_a_summed_scan_matches_the_tape():
    xs = np.random.default_rng(2).standard_normal(12)
    value, grad = jg.jit_grad(squares_total)(xs)
    with jg.GradientTape() as tape:
        t = jg.Variable(xs)
        eager = squares_total(t)
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(grad), tape.gradient(eager, t).numpy(), rtol=1e-12)


def test_golden_ir():
    def f(xs):
        return jg.reduce_sum(jg.lax.scan(lambda c, x: (c * 0.5 + x, c * x), xs[0], xs)[1])

    folded = fold_summed_ys(trace(f, AVal((4,), np.dtype(np.float32))))
    assert format_graph(folded) == "\n".join(
        [
            "{ lambda a:f32[4] ;",
            "    b:f64[] = const 0.",
            "    c:f32[1] = slice[index=((0, 1, 1),)] a",
            "    d:f32[] = reshape[shape=()] c",
            "    e:(i32[], f32[], f64[], f32[4]) = loop[body=",
            "      { lambda a:i32[] b:f32[] c:f64[] d:f32[] ;",
            "          e:f32[] = const 0.5",
            "          f:f32[] = mul b e",
            "          g:f32[] = add f d",
            "          h:f32[] = mul b d",
            "          i:f64[] = cast[dtype=float64] h",
            "          j:f64[] = add c i",
            "        in (g, j, h) }, cond=None, n_consts=0, n_carry=2, length=4, max_trips=None,"
            " reverse=False, remat=False, extends=None] d b a",
            "    f:i32[] = tuple_get[index=0] e",
            "    g:f32[] = tuple_get[index=1] e",
            "    h:f32[4] = tuple_get[index=3] e",
            "    i:f64[] = tuple_get[index=2] e",
            "    j:f32[] = cast[dtype=float32] i",
            "  in (j) }",
        ]
    )
