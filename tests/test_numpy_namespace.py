"""jitgrad.numpy: numpy's names, signatures and dtypes over jitgrad's ops (values against
numpy, float64 defaults, gradients against finite differences eagerly and through the traced
graph, one compiled function); numpy's own functions on tensors (__array_function__,
__array_ufunc__); weakly typed Python floats in jit, grad and jit_grad; numpy constants
indexed by traced indices."""

import warnings

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.testing import check_grads, graph_vjp_fn

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((4, 5))
C = RNG.standard_normal((3, 4))
V = RNG.standard_normal(4)
X3 = RNG.standard_normal((2, 3, 4))
POS = np.abs(A) + 0.1
ORDER = np.argsort(A, axis=1)

# (name, jitgrad.numpy call, numpy call): the same function of the module `m`.
VALUE_CASES = [
    ("sum", lambda m: m.sum(A)),
    ("sum_axis_keepdims", lambda m: m.sum(A, axis=1, keepdims=True)),
    ("sum_axes_dtype", lambda m: m.sum(X3, axis=(0, 2), dtype=np.float32)),
    ("mean", lambda m: m.mean(A, axis=0)),
    ("mean_of_ints", lambda m: m.mean(np.arange(5))),
    ("std", lambda m: m.std(A)),
    ("std_ddof", lambda m: m.std(A, axis=1, ddof=1, keepdims=True)),
    ("var", lambda m: m.var(X3, axis=(1, 2))),
    ("prod", lambda m: m.prod(A, axis=1)),
    ("max", lambda m: m.max(A, axis=0)),
    ("min", lambda m: m.min(A)),
    ("amax", lambda m: m.amax(A, axis=1)),
    ("amin", lambda m: m.amin(A, axis=-1, keepdims=True)),
    ("argmax", lambda m: m.argmax(A)),
    ("argmax_axis", lambda m: m.argmax(A, axis=1)),
    ("argmin", lambda m: m.argmin(A, axis=0)),
    ("dot_matrices", lambda m: m.dot(A, B)),
    ("dot_vectors", lambda m: m.dot(V, V)),
    ("dot_nd", lambda m: m.dot(X3, B)),
    ("matmul", lambda m: m.matmul(X3, B)),
    ("vdot", lambda m: m.vdot(A, C)),
    ("inner", lambda m: m.inner(A, C)),
    ("outer", lambda m: m.outer(V, A[0])),
    ("tensordot", lambda m: m.tensordot(X3, A, axes=([1, 2], [0, 1]))),
    ("einsum", lambda m: m.einsum("bij,jk->bik", X3, B)),
    ("exp", lambda m: m.exp(A)),
    ("log", lambda m: m.log(POS)),
    ("log1p", lambda m: m.log1p(POS)),
    ("expm1", lambda m: m.expm1(A)),
    ("sqrt", lambda m: m.sqrt(POS)),
    ("square", lambda m: m.square(A)),
    ("tanh", lambda m: m.tanh(A)),
    ("sin", lambda m: m.sin(A)),
    ("cos", lambda m: m.cos(A)),
    ("abs", lambda m: m.abs(A)),
    ("sign", lambda m: m.sign(A)),
    ("power", lambda m: m.power(POS, 1.5)),
    ("maximum", lambda m: m.maximum(A, 0.0)),
    ("minimum", lambda m: m.minimum(A, C)),
    ("where", lambda m: m.where(A > 0, A, 0.0)),
    ("clip", lambda m: m.clip(A, -0.5, 0.5)),
    ("logaddexp", lambda m: m.logaddexp(A, C)),
    ("logaddexp_infinities", lambda m: m.logaddexp(-np.inf, np.array([-np.inf, 1.0]))),
    ("isnan", lambda m: m.isnan(np.array([1.0, np.nan, np.inf]))),
    ("isfinite", lambda m: m.isfinite(np.array([1.0, np.nan, -np.inf]))),
    ("concatenate", lambda m: m.concatenate([A, C], axis=1)),
    ("concatenate_none", lambda m: m.concatenate([A, V], axis=None)),
    ("stack", lambda m: m.stack([A, C], axis=1)),
    ("hstack", lambda m: m.hstack([A, C])),
    ("hstack_vectors", lambda m: m.hstack([V, V])),
    ("vstack", lambda m: m.vstack([V, A[0]])),
    ("roll", lambda m: m.roll(A, 1, axis=1)),
    ("roll_flat", lambda m: m.roll(A, -5)),
    ("roll_axes", lambda m: m.roll(A, (1, 2), axis=(0, 1))),
    ("repeat", lambda m: m.repeat(A, 2, axis=0)),
    ("repeat_flat", lambda m: m.repeat(A, 2)),
    ("repeat_counts", lambda m: m.repeat(A, [1, 0, 2], axis=0)),
    ("tile", lambda m: m.tile(V, (2, 2))),
    ("reshape", lambda m: m.reshape(A, (2, 6))),
    ("ravel", lambda m: m.ravel(A)),
    ("transpose", lambda m: m.transpose(X3, (2, 0, 1))),
    ("swapaxes", lambda m: m.swapaxes(X3, 0, 2)),
    ("moveaxis", lambda m: m.moveaxis(X3, [0, 1], [-1, 0])),
    ("expand_dims", lambda m: m.expand_dims(A, (0, 2))),
    ("squeeze", lambda m: m.squeeze(A[None, :, None])),
    ("take", lambda m: m.take(A, [0, 2, -1], axis=1)),
    ("take_flat", lambda m: m.take(A, [5, 0])),
    ("take_along_axis", lambda m: m.take_along_axis(A, ORDER, axis=1)),
    ("take_along_axis_broadcast", lambda m: m.take_along_axis(A, np.array([[2, -1, 0, 1]]), 0)),
    ("cumsum", lambda m: m.cumsum(A, axis=0)),
    ("cumsum_flat", lambda m: m.cumsum(A)),
    ("diag_vector", lambda m: m.diag(V, 1)),
    ("diag_matrix", lambda m: m.diag(A, -1)),
    ("eye", lambda m: m.eye(3, 4, k=1)),
    ("identity", lambda m: m.identity(3)),
    ("zeros", lambda m: m.zeros((2, 3))),
    ("ones", lambda m: m.ones(3)),
    ("ones_int", lambda m: m.ones(3, dtype=np.int32)),
    ("full", lambda m: m.full((2,), 1.5)),
    ("full_int", lambda m: m.full((2,), 7)),
    ("zeros_like", lambda m: m.zeros_like(A)),
    ("ones_like_float32", lambda m: m.ones_like(A.astype(np.float32))),
    ("full_like", lambda m: m.full_like(A, 3)),
    ("arange", lambda m: m.arange(3.0)),
    ("arange_ints", lambda m: m.arange(1, 7, 2)),
    ("linspace", lambda m: m.linspace(0, 1, 5)),
    ("array", lambda m: m.array([1.0])),
    ("asarray_ints", lambda m: m.asarray([[1, 2]])),
    ("exp_of_python_float", lambda m: m.exp(1.7)),
    ("add_python_floats", lambda m: m.add(1.5, 2.25)),
    ("trace", lambda m: m.trace(A)),
]


@pytest.mark.parametrize("name,call", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_and_dtypes_match_numpy(name, call):
    got, want = call(jnp), np.asarray(call(np))
    assert isinstance(got, jg.Tensor)
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)


def test_float64_defaults_and_explicit_dtypes():
    assert jnp.ones(3).dtype == np.float64 and jg.ones(3).dtype == np.float32
    assert jnp.array([1.0]).dtype == np.float64 and jnp.arange(3.0).dtype == np.float64
    assert jnp.linspace(0.0, 1.0, 4).dtype == np.float64
    assert jnp.zeros(2, dtype=jnp.float32).dtype == np.float32
    assert jnp.linspace(0, 1, 4, dtype=np.float32).dtype == np.float32
    assert jnp.array([1, 2]).dtype == np.int64 and jnp.eye(2, dtype="int32").dtype == np.int32
    x32 = jnp.ones(2, dtype=jnp.float32)
    assert (x32 * 2.0).dtype == np.float32 and jnp.maximum(x32, 0.5).dtype == np.float32
    assert (jnp.pi, jnp.e, jnp.inf, jnp.newaxis) == (np.pi, np.e, np.inf, None)
    assert np.isnan(jnp.nan) and jnp.float64 is np.float64 and jnp.int32 is np.int32


def test_array_of_tensors_is_stacked_and_differentiable():
    x = jg.Variable(2.0, dtype=jg.float64)
    with jg.GradientTape() as tape:
        y = jnp.sum(jnp.array([x, x * x, 1.0]))
    assert float(y) == 7.0 and float(tape.gradient(y, x)) == 5.0


def test_unsupported_arguments_raise_clearly():
    with pytest.raises(TypeError, match=r"jitgrad.numpy.sum: out=.*not supported"):
        jnp.sum(A, out=np.zeros(()))
    with pytest.raises(TypeError, match=r"jitgrad.numpy.mean: where=.*not supported"):
        jnp.mean(A, where=A > 0)
    with pytest.raises(TypeError, match=r"jitgrad.numpy.max: initial=.*not supported"):
        jnp.max(A, initial=0.0)
    with pytest.raises(TypeError, match=r"jitgrad.numpy.reshape: order='F'"):
        jnp.reshape(A, (4, 3), order="F")
    with pytest.raises(TypeError, match="give both x and y, or neither"):
        jnp.where(A > 0, A)
    with pytest.raises(IndexError, match="take_along_axis"):
        jnp.take_along_axis(A, np.array([[4]]), axis=1)
    # numpy's defaults pass
    jnp.sum(A, out=None, where=True, dtype=None, keepdims=False)
    jnp.exp(A, out=None, where=True, casting="same_kind")


# Functions of differentiable arguments, for the gradient checks (float64 finite differences).
GRAD_CASES = [
    ("mean_std", lambda a: jnp.mean(a, axis=0) + jnp.std(a, axis=0, ddof=1), [A]),
    ("var_keepdims", lambda a: jnp.var(a, axis=1, keepdims=True) * a, [A]),
    ("prod_max_min", lambda a: jnp.prod(a, axis=1) + jnp.max(a, 1) * jnp.amin(a, 1), [A]),
    ("dot_tensordot", lambda a, b: jnp.dot(a, b) + jnp.tensordot(a, b, 1), [A, B]),
    ("einsum_outer_inner", lambda a, v: jnp.einsum("ij,j->i", a, v) + jnp.inner(a, v), [A, V]),
    ("vdot_outer", lambda a, v: jnp.vdot(a, a) * jnp.outer(v, v), [A, V]),
    ("unary", lambda a: jnp.tanh(a) * jnp.exp(a) + jnp.log1p(jnp.square(a)), [A]),
    ("logaddexp_clip", lambda a, c: jnp.logaddexp(a, c) + jnp.clip(a, -0.5, 0.5), [A, C]),
    ("where_maximum", lambda a, c: jnp.where(a > c, jnp.maximum(a, 0.1), c**2), [A, C]),
    (
        "shapes",
        lambda a: (
            jnp.concatenate([jnp.roll(a, 1, axis=1), jnp.swapaxes(a, 0, 1).T], axis=0)
            * jnp.tile(a[0], (6, 1))
        ),
        [A],
    ),
    (
        "stack_repeat",
        lambda a: jnp.hstack([jnp.repeat(a, 2, axis=1), jnp.vstack([a, a]).T.T[:3]]),
        [A],
    ),
    (
        "take_along_axis",
        lambda a: jnp.take_along_axis(a, ORDER, axis=1) * jnp.take(a, [2, 0], 1).sum(),
        [A],
    ),
    ("cumsum_diag", lambda a: jnp.cumsum(a, axis=1) + jnp.diag(jnp.diag(a[:, :3]))[:, :1], [A]),
    ("moveaxis_expand", lambda x: jnp.squeeze(jnp.expand_dims(jnp.moveaxis(x, 0, -1), 0)), [X3]),
]


@pytest.mark.parametrize("name,f,args", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_match_finite_differences(name, f, args):
    check_grads(f, args, order=1)  # the eager tape
    check_grads(f, args, order=1, grad_fn=graph_vjp_fn)  # traced, differentiated as a graph


def test_compiled_matches_eager():
    def loss(a, b, c):
        z = jnp.logaddexp(jnp.dot(a, b)[:, :4], jnp.roll(c, 1, axis=1) * jnp.clip(a, -1, 1))
        return jnp.std(z) + jnp.mean(jnp.square(jnp.tanh(z)), axis=0)[1]

    value, grads = jg.jit_grad(loss, wrt=(0, 1, 2))(A, B, C)
    with jg.GradientTape() as tape:
        ts = [jg.constant(x) for x in (A, B, C)]
        tape.watch(ts)
        eager = loss(*ts)
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-12)
    for g, e in zip(grads, tape.gradient(eager, ts)):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)


def test_linalg_is_jitgrads():
    import jitgrad.numpy.linalg as la

    assert jnp.linalg is jg.linalg is la
    m = A @ A.T + 3 * np.eye(3)
    np.testing.assert_allclose(jnp.linalg.inv(m).numpy(), np.linalg.inv(m), rtol=1e-10)
    np.testing.assert_allclose(float(jnp.linalg.det(m)), np.linalg.det(m), rtol=1e-10)
    np.testing.assert_allclose(float(jnp.linalg.norm(V)), np.linalg.norm(V), rtol=1e-12)
    np.testing.assert_allclose(jnp.linalg.cholesky(m).numpy(), np.linalg.cholesky(m), rtol=1e-10)
    np.testing.assert_allclose(jnp.linalg.solve(m, A).numpy(), np.linalg.solve(m, A), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.inv(jg.constant(m)).numpy(), np.linalg.inv(m), rtol=1e-10)


def test_numpy_means_numpy_inside_jitgrad():
    """The package `jitgrad.numpy` does not shadow numpy for jitgrad's own modules."""
    import jitgrad.core.tensor
    import jitgrad.numpy

    assert jitgrad.core.tensor.np is np and jitgrad.numpy.np is np
    assert jitgrad.numpy is jnp and np.__name__ == "numpy"


# ---------------------------------------------------------------------------------------------
# numpy's functions on tensors


def test_numpy_functions_on_tensors_run_jitgrad_ops():
    t = jg.constant(A)
    for got, want in [
        (np.mean(t, axis=0), np.mean(A, axis=0)),
        (np.sum(t, out=None, dtype=np.float32), np.sum(A, dtype=np.float32)),
        (np.exp(t), np.exp(A)),
        (np.tanh(t) * t, np.tanh(A) * A),
        (np.concatenate([t, C]), np.concatenate([A, C])),
        (np.ones(4) * t, A),
        (np.maximum(t, 0), np.maximum(A, 0)),
    ]:
        assert isinstance(got, jg.Tensor) and got.dtype == want.dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert np.allclose(t, A) and np.shape(t) == A.shape


def test_numpy_functions_on_tensors_are_recorded_and_traced():
    x = jg.Variable(A)
    with jg.GradientTape() as tape:
        y = np.sum(np.tanh(x) * np.mean(x, axis=0))
    g = tape.gradient(y, x)
    np.testing.assert_allclose(
        g.numpy(), jg.grad(lambda a: jnp.sum(jnp.tanh(a) * jnp.mean(a, 0)))(A).numpy()
    )

    def f(a):
        return np.sum(np.exp(a) * np.mean(a, axis=1, keepdims=True))

    np.testing.assert_allclose(
        float(jg.jit(f)(A)), np.sum(np.exp(A) * np.mean(A, 1, keepdims=True)), rtol=1e-12
    )
    check_grads(f, [A], order=1, grad_fn=graph_vjp_fn)


def test_numpy_functions_jitgrad_lacks_fall_back_eagerly_and_refuse_traces():
    t = jg.constant(A)
    counts, edges = np.histogram(t, bins=3)  # not in jitgrad.numpy
    assert type(counts) is np.ndarray and np.array_equal(counts, np.histogram(A, bins=3)[0])
    with pytest.raises(jg.TracerError, match=r"np.histogram is not implemented by jitgrad.numpy"):
        jg.jit(lambda a: np.histogram(a)[0])(A)
    with pytest.raises(jg.TracerError, match=r"np.add.reduce is not implemented"):
        jg.jit(lambda a: np.add.reduce(a))(A)


def test_numpy_function_jitgrad_lacks_warns_under_a_tape():
    x = jg.Variable(A)
    unwatched = jg.constant(C)
    with jg.GradientTape():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.histogram(unwatched)  # not differentiated: no warning
        with pytest.warns(RuntimeWarning, match=r"np.histogram .* no gradient flows"):
            np.histogram(x)


def test_numpy_out_arguments_on_tensors_raise_clearly():
    total = np.zeros(4)
    with pytest.raises(TypeError, match=r"np.add\(..., out=...\) cannot write"):
        np.add(total, jg.constant(V), out=total)


# ---------------------------------------------------------------------------------------------
# Weak typing of Python floats


W64 = np.array([0.3, 1.1])


def _float64_function(x):
    return jg.reduce_sum(jg.exp(x * W64) * jg.log(1.35) + x * x)


EXACT = float(np.sum(np.exp(1.7 * W64) * np.log(1.35) + 1.7 * 1.7))
DEXACT = float(np.sum(W64 * np.exp(1.7 * W64) * np.log(1.35) + 2 * 1.7))


def test_python_float_is_exact_in_a_float64_function():
    assert float(_float64_function(1.7)) == EXACT
    assert float(jg.grad(_float64_function)(1.7)) == pytest.approx(DEXACT, rel=1e-15)
    assert jg.grad(_float64_function)(1.7).dtype == np.float64
    assert float(jg.jit(_float64_function)(1.7)) == pytest.approx(EXACT, rel=1e-15)
    value, g = jg.jit_grad(_float64_function)(1.7)
    assert float(value) == pytest.approx(EXACT, rel=1e-15)
    assert float(g) == pytest.approx(DEXACT, rel=1e-15) and g.dtype == np.float64
    assert float(jg.jit(jg.grad(_float64_function))(1.7)) == pytest.approx(DEXACT, rel=1e-15)


def test_python_float_takes_float32_next_to_float32():
    w32 = W64.astype(np.float32)

    def f(x):
        return jg.reduce_sum(x * w32)

    eager = f(1.7)
    assert eager.dtype == np.float32
    assert jg.jit(f)(1.7).dtype == np.float32 and float(jg.jit(f)(1.7)) == float(eager)
    assert jg.grad(f)(1.7).dtype == np.float32


def test_weak_values_alone_settle_to_float32():
    assert jg.grad(lambda x: x**3)(2.0).dtype == np.float32
    assert jg.jit(lambda x: jg.exp(x) * 2.0)(1.7).dtype == np.float32
    assert float(jg.jit(lambda x: x * 1e-3 + 1.0)(1.7)) == np.float32(1.7 * 1e-3 + 1.0)


def test_python_float_constant_in_a_float64_graph():
    x64 = np.array([1.0, 2.0])
    want = np.log(1.35) * x64
    np.testing.assert_array_equal((jg.log(1.35) * x64).numpy(), want)
    np.testing.assert_array_equal(jg.jit(lambda x: jg.log(1.35) * x)(x64).numpy(), want)
    assert (jg.log(1.35) * np.float32(1.0)).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Indexing numpy constants with traced indices


def test_numpy_constant_indexed_by_a_traced_index():
    table = np.array([10.0, 20.0, 30.0])

    @jg.jit
    def pick(i):
        return jnp.asarray(table)[i]

    assert float(pick(np.int32(2))) == 30.0 and float(pick(np.int32(0))) == 10.0
    g = jg.jit_grad(lambda w, i: jnp.asarray(table)[i] * w)(2.0, np.int32(1))[1]
    assert float(g) == 20.0


def test_bare_numpy_array_indexed_by_a_tracer_names_the_fix():
    table = np.array([10.0, 20.0, 30.0])
    with pytest.raises(jg.TracerError, match=r"jitgrad.numpy.asarray\(arr\)\[i\]"):
        jg.jit(lambda i: table[i])(np.int32(1))


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.uint8, np.int64, np.float32])
def test_sums_and_products_accumulate_in_numpys_dtype(dtype):
    """numpy sums bools and integers narrower than 64 bits in int64 (uint64 for unsigned ones:
    int64 here, jitgrad has no uint64); a count of True values must not wrap in int8."""
    a = np.ones((2, 3), dtype)
    for ours, theirs in [
        (jnp.sum, np.sum),
        (jnp.prod, np.prod),
        (jnp.cumsum, np.cumsum),
        (jnp.cumprod, np.cumprod),
    ]:
        want = theirs(a).dtype
        want = np.dtype(np.int64) if want == np.uint64 else want
        assert ours(a).dtype == want, (ours.__name__, dtype)
        assert ours(a, dtype=np.float32).dtype == np.float32
    assert int(jnp.sum(np.ones(300, np.int8))) == 300


def test_quantiles_keep_numpys_dtype_and_argmax_keepdims_shape():
    x = np.arange(5, dtype=np.float32)
    cases = [0.3, [0.1, 0.9], np.float32(0.3), np.array([0.2], np.float32), np.float64(0.5)]
    for q in cases:
        assert jnp.quantile(x, q).dtype == np.quantile(x, q).dtype, q
    for q in [30, [10, 90], np.float32(30)]:
        assert jnp.percentile(x, q).dtype == np.percentile(x, q).dtype, q
    assert jnp.median(x).dtype == np.float32
    b = np.arange(6.0).reshape(2, 3)
    assert jnp.argmax(b, keepdims=True).shape == np.argmax(b, keepdims=True).shape == (1, 1)
