"""The numpy executor of optimised graphs (jitgrad/ir/execute.py), the fallback of tiered
execution: its outputs equal the reference interpreter's exactly in dtype and shape and to
rounding in value, and the compiled kernel's; they are fresh arrays (never an input, a
constant or an array a later call writes); threads may share one executor; an op that fails
names itself and the user's line."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jitgrad as jg
from jitgrad.core import pytree
from jitgrad.core.aval import AVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir import execute
from jitgrad.ir.execute import make_executor
from jitgrad.ir.interpret import eval_graph
from jitgrad.ops.index import check_index

HERE = "test_execute.py"
rng = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def f64(*shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# Graphs: (function, arguments, wrt); wrt None traces `jit(fn)`, else `jit_grad(fn, wrt=wrt)`.


def mlp_loss(p, x, y):
    h = jg.relu(x @ p["w1"] + p["b1"])
    z = h @ p["w2"] + p["b2"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def softmax_losses(z, t):
    dense = jg.reduce_sum(jg.softmax_cross_entropy_with_logits(t, z))
    return dense + jg.reduce_sum(jg.softmax(z) * jg.log_softmax(z, axis=0)) * 0.5


def indexing(x, i, j):
    return jg.reduce_sum(x[i] * 2.0) + jg.reduce_sum(jg.tanh(x[i, j])) + jg.reduce_sum(x[-1])


def embedding(table, ids, w):
    return jg.reduce_sum(jg.tanh(jg.gather(table, ids)) * w)


def lookups(x, i, idx2):
    return (
        jg.gather(x, i, axis=1),
        jg.gather_nd(x, idx2),
        jg.take(x, i),
        jg.one_hot(i, 4, on_value=2.0, off_value=-1.0),
    )


def reductions(x):
    return (
        jg.reduce_sum(x, axis=(0, 2), keepdims=True),
        jg.reduce_max(x, axis=1),
        jg.reduce_min(x, axis=-1, keepdims=True),
        jg.reduce_prod(x, axis=0),
        jg.reduce_mean(x),
        jg.argmax(x, axis=1),
        jg.argmin(x, axis=2, output_type=jg.int32),
        jg.reduce_variance(x, axis=(1, 2)),
        jg.reduce_logsumexp(x, axis=0),
    )


def reduction_loss(x):
    return (
        jg.reduce_sum(jg.reduce_max(x, axis=1) ** 2)
        + jg.reduce_sum(jg.reduce_prod(x, axis=0))
        + jg.reduce_sum(jg.reduce_logsumexp(x, axis=(0, 2)))
        + jg.reduce_std(x)
    )


def broadcasting(a, b, c):
    return jg.reduce_sum((a + b) * c - a / (b * b + 1.0))


def integers(a, b, u, v):
    return (
        a * b + a,
        -a,
        jg.abs(a),
        jg.floordiv(a, b),
        jg.mod(a, b),
        jg.maximum(a, b),
        jg.reduce_sum(a * b),
        u - v,
        u * v + 7,
        jg.cast(a, jg.uint8),
        jg.cast(u, jg.int8) // 3,
        a < b,
    )


def comparisons(x, y):
    return (
        jg.where(x > y, x, y * 2.0),
        jg.logical_and(x > 0, y < 0.5),
        jg.logical_or(jg.equal(x, y), jg.logical_not(x >= y)),
        jg.maximum(x, y),
        jg.minimum(x, 0.25),
        jg.clip_by_value(x, -0.5, 0.5),
        jg.cast(x >= y, jg.float32),
        jg.not_equal(x, y),
    )


def matmuls(a, b, v):
    return jg.matmul(a, b), jg.matmul(a[0], v), jg.matmul(v, b[1]), jg.matmul(v, v)


def batched_matmul_loss(a, b):
    return jg.reduce_sum(jg.matmul(a, b) ** 2) + jg.reduce_sum(jg.matmul(a, b, transpose_b=True))


def shapes(x):
    left, right = jg.split(x, 2, axis=1)
    return (
        jg.reshape(x, (2, 6)),
        jg.transpose(x),
        jg.concat([x, x * 2.0], axis=0),
        x[1:, ::2],
        x[::-1, 1],
        jg.pad(x, [[1, 0], [0, 2]], constant_values=3.0),
        jg.stack([x, -x], axis=1),
        jg.tile(x, [2, 1]),
        left * right,
        jg.expand_dims(x, 0),
    )


def shapes_loss(x):
    y = jg.concat([x[1:, ::2], jg.transpose(x)[:2, :2]], axis=0)
    z = jg.pad(jg.reshape(x, (6, 2)), [[0, 1], [1, 1]])
    return jg.reduce_sum(y * y) + jg.reduce_sum(jg.sin(z)) + jg.reduce_sum(jg.stack([x, x]) ** 3)


def scalars(x, y):
    return (
        x * y + jg.sin(x) / (y + 2.0),
        jg.exp(x) - jg.log1p(y * y),
        jg.maximum(x, y),
        jg.where(x > y, x, y),
        x**2.0,
        jg.sigmoid(x),
        jg.cast(x * 10.0, jg.int32),
        jg.erf(y),
        jg.reduce_sum(x),
        x > y,
    )


def scalar_loss(x, y):
    return jg.tanh(x * y) + jg.sqrt(x * x + 1.0) * jg.softplus(y) - jg.cos(y) / 3.0


def weak_constants(x):
    return (
        2.0 * x + 1.0 / (x + 3.0) - jg.abs(x) ** 2.5,
        jg.softplus(x * 0.5) + jg.tanh(x) * 3,
        jg.reduce_mean(x) * 0.1,
        jg.gelu(x) + jg.elu(x) + jg.selu(x),
        jg.log_softmax(x),
        jg.sqrt(jg.abs(x)) - 1e-3,
        jg.round(x * 4.0) / 4,
    )


def weak_constants_loss(x):
    return jg.reduce_sum(jg.softplus(x * 0.5) + jg.gelu(x, approximate=True) * 0.3 - x**3.0)


def passthrough(x):
    """Outputs that are an input, a constant, a repeat, a view and an input returned as is."""
    y = x * 2.0
    c = jg.constant([1.0, 2.0, 3.0])
    return x, c, y, y, jg.reshape(y, (3, 1)), c * 1.0


def views_of_temporaries(x):
    """`t` dies at `sin` while its views are still read: `sin` must not write into `t`."""
    t = jg.exp(x)
    r = jg.transpose(jg.reshape(t, (3, 2)))
    u = jg.sin(t)
    return jg.reshape(u, (2, 3)) * r + 1.0


def no_equations(x):
    return x, jg.constant(2.0) * 3.0


def no_inputs():
    return jg.constant([1.0, 2.0]) * 3.0


def checked(i):
    return check_index(i, (5,), "checked"), i


ARGS_MLP = (
    {"w1": f32(4, 5), "b1": f32(5), "w2": f32(5, 3), "b2": f32(3)},
    f32(6, 4),
    np.array([0, 2, 1, 1, 0, 2], np.int32),
)
I8 = np.array([[100, -128, 7], [-3, 127, 50]], np.int8)
CASES = {
    "mlp value+grad": (mlp_loss, ARGS_MLP, 0),
    "softmax cross-entropy": (softmax_losses, (f32(3, 5), np.abs(f32(3, 5))), 0),
    "indexing": (indexing, (f32(4, 3), np.array([3, 0, -1]), np.array([1, 2, 0])), 0),
    "embedding": (embedding, (f32(5, 3), np.array([[0, 4, 4], [1, 0, 2]]), f32(2, 3, 3)), (0, 2)),
    "lookups": (
        lookups,
        (f32(3, 4), np.array([2, 0, 3], np.int32), np.array([[0, 1], [2, 3]], np.int64)),
        None,
    ),
    "reductions": (reductions, (f32(2, 3, 4),), None),
    "reductions grad": (reduction_loss, (f64(2, 3, 4),), 0),
    "broadcasting": (broadcasting, (f32(3, 1), f32(4), np.float32(0.7)), (0, 1, 2)),
    "integers": (
        integers,
        (I8, np.array([[3, 5, -2], [9, -4, 11]], np.int8), I8.astype(np.uint8), np.uint8([[9]])),
        None,
    ),
    "comparisons": (comparisons, (f32(3, 4), f32(3, 4)), None),
    "matmuls": (matmuls, (f32(2, 3, 4), f32(2, 4, 5), f32(4)), None),
    "batched matmul grad": (batched_matmul_loss, (f32(2, 3, 4), f32(2, 4, 4)), (0, 1)),
    "shapes": (shapes, (f32(3, 4),), None),
    "shapes grad": (shapes_loss, (f64(3, 4),), 0),
    "0-d float32": (scalars, (np.float32(0.3), np.float32(-1.25)), None),
    "0-d float64": (scalars, (np.float64(0.8), np.float64(0.5)), None),
    "0-d grad": (scalar_loss, (np.float32(0.3), np.float32(-1.25)), (0, 1)),
    "weak constants": (weak_constants, (f32(7),), None),
    "weak constants grad": (weak_constants_loss, (f32(2, 3),), 0),
    "passthrough": (passthrough, (f32(3),), None),
    "checked": (checked, (np.array([4, 0, 1]),), None),
    "views of temporaries": (views_of_temporaries, (f32(6),), None),
    "no equations": (no_equations, (f32(2),), None),
    "no inputs": (no_inputs, (), None),
}


def traced(fn, args, wrt):
    """(jitted function, its optimised graph for `args`, the graph's inputs)."""
    jf = jg.jit(fn) if wrt is None else jg.jit_grad(fn, wrt=wrt)
    graph = jf.lower(*args)._compiled.graph
    inputs = [leaf for a in args for leaf in pytree.flatten(a)[0]]
    assert len(inputs) == len(graph.inputs)
    return jf, graph, inputs


def assert_same(got, expected, rtol=None):
    """Equal dtypes and shapes, values to rounding (exactly for integers and bools)."""
    assert len(got) == len(expected)
    for k, (a, b) in enumerate(zip(got, expected)):
        b = np.asarray(b)
        assert type(a) is np.ndarray, (k, type(a))
        assert (a.dtype, a.shape) == (b.dtype, b.shape), k
        if a.dtype.kind == "f":
            tol = rtol or (1e-6 if a.dtype == np.float32 else 1e-12)
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"output {k}")


@pytest.fixture(autouse=True, params=["straight-line", "loop"])
def runner(request, monkeypatch):
    """Every test runs with both runners: small programs as straight-line Python, long ones
    in a loop over the steps (here: every program)."""
    if request.param == "loop":
        monkeypatch.setattr(execute, "MAX_STRAIGHT_LINE", 0)
    return request.param


@pytest.fixture
def blocking(monkeypatch):
    """The jitted call runs the kernel, not the (executor-based) fallback."""
    monkeypatch.setattr(jg.config, "compile", "blocking")


@pytest.mark.parametrize("case", CASES)
def test_executor_equals_the_interpreter_and_the_kernel(case, blocking):
    fn, args, wrt = CASES[case]
    jf, graph, inputs = traced(fn, args, wrt)
    got = make_executor(graph, case)(inputs)
    expected = eval_graph(graph, *inputs)
    for v, x in zip(graph.outputs, got):
        assert (x.dtype, x.shape) == (v.aval.dtype, v.aval.shape)
    assert_same(got, expected)
    kernel = [np.asarray(x) for x in pytree.flatten(jf(*args))[0]]
    assert jf.cache_info().states == ("compiled",)
    assert_same(got, kernel, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_impls_return_their_avals_dtype(case):
    """What the executor relies on to skip eval_graph's `np.asarray(value, dtype)` per op:
    every impl returns an array or numpy scalar of its aval's dtype and shape, also when its
    0-d inputs are numpy scalars (what ufuncs return for 0-d results)."""
    fn, args, wrt = CASES[case]
    _, graph, inputs = traced(fn, args, wrt)
    env = dict(graph.consts)
    env.update((v, np.asarray(a, v.aval.dtype)) for v, a in zip(graph.inputs, inputs))
    for e in graph.eqns:
        value = e.op.impl(*[env[v] for v in e.inputs], **e.params)
        assert isinstance(value, (np.ndarray, np.generic)), (e.op.name, type(value))
        assert (value.dtype, value.shape) == (e.out.aval.dtype, e.out.aval.shape), e.op.name
        env[e.out] = value


def _arity(op) -> int:
    if isinstance(op.impl, np.ufunc):
        return op.impl.nin
    return 3 if op.name == "select" else 1


@pytest.mark.parametrize("op", [op for op in REGISTRY.values() if op.kind == "elementwise"])
def test_elementwise_impls_keep_the_dtype_on_scalars_and_arrays(op):
    """Every elementwise impl, on every dtype its shape rule accepts, 0-d arrays, numpy scalars
    and 1-d arrays alike (numpy's 0-d results are scalars, which promote by other rules)."""
    for dtype in ("float32", "float64", "int8", "uint8", "int32", "int64", "bool"):
        for shape in ((), (3,)):
            xs = [np.full(shape, 2, dtype) for _ in range(_arity(op))]
            if op.name == "select":
                xs[0] = xs[0].astype(bool)
            params = {"dtype": np.dtype("float32")} if op.name == "cast" else {}
            try:
                aval = op.abstract_eval(*[AVal(x.shape, x.dtype) for x in xs], **params)
            except (TypeError, ValueError):
                continue  # a dtype the op refuses
            operands = [xs, [x[()] for x in xs]] if shape == () else [xs]
            with np.errstate(all="ignore"):
                for values in operands:
                    out = op.impl(*values, **params)
                    assert (out.dtype, out.shape) == (aval.dtype, aval.shape), (dtype, shape)


def test_0d_inputs_may_be_python_numbers_numpy_scalars_or_arrays():
    _, graph, _ = traced(scalars, (np.float32(0.3), np.float32(-1.25)), None)
    run = make_executor(graph)
    expected = eval_graph(graph, 0.3, -1.25)
    for x, y in [(0.3, -1.25), (np.float32(0.3), np.float64(-1.25)), (np.array(0.3), -1.25)]:
        out = run([x, y])
        assert_same(out, expected)
        assert all(type(o) is np.ndarray and o.ndim == 0 for o in out)


# ---------------------------------------------------------------------------------------------
# Random shapes


def elementwise_reduce(x, w):
    return jg.reduce_sum(jg.tanh(x * w + 1.5) ** 2) + jg.reduce_max(jg.exp(x) - w)


@settings(max_examples=30, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5),
    seed=st.integers(0, 2**16),
    keepdims=st.booleans(),
    data=st.data(),
)
def test_random_shapes(shape, seed, keepdims, data):
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(np.float32)
    w = r.standard_normal(shape[1:]).astype(np.float32)
    axes = data.draw(st.lists(st.integers(0, max(len(shape) - 1, 0)), unique=True, max_size=3))
    axes = tuple(axes) if shape else None

    def moments(x, w):
        centered = x - jg.reduce_mean(x, axis=axes, keepdims=True)
        return jg.reduce_sum(centered * centered * w, axis=axes, keepdims=keepdims), x * w

    for fn, wrt in [(elementwise_reduce, (0, 1)), (moments, None)]:
        _, graph, inputs = traced(fn, (x, w), wrt)
        got = make_executor(graph)(inputs)
        assert_same(got, eval_graph(graph, *inputs))
    expected = np.sum(np.tanh(x * w + np.float32(1.5)) ** 2) + np.max(np.exp(x) - w)
    _, graph, inputs = traced(elementwise_reduce, (x, w), None)
    np.testing.assert_allclose(make_executor(graph)(inputs)[0], expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Outputs are fresh arrays


def _w2(x, w, b):
    return jg.reduce_mean(jg.tanh(x * w + b) ** 2)


def test_results_are_not_overwritten_by_later_calls():
    args = (f32(1000), f32(1000), f32(1000))
    _, graph, inputs = traced(_w2, args, (1, 2))
    run = make_executor(graph)
    expected = eval_graph(graph, *inputs)
    first = run(inputs)
    kept = [a.copy() for a in first]
    for a in first:
        a[...] = 99
    second = run(inputs)
    assert_same(second, expected)
    assert all((a == 99).all() for a in first)
    other = run([x + 1 for x in inputs])
    assert_same(second, expected)
    assert not any(np.shares_memory(a, b) for a in other for b in second)
    assert_same(first, [np.full_like(k, 99) for k in kept])


def test_outputs_share_no_memory_with_inputs_constants_or_each_other():
    cases = [(passthrough, (f32(3),)), (checked, (np.array([4, 0, 1]),)), (no_inputs, ())]
    for fn, args in cases:
        _, graph, inputs = traced(fn, args, None)
        consts = {v: c.copy() for v, c in graph.consts.items()}
        before = [np.array(x) for x in inputs]
        out = make_executor(graph)(inputs)
        arrays = [*out, *inputs, *graph.consts.values()]
        for k, a in enumerate(out):
            assert a.flags.owndata and a.flags.writeable
            assert not any(np.shares_memory(a, b) for b in arrays[k + 1 :])
            a[...] = 7
        assert_same(inputs, before)
        assert all(np.array_equal(graph.consts[v], c) for v, c in consts.items())
        assert_same(make_executor(graph)(inputs), eval_graph(graph, *inputs))


def test_elementwise_results_reuse_dead_temporaries_without_touching_inputs():
    """The W2 graph writes most of its elementwise results into dead temporaries; inputs
    (here all one array) are never written."""
    x = f32(64)
    _, graph, _ = traced(_w2, (x, x, x), (1, 2))
    run = make_executor(graph)
    assert run.listing().count("out=") >= 3
    saved = x.copy()
    assert_same(run([x, x, x]), eval_graph(graph, saved, saved, saved))
    np.testing.assert_array_equal(x, saved)


def test_threads_share_an_executor():
    args = (f32(20_000), f32(20_000), f32(20_000))
    _, graph, _ = traced(_w2, args, (1, 2))
    run = make_executor(graph)
    inputs = [[f32(20_000) for _ in range(3)] for _ in range(2)]
    expected = [eval_graph(graph, *xs) for xs in inputs]
    start = threading.Barrier(2)
    failures = []

    def work(k):
        start.wait()
        for _ in range(50):
            out = run(inputs[k])
            try:
                assert_same(out, expected[k])
            except AssertionError as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


# ---------------------------------------------------------------------------------------------
# Errors


def take_columns(x, i):
    return jg.gather(x, i, axis=1)


def labelled_loss(z, y):
    return jg.reduce_sum(jg.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def _line_of(fn, text: str) -> int:
    source, first = inspect.getsourcelines(fn)
    return first + next(k for k, line in enumerate(source) if text in line)


def test_out_of_bounds_gather_names_the_op_and_the_users_line():
    x = f32(2, 3)
    _, graph, _ = traced(take_columns, (x, np.array([0, 2])), None)
    run = make_executor(graph)
    with pytest.raises(IndexError) as eager:
        take_columns(x, np.array([0, 3]))
    with pytest.raises(type(eager.value)) as raised:
        run([x, np.array([0, 3])])
    message = str(raised.value)
    line = _line_of(take_columns, "jg.gather")
    assert message.startswith("gather: index 3 is out of bounds for axis 1 of size 3")
    assert message.endswith(f"({HERE}:{line})")
    assert message.count(HERE) == 1  # not the line that called the executor


def test_out_of_range_label_names_the_public_op_and_the_users_line():
    z = f32(2, 3)
    _, graph, _ = traced(labelled_loss, (z, np.array([0, 2])), 0)
    with pytest.raises(IndexError) as raised:
        make_executor(graph)([z, np.array([0, 3])])
    line = _line_of(labelled_loss, "sparse_softmax")
    assert str(raised.value) == (
        "sparse_softmax_cross_entropy_with_logits: label 3 is outside the valid range [0, 3) "
        f"({HERE}:{line})"
    )
