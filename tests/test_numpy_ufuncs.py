"""jitgrad.numpy's elementwise functions, array comparisons, searches and 1-d signal functions
(jitgrad/numpy/ufuncs.py): values and dtypes against numpy eagerly and under jit (NaNs,
infinities, empty arrays), gradients against finite differences, numpy's own functions on
tensors, and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.numpy import ufuncs
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
# numpy's edge cases; -0.0 is left out where numpy reads its sign bit (test_signed_zeros).
EDGE = np.array(
    [-np.inf, -1e300, -2.0, -1.0, -0.5, -1e-10, 0.0, 1e-10, 0.5, 1.0, 1.5, 2.0, 1e10, 1e300]
    + [np.inf, np.nan]
)
PAIRS = np.meshgrid(EDGE, EDGE)  # every edge case against every other
INTS = np.array([-12, -7, -1, 0, 1, 5, 9, 12, 30])
INT_PAIRS = np.meshgrid(INTS, INTS)
DIVISORS = np.array([-4, -3, -1, 1, 2, 7])
SORTED = np.array([-np.inf, -1.0, 0.0, 0.0, 1.5, 2.0, 2.0, 2.0, 7.0, np.nan, np.nan])
PROBES = np.array([[-np.inf, -3.0, 0.0, 2.0], [2.5, 7.0, 9.0, np.nan]])
XP = np.array([-1.0, 0.0, 0.5, 0.5, 2.0, 3.0])
FP = np.array([1.0, -1.0, 2.0, 3.0, 0.5, np.inf])
AT = np.array([-2.0, -1.0, -0.3, 0.0, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0, np.nan, np.inf, -np.inf])


def _both(fn):
    """A function of the module `m` as (jitgrad.numpy's, numpy's)."""
    return (lambda *a: fn(jnp, *a)), (lambda *a: fn(np, *a))


# (name, function of the module m and the arrays, the arrays): eager and jit must match numpy,
# dtypes included. Several functions share a case: each case compiles once.
CASES = [
    (
        "inverse hyperbolics",
        lambda m, x: (m.arcsinh(x), m.arccosh(x), m.arctanh(x), m.asinh(x), m.acosh(x)),
        [EDGE],
    ),
    ("inverse hyperbolics float32", lambda m, x: (m.atanh(x), m.arcsinh(x)), [X.astype("f4")]),
    (
        "angles and cube roots",
        lambda m, x: (m.rad2deg(x), m.deg2rad(x), m.degrees(x), m.radians(x), m.cbrt(x)),
        [EDGE],
    ),
    (
        "trunc and fix",
        lambda m, x, i: (m.trunc(x), m.fix(x), m.trunc(i), m.fix(i), m.trunc(i > 0)),
        [EDGE, INTS],
    ),
    (
        "signs and infinities",
        lambda m, x, i: (
            m.signbit(x),
            m.signbit(i),
            m.angle(x),
            m.angle(x, deg=True),
            m.angle(i),
            m.isposinf(x),
            m.isneginf(x),
            m.isposinf(i),
        ),
        [EDGE, INTS],
    ),
    ("copysign", lambda m, x, y: (m.copysign(x, y), m.copysign(x, 2.0)), PAIRS),
    ("copysign ints", lambda m, i, j: m.copysign(i, j), INT_PAIRS),
    ("fmax fmin", lambda m, x, y: (m.fmax(x, y), m.fmin(x, y), m.fmax(x, 1.0)), PAIRS),
    ("fmax fmin ints", lambda m, i, j: (m.fmax(i, j), m.fmin(i > 0, j > 1)), INT_PAIRS),
    ("fmod divmod", lambda m, x, y: (m.fmod(x, y), *m.divmod(x, y)), PAIRS),
    (
        "fmod divmod ints",
        lambda m, i, d: (m.fmod(i[:, None], d), *m.divmod(i[:, None], d), m.fmod(i, 5)),
        [INTS, DIVISORS],
    ),
    (
        "float_power logaddexp2",
        lambda m, x, y, i: (m.float_power(x, y), m.logaddexp2(x, y), m.float_power(i, 2)),
        [*PAIRS, INTS],
    ),
    (
        "logical_xor",
        lambda m, x, i: (m.logical_xor(x, i[:1]), m.logical_xor(i > 3, True)),
        [EDGE, INTS],
    ),
    (
        "gcd lcm",
        lambda m, i, j: (m.gcd(i, j), m.lcm(i, j), m.gcd(i, 12), m.lcm(i.astype("i1"), 4)),
        INT_PAIRS,
    ),
    (
        "real imag conj",
        lambda m, x, i: (m.real(x), m.imag(x), m.conj(x), m.conjugate(i), m.imag(i)),
        [EDGE, INTS],
    ),
    (
        "array_equal array_equiv",
        lambda m, x, y: (
            m.array_equal(x, x),
            m.array_equal(x, x, equal_nan=True),
            m.array_equal(y, y + 0.0),
            m.array_equal(x, y),
            m.array_equiv(y, m.stack([y, y])),
            m.array_equiv(y, y[:2]),
            m.array_equal(y[:0], y[:0]),
        ),
        [EDGE, X],
    ),
    (
        "searchsorted",
        lambda m, a, v: (
            m.searchsorted(a, v),
            m.searchsorted(a, v, side="right"),
            m.searchsorted(a[::-1], 2.0, sorter=np.arange(10, -1, -1)),
            m.searchsorted(a[:0], v),
        ),
        [SORTED, PROBES],
    ),
    (
        "isin",
        lambda m, e, t: (m.isin(e, t), m.isin(e, t[::2], invert=True), m.isin(e, t[:0])),
        [PROBES, SORTED],
    ),
    (
        "digitize",
        lambda m, x, b: (
            m.digitize(x, b),
            m.digitize(x, b, right=True),
            m.digitize(x, b[::-1]),
            m.digitize(x, b[::-1], right=True),
            m.digitize(x, b[:0]),
        ),
        [AT, XP],
    ),
    (
        "interp",
        lambda m, x, xp, fp: (
            m.interp(x, xp, fp),
            m.interp(x, xp, fp, left=-5.0, right=7.0),
            m.interp(x, xp[:1], fp[:1], right=3.0),
            m.interp(x[:-3], xp, fp, period=2.5),
        ),
        [AT, XP, FP],
    ),
    (
        "convolve correlate",
        lambda m, a, v: tuple(
            f(p, q, mode)
            for f in (m.convolve, m.correlate)
            for p, q in ((a, v), (v, a))
            for mode in ("full", "same", "valid")
        ),
        [X[0], X[1, :3]],
    ),
    (
        "convolve ints bools",
        lambda m, i, j: (
            m.convolve(i, j[:4]),
            m.correlate(i, j[:3], "same"),
            m.convolve(i[:3] > 0, j > 1, "valid"),
            m.convolve(i, 0.5),
        ),
        [INTS, INTS[::-1]],
    ),
    (
        "vander",
        lambda m, x, i: (
            m.vander(x),
            m.vander(x, 3, increasing=True),
            m.vander(i, 0),
            m.vander(i > 0, 2),
        ),
        [X[0], INTS],
    ),
    (
        "ediff1d",
        lambda m, x, i: (
            m.ediff1d(x),
            m.ediff1d(x, to_end=[1.0, 2.0], to_begin=-1.0),
            m.ediff1d(i, to_begin=np.array([7], "i1")),
            m.ediff1d(x[:1]),
        ),
        [X, INTS],
    ),
]


def _leaves(out):
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _check(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-6 if w.dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("name, fn, args", CASES, ids=[c[0] for c in CASES])
def test_values_and_dtypes_match_numpy_eagerly_and_compiled(name, fn, args):
    ours, numpys = _both(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's (and ours) for 1/0, log(-1)
        want = _leaves(numpys(*args))
        eager = ours(*args)
        compiled = jg.jit(ours)(*args)
    assert all(isinstance(t, jg.Tensor) for t in (eager if isinstance(eager, tuple) else [eager]))
    _check(_leaves(eager), want)
    _check(_leaves(compiled), want)


SEARCHES = [c for c in CASES if c[0] in ("searchsorted", "isin", "digitize", "interp")]


def test_searches_by_one_sort_match_numpy(monkeypatch):
    # Beyond _COMPARISONS pairs the searches sort instead of comparing every pair: all of them
    # eagerly, and the compiled sort (each compiles in about a second) once.
    monkeypatch.setattr(ufuncs, "_COMPARISONS", 0)
    for _, fn, args in SEARCHES:
        ours, numpys = _both(fn)
        _check(_leaves(ours(*args)), _leaves(numpys(*args)))
    both_sides = _both(lambda m, a, v: (m.searchsorted(a, v), m.searchsorted(a, v, "right")))
    _check(_leaves(jg.jit(both_sides[0])(SORTED, PROBES)), _leaves(both_sides[1](SORTED, PROBES)))


def test_bincount_eagerly_and_compiled_with_length():
    ids, w = np.array([0, 3, 3, 1, 7]), np.array([0.5, 1.0, 2.0, -1.0, 4.0])
    np.testing.assert_array_equal(jnp.bincount(ids).numpy(), np.bincount(ids))
    assert jnp.bincount(ids).dtype == np.int64
    np.testing.assert_array_equal(
        jnp.bincount(ids, minlength=10).numpy(), np.bincount(ids, None, 10)
    )
    weighted = jnp.bincount(ids, w.astype(np.float32))
    assert weighted.dtype == np.float64  # numpy's: weights count in float64
    np.testing.assert_allclose(weighted.numpy(), np.bincount(ids, w))
    assert jnp.bincount([]).shape == (0,) and jnp.bincount([True, True]).numpy().tolist() == [0, 2]
    # JAX's length=: that many bins; larger values are dropped.
    f = jg.jit(lambda i, w: (jnp.bincount(i, length=5), jnp.bincount(i, w, length=9)))
    counts, sums = f(ids, w)
    np.testing.assert_array_equal(counts.numpy(), np.bincount(ids)[:5])
    np.testing.assert_allclose(sums.numpy(), np.bincount(ids, w, minlength=9))
    np.testing.assert_array_equal(jnp.bincount(ids, length=2).numpy(), [1, 1])


def test_dtypes_follow_numpy():
    f32, i8, i32 = X.astype(np.float32), INTS.astype(np.int8), INTS.astype(np.int32)
    for fn in (
        lambda m: m.arcsinh(f32),
        lambda m: m.copysign(f32, 2),
        lambda m: m.copysign(i32, f32[0, 0]),
        lambda m: m.fmax(f32, 1.0),
        lambda m: m.fmax(i8, 1),
        lambda m: m.fmod(i8, np.int16(3)),
        lambda m: m.fmod(INTS > 0, INTS > 5),  # numpy: int8 for bools
        lambda m: m.float_power(f32, 2),
        lambda m: m.trunc(i8),
        lambda m: m.conj(INTS > 0),  # numpy: int8
        lambda m: m.gcd(i8, np.uint8(6)),
        lambda m: m.angle(f32),
        lambda m: m.interp(f32[0], f32[1], f32[2]),  # float64 always
        lambda m: m.vander(f32[0]),  # float64: promoted with int64
        lambda m: m.vander(INTS > 0),
        lambda m: m.convolve(i8, f32[0]),
        lambda m: m.searchsorted(f32[0], 1.5),
        lambda m: m.signbit(i8),
    ):
        assert fn(jnp).dtype == np.asarray(fn(np)).dtype, fn(np).dtype


def test_integers_compute_in_float64_where_numpy_takes_a_smaller_float():
    # numpy computes int8 in float16 and int16 in float32; jitgrad.numpy's float functions of
    # integers are float64 (float16 has no arithmetic in compiled code).
    assert np.arcsinh(INTS.astype(np.int8)).dtype == np.float16
    for value in (jnp.arcsinh(INTS.astype(np.int8)), jnp.cbrt(INTS.astype(np.int16))):
        assert value.dtype == np.float64
    assert jnp.copysign(INTS.astype(np.int8), -1).dtype == np.float64
    assert jnp.angle(INTS.astype(np.int8)).dtype == np.float64


def test_signed_zeros_count_as_positive():
    # numpy reads the sign bit; jitgrad's ops cannot (documented in the module).
    zeros = np.array([-0.0, 0.0])
    assert jnp.signbit(zeros).numpy().tolist() == [False, False]
    assert jnp.copysign(1.0, zeros).numpy().tolist() == [1.0, 1.0]
    assert jnp.angle(zeros).numpy().tolist() == [0.0, 0.0]
    assert np.signbit(zeros).tolist() == [True, False]
    assert jnp.fmod(-2.0, 1.0).numpy() == 0.0 and np.signbit(jnp.fmod(-2.0, 1.0).numpy())


def test_gcd_covers_every_pair_of_int8_and_the_worst_int64_pairs():
    # Euclid runs a fixed number of steps, bounded by the dtype: the worst case of each.
    values = np.arange(-127, 128, dtype=np.int8)
    a, b = np.meshgrid(values, values)
    np.testing.assert_array_equal(jnp.gcd(a, b).numpy(), np.gcd(a, b))
    np.testing.assert_array_equal(jnp.lcm(a, b).numpy(), np.lcm(a, b))
    fib = [1, 1]
    while fib[-1] + fib[-2] < 2**63:
        fib.append(fib[-1] + fib[-2])
    f = np.array(fib, np.int64)  # consecutive Fibonacci numbers: the most steps
    np.testing.assert_array_equal(jnp.gcd(f[1:], f[:-1]).numpy(), np.ones(len(f) - 1))
    np.testing.assert_array_equal(jnp.gcd(-f[:-1], f[1:]).numpy(), np.ones(len(f) - 1))
    assert jnp.gcd(np.int32(1836311903), np.int32(1134903170)).numpy() == 1  # F(46), F(45)
    assert jnp.gcd(np.zeros(0, np.int64), 3).shape == (0,)


@pytest.mark.parametrize(
    "name, fn, args, order",
    [
        ("arcsinh", jnp.arcsinh, [X * 3], 2),
        ("arccosh", jnp.arccosh, [np.abs(X) + 1.1], 2),
        ("arctanh", jnp.atanh, [np.tanh(X)], 2),
        ("cbrt", jnp.cbrt, [X], 2),
        ("degrees radians", lambda x: jnp.rad2deg(x) * jnp.radians(x), [X], 2),
        ("float_power", jnp.float_power, [np.abs(X) + 0.5, X], 2),
        ("logaddexp2", jnp.logaddexp2, [X, X * 0.5 + 0.1], 2),
        ("copysign", jnp.copysign, [X, X[::-1] + 0.1], 2),
        ("fmax fmin", lambda x, y: jnp.fmax(x, y) * jnp.fmin(x, y) ** 2, [X, X * 0.5 + 0.1], 2),
        ("fmod", jnp.fmod, [X * 3, X * 0.4 + 0.1], 2),
        ("divmod", lambda x, y: jnp.divmod(x, y)[1], [X * 3, X * 0.4 + 0.1], 2),
        ("trunc fix angle", lambda x: jnp.trunc(x) * x + jnp.fix(x) + jnp.angle(x) * x, [X * 3], 2),
        ("real conj", lambda x: jnp.real(x) * jnp.conj(x), [X], 2),
        (
            "interp",
            lambda x, xp, fp: jnp.interp(x, xp, fp, right=fp[0] * 2),
            [X, np.array([-1.0, 0.0, 0.5, 2.0]), np.array([1.0, -1.0, 2.0, 0.5])],
            2,
        ),
        (
            "interp period",
            lambda x, fp: jnp.interp(x, np.array([0.1, 1.0, 2.0]), fp, period=2.5),
            [X * 2, np.array([1.0, -1.0, 2.0])],
            1,
        ),
        ("convolve", lambda a, v: jnp.convolve(a, v) ** 2, [X[0], X[1, :3]], 2),
        ("correlate", lambda a, v: jnp.correlate(a, v, "same"), [X[1, :3], X[0]], 2),
        ("vander", lambda x: jnp.vander(x, 4), [X[0]], 2),
        ("ediff1d", lambda x, b: jnp.ediff1d(x, to_begin=b) ** 2, [X, X[0, :2]], 2),
        ("bincount", lambda w: jnp.bincount(np.array([0, 3, 3, 1]), w) ** 2, [X[0]], 2),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gradients_match_finite_differences(name, fn, args, order):
    check_grads(fn, args, order=order)


def test_gradients_at_special_points():
    def grad(fn, *args, argnums=0):
        return jg.grad(fn, argnums=argnums)(*[np.asarray(a, np.float64) for a in args])

    # Odd functions take |x| as a where, not abs (whose gradient at 0 is 0).
    assert float(grad(jnp.arcsinh, 0.0)) == 1.0 and float(grad(jnp.arctanh, 0.0)) == 1.0
    assert float(grad(jnp.cbrt, -8.0)) == pytest.approx(1 / 12)
    assert float(grad(jnp.arccosh, 1.0)) == np.inf  # the true derivative, not NaN
    assert float(grad(jnp.arcsinh, 1e300)) == pytest.approx(1e-300)  # no overflow
    assert float(grad(jnp.fmod, 0.0, 2.0)) == 1.0
    assert float(grad(jnp.fmod, 5.0, -2.0, argnums=1)) == 2.0  # -trunc(x / y)
    assert float(grad(jnp.copysign, 2.0, -1.0)) == -1.0
    # fmax/fmin ignore a NaN: the gradient goes to the other operand.
    assert [float(g) for g in grad(jnp.fmax, 1.0, np.nan, argnums=(0, 1))] == [1.0, 0.0]
    assert [float(g) for g in grad(jnp.fmin, np.nan, 1.0, argnums=(0, 1))] == [0.0, 1.0]
    assert float(grad(jnp.logaddexp2, 3.0, 3.0)) == 0.5  # halves on ties
    # interp's gradient stays finite where x is infinite (the value is fp's end).
    g = grad(lambda fp: jnp.sum(jnp.interp(np.array([np.inf, -np.inf, 0.7]), XP, fp)), np.ones(6))
    assert np.isfinite(g.numpy()).all()
    # and the compiled gradient of a convolution agrees with the eager one.
    loss = lambda a, v: jnp.sum(jnp.convolve(a, v, "same") ** 2)  # noqa: E731
    _, compiled = jg.jit_grad(loss, wrt=(0, 1))(X[0], X[1, :3])
    eager = jg.grad(loss, argnums=(0, 1))(X[0], X[1, :3])
    for c, e in zip(compiled, eager):
        np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-12)


def test_numpy_functions_on_tensors_dispatch_here():
    t = jg.constant(EDGE[2:-3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ufunc in (np.arcsinh, np.asinh, np.arccosh, np.cbrt, np.trunc, np.conj, np.degrees):
            got = ufunc(t)
            assert isinstance(got, jg.Tensor), ufunc
            np.testing.assert_allclose(got.numpy(), ufunc(EDGE[2:-3]), rtol=1e-13)
    q, r = np.divmod(t, 1.5)
    assert isinstance(q, jg.Tensor) and np.allclose(r.numpy(), np.mod(EDGE[2:-3], 1.5))
    f = jg.jit(lambda x, i: (np.interp(x, XP[:3], FP[:3]) + np.fix(x), np.gcd(i, 6)))
    value, divisors = f(AT[:-3], INTS)
    np.testing.assert_allclose(value.numpy(), np.interp(AT[:-3], XP[:3], FP[:3]) + np.fix(AT[:-3]))
    np.testing.assert_array_equal(divisors.numpy(), np.gcd(INTS, 6))
    assert isinstance(np.isin(t, [1.0]), jg.Tensor) and isinstance(
        np.bincount(jg.constant([1])), jg.Tensor
    )
    assert jnp.euler_gamma == np.euler_gamma


def test_empty_arrays():
    empty = np.zeros((0, 3))
    for fn in (jnp.arcsinh, jnp.cbrt, jnp.trunc, jnp.signbit, jnp.angle):
        assert fn(empty).shape == (0, 3)
    assert jnp.fmod(empty, 2.0).shape == (0, 3)
    assert jnp.gcd(np.zeros((2, 0), int), 3).shape == (2, 0)
    assert jnp.searchsorted([1.0, 2.0], empty).shape == (0, 3)
    assert jnp.isin(empty, [1.0]).shape == (0, 3) and jnp.digitize(empty, [1.0]).shape == (0, 3)
    assert jnp.interp(empty, [0.0, 1.0], [1.0, 2.0]).shape == (0, 3)
    assert jnp.ediff1d([]).shape == (0,) and jnp.vander([], 3).shape == (0, 3)
    assert bool(jnp.array_equal(empty, empty)) and not bool(jnp.array_equal(empty, empty.T))


def test_unsupported_arguments_and_errors():
    with pytest.raises(TypeError, match="jitgrad.numpy.arcsinh: out=.*not supported"):
        jnp.arcsinh(X, out=np.empty_like(X))
    with pytest.raises(TypeError, match="jitgrad.numpy.copysign: where=.*not supported"):
        jnp.copysign(X, 1.0, where=X > 0)
    with pytest.raises(TypeError, match="jitgrad.numpy.divmod: out=.*not supported"):
        jnp.divmod(X, 2.0, out=(X, X))
    with pytest.raises(TypeError, match="jitgrad.numpy.fix: out="):
        jnp.fix(X, out=X)
    with pytest.raises(TypeError, match="gcd: numpy has no gcd for float64, Python int"):
        jnp.gcd(X, 2)
    with pytest.raises(TypeError, match="lcm: numpy has no lcm for bool, bool"):
        jnp.lcm(INTS > 0, INTS > 1)
    with pytest.raises(ValueError, match="searchsorted: side must be 'left' or 'right', got 'up'"):
        jnp.searchsorted(SORTED, 1.0, side="up")
    with pytest.raises(ValueError, match="searchsorted: a must be 1-d, got shape \\(3, 4\\)"):
        jnp.searchsorted(X, 1.0)
    with pytest.raises(ValueError, match="isin: invalid kind 'hash'"):
        jnp.isin(X, X, kind="hash")
    with pytest.raises(ValueError, match="digitize: bins must be monotonically increasing or"):
        jnp.digitize(X, [1.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="digitize: bins must be 1-d"):
        jnp.digitize(X, X)
    with pytest.raises(ValueError, match="interp: fp and xp are not of the same length"):
        jnp.interp(X, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="interp: the array of sample points xp is empty"):
        jnp.interp(X, [], [])
    with pytest.raises(ValueError, match="interp: xp and fp must be 1-d"):
        jnp.interp(X, X, X)
    with pytest.raises(ValueError, match="interp: period must be a non-zero value"):
        jnp.interp(X, [1.0, 2.0], [1.0, 2.0], period=0)
    with pytest.raises(ValueError, match="convolve: v cannot be empty"):
        jnp.convolve([1.0], [])
    with pytest.raises(ValueError, match="correlate: a must be 1-d"):
        jnp.correlate(X, [1.0])
    with pytest.raises(ValueError, match="mode must be one of 'valid', 'same', or 'full'"):
        jnp.convolve([1.0, 2.0], [1.0], mode="circular")
    with pytest.raises(ValueError, match="vander: x must be a one-dimensional array"):
        jnp.vander(X)
    with pytest.raises(TypeError, match="ediff1d: to_end of dtype float64 does not cast to"):
        jnp.ediff1d(INTS, to_end=1.5)
    with pytest.raises(ValueError, match="bincount: x must have no negative elements, got -1"):
        jnp.bincount([0, -1])
    with pytest.raises(TypeError, match="bincount: x must be integers, got float64"):
        jnp.bincount([1.0])
    with pytest.raises(ValueError, match="bincount: minlength must not be negative"):
        jnp.bincount([1], minlength=-1)
    with pytest.raises(ValueError, match="bincount: weights of shape \\(1,\\) and x of shape"):
        jnp.bincount([1, 2], weights=[1.0])
    with pytest.raises(jg.TracerError, match="bincount: the result's length.*pass length="):
        jg.jit(lambda i: jnp.bincount(i))(np.array([1, 2]))


BITS_A = np.array([5, -3, 12, -(2**30), 7], np.int32)
BITS_B = np.array([3, 1, 31, 2, 40], np.int32)  # 40: past int32's width, every bit out


def test_bitwise_functions_and_operators_match_numpy_eagerly_and_compiled():
    binary = ["bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift"]
    for name in binary:
        want = getattr(np, name)(BITS_A, BITS_B)
        got = getattr(jnp, name)(BITS_A, BITS_B)
        assert got.dtype == want.dtype and np.array_equal(got.numpy(), want), name
    assert np.array_equal(jnp.invert(BITS_A).numpy(), np.invert(BITS_A))
    assert jnp.bitwise_not is jnp.invert and jnp.bitwise_left_shift is jnp.left_shift
    assert jnp.bitwise_xor(np.uint8(5), 3).dtype == np.uint8  # a Python int is weak
    assert jnp.invert(np.array([True, False])).numpy().tolist() == [False, True]

    def operators(a, b):
        flags = (a > 0) ^ (b > 3)
        return a & b, a | 6, 12 ^ a, ~a, a << b, 1 << b, a >> b, -64 >> b, flags, ~flags

    want = operators(BITS_A, BITS_B)
    for got in (
        operators(jg.constant(BITS_A), jg.constant(BITS_B)),
        jg.jit(operators)(BITS_A, BITS_B),
    ):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and np.array_equal(g.numpy(), w), (g, w)
    assert np.array_equal(jg.math.logical_xor([True, False], [True, True]).numpy(), [False, True])
    with pytest.raises(
        TypeError, match="bitwise_and: expects integer or bool tensors of one dtype, got float32"
    ):
        jg.constant([1.0]) & 1
    with pytest.raises(TypeError, match="left_shift: expects integer tensors, got bool"):
        jg.bitwise.left_shift([True], [True])
    with pytest.raises(TypeError, match="logical_xor: expects bool tensors, got int32"):
        jg.math.logical_xor([1], [2])
