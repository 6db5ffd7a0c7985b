"""JAX's dynamic slices (jitgrad/ops/dynamic_slices.py, jitgrad.lax): numpy references with
JAX's clamping, known and traced starts, inside loops, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad import lax
from jitgrad.testing import check_grads

X = np.arange(60.0).reshape(3, 4, 5)


def clamped(starts, sizes, shape):
    return [min(max(s, 0), n - k) for s, k, n in zip(starts, sizes, shape)]


def numpy_slice(x, starts, sizes):
    first = clamped(starts, sizes, x.shape)
    return x[tuple(slice(f, f + k) for f, k in zip(first, sizes))]


def numpy_update(x, update, starts):
    first = clamped(starts, update.shape, x.shape)
    out = x.copy()
    out[tuple(slice(f, f + k) for f, k in zip(first, update.shape))] = update
    return out


# Every example compiles kernels of its own sizes: a few by default, more with -m slow.
@pytest.mark.parametrize(
    "examples", [6, pytest.param(60, marks=pytest.mark.slow)], ids=["default", "many"]
)
def test_slices_match_numpy_with_known_and_traced_starts(examples):
    settings(max_examples=examples, deadline=None)(given(data=st.data())(_slices_match))()


def _slices_match(data):
    sizes = [data.draw(st.integers(0, n)) for n in X.shape]
    starts = [data.draw(st.integers(-3, n + 3)) for n in X.shape]
    want = numpy_slice(X, starts, sizes)
    np.testing.assert_array_equal(lax.dynamic_slice(X, starts, sizes).numpy(), want)
    traced = jg.jit(lambda x, s: lax.dynamic_slice(x, [s[0], s[1], s[2]], sizes))
    np.testing.assert_array_equal(traced(X, np.array(starts)).numpy(), want)
    update = -np.arange(float(np.prod(sizes))).reshape(sizes)
    want = numpy_update(X, update, starts)
    np.testing.assert_array_equal(lax.dynamic_update_slice(X, update, starts).numpy(), want)
    written = jg.jit(lambda x, u, s: lax.dynamic_update_slice(x, u, (s[0], s[1], s[2])))
    np.testing.assert_array_equal(written(X, update, np.array(starts)).numpy(), want)


def test_a_loop_reads_and_writes_rows_by_its_counter():
    """The pattern ported JAX code uses: fori_loop with dynamic_slice / dynamic_update_slice."""
    x = np.arange(20.0).reshape(4, 5)

    def body(i, out):
        row = lax.dynamic_slice_in_dim(x, i, 1, axis=0)
        return lax.dynamic_update_slice_in_dim(out, row * i, i, axis=0)

    for run in (lambda f: f(), lambda f: jg.jit(f)()):
        got = run(lambda: lax.fori_loop(0, 4, body, np.zeros((4, 5))))
        np.testing.assert_array_equal(got.numpy(), x * np.arange(4.0)[:, None])


def test_gradients_flow_through_both():
    x = np.random.default_rng(0).standard_normal((4, 3))
    check_grads(lambda x: lax.dynamic_slice(x, (1, 1), (2, 2)) ** 2, [x])
    check_grads(lambda x, u: lax.dynamic_update_slice(x, u, (2, 0)) ** 2, [x, x[:2, :2]])

    def windows(x):
        sums = lambda i, acc: acc + lax.dynamic_slice_in_dim(x, i, 2) ** 2  # noqa: E731
        return jg.reduce_sum(lax.fori_loop(0, 3, sums, jg.zeros((2, 3), jg.float64)))

    _, grad = jg.jit_grad(windows)(x)
    counts = np.array([1.0, 2.0, 2.0, 1.0])[:, None]  # how many windows hold each row
    np.testing.assert_allclose(grad.numpy(), 2 * x * counts)


def test_select_and_stop_gradient():
    assert lax.select(np.array([True, False]), np.ones(2), np.zeros(2)).numpy().tolist() == [1, 0]
    assert float(jg.grad(lambda x: lax.stop_gradient(x) * x)(3.0)) == 3.0


def test_errors_name_the_op():
    with pytest.raises(ValueError, match="dynamic_slice: 2 start indices for an operand of shape"):
        lax.dynamic_slice(X, (0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="slice sizes \\[4, 1, 1\\] do not fit"):
        lax.dynamic_slice(X, (0, 0, 0), (4, 1, 1))
    with pytest.raises(ValueError, match="dynamic_slice: start indices must be integer scalars"):
        jg.jit(lambda x, s: lax.dynamic_slice(x, (s, 0, 0), (1, 1, 1)))(X, 1.5)
    with pytest.raises(
        ValueError, match="dynamic_update_slice: update \\(2,\\) must have the rank"
    ):
        lax.dynamic_update_slice(X, np.ones(2), (0, 0, 0))
