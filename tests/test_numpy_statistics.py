"""jitgrad.numpy's statistics (jitgrad/numpy/statistics.py): the nan-reductions, average, cov,
corrcoef and ptp. Values and dtypes against numpy eagerly and under jit (several functions per
compiled case), gradients against finite differences (zero, not NaN, on the NaNs), numpy's
edge cases and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)
# NaNs, with all-NaN slices along axis 2 (X[2, 0, :]) and along axis 1 (X[1, :, 3]).
X = RNG.standard_normal((3, 4, 5))
X[0, 1, 2] = np.nan
X[1, :, 3] = np.nan
X[2, 0, :] = np.nan
X32 = X.astype(np.float32)
# NaNs, but none of its slices all NaN (for positions and gradients).
XG = RNG.standard_normal((3, 5))
XG[0, 1] = XG[2, 4] = XG[1, 1] = np.nan
M = RNG.standard_normal((3, 6))
W6 = np.arange(1.0, 7.0)
INTS = np.arange(12, dtype=np.int32).reshape(3, 4) % 5
BOOLS = np.array([True, False, True])
U8 = np.array([1, 200, 7], np.uint8)
F = [1, 2, 1, 3, 1, 1]

# (name, the calls of a module `m` on the arrays, the arrays): each case returns a tuple, which
# jitgrad.numpy must match eagerly and compiled (one jitted function per case).
VALUES = [
    (
        "nansum nanprod",
        lambda m, x: (
            m.nansum(x, axis=(0, 2)),
            m.nansum(x),
            m.nanprod(x, axis=-1, keepdims=True),
            m.nansum(x, axis=1, dtype=np.float32),
        ),
        [X],
    ),
    (
        "integer sums",
        lambda m, i, b, u: (
            m.nansum(i, axis=1),
            m.nansum(b),
            m.nanprod(u).astype(np.int64),  # numpy's uint64: int64 here
            m.nancumsum(i, axis=0),
            m.nancumprod(b),
            m.nansum(i, dtype=np.float64),
        ),
        [INTS, BOOLS, U8],
    ),
    (
        "nanmean",
        lambda m, x, x32, i: (
            m.nanmean(x, axis=1),
            m.nanmean(x),
            m.nanmean(x, axis=(0, 2), keepdims=True),
            m.nanmean(x32, axis=-1),
            m.nanmean(i, axis=0),
            m.nanmean(x32, dtype=np.float64),
        ),
        [X, X32, INTS],
    ),
    (
        "nanvar nanstd",
        lambda m, x, i: (
            m.nanvar(x, axis=2, ddof=1),
            m.nanvar(x, axis=0, correction=1, keepdims=True),
            m.nanstd(x, axis=(1, 2)),
            m.nanstd(x),
            m.nanvar(x, axis=2, ddof=4),  # slices of 4 values or fewer: NaN
            m.nanstd(i, axis=1),
        ),
        [X, INTS],
    ),
    (
        "nanmax nanmin",
        lambda m, x, i, b: (
            m.nanmax(x, axis=2),
            m.nanmin(x, axis=(0, 1), keepdims=True),
            m.nanmax(x),
            m.nanmin(x, axis=-1),
            m.nanmin(i, axis=0),
            m.nanmax(b),
            m.nanmin(b),
        ),
        [X, INTS, BOOLS],
    ),
    (
        "nanargmax nanargmin",
        lambda m, x, i, b: (
            m.nanargmax(x, axis=1),
            m.nanargmin(x, axis=-2, keepdims=True),
            m.nanargmin(x, keepdims=True),
            m.nanargmax(x),
            m.nanargmax(i, axis=1),
            m.nanargmin(b),
            m.nanargmax(np.array([np.nan, -np.inf, -np.inf])),  # numpy: the NaN, as -inf
        ),
        [XG, INTS, BOOLS],
    ),
    (
        "nancumsum nancumprod",
        lambda m, x: (
            m.nancumsum(x, axis=1),
            m.nancumsum(x),
            m.nancumprod(x[0], axis=-1),
            m.nancumprod(x, axis=0),
        ),
        [X],
    ),
    (
        "nanmedian nanquantile nanpercentile",
        lambda m, x, i: (
            m.nanmedian(x, axis=2),
            m.nanquantile(x, [0.1, 0.9], axis=(0, -1)),
            m.nanpercentile(i, np.array([25, 50]), axis=1, keepdims=True),
        ),
        [X, INTS],
    ),
    (
        "empty arrays",
        lambda m, e, e2: (
            m.nansum(e),
            m.nanmean(e),
            m.nanmedian(e2, axis=1),
            m.nanvar(np.ones((0, 3)), axis=0),
            m.nanmax(np.ones((0, 2)), axis=1),
            m.nanargmax(np.ones((0, 2)), axis=1),
            m.nancumsum(e),
            m.nanquantile(e2, 0.5, axis=0),
        ),
        [np.zeros(0), np.zeros((2, 0))],
    ),
    (
        "average",
        lambda m, x, w, i: (
            m.average(x, axis=1),
            m.average(x, axis=1, weights=w),
            *m.average(x, axis=0, weights=np.arange(1.0, 4.0), returned=True, keepdims=True),
            m.average(x, weights=np.abs(x) + 0.5),
            *m.average(i, axis=1, returned=True),
            m.average(i, axis=-1, weights=np.array([1, 2, 3, 4], np.int32)),
            m.average(x[:2, :2].T, axis=None, weights=[[1.0, 2.0], [3.0, 4.0]]),
        ),
        [M, W6, INTS],
    ),
    (
        "average over axes",
        lambda m, x: (
            m.average(x, axis=(2, 1), weights=np.arange(20.0).reshape(5, 4) + 1),
            m.average(x, axis=(0, -1), weights=np.arange(15.0).reshape(3, 5) + 1, keepdims=True),
        ),
        [np.nan_to_num(X)],
    ),
    (
        "cov",
        lambda m, x: (
            m.cov(x),
            m.cov(x[0], x[1]),
            m.cov(x, rowvar=False, bias=True),
            m.cov(x[0]),
            m.cov(x, ddof=6),  # no degrees of freedom left: inf, as numpy
            m.cov(x.T, x.T[:, :2], rowvar=False),
            m.cov(np.ones((0, 3))),
        ),
        [M],
    ),
    (
        "cov weights",
        lambda m, x, a: (
            m.cov(x, fweights=F, aweights=a),
            m.cov(x, fweights=F, ddof=0),
            m.cov(x, aweights=a),
            m.cov(x, fweights=F),
            m.cov(x, aweights=a, bias=True),
        ),
        [M, W6],
    ),
    (
        "cov dtypes",
        lambda m, x32, i: (
            m.cov(x32),
            m.cov(x32, dtype=np.float32),
            m.cov(x32, dtype=np.float32, aweights=W6),
            m.cov(i),
            m.cov(i, i[::-1]),
        ),
        [M.astype(np.float32), INTS],
    ),
    (
        "corrcoef",
        lambda m, x: (
            m.corrcoef(x),
            m.corrcoef(x[0], x[1]),
            m.corrcoef(x[0]),
            m.corrcoef(x * 0.0 + 1.0),  # no variance: NaN
        ),
        [M],
    ),
    (
        "ptp",
        lambda m, x, xn, u, i: (
            m.ptp(x, axis=1),
            m.ptp(x, keepdims=True),
            m.ptp(xn, axis=2),  # a NaN in a slice: NaN
            m.ptp(u),
            m.ptp(i, axis=-1),
            m.ptp(np.ones((0, 2)), axis=1),
        ),
        [M, X, U8, INTS],
    ),
]

# More cases, eagerly only (each compiled sort costs a second or two of Numba).
EAGER_VALUES = [
    (
        "nanmedian",
        lambda m, x, x32, i: (
            m.nanmedian(x),
            m.nanmedian(x32, axis=(0, 2), keepdims=True),
            m.nanmedian(x, axis=-2),
            m.nanmedian(i, axis=1),
            m.nanmedian(x[0, 0, 0]),
            m.nanmedian([1.0, np.nan, 3.0, 2.0]),
        ),
        [X, X32, INTS],
    ),
    (
        "nanquantile nanpercentile",
        lambda m, x, x32: (
            m.nanquantile(x, [[0.0, 0.3], [0.5, 1.0]], axis=2),
            m.nanpercentile(x, 30, axis=-1, keepdims=True),
            m.nanquantile(x32, np.float64(0.3), axis=0),  # numpy: float64 for a float64 q
            m.nanquantile(x32, 0.7, axis=(0, 1)),  # and a's dtype for a Python float
            m.nanpercentile(x32, np.array([10, 90], np.float32)),
            m.nanquantile(x, 1, keepdims=True),
        ),
        [X, X32],
    ),
    (
        "corrcoef",
        lambda m, x: (
            m.corrcoef(x, rowvar=False),
            m.corrcoef(x[:2], dtype=np.float32),
            m.corrcoef(x[0], x[1], rowvar=False),
        ),
        [M],
    ),
]


def _numpy(fn, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's all-NaN and empty warnings
        return [np.asarray(v) for v in fn(np, *args)]


def _check(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    rtol = 1e-5 if want.dtype.itemsize < 8 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("name, fn, args", VALUES, ids=[v[0] for v in VALUES])
def test_values_and_dtypes_match_numpy_eagerly_and_compiled(name, fn, args):
    want = _numpy(fn, args)
    eager = fn(jnp, *args)
    compiled = jg.jit(lambda *xs: fn(jnp, *xs))(*args)
    assert len(eager) == len(compiled) == len(want)
    for got_eager, got_compiled, expected in zip(eager, compiled, want):
        assert isinstance(got_eager, jg.Tensor)
        _check(got_eager, expected)
        _check(got_compiled, expected)


@pytest.mark.parametrize("name, fn, args", EAGER_VALUES, ids=[v[0] for v in EAGER_VALUES])
def test_more_values_and_dtypes_match_numpy_eagerly(name, fn, args):
    want = _numpy(fn, args)
    eager = fn(jnp, *args)
    assert len(eager) == len(want)
    for got, expected in zip(eager, want):
        _check(got, expected)


XGRAD = RNG.standard_normal((3, 5))
XGRAD[0, 1] = XGRAD[2, 4] = np.nan  # NaNs, and no slice without a value


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("nansum", lambda x: jnp.nansum(x, axis=1) ** 2, [XGRAD]),
        ("nanprod", lambda x: jnp.nanprod(x, axis=0), [XGRAD]),
        ("nanmean", lambda x: jnp.nanmean(x, axis=-1, keepdims=True), [XGRAD]),
        ("nanvar", lambda x: jnp.nanvar(x, axis=1, ddof=1), [XGRAD]),
        ("nanstd", lambda x: jnp.nanstd(x), [XGRAD]),
        ("nanmax nanmin", lambda x: (jnp.nanmax(x, axis=0), jnp.nanmin(x, axis=1)), [XGRAD]),
        ("nancumsum", lambda x: jnp.nancumsum(x, axis=1) ** 2, [XGRAD]),
        ("nancumprod", lambda x: jnp.nancumprod(x), [XGRAD]),
        ("nanmedian", lambda x: jnp.nanmedian(x, axis=1), [XGRAD]),
        ("nanquantile", lambda x: jnp.nanquantile(x, [0.2, 0.7], axis=0), [XGRAD]),
        ("nanpercentile", lambda x: jnp.nanpercentile(x, 40), [XGRAD]),
        ("average", lambda x, w: jnp.average(x, axis=1, weights=w), [M, W6]),
        ("average returned", lambda x, w: jnp.average(x, 0, w, returned=True), [M, M * M + 1]),
        ("cov", lambda x, a: jnp.cov(x, fweights=F, aweights=a), [M, W6]),
        ("cov y", lambda x, y: jnp.cov(x, y, rowvar=False), [M.T, M[:1].T]),
        ("corrcoef", lambda x: jnp.corrcoef(x), [M]),
        ("ptp", lambda x: jnp.ptp(x, axis=1), [M]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gradients_match_finite_differences(name, fn, args):
    check_grads(fn, args, order=2)


def _nan_reductions(x, sorted_too=True):
    """A sum of each nan-reduction over a batch holding an all-NaN row (whose results are NaN
    and dropped by the last nansum)."""
    parts = [
        jnp.nanmean(x, axis=1),
        jnp.nanvar(x, axis=1),
        jnp.nanstd(x, axis=1),
        jnp.nanmax(x, axis=1),
        jnp.nanmin(x, axis=1),
        jnp.nansum(x, axis=1),
        jnp.nanprod(x, axis=1),
        jnp.nancumsum(x, axis=1)[:, -1],
    ]
    if sorted_too:
        parts += [jnp.nanmedian(x, axis=1), jnp.nanquantile(x, 0.3, axis=1)]
    return jnp.nansum(jnp.stack(parts))


def test_gradients_are_zero_on_nans_and_finite_elsewhere_eagerly_and_compiled():
    x = XGRAD.copy()
    x[1] = np.nan
    eager = np.asarray(jg.grad(_nan_reductions)(x))
    assert np.all(np.isfinite(eager)) and np.all(eager[np.isnan(x)] == 0.0)
    # Compiled without the sorts (whose gradients take seconds of Numba to compile).
    value, compiled = jg.jit_grad(lambda v: _nan_reductions(v, sorted_too=False))(x)
    want = np.asarray(jg.grad(lambda v: _nan_reductions(v, sorted_too=False))(x))
    assert np.isfinite(float(value))
    np.testing.assert_allclose(np.asarray(compiled), want, rtol=1e-12, atol=1e-14)
    assert np.all(np.asarray(compiled)[np.isnan(x)] == 0.0)
    # Equal values: std is not differentiable at variance 0; its gradient there is 0.
    flat = jg.grad(lambda v: jnp.nanstd(v))(np.array([2.0, 2.0, np.nan]))
    assert np.asarray(flat).tolist() == [0.0, 0.0, 0.0]


def test_quantiles_at_a_value_are_that_value_even_if_infinite():
    # numpy's interpolation gives NaN at positions on an infinite neighbour ((inf - 1) * 0);
    # between 1 and inf, numpy's arithmetic (inf - inf / 2) gives NaN here too.
    got = jnp.nanquantile(np.array([1.0, np.inf, np.nan]), [0.0, 0.5, 1.0]).numpy()
    assert got[0] == 1.0 and np.isnan(got[1]) and got[2] == np.inf


def test_quantile_levels_come_first_as_in_numpys_quantile():
    # numpy's nanquantile puts a 2-d q's axes elsewhere for a tuple of axes; its quantile
    # (and this nanquantile) put them first.
    q = [[0.1, 0.5], [0.6, 0.9]]
    got = jnp.nanquantile(np.nan_to_num(X), q, axis=(0, 2))
    np.testing.assert_allclose(got.numpy(), np.quantile(np.nan_to_num(X), q, axis=(0, 2)))


def test_all_nan_slices_under_jit_follow_jax():
    x = np.array([[np.nan, np.nan], [1.0, np.nan], [np.nan, -2.0]])
    f = jg.jit(lambda v: (jnp.nanargmax(v, axis=1), jnp.nanargmin(v, axis=1), jnp.nanmax(v, 1)))
    arg_max, arg_min, top = f(x)
    assert np.asarray(arg_max).tolist() == [-1, 0, 1]  # JAX's -1 for the all-NaN row
    assert np.asarray(arg_min).tolist() == [-1, 0, 1]
    assert np.isnan(np.asarray(top)[0]) and np.asarray(top)[1:].tolist() == [1.0, -2.0]


def test_weights_summing_to_zero_under_jit_give_non_finite_values():
    f = jg.jit(lambda x, w: jnp.average(x, axis=1, weights=w))
    out = np.asarray(f(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, -1.0])))
    assert not np.isfinite(out).any()


def test_numpy_calls_on_tensors_dispatch_here_and_trace():
    t = jg.constant(X)
    np.testing.assert_allclose(np.nanmean(t, axis=2).numpy(), np.nanmean(X, axis=2))
    assert isinstance(np.cov(jg.constant(M)), jg.Tensor)
    f = jg.jit(lambda x: np.nanmean(x) + np.average(x[0], weights=W6) + np.ptp(x))
    want = np.nanmean(M) + np.average(M[0], weights=W6) + np.ptp(M)
    assert np.isclose(float(f(M)), want, rtol=1e-12)


def test_errors_name_the_function():
    with pytest.raises(ValueError, match=r"nanmax: axis 1 of shape \(2, 0\) is empty"):
        jnp.nanmax(np.ones((2, 0)), axis=1)
    with pytest.raises(ValueError, match=r"ptp: axis 0 of shape \(0, 2\) is empty"):
        jnp.ptp(np.ones((0, 2)), axis=0)
    with pytest.raises(ValueError, match=r"nanargmin: axis 0 of shape \(0,\) is empty"):
        jnp.nanargmin(np.zeros(0))
    with pytest.raises(ValueError, match=r"nanargmax: All-NaN slice encountered along axis 1"):
        jnp.nanargmax(X, axis=1)
    with pytest.raises(TypeError, match=r"ptp: booleans cannot be subtracted"):
        jnp.ptp(BOOLS)
    with pytest.raises(TypeError, match=r"nanmean: dtype must be a float type, got int64"):
        jnp.nanmean(X, dtype=np.int64)
    with pytest.raises(ValueError, match=r"nanvar: give ddof or correction, not both"):
        jnp.nanvar(X, ddof=1, correction=1)
    with pytest.raises(TypeError, match=r"nanstd: mean=.* is not supported"):
        jnp.nanstd(X, mean=np.zeros(1))
    with pytest.raises(TypeError, match=r"nansum: out=.* is not supported"):
        jnp.nansum(X, out=np.zeros(()))
    with pytest.raises(ValueError, match=r"nanquantile: q must be numbers in \[0, 1\]"):
        jnp.nanquantile(X, [0.5, 1.5])
    with pytest.raises(ValueError, match=r"nanpercentile: q must be numbers in \[0, 100\]"):
        jnp.nanpercentile(X, -1)
    with pytest.raises(TypeError, match=r"nanquantile: method='nearest' is not supported"):
        jnp.nanquantile(X, 0.5, method="nearest")
    with pytest.raises(TypeError, match=r"nanpercentile: weights=.* is not supported"):
        jnp.nanpercentile(M, 50, axis=1, weights=W6)
    with pytest.raises(jg.TracerError, match=r"nanquantile's q"):
        jg.jit(lambda x, q: jnp.nanquantile(x, q))(M, np.float64(0.5))
    with pytest.raises(TypeError, match=r"average: weights of shape \(6,\) differ from a's"):
        jnp.average(M, weights=W6)
    with pytest.raises(ValueError, match=r"average: weights of shape \(3,\) do not fit axis 1"):
        jnp.average(M, axis=1, weights=W6[:3])
    with pytest.raises(ZeroDivisionError, match=r"average: weights sum to zero"):
        jnp.average(M, axis=1, weights=W6 - 3.5)
    with pytest.raises(ValueError, match=r"cov: ddof must be an integer, got 0.5"):
        jnp.cov(M, ddof=0.5)
    with pytest.raises(ValueError, match=r"cov: m has more than 2 dimensions: shape \(3, 4, 5\)"):
        jnp.cov(X)
    with pytest.raises(RuntimeError, match=r"cov: aweights must be 1-d, one per observation \(6\)"):
        jnp.cov(M, aweights=W6[:4])
    with pytest.raises(TypeError, match=r"cov: fweights must be integers"):
        jnp.cov(M, fweights=W6 / 2)
    with pytest.raises(ValueError, match=r"cov: aweights cannot be negative"):
        jnp.cov(M, aweights=-W6)
