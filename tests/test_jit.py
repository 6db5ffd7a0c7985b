"""jit / jit_grad: the decorators, signatures, retracing, Variables, errors and introspection."""

import collections
import math
import warnings

import numpy as np
import pytest

import jitgrad as jg


def seed_f(w1, w2):
    return 3 * w1**2 + 2 * w1 * w2


seed_value_and_grads = jg.jit_grad(seed_f, wrt=(0, 1))


def test_jit_grad_seed_function():
    value, (g1, g2) = seed_value_and_grads(5.0, 3.0)
    assert float(value) == 105.0
    assert (float(g1), float(g2)) == (36.0, 10.0)
    assert isinstance(g1, jg.Tensor) and g1.dtype == jg.float32


def test_jit_grad_as_bare_decorator_and_by_name():
    @jg.jit_grad
    def f(x):
        return jg.reduce_sum(x * x)

    @jg.jit_grad(wrt="w2")
    def g(w1, w2):
        return seed_f(w1, w2)

    value, grad = f(np.array([1.0, 2.0], np.float32))
    assert float(value) == 5.0
    np.testing.assert_array_equal(np.asarray(grad), [2.0, 4.0])
    assert float(g(5.0, 3.0)[1]) == 10.0


def test_jit_grad_nested_dict_argument_mirrors_structure():
    @jg.jit_grad
    def loss(params, x):
        return jg.reduce_sum((x @ params["w"] + params["b"]) ** 2)

    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 2)), "b": np.zeros(2)}
    x = rng.standard_normal((4, 3))
    value, grads = loss(params, x)
    eager_value, eager_grads = jg.value_and_grad(
        lambda p, x: jg.reduce_sum((x @ p["w"] + p["b"]) ** 2)
    )(params, x)
    assert set(grads) == {"w", "b"}
    np.testing.assert_allclose(float(value), float(eager_value), rtol=1e-12)
    for k in grads:
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(eager_grads[k]), rtol=1e-9)


def test_jit_grad_has_aux():
    @jg.jit_grad(has_aux=True)
    def f(x):
        y = jg.reduce_sum(jg.sin(x))
        return y, {"cos": jg.cos(x)}

    x = np.linspace(0, 1, 5)
    (value, aux), grad = f(x)
    np.testing.assert_allclose(np.asarray(aux["cos"]), np.cos(x))
    np.testing.assert_allclose(np.asarray(grad), np.cos(x))
    assert float(value) == pytest.approx(np.sin(x).sum())


def test_jit_returns_structure_and_zero_copy_tensors():
    @jg.jit
    def f(x):
        return {"double": x * 2.0, "parts": (x + 1.0, jg.reduce_sum(x))}

    out = f(np.arange(3.0))
    assert set(out) == {"double", "parts"}
    np.testing.assert_array_equal(out["double"].numpy(), [0.0, 2.0, 4.0])
    assert float(out["parts"][1]) == 3.0
    assert np.shares_memory(np.asarray(out["double"]), out["double"].numpy())


def test_static_argnums_python_control_flow():
    """Seed 004: the loop runs over a static value."""

    def f(x, y):
        output = 1
        for _ in range(int(y)):
            output = jg.multiply(output, x)
        return output

    g = jg.jit_grad(f, static_argnums=1)
    assert [float(v) for v in g(3.0, 2)] == [9.0, 6.0]
    assert [float(v) for v in g(4.0, 3)] == [64.0, 48.0]
    assert g.cache_info().misses == 2


def test_signature_selects_versions_and_counts_hits():
    f = jg.jit(lambda x: (x[0] if isinstance(x, list) else x) + 1.0)
    f(np.zeros(3, np.float32))
    f(np.ones(3, np.float32))
    f(np.zeros(4, np.float32))
    f(np.zeros(3, np.float64))
    f([np.zeros(3, np.float32)])
    info = f.cache_info()
    assert (info.hits, info.misses, info.versions) == (1, 4, 4)
    assert info.compile_seconds > 0


def test_retracing_warns_and_names_the_changing_argument():
    def power(x, k):
        for _ in range(k):  # a static k changes the graph's structure
            x = x * x
        return x

    f = jg.jit(power, static_argnums=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(1, 10):
            f(np.zeros(3, np.float32), k)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "power" in messages[0] and "k" in messages[0] and "x" not in messages[0]


def test_new_shapes_share_one_kernel_and_do_not_warn():
    def scale(factor, x):
        return jg.reduce_mean(x * factor)

    f = jg.jit(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(2, 12):  # (size 1 is a structure of its own: it broadcasts)
            assert float(f(np.float32(2.0), np.ones(n, np.float32))) == 2.0
    kernels = {id(c.kernel) for c in f._versions.values()}
    assert len(kernels) == 2  # the first shape's own kernel, then one for every other shape


def test_variables_are_read_at_each_call_and_closure_arrays_are_constants():
    w = jg.Variable(2.0)
    frozen = np.array(10.0, np.float32)

    @jg.jit
    def f(x):
        return x * w + frozen

    assert float(f(1.0)) == 12.0
    w.assign(3.0)
    frozen[...] = 100.0  # captured at trace time: no effect
    assert float(f(1.0)) == 13.0


def test_jit_grad_wrt_variables():
    w = jg.Variable(np.array([1.0, 2.0]), name="w")
    b = jg.Variable(0.5, name="b", dtype=jg.float64)
    fixed = jg.Variable(3.0, trainable=False, dtype=jg.float64)

    @jg.jit_grad(wrt="variables")
    def loss(x):
        return jg.reduce_sum(x * w + b) * fixed

    value, (gw, gb) = loss(np.array([1.0, 1.0]))
    assert float(value) == (1 + 2 + 1) * 3
    np.testing.assert_array_equal(np.asarray(gw), [3.0, 3.0])
    assert float(gb) == 6.0


def test_traced_value_in_python_control_flow_names_function_and_line():
    def bad(x):
        if x > 0:  # data-dependent Python control flow
            return x
        return -x

    f = jg.jit(bad)
    with pytest.raises(jg.TracerError) as info:
        f(1.0)
    message = str(info.value)
    assert "bool()" in message and "bad" in message
    assert "test_jit.py:" in message
    assert "static_argnums" in message and "jitgrad.where" in message


@pytest.mark.parametrize("convert", [float, int, lambda t: t.numpy()])
def test_concrete_conversions_of_traced_values_raise(convert):
    f = jg.jit(lambda x: convert(x))
    with pytest.raises(jg.TracerError, match="while tracing"):
        f(1.0)


def test_leaked_tracer_is_reported():
    leaked = []

    @jg.jit
    def f(x):
        leaked.append(x)
        return x * 2.0

    f(1.0)
    with pytest.raises(jg.LeakedTracerError, match="outside the jit trace"):
        jg.exp(leaked[0])


def test_higher_derivatives_compose_with_jit():
    f = lambda x: jg.reduce_sum(jg.sin(x) ** 2)  # noqa: E731
    x = np.linspace(-2 * math.pi, 2 * math.pi, 7)
    third = jg.jit(jg.grad(jg.grad(jg.grad(f))))
    np.testing.assert_allclose(np.asarray(third(x)), -4 * np.sin(2 * x), atol=1e-12)
    hess = jg.jit(jg.hessian(lambda v: jg.reduce_sum(v**3)))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(hess), np.diag([6.0, 12.0]))
    lowered = jg.jit(jg.grad(jg.grad(jg.grad(f)))).lower(x)
    assert lowered.source.count("def kernel") == 1


def test_jit_grad_equals_jit_of_value_and_grad():
    f = lambda x: jg.reduce_mean(jg.tanh(x) * x)  # noqa: E731
    x = np.linspace(-1, 1, 9)
    a = jg.jit_grad(f)(x)
    b = jg.jit(jg.value_and_grad(f))(x)
    assert float(a[0]) == float(b[0])
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_lower_exposes_graph_source_kernels_and_dot():
    @jg.jit_grad(wrt=(1, 2))
    def w2(x, w, b):
        return jg.reduce_mean(jg.tanh(x * w + b) ** 2)

    args = [np.ones(16, np.float32)] * 3
    lowered = w2.lower(*args)
    assert "tanh" in lowered.graph and "reduce_sum" in lowered.graph
    assert "@numba.njit" in lowered.source and "def kernel" in lowered.source
    assert "# fused" in lowered.source
    loops = [names for space, names in lowered.kernels if space == (16,)]
    assert len(loops) == 1 and "tanh" in loops[0]
    dot = lowered.as_dot()
    assert dot.startswith("digraph") and "cluster_" in dot
    compiled = lowered.compile()
    value, (dw, db) = compiled.run([np.asarray(a) for a in args])
    assert float(value) == pytest.approx(np.tanh(2.0) ** 2, rel=1e-6)


def test_make_graph_prints_the_traced_graph(capsys):
    graph = jg.make_graph(lambda x: jg.exp(x) * 2.0)(np.ones(2))
    printed = capsys.readouterr().out
    assert "exp" in printed and "mul" in printed
    assert isinstance(graph, jg.Graph)


def test_log_compiles(caplog):
    jg.config.log_compiles = True
    try:
        with caplog.at_level("INFO", logger="jitgrad"):
            jg.jit(lambda x: x - 1.0)(np.zeros(5))
    finally:
        jg.config.log_compiles = False
    text = caplog.text
    assert "traced" in text and "float64[5]" in text and "compiled" in text


def test_jitted_function_under_a_tape_records_its_ops():
    f = jg.jit(lambda x: jg.reduce_sum(x * x))
    x = jg.constant([1.0, 2.0])
    with jg.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    np.testing.assert_array_equal(np.asarray(tape.gradient(y, x)), [2.0, 4.0])


def test_unsupported_dtype_is_refused_at_trace_time():
    f = jg.jit(lambda x: x * 2.0)
    with pytest.raises(TypeError, match="float16.*not supported under jit"):
        f(np.ones(3, np.float16))


def test_jit_inside_jit_inlines():
    inner = jg.jit(lambda x: x * 3.0)
    outer = jg.jit(lambda x: inner(x) + 1.0)
    assert float(outer(2.0)) == 7.0
    assert inner.cache_info().misses == 0


@pytest.mark.parametrize("shapes", [((5, 4), (4,)), ((4,), (4, 3)), ((4,), (4,))])
def test_products_with_a_vector_are_one_matmul(shapes):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    graph = jg.make_graph(lambda x, y: x @ y)
    ops = [e.op.name for e in graph(a, b).eqns]
    assert ops == ["matmul"]
    value, grads = jg.jit_grad(lambda x, y: jg.reduce_sum(jg.sin(x @ y)), wrt=(0, 1))(a, b)
    with jg.GradientTape() as tape:
        x, y = jg.constant(a), jg.constant(b)
        tape.watch([x, y])
        eager = jg.reduce_sum(jg.sin(x @ y))
    for got, want in zip(grads, tape.gradient(eager, [x, y])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    ai, bi = (np.arange(np.prod(s), dtype=np.int32).reshape(s) for s in shapes)
    np.testing.assert_array_equal(np.asarray(jg.jit(lambda x, y: x @ y)(ai, bi)), ai @ bi)


# -- argument and output kinds ----------------------------------------------------------------

Params = collections.namedtuple("Params", "w b")
OtherParams = collections.namedtuple("OtherParams", "w b")


def test_constant_output_is_a_float32_tensor_like_constant():
    f = jg.jit(lambda x: 3.0)
    for _ in range(2):  # the general path, then the fast entry
        out = f(1.0)
        assert out.dtype == np.float32 and out.shape == () and float(out) == 3.0
    value, aux = jg.jit_grad(lambda x: (x * x, 7), has_aux=True)(2.0)[0]
    assert float(value) == 4.0 and aux.dtype == np.int32 and int(aux) == 7


def test_list_of_numbers_is_one_array_like_eager_and_a_tuple_stays_a_structure():
    f = jg.jit(lambda x: jg.sin(x) * 2.0)
    for _ in range(2):
        out = f([1.0, 2.0])
        assert out.dtype == np.float32 and out.shape == (2,)
        np.testing.assert_allclose(np.asarray(out), np.sin([1.0, 2.0]) * 2, rtol=1e-6)
    nested = jg.jit(lambda x: x * 2)([[1, 2], [3, 4]])
    assert nested.dtype == np.int32 and nested.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(nested), [[2, 4], [6, 8]])
    assert f.cache_info().versions == 1
    _, grad = jg.jit_grad(lambda x: jg.reduce_sum(x * x))([1.0, 2.0, 3.0])
    assert grad.shape == (3,)  # one array, as for jitgrad.constant([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(grad), [2.0, 4.0, 6.0])
    value, grads = jg.jit_grad(lambda p: p[0] * p[1])((2.0, 3.0))
    assert float(value) == 6.0 and type(grads) is tuple
    assert [float(g) for g in grads] == [3.0, 2.0]


def test_list_of_numbers_under_a_tape_runs_eagerly():
    w = jg.Variable(2.0)
    f = jg.jit(lambda xs: jg.reduce_sum(xs) * w)
    with jg.GradientTape() as tape:
        y = f([1.0, 2.0, 3.0])
    assert float(y) == 12.0 and float(tape.gradient(y, w)) == 6.0


def test_namedtuples_are_structures_rebuilt_with_their_type():
    @jg.jit_grad
    def loss(p, x):
        return jg.reduce_sum(p.w * x + p.b)

    x = np.arange(3, dtype=np.float32)
    value, grads = loss(Params(np.ones(3, np.float32), 1.0), x)
    assert float(value) == 6.0 and type(grads) is Params
    np.testing.assert_array_equal(np.asarray(grads.w), x)
    assert float(grads.b) == 3.0
    out = jg.jit(lambda p: Params(p.b, p.w))(Params(1.0, 2.0))
    assert type(out) is Params and float(out.w) == 2.0 and float(out.b) == 1.0


def test_namedtuple_types_with_the_same_fields_are_different_versions():
    f = jg.jit(lambda p: p)
    assert type(f(Params(1.0, 2.0))) is Params
    assert type(f(OtherParams(1.0, 2.0))) is OtherParams
    assert type(f(Params(1.0, 2.0))) is Params
    assert f.cache_info().versions == 2


def test_dict_with_mixed_key_types_is_ordered_deterministically():
    f = jg.jit(lambda d: d[1] * 10.0 + d["a"])
    assert float(f({1: 1.0, "a": 2.0})) == 12.0
    assert float(f({"a": 2.0, 1: 1.0})) == 12.0  # insertion order does not matter
    assert f.cache_info().versions == 1
    out = jg.jit(lambda d: d)({"b": 1.0, 2: 2.0, 1: 3.0})
    assert list(out) == [1, 2, "b"]  # int keys (by value), then str keys


def test_non_contiguous_variable_works_in_every_reader():
    """A Variable assigned a transposed or strided value: jit, jit_grad(wrt='variables'), the
    tape, before and after the fast entry is installed."""
    v = jg.Variable(np.ones((2, 3), np.float32))
    x = np.ones((2, 3), np.float32)
    scaled = jg.jit(lambda x: v * x)
    loss = jg.jit_grad(lambda x: jg.reduce_sum(v * v * x), wrt="variables")
    scaled(x), loss(x)  # install the fast entries for a C-contiguous value
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    for value in (jg.transpose(jg.constant(base[:, :2])), jg.constant(base)[:2, 1:]):
        v.assign(value)
        want = np.asarray(value)
        for _ in range(2):
            np.testing.assert_array_equal(np.asarray(scaled(x)), want)
            total, (grad,) = loss(x)
            assert float(total) == float((want * want).sum())
            np.testing.assert_array_equal(np.asarray(grad), 2 * want)
        with jg.GradientTape() as tape:
            y = jg.reduce_sum(scaled(x) * v)
        np.testing.assert_array_equal(np.asarray(tape.gradient(y, v)), 2 * want)
    fortran = jg.Variable(jg.transpose(jg.constant(base)))
    np.testing.assert_array_equal(np.asarray(jg.jit(lambda x: fortran * x)(1.0)), base.T)


def _scaled_sum(x, w=2.0, *, scale=1.0, double=False):
    total = jg.reduce_sum(x * w) * scale
    return total * 2.0 if double else total


@pytest.mark.parametrize(
    "kwargs, expected",
    [({}, 6.0), ({"scale": 0.5}, 3.0), ({"double": True}, 12.0), ({"w": 3.0, "scale": 2.0}, 18.0)],
)
def test_keyword_only_arguments_are_used_not_dropped(kwargs, expected):
    """They were once dropped: the trace took the defaults, a silently wrong number. Each set
    of keyword-only values compiles its own variant (static, by value: `if double:` works)."""
    x = np.arange(3.0)
    assert float(_scaled_sum(x, **kwargs)) == expected
    compiled = jg.jit(_scaled_sum)
    assert float(compiled(x, **kwargs)) == expected
    assert float(compiled(x, **kwargs)) == expected  # the variant's fast entry
    value, grad = jg.jit_grad(_scaled_sum)(x, **kwargs)
    assert float(value) == expected
    np.testing.assert_allclose(grad, np.full(3, expected / 3.0))
    assert "reduce_sum" in compiled.lower(x, **kwargs).graph


def test_var_keyword_arguments_and_methods_take_their_values():
    def f(x, **options):
        return x * options.get("gain", 1.0)

    assert float(jg.jit(f)(np.float64(2.0), gain=4.0)) == 8.0

    class Model:
        @jg.jit
        def __call__(self, x, *, bias=0.0):
            return x + bias

    assert float(Model()(np.float64(1.0), bias=2.5)) == 3.5


@pytest.mark.parametrize(
    "value, kind",
    [(np.ones(3), "ndarray"), (jg.constant(2.0), "Tensor"), (jg.Variable(2.0), "Variable")],
)
def test_keyword_only_arrays_are_refused_with_the_way_to_pass_them(value, kind):
    with pytest.raises(TypeError, match=rf"scale: {kind}; pass arrays as positional"):
        jg.jit(_scaled_sum)(np.arange(3.0), scale=value)


def test_many_keyword_only_values_warn_once():
    compiled = jg.jit(_scaled_sum)
    x = np.arange(3.0)
    with pytest.warns(RuntimeWarning, match="variants for the values of its keyword-only"):
        for k in range(jg.config.retrace_warning_after):
            compiled(x, scale=float(k))


def test_keyword_only_variants_are_bounded_like_versions(monkeypatch):
    monkeypatch.setattr(jg.config, "max_versions_per_function", 3)
    compiled = jg.jit(_scaled_sum)
    x = np.arange(3.0)
    for k in range(5):
        assert float(compiled(x, scale=float(k))) == 6.0 * k
    assert len(compiled._keyword_variants) == 3  # the least recently used went first
    assert float(compiled(x, scale=0.0)) == 0.0  # an evicted variant compiles again
