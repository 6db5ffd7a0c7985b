"""jitgrad.linalg: values against numpy/scipy, gradients against finite differences (float64,
second order) for the composites (the primitives' rows are in tests/ops/cases.py), batches and
broadcasting, the NaN convention for singular and non-positive-definite inputs in eager and
compiled code, errors, and compiled == eager for every primitive (two kernels per dtype)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import jitgrad as jg
from jitgrad.testing import check_grads, graph_vjp_fn

la = jg.linalg
rng = np.random.default_rng(7)


def spd(*batch, n=3):
    a = rng.uniform(-1, 1, batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) / n + np.eye(n)


def well_posed(*batch, n=3):
    return rng.uniform(-1, 1, batch + (n, n)) + 3 * np.eye(n)


def test_namespace_is_reachable_and_has_numpy_aliases():
    import jitgrad.linalg

    assert jg.linalg is jitgrad.linalg
    numpy_names = ["cholesky", "det", "eigh", "eigvalsh", "inv", "lstsq", "norm", "pinv", "qr"]
    numpy_names += ["slogdet", "solve", "svd", "matmul", "tensordot", "matrix_transpose"]
    numpy_names += ["diagonal", "trace"]
    tf_names = ["triangular_solve", "logdet", "diag", "diag_part", "set_diag", "band_part"]
    tf_names += ["cholesky_solve", "eye", "adjoint", "matvec", "einsum"]
    for name in numpy_names + tf_names:
        assert callable(getattr(la, name)), name
        assert name in la.__all__, name


def test_numpy_calls_on_tensors_keep_numpy_meanings():
    """numpy.linalg functions on tensors run jitgrad.linalg's (jitgrad.numpy's dispatch); svd
    and lstsq, whose TensorFlow forms differ, keep numpy's results."""
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    got = np.linalg.svd(jg.constant(a), full_matrices=False)
    for g, w in zip(got, np.linalg.svd(a, full_matrices=False)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-12, atol=1e-14)
    for rhs, wide in [(b, a), (b[:, 0], a), (b[:3], a.T)]:
        got = np.linalg.lstsq(jg.constant(wide), rhs, rcond=None)
        for g, w in zip(got, np.linalg.lstsq(wide, rhs, rcond=None)):
            assert np.shape(g) == np.shape(w)
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(jg.constant(a[:3])).numpy(), np.linalg.inv(a[:3]))


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_composite_values_match_numpy(dtype):
    tol = {
        "rtol": 1e-5 if dtype == np.float32 else 1e-12,
        "atol": 1e-5 if dtype == np.float32 else 1e-12,
    }
    a, s = well_posed(2).astype(dtype), spd(2).astype(dtype)
    wide = rng.standard_normal((2, 3, 5)).astype(dtype)
    np.testing.assert_allclose(la.inv(a).numpy(), np.linalg.inv(a), **tol)
    np.testing.assert_allclose(la.det(a).numpy(), np.linalg.det(a), **tol)
    np.testing.assert_allclose(la.logdet(s).numpy(), np.linalg.slogdet(s)[1], **tol)
    np.testing.assert_allclose(la.pinv(wide).numpy(), np.linalg.pinv(wide), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(la.trace(wide).numpy(), np.trace(wide, axis1=-2, axis2=-1), **tol)
    np.testing.assert_allclose(la.eigvalsh(s).numpy(), np.linalg.eigvalsh(s), **tol)
    chol = np.linalg.cholesky(s)
    b = rng.standard_normal((2, 3, 2)).astype(dtype)
    np.testing.assert_allclose(la.cholesky_solve(chol, b).numpy(), np.linalg.solve(s, b), **tol)
    for x in [wide, np.swapaxes(wide, -1, -2)]:
        np.testing.assert_array_equal(la.diag_part(x).numpy(), np.diagonal(x, axis1=-2, axis2=-1))
        new = np.arange(6, dtype=dtype).reshape(2, 3) + 10
        expected = x.copy()
        idx = np.arange(3)
        expected[:, idx, idx] = new
        np.testing.assert_array_equal(la.set_diag(x, new).numpy(), expected)
    v = rng.standard_normal((2, 4)).astype(dtype)
    np.testing.assert_array_equal(la.diag(v).numpy(), np.stack([np.diag(r) for r in v]))
    band = la.band_part(wide, 1, 0).numpy()
    np.testing.assert_array_equal(band, np.tril(np.triu(wide, -1)))
    np.testing.assert_allclose(
        la.matvec(a, v[:, :3]).numpy(), np.einsum("bij,bj->bi", a, v[:, :3]), **tol
    )
    np.testing.assert_allclose(la.norm(v).numpy(), np.linalg.norm(v), **tol)
    np.testing.assert_allclose(
        la.norm(wide, "fro", (-2, -1)).numpy(), np.linalg.norm(wide, "fro", (-2, -1)), **tol
    )


def test_batches_broadcast_and_vectors_follow_numpy():
    a, b = well_posed(n=3), rng.standard_normal((4, 3, 2))
    got = la.solve(a, b).numpy()  # one matrix, a batch of right-hand sides
    np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=1e-12)
    tri = np.tril(well_posed(2, 1, n=3))
    got = la.triangular_solve(tri, b[:2, None], lower=True).numpy()  # (2, 1) with (2, 1)
    want = np.stack([scipy.linalg.solve_triangular(tri[i, 0], b[i], lower=True) for i in range(2)])
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    vec = rng.standard_normal(3)
    np.testing.assert_allclose(la.solve(a, vec).numpy(), np.linalg.solve(a, vec), rtol=1e-12)
    tall = rng.standard_normal((5, 3))
    got = la.lstsq(tall, rng.standard_normal(5)).shape
    assert got == (3,)
    s, u, v = la.svd(rng.standard_normal((2, 4, 3)))
    assert (s.shape, u.shape, v.shape) == ((2, 3), (2, 4, 3), (2, 3, 3))
    q, r = la.qr(rng.standard_normal((5, 3)), "complete")
    assert (q.shape, r.shape) == ((5, 5), (5, 3))
    np.testing.assert_allclose(q.numpy() @ r.numpy(), q.numpy()[:, :3] @ r.numpy()[:3], atol=1e-12)
    assert la.cholesky(np.zeros((0, 2, 2))).shape == (0, 2, 2)


def test_lstsq_regularized_is_the_ridge_solution():
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    want = np.linalg.solve(a.T @ a + 0.5 * np.eye(3), a.T @ b)
    np.testing.assert_allclose(la.lstsq(a, b, l2_regularizer=0.5).numpy(), want, rtol=1e-10)
    wide, rhs = a[:2], b[:2]  # (2, 3): the form A^T (A A^T + l I)^-1 B, the same solution
    want = np.linalg.solve(wide.T @ wide + 0.5 * np.eye(3), wide.T @ rhs)
    got = la.lstsq(wide, rhs, l2_regularizer=0.5).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Gradients of the composites (float64 finite differences, second order; tape and graph)


def _gp_nll(x, y, log_scale):
    """A GP's negative log marginal likelihood through cholesky + triangular solves."""
    d = jg.reshape(x, (-1, 1)) - jg.reshape(x, (1, -1))
    k = jg.exp(-d * d / (2.0 * jg.exp(2.0 * log_scale))) + 0.1 * la.eye(x.shape[0], dtype=x.dtype)
    chol = la.cholesky(k)
    alpha = la.triangular_solve(chol, jg.reshape(y, (-1, 1)))
    return 0.5 * jg.reduce_sum(alpha * alpha) + jg.reduce_sum(jg.math.log(la.diag_part(chol)))


COMPOSITES = {
    "inv": (la.inv, [well_posed(2)]),
    "inv_adjoint": (lambda a: la.inv(a, adjoint=True), [well_posed()]),
    "det": (la.det, [well_posed(2)]),
    "logdet": (la.logdet, [spd(2)]),
    "pinv_wide": (la.pinv, [rng.standard_normal((2, 4)) + np.eye(2, 4) * 2]),
    "cholesky_solve": (
        lambda s, b: la.cholesky_solve(la.cholesky(s), b),
        [spd(2), rng.standard_normal((2, 3, 2))],
    ),
    "diag_set_trace": (
        lambda x, v: (
            la.trace(la.set_diag(x, v) @ la.diag(v)) + jg.reduce_sum(la.band_part(x, 0, 1))
        ),
        [rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3))],
    ),
    "lstsq_regularized": (
        lambda a, b: la.lstsq(a, b, l2_regularizer=0.3),
        [rng.standard_normal((5, 3)), rng.standard_normal((5, 2))],
    ),
    "qr_complete_wide": (lambda a: la.qr(a, full_matrices=True), [rng.standard_normal((2, 4))]),
    "svd_square": (la.svd, [np.diag([3.0, 2.0, 1.0]) + 0.1 * rng.standard_normal((3, 3))]),
    "solve_broadcast": (la.solve, [well_posed(), rng.standard_normal((2, 3, 2))]),
    "norm": (
        lambda x: la.norm(x, axis=-1) + la.norm(x, "fro", (-2, -1)),
        [rng.standard_normal((2, 3))],
    ),
    "gp_nll": (_gp_nll, [np.linspace(-1, 1, 5), rng.standard_normal(5), np.array(-0.5)]),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("mode", ["tape", "graph"])
def test_composite_gradients_match_finite_differences(name, mode):
    fn, args = COMPOSITES[name]
    check_grads(
        fn, args, order=2, rtol=1e-5, atol=1e-6, grad_fn=graph_vjp_fn if mode == "graph" else None
    )


def test_qr_complete_tall_has_no_gradient():
    a = jg.constant(rng.standard_normal((4, 2)))
    with jg.GradientTape() as tape:
        tape.watch(a)
        q, _ = la.qr(a, full_matrices=True)
        loss = jg.reduce_sum(q)
    with pytest.raises(ValueError, match=r"qr: no gradient for full_matrices=True .*\(4, 2\)"):
        tape.gradient(loss, a)


# ---------------------------------------------------------------------------------------------
# Singular and non-positive-definite inputs: NaN (eager and compiled alike)


def _degenerate(a_spd, singular, tri):
    chol_bad = la.cholesky(-a_spd)
    solved = la.solve(singular, a_spd)
    inverse = la.inv(singular)
    sign, logdet = la.slogdet(singular)
    tri_solved = la.triangular_solve(tri, a_spd)
    return chol_bad, solved, inverse, sign, logdet, tri_solved


def _degenerate_inputs():
    singular = np.array([[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]], well_posed()])
    tri = np.tril(well_posed())
    tri[1, 1] = 0.0
    return spd(2), singular, tri


def _check_degenerate(outs):
    chol_bad, solved, inverse, sign, logdet, tri_solved = [np.asarray(o) for o in outs]
    assert np.isnan(chol_bad).all()
    assert np.isnan(solved[0]).all() and np.isfinite(solved[1]).all()  # per matrix
    assert np.isnan(inverse[0]).all() and np.isfinite(inverse[1]).all()
    assert sign[0] == 0 and logdet[0] == -np.inf and np.isfinite(logdet[1])
    # A zero at row 1 of the diagonal: rows from there on are inf/NaN (IEEE division).
    assert (
        np.isfinite(tri_solved[..., 0, :]).all() and not np.isfinite(tri_solved[..., 1:, :]).any()
    )


def test_singular_and_non_positive_definite_give_nan_in_eager_and_compiled():
    args = _degenerate_inputs()
    eager = _degenerate(*[jg.constant(a) for a in args])
    _check_degenerate(eager)
    compiled = jg.jit(_degenerate)(*args)
    _check_degenerate(compiled)
    for c, e in zip(compiled, eager):
        np.testing.assert_array_equal(np.isnan(np.asarray(c)), np.isnan(np.asarray(e)))
        finite = np.isfinite(np.asarray(e))
        np.testing.assert_allclose(np.asarray(c)[finite], np.asarray(e)[finite], rtol=1e-10)


def test_non_finite_inputs_give_nan_matrices():
    a = rng.standard_normal((2, 3, 3))
    a[1, 0, 0] = np.nan
    w, v = la.eigh(a)
    assert np.isfinite(w.numpy()[0]).all() and np.isnan(w.numpy()[1]).all()
    s, _, _ = la.svd(a)
    assert np.isnan(s.numpy()[1]).all()


# ---------------------------------------------------------------------------------------------
# Errors name the op and the shapes


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: la.cholesky(np.ones((2, 3))),
            ValueError,
            r"cholesky: expects square matrices, got shape \(2, 3\)",
        ),
        (
            lambda: la.inv(np.ones(3)),
            ValueError,
            r"inv: expects a matrix \(rank >= 2\), got shape \(3,\)",
        ),
        (
            lambda: la.det(np.ones((2, 2), np.int32)),
            TypeError,
            "slogdet: expects float32 or float64, got int32",
        ),
        (
            lambda: la.solve(np.eye(3), np.ones((2, 1))),
            ValueError,
            r"solve: matrix \(3, 3\) and right-hand side \(2, 1\)",
        ),
        (
            lambda: la.triangular_solve(np.ones((2, 3, 3)), np.ones((3, 3, 1))),
            ValueError,
            r"triangular_solve: shapes \(2,\) and \(3,\) cannot be broadcast",
        ),
        (
            lambda: la.svd(np.ones((3, 2)), full_matrices=True),
            ValueError,
            r"svd: full_matrices=True for a non-square \(3, 2\)",
        ),
        (lambda: la.qr(np.ones((3, 2)), "r"), ValueError, "qr: mode 'r'"),
        (lambda: la.diag_part(np.ones((3, 3)), k=1), ValueError, "diag_part: k=1"),
        (
            lambda: la.set_diag(np.ones((3, 3)), np.ones(2)),
            ValueError,
            r"set_diag: diagonal of shape \(2,\) for matrices of shape \(3, 3\)",
        ),
        (lambda: la.norm(np.ones((2, 2)), ord=3, axis=(0, 1)), ValueError, "norm: ord=3"),
        (
            lambda: la.cholesky(np.eye(2, dtype=np.float16)),
            TypeError,
            "cholesky: expects float32 or float64, got float16",
        ),
    ],
)
def test_errors_name_the_op_and_shapes(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_traced_shape_errors_name_the_user_line():
    with pytest.raises(ValueError, match=r"solve: .*\(test_linalg.py:\d+\)"):
        jg.jit(lambda a, b: la.solve(a, b))(np.eye(3), np.ones((2, 1)))


# ---------------------------------------------------------------------------------------------
# Compiled == eager: the primitives in two kernels per dtype (value and gradients)


def _solves(a, b):
    """cholesky, triangular_solve, solve, slogdet and eigh, batched."""
    chol = la.cholesky(a)
    x = la.triangular_solve(chol, b)
    y = la.solve(a, b, adjoint=True)
    _, logdet = la.slogdet(a)
    w, v = la.eigh(a + la.diag(jg.cast(jg.range(3), a.dtype)))
    eig = jg.reduce_sum(w * w) + jg.reduce_sum(v[..., 0] * v[..., 0] * w[..., :1])
    return jg.reduce_sum(x * x) + jg.reduce_sum(y) + jg.reduce_sum(logdet) + eig


def _factorizations(b, wide):
    """qr, svd and lstsq, batched."""
    q, r = la.qr(wide)
    s, u, v = la.svd(wide)
    z = la.lstsq(wide, b[..., :2, :])
    parts = [
        jg.reduce_sum(q[..., 0] * r[..., 0, :2]),
        jg.reduce_sum(s) + jg.reduce_sum(u[..., 0] * u[..., 0]) + jg.reduce_sum(v[..., 1, :]),
        jg.reduce_sum(z * z),
    ]
    return sum(parts)


# Numba compiles np.linalg for seconds per function and dtype the first time (then it is
# cached): the default run compiles the solves in float64; qr, svd and lstsq, and float32, run
# with -m slow (as does every primitive's own kernel in tests/backend/test_compiled_ops.py).
@pytest.mark.parametrize(
    "fn", [_solves, pytest.param(_factorizations, marks=pytest.mark.slow)], ids=lambda f: f.__name__
)
@pytest.mark.parametrize(
    "dtype, rtol", [(np.float64, 1e-9), pytest.param(np.float32, 2e-3, marks=pytest.mark.slow)]
)
def test_compiled_equals_eager(fn, dtype, rtol):
    a = (spd(2) + np.diag([0.0, 1.0, 2.0])).astype(dtype)
    b = rng.standard_normal((2, 3, 2)).astype(dtype)
    wide = (np.eye(2, 3) * [[3.0], [1.5]] + 0.1 * rng.standard_normal((2, 2, 3))).astype(dtype)
    args = (a, b) if fn is _solves else (b, wide)
    compiled = jg.jit_grad(fn, wrt=(0, 1))(*args)
    eager = jg.value_and_grad(fn, (0, 1))(*args)
    np.testing.assert_allclose(np.asarray(compiled[0]), np.asarray(eager[0]), rtol=rtol)
    for c, e in zip(compiled[1], eager[1]):
        assert np.asarray(c).dtype == dtype
        scale = np.abs(np.asarray(e)).max()
        np.testing.assert_allclose(np.asarray(c), np.asarray(e), rtol=rtol, atol=rtol * scale)
