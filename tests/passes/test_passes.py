"""Each pass: golden IR text for a tiny graph, and eval(before) == eval(after) on random inputs."""

import warnings

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.core.aval import AVal
from jitgrad.ir.graph import format_graph
from jitgrad.ir.interpret import eval_graph
from jitgrad.ir.schedule import LoopGroup
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ir.verify import verify
from jitgrad.passes import cse, dce, fold_constants, optimize
from jitgrad.passes.fuse import fuse

F32 = np.dtype("float32")


def trace(fn, *shapes, dtype=F32):
    t = Trace(fn.__name__)
    with tracing(t):
        ins = [t.new_input(AVal(s, dtype)) for s in shapes]
        out = fn(*ins)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        return t.to_graph(outs)


def same_values(before, after, *shapes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    args = [rng.uniform(0.5, 2.0, s).astype(dtype) for s in shapes]
    for x, y in zip(eval_graph(before, *args), eval_graph(after, *args), strict=True):
        np.testing.assert_array_equal(x, y)


def ops(graph):
    return [e.op.name for e in graph.eqns]


def test_dce_drops_unused_work():
    def f(x):
        jg.exp(x)  # unused
        return x * 2.0

    g = trace(f, (3,))
    assert "exp" in ops(g)
    assert ops(dce(g)) == ["broadcast_to", "mul"]
    same_values(g, dce(g), (3,), dtype=np.float32)


def test_cse_merges_repeated_subexpressions():
    def f(x):
        return jg.sin(x) * jg.sin(x)

    g = trace(f, (4,))
    assert ops(g).count("sin") == 2
    assert ops(cse(g)).count("sin") == 1
    same_values(g, cse(g), (4,), dtype=np.float32)


def test_fold_constants_evaluates_small_constant_work():
    def f(x):
        return x * (jg.constant(2.0) * 3.0)

    g = trace(f, ())
    folded = dce(fold_constants(g))
    assert ops(folded) == ["mul"]
    assert [float(c) for c in folded.consts.values()] == [6.0]


def test_fold_computes_ieee_results_without_numpy_warnings():
    """A folded division by zero is the inf the kernel would compute, silently as the kernel
    does; numpy's warning would point into jitgrad (jit_grad of a mean over no rows)."""

    def f(x):
        return x * (jg.constant(1.0) / 0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folded = dce(fold_constants(trace(f, ())))
    assert [float(c) for c in folded.consts.values()] == [np.inf]


def test_fold_keeps_large_broadcasts_symbolic():
    g = fold_constants(trace(lambda x: x * (jg.zeros_like(x) + 2.0), (1024, 1024)))
    assert all(np.asarray(c).size == 1 for c in g.consts.values())


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x: x * 1.0, []),
        (lambda x: 1.0 * x, []),
        (lambda x: x + -0.0, []),
        (lambda x: -0.0 + x, []),
        (lambda x: x + 0.0, ["broadcast_to", "add"]),  # -0.0 + 0.0 is +0.0
        (lambda x: x - 0.0, []),
        (lambda x: x - -0.0, ["broadcast_to", "sub"]),
        (lambda x: -0.0 - x, ["neg"]),
        (lambda x: 0.0 - x, ["broadcast_to", "sub"]),  # 0.0 - 0.0 is +0.0, -(0.0) is -0.0
        (lambda x: x / 1.0, []),
        (lambda x: jg.negative(jg.negative(x)), []),
        (lambda x: x**1.0, []),
        (lambda x: x**2.0, ["mul"]),
        (lambda x: x**0.5, ["sqrt"]),
        (lambda x: x**-1.0, ["broadcast_to", "div"]),
        (lambda x: x * x**0.0, []),
        (lambda x: x**0.0, ["broadcast_to"]),
        (lambda x: x * -1.0, ["neg"]),
        (lambda x: jg.stop_gradient(x), []),
        (lambda x: jg.transpose(jg.transpose(x, (1, 0)), (1, 0)), []),
        (lambda x: jg.reshape(jg.reshape(x, (6,)), (3, 2)), ["reshape"]),
    ],
)
def test_simplify_rules(fn, expected):
    g = trace(fn, (2, 3))
    simplified = optimize(g)
    assert ops(simplified) == expected
    same_values(g, simplified, (2, 3))


def test_simplify_never_folds_multiplication_by_zero():
    g = optimize(trace(lambda x: x * 0.0, (3,)))
    assert "mul" in ops(g)  # nan * 0 is nan, inf * 0 is nan
    out = eval_graph(g, np.array([np.nan, np.inf, 1.0], np.float32))[0]
    assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == 0


def test_simplify_pow_zero_is_one_even_for_nan_and_inf():
    g = optimize(trace(lambda x: x**0.0, (4,)))
    assert "pow" not in ops(g)
    out = eval_graph(g, np.array([np.nan, np.inf, -np.inf, 0.0], np.float32))[0]
    np.testing.assert_array_equal(
        out, np.power(np.array([np.nan, np.inf, -np.inf, 0.0], np.float32), np.float32(0))
    )


def test_simplify_where_with_constant_condition():
    def f(x):
        return jg.where(jg.ones((3,), jg.bool), x, -x)

    assert ops(optimize(trace(f, (3,)))) == []


def test_optimize_golden_ir():
    def f(x, w, b):
        return jg.reduce_mean(jg.tanh(x * w + b) ** 2)

    g = optimize(trace(f, (8,), (8,), (8,)))
    assert format_graph(g) == "\n".join(
        [
            "{ lambda a:f32[8] b:f32[8] c:f32[8] ;",
            "    d:f32[] = const 8.",
            "    e:f32[8] = mul a b",
            "    f:f32[8] = add e c",
            "    g:f32[8] = tanh f",
            "    h:f32[8] = mul g g",
            "    i:f32[] = reduce_sum[axes=(0,)] h",
            "    j:f32[] = div i d",
            "  in (j) }",
        ]
    )


def test_verify_accepts_optimized_graphs():
    def f(x, y):
        return jg.reduce_sum(jg.softmax(x @ y), axis=0)

    verify(optimize(trace(f, (4, 3), (3, 5))))


def test_fusion_w2_is_one_loop_with_value_and_both_gradients():
    """loss = mean(tanh(x*w + b)**2): the value and dw, db come out of ONE pass."""
    t = Trace("w2")
    with tracing(t):
        x, w, b = (t.new_input(AVal((64,), F32)) for _ in range(3))
        with jg.GradientTape() as tape:
            tape.watch([w, b])
            loss = jg.reduce_mean(jg.tanh(x * w + b) ** 2)
        dw, db = tape.gradient(loss, [w, b])
        graph = optimize(t.to_graph([loss, dw, db]))
    schedule = fuse(graph)
    loops = [s for s in schedule.steps if isinstance(s, LoopGroup) and s.space == (64,)]
    assert len(loops) == 1
    assert "tanh" in loops[0].op_names() and "reduce_sum" in loops[0].op_names()
    assert set(loops[0].inputs) >= set(graph.inputs)


def test_fusion_keeps_groups_convex():
    """b depends on a matmul of a; a and b cannot share a loop."""

    def f(x, m):
        a = jg.exp(x)
        y = a @ m
        return a + y

    schedule = fuse(optimize(trace(f, (3, 3), (3, 3))))
    kinds = [type(s).__name__ for s in schedule.steps]
    assert kinds == ["LoopGroup", "OpStep", "LoopGroup"]
