"""Derivative checks for every case of the op table (tests/ops/cases.py), in the eager tape
and through graph autodiff + the reference interpreter; the registry tests that keep the table
complete; and tests of the checker itself (jitgrad.test.check_grads)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.autodiff.vjp import joint_graph
from jitgrad.core.aval import AVal, TupleAVal
from jitgrad.core.opdef import REGISTRY, Reduction, defop
from jitgrad.core.tensor import Tensor
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ir.verify import verify
from jitgrad.testing import check_grads, graph_vjp_fn

from .cases import CASES, Draw, examples

DIFFERENTIABLE_CASES = [c for c in CASES if c.order > 0]
# Empty axes and extreme values evaluate log(0) or 0/0 on the way to empty or infinite
# results, and numpy warns about it as it would for the same arrays.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _check(case, data, grad_fn=None):
    d = Draw(data)
    args, params = case.draw(d)

    def f(*xs):
        return case.fn(*xs, **params)

    f.__name__ = case.name
    check_grads(
        f,
        args,
        order=case.order,
        eps=case.eps,
        rtol=case.rtol,
        atol=case.atol,
        seed=d.seed,
        grad_fn=grad_fn,
    )


@pytest.mark.parametrize("case", DIFFERENTIABLE_CASES, ids=str)
@settings(max_examples=examples(15), deadline=None, suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_gradients_eager_tape(case, data):
    _check(case, data)


@pytest.mark.parametrize("case", DIFFERENTIABLE_CASES, ids=str)
@settings(max_examples=examples(5), deadline=None, suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_gradients_graph_autodiff(case, data):
    _check(case, data, grad_fn=graph_vjp_fn)


# ---------------------------------------------------------------------------------------------
# The registry: every primitive is in the table, and its shape rule matches its impl


def test_every_differentiable_primitive_has_a_gradient_case():
    covered = {p for c in DIFFERENTIABLE_CASES for p in c.prims}
    missing = sorted(n for n, op in REGISTRY.items() if op.differentiable and n not in covered)
    assert not missing, f"differentiable primitives without a gradient case: {missing}"


def test_every_primitive_has_a_case():
    covered = {p for c in CASES for p in c.prims}
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, f"primitives without a case: {missing}"


@pytest.mark.parametrize(
    "kind, reduction, message",
    [
        ("shape", Reduction("add", lambda dtype: 0), "needs kind 'reduce'"),
        ("reduce", Reduction("xor", lambda dtype: 0), "unknown reduction combine 'xor'"),
        ("reduce", Reduction("add", 0), "identity is a rule"),
    ],
)
def test_defop_refuses_a_malformed_reduction_facet(kind, reduction, message):
    with pytest.raises(ValueError, match=message):
        defop("reduce_bad", abstract_eval=abs, impl=abs, vjp=abs, kind=kind, reduction=reduction)
    assert "reduce_bad" not in REGISTRY


def _trace(fn, args):
    trace = Trace("case")
    with tracing(trace):
        xs = [trace.new_input(AVal(a.shape, a.dtype)) for a in args]
        out = fn(*xs)
        leaves = out if isinstance(out, (list, tuple)) else [out]
        return verify(trace.to_graph(list(leaves)))


def _cast_floats(args, dtype):
    return [a.astype(dtype) if a.dtype.kind == "f" else a for a in args]


def _interpret_checking_impls(graph, args):
    """Run `graph` with the ops' eager impls, asserting that each raw impl output has exactly
    the shape and dtype that the op's shape rule gives for the actual inputs."""
    env = dict(graph.consts)
    env.update(zip(graph.inputs, args))
    for e in graph.eqns:
        ins = [env[v] for v in e.inputs]
        rule = e.op.abstract_eval(*[_aval(x) for x in ins], **e.params)
        raw = e.op.impl(*ins, **e.params)
        if isinstance(rule, TupleAVal):  # control flow: a tuple of arrays
            raw = tuple(np.asarray(x) for x in raw)
            pairs = list(zip(raw, rule.avals))
            assert len(raw) == len(rule.avals)
        else:
            raw = np.asarray(raw)
            pairs = [(raw, rule)]
        for x, aval in pairs:
            assert (x.shape, x.dtype) == (aval.shape, aval.dtype), (
                f"{e.op.name}: impl gives {x.dtype}{list(x.shape)}, the shape rule "
                f"{aval.dtype}{list(aval.shape)}"
            )
        env[e.out] = raw
    return [env[v] for v in graph.outputs]


def _aval(x):
    if isinstance(x, tuple):
        return TupleAVal(tuple(_aval(a) for a in x))
    return AVal(np.shape(x), np.asarray(x).dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
@settings(max_examples=examples(3), deadline=None, suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_case_binds_its_primitives_and_impls_match_shape_rules(case, dtype, data):
    """Trace the case: it binds the primitives it claims. Run every equation's eager impl on
    real values, in the forward graph and in its gradient graph (so the VJP rules' ops too):
    the raw output has exactly the shape and dtype of the shape rule. The interpreted graph
    gives the eager values."""
    args, params = case.draw(Draw(data))
    args = _cast_floats([np.asarray(a) for a in args], dtype)
    graph = _trace(lambda *xs: case.fn(*xs, **params), args)
    bound = {e.op.name for e in graph.eqns}
    assert set(case.prims) <= bound, f"{case.name} did not bind {set(case.prims) - bound}"
    outs = _interpret_checking_impls(graph, args)
    eager = case.fn(*[Tensor(a) for a in args], **params)
    eager = eager if isinstance(eager, (list, tuple)) else [eager]
    for got, want in zip(outs, eager):
        np.testing.assert_array_equal(got, np.asarray(want))
        assert got.dtype == want.dtype
    wrt = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
    if case.order > 0 and outs and outs[0].dtype.kind == "f" and wrt:
        joint, connected = joint_graph(graph, graph.outputs[:1], [graph.inputs[i] for i in wrt])
        grads = _interpret_checking_impls(verify(joint), args)[len(graph.outputs) :]
        assert [(g.shape, g.dtype) for g in grads] == [
            (args[i].shape, args[i].dtype) for i, c in zip(wrt, connected) if c
        ]


# ---------------------------------------------------------------------------------------------
# The checker itself


@jg.custom_gradient
def _sin_with_wrong_gradient(x):
    return jg.sin(x), lambda g: g * jg.cos(x) * 1.001


@jg.custom_gradient
def _cube_with_wrong_second_derivative(x):
    # The first derivative 3 x^2 is right at every point, but it is computed as 3 x^2 + (x - c)^2
    # with c = x's value frozen: correct value, wrong slope, so only order 2 sees it.
    c = jg.stop_gradient(x)
    return x * x * x, lambda g: g * (3.0 * x * x + (x - c) * (x - c) + (x - c) * 0.5)


def test_check_grads_rejects_a_wrong_first_derivative():
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_grads(_sin_with_wrong_gradient, [np.array([0.3, 1.2])], order=1)


def test_check_grads_rejects_a_wrong_second_derivative():
    x = np.array([0.3, -1.2, 2.0])
    check_grads(_cube_with_wrong_second_derivative, [x], order=1)
    with pytest.raises(AssertionError, match=r"vjp\("):
        check_grads(_cube_with_wrong_second_derivative, [x], order=2)


def test_check_grads_passes_integer_arguments_unchanged():
    """Regression: integer arguments (indices) used to be cast to float64 with the rest."""
    seen = []

    def f(x, i):
        seen.append(i.dtype)
        return jg.gather(x, i) ** 2

    check_grads(f, [np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2], np.int32)], order=2)
    assert set(seen) == {np.dtype(np.int32)}


def test_check_grads_passes_0d_arguments_through_identity_functions():
    """Regression: x + eps v of 0-d arrays is a numpy scalar, not an array, and a function
    returning its argument leaked it into a Tensor."""
    check_grads(lambda x: x, [np.array(2.0)], order=2)
    check_grads(lambda x: jg.reduce_sum(x, axis=()), [np.array(-1.0)], order=2)


def test_check_grads_finite_differences_are_fourth_order_accurate():
    """Regression: plain central differences erred by h^2 f^(4) / 6, ~3e-7 relative for
    arcsin's second derivative at 0.9 (where its fourth derivative is ~4000): enough to fail
    larger cases at the default tolerance. Extrapolated differences stay below even 1e-9."""
    x = np.array([0.9, -0.9, 0.85])
    check_grads(jg.math.asin, [x], order=2, rtol=1e-9, atol=1e-9)


def test_check_grads_runs_the_rules_op_by_op_without_compiling():
    """Regression: the tape compiles the backward of a structure it sees twice, and the
    finite differences of order 2 call the same gradient four times: every case waited for
    Numba. The eager mode now never reaches the compiled backward kernels."""
    from jitgrad.compiler import tape_backward

    before = dict(tape_backward.stats)
    x = np.array([[0.3, -1.2], [2.0, 0.5]])
    for _ in range(3):
        check_grads(lambda t: jg.tanh(t) * t, [x], order=2)
    jg.test.compute_gradient(lambda t: t * t, [x])
    assert tape_backward.stats["compiles"] == before["compiles"]
    assert tape_backward.stats["compiled"] == before["compiled"]


def test_check_grads_catches_a_gradient_of_the_wrong_shape():
    def bad_grad_fn(f, args, u, argnums):
        return lambda *xs: [jg.reduce_sum(xs[0])]

    with pytest.raises(AssertionError, match="argument 0"):
        check_grads(jg.sin, [np.ones(3)], order=1, grad_fn=bad_grad_fn)


def test_check_grads_handles_empty_arrays_and_integer_outputs():
    check_grads(lambda x: [jg.exp(x), jg.argmax(jg.concat([x, x], 0))], [np.ones((2, 0))], order=2)


def test_compute_gradient_has_tensorflows_layout():
    """tf.test.compute_gradient: y.size rows, x.size columns."""
    x = np.array([1.0, 2.0, 3.0])
    theoretical, numerical = jg.test.compute_gradient(lambda x: x[:2] * x[1:], [x])
    want = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 2.0]])
    np.testing.assert_allclose(theoretical[0], want)
    np.testing.assert_allclose(numerical[0], want, rtol=1e-8)
