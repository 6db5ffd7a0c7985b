"""Values and derivatives at singular points, pinned to exact numbers.

The conventions are TensorFlow's (abs'(0) = 0, relu'(0) = 0, ties of maximum/minimum go to the
first argument, ties of reduce_max/reduce_min are shared evenly, sqrt'(0) = +inf), except pow,
whose x-derivative is 0 where the exponent is 0 (TensorFlow gives NaN at x = 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.testing import eager_gradient

FLOATS = [np.float32, np.float64]
# The singular points divide by zero (sqrt'(0)) and overflow on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def grads(f, *xs, dtype=np.float64):
    """The gradients of sum(f(*xs)) w.r.t. every x, as numpy arrays (None where unconnected),
    by the eager VJP rules (jitgrad.test.eager_gradient: never the tape's compiled kernels)."""
    ts = [jg.constant(np.asarray(x, dtype)) for x in xs]
    return [None if g is None else np.asarray(g) for g in eager_gradient(lambda: f(*ts), ts)]


def grad(f, x, dtype=np.float64):
    return grads(f, x, dtype=dtype)[0]


def hessian(f, x):
    """d^2 sum(f) / dx_i dx_j as a (size, size) array, by nested tapes."""
    x = jg.constant(np.asarray(x, np.float64))
    rows = []
    for j in range(x.size):
        e = np.zeros(x.shape)
        e.reshape(-1)[j] = 1.0

        def slope(e=e):
            return jg.reduce_sum(eager_gradient(lambda: f(x), x) * e)

        row = eager_gradient(slope, x)
        rows.append(np.zeros(x.size) if row is None else np.asarray(row).reshape(-1))
    return np.array(rows)


def same(got, want):
    """Exact equality, NaN-free, with dtype-independent comparison."""
    got = np.asarray(got)
    assert not np.isnan(got).any(), got
    np.testing.assert_array_equal(got, np.asarray(want, got.dtype))


# ---------------------------------------------------------------------------------------------
# Kinks


@pytest.mark.parametrize("dtype", FLOATS)
def test_abs_derivative_at_zero_is_zero(dtype):
    same(grad(jg.abs, [0.0, -0.0, 1.5, -2.0], dtype), [0, 0, 1, -1])


@pytest.mark.parametrize("dtype", FLOATS)
def test_relu_family_at_their_kinks(dtype):
    same(grad(jg.nn.relu, [-1.0, 0.0, 2.0], dtype), [0, 0, 1])
    same(grad(jg.nn.relu6, [-1.0, 0.0, 3.0, 6.0, 7.0], dtype), [0, 0, 1, 0, 0])
    same(grad(jg.nn.leaky_relu, [-1.0, 0.0, 2.0], dtype), [dtype(0.2), dtype(0.2), 1])
    same(grad(jg.nn.elu, [0.0, 2.0], dtype), [1, 1])
    same(grad(jg.nn.relu, [0.0], dtype), [0])
    # Second derivatives are computed (and zero) on the linear pieces.
    np.testing.assert_array_equal(hessian(jg.nn.relu, [-1.0, 2.0]), np.zeros((2, 2)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_maximum_minimum_ties_go_to_the_first_argument(dtype):
    # TensorFlow's mask is x >= y (maximum) and x <= y (minimum).
    for op in (jg.maximum, jg.minimum):
        dx, dy = grads(op, [1.0, 2.0], [1.0, 2.0], dtype=dtype)
        same(dx, [1, 1])
        same(dy, [0, 0])
    dx, dy = grads(jg.maximum, [1.0, 2.0, 3.0], 2.0, dtype=dtype)
    same(dx, [0, 1, 1])
    same(dy, 1)
    dx, dy = grads(jg.minimum, [1.0, 2.0, 3.0], 2.0, dtype=dtype)
    same(dx, [1, 1, 0])
    same(dy, 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_reduce_max_min_ties_share_the_gradient_evenly(dtype):
    same(grad(jg.reduce_max, [1.0, 3.0, 3.0, 2.0], dtype), [0, 0.5, 0.5, 0])
    third = dtype(1) / dtype(3)
    same(grad(jg.reduce_min, [1.0, 3.0, 1.0, 1.0], dtype), [third, 0, third, third])
    same(grad(jg.reduce_max, [5.0, 5.0, 5.0, 5.0], dtype), [0.25] * 4)
    x = [[1.0, 4.0, 4.0], [2.0, 2.0, 0.0]]
    same(grad(lambda t: jg.reduce_max(t, axis=1), x, dtype), [[0, 0.5, 0.5], [0.5, 0.5, 0]])
    same(grad(lambda t: jg.reduce_min(t, axis=-2, keepdims=True), x, dtype), [[1, 0, 0], [0, 1, 1]])
    same(grad(lambda t: t.max(), x, dtype), [[0, 0.5, 0.5], [0, 0, 0]])


def test_reduce_max_of_minus_infinity_and_of_nothing():
    same(grad(jg.reduce_max, [-np.inf, -np.inf]), [0.5, 0.5])
    assert float(jg.reduce_max(np.zeros(0))) == -np.inf  # TensorFlow's identity
    assert jg.reduce_max(np.zeros((0, 2)), axis=0).numpy().tolist() == [-np.inf, -np.inf]
    assert int(jg.reduce_max(np.zeros(0, np.int32))) == np.iinfo(np.int32).min


@pytest.mark.parametrize("dtype", FLOATS)
def test_sqrt_derivative_at_zero_is_plus_infinity(dtype):
    g = grad(jg.sqrt, [0.0, 4.0], dtype)
    assert g[0] == np.inf and g[1] == 0.25 and g.dtype == dtype


@pytest.mark.parametrize("dtype", FLOATS)
def test_clip_by_value_passes_the_gradient_at_its_bounds(dtype):
    t = [-1.0, -0.5, 0.0, 0.75, 1.0]
    same(grad(lambda x: jg.clip_by_value(x, -0.5, 0.75), t, dtype), [0, 1, 1, 1, 0])
    # A collapsed interval: the tie at lo == hi == t still passes.
    same(grad(lambda x: jg.clip_by_value(x, 0.5, 0.5), [0.5, 0.0], dtype), [1, 0])
    dt, dlo, dhi = grads(jg.clip_by_value, t, -0.5, 0.75, dtype=dtype)
    same(dt, [0, 1, 1, 1, 0])
    same(dlo, 1)
    same(dhi, 1)


# ---------------------------------------------------------------------------------------------
# pow at 0


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("power", "value", "slope", "curvature"),
    [(0, 1, 0, 0), (1, 0, 1, 0), (2, 0, 0, 2), (3, 0, 0, 0)],
)
def test_integer_powers_at_zero(dtype, power, value, slope, curvature):
    same(jg.constant(np.asarray(0.0, dtype)) ** power, value)
    same(grad(lambda x: x**power, 0.0, dtype), slope)
    same(grad(lambda x: jg.pow(x, np.asarray(float(power), dtype)), [0.0], dtype), [slope])
    assert hessian(lambda x: x**power, [0.0]).tolist() == [[curvature]]


def test_pow_exponent_derivative_conventions():
    # d/dy x^y = x^y log x, taken as 0 where x <= 0 (log undefined) instead of NaN.
    dx, dy = grads(jg.pow, [0.0, -2.0, 2.0], [2.0, 3.0, 3.0])
    same(dx, [0, 12, 12])
    same(dy, [0, 0, 8 * math.log(2.0)])
    same(grad(lambda y: 0.0**y, 2.0), 0)


# ---------------------------------------------------------------------------------------------
# Numerically stable functions at extreme inputs


@pytest.mark.parametrize("dtype", FLOATS)
def test_softplus_of_large_inputs(dtype):
    x = [1000.0, 100.0, -1000.0, 0.0]
    y = jg.nn.softplus(np.asarray(x, dtype)).numpy()
    same(y[:3], [1000, 100, 0])
    assert y[3] == dtype(math.log(2.0))
    same(grad(jg.nn.softplus, x, dtype), [1, 1, 0, 0.5])
    same(jg.nn.log_sigmoid(np.asarray([-1000.0, 1000.0], dtype)), [-1000, 0])


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_and_its_cross_entropy_at_extremes(dtype):
    same(jg.sigmoid(np.asarray([-1000.0, 0.0, 1000.0], dtype)), [0, 0.5, 1])
    same(grad(jg.sigmoid, [-1000.0, 0.0, 1000.0], dtype), [0, 0.25, 0])
    loss = jg.nn.sigmoid_cross_entropy_with_logits(
        labels=np.asarray([1.0, 0.0, 1.0], dtype),
        logits=np.asarray([1000.0, -1000.0, -1000.0], dtype),
    )
    same(loss, [0, 0, 1000])


def test_logsumexp_does_not_overflow_and_handles_minus_infinity():
    assert float(jg.reduce_logsumexp(np.array([1000.0, 1000.0]))) == 1000.0 + math.log(2.0)
    assert float(jg.nn.logsumexp(np.array([1000.0, 1000.0], np.float32))) == np.float32(
        1000.0
    ) + np.float32(math.log(2.0))
    assert float(jg.reduce_logsumexp(np.array([-np.inf, -np.inf]))) == -np.inf
    out = jg.reduce_logsumexp(np.array([[-np.inf, -np.inf], [0.0, 0.0]]), axis=1, keepdims=True)
    assert out.numpy().tolist() == [[-np.inf], [math.log(2.0)]]
    assert float(jg.reduce_logsumexp(np.array([-1000.0, -1000.0]))) == -1000.0 + math.log(2.0)
    same(grad(jg.reduce_logsumexp, [1000.0, 1000.0]), [0.5, 0.5])


def test_softmax_of_large_logits():
    same(jg.nn.softmax(np.array([1000.0, 0.0, 1000.0])), [0.5, 0, 0.5])
    # Regression: computed as x - logsumexp(x), the rounding of 1000 + log 2 leaked through.
    same(jg.nn.log_softmax(np.array([1000.0, 1000.0])), [-math.log(2.0)] * 2)
    same(jg.nn.log_softmax(np.array([1e4, 1e4], np.float32)), [-np.float32(math.log(2.0))] * 2)
    same(
        jg.nn.sparse_softmax_cross_entropy_with_logits(
            labels=[0], logits=np.array([[1e4, 1e4]], np.float32)
        ),
        [np.float32(math.log(2.0))],
    )
    g = grad(lambda z: jg.nn.softmax(z) * np.array([1.0, 2.0, 3.0]), [1000.0, 0.0, 1000.0])
    same(g, [-0.5, 0, 0.5])


def test_sparse_softmax_cross_entropy_with_a_minus_infinity_logit():
    logits = np.array([[0.0, -np.inf, 0.0], [-np.inf, 0.0, 0.0]])
    labels = np.array([0, 2])

    def loss(z):
        return jg.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z)

    same(loss(jg.constant(logits)), [math.log(2.0), math.log(2.0)])
    same(grad(loss, logits), [[-0.5, 0, 0.5], [0, 0.5, -0.5]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_elu_selu_large_positive_inputs_have_no_nan_gradient(dtype):
    x = [1000.0, 100.0, 2.0]
    same(grad(jg.nn.elu, x, dtype), [1, 1, 1])
    same(grad(jg.nn.selu, x, dtype), [dtype(1.0507009873554804934193349852946)] * 3)
    same(jg.nn.elu(np.asarray([-1000.0], dtype)), [-1])
    same(grad(jg.nn.elu, [-1000.0], dtype), [0])
    h = hessian(jg.nn.elu, [1000.0, -1000.0])
    same(h, np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# Products with zeros


def test_reduce_prod_gradient_with_zeros_is_exact():
    same(grad(jg.reduce_prod, [2.0, 3.0, 4.0]), [12, 8, 6])
    same(grad(jg.reduce_prod, [2.0, 0.0, 3.0]), [0, 6, 0])
    same(grad(jg.reduce_prod, [0.0, 2.0, 0.0]), [0, 0, 0])
    same(grad(lambda x: jg.reduce_prod(x, axis=1), [[0.0, 5.0], [3.0, 4.0]]), [[5, 0], [4, 3]])
    same(grad(lambda x: jg.reduce_prod(x, axis=0), [[0.0, 5.0], [3.0, 0.0]]), [[3, 0], [0, 5]])


def test_reduce_prod_second_derivative_with_zeros_is_exact():
    """Regression: the rule returned a constant 0 off a single zero, so d^2/dx_i dx_zero
    (the product of the remaining entries) came out as 0."""
    same(hessian(jg.reduce_prod, [2.0, 0.0, 3.0]), [[0, 3, 0], [3, 0, 2], [0, 2, 0]])
    same(hessian(jg.reduce_prod, [0.0, 2.0, 0.0]), [[0, 0, 2], [0, 0, 0], [2, 0, 0]])
    same(hessian(jg.reduce_prod, [0.0, 0.0, 0.0, 5.0]), np.zeros((4, 4)))
    same(hessian(jg.reduce_prod, [2.0, 3.0, 4.0]), [[0, 4, 3], [4, 0, 2], [3, 2, 0]])


# ---------------------------------------------------------------------------------------------
# Piecewise-constant ops and non-differentiable ones


@pytest.mark.parametrize("dtype", FLOATS)
def test_integer_valued_ops_have_zero_gradients(dtype):
    x = [-1.5, -0.5, 0.0, 0.5, 1.0, 2.5]
    for op in (jg.floor, jg.ceil, jg.round, jg.sign):
        same(grad(op, x, dtype), np.zeros(6))
    same(jg.round(np.asarray(x, dtype)), [-2, -0.0, 0, 0, 1, 2])  # half to even
    same(jg.floor(np.asarray(x, dtype)), [-2, -1, 0, 0, 1, 2])
    same(jg.sign(np.asarray(x, dtype)), [-1, -1, 0, 1, 1, 1])
    # The second derivative is computed too, and is zero.
    same(hessian(jg.floor, [0.5, 1.5]), np.zeros((2, 2)))


def test_casts_to_integers_and_argmax_disconnect_the_gradient():
    assert grad(lambda x: jg.cast(jg.cast(x, jg.int32), jg.float64), [1.5]) is None
    x = jg.constant([1.5, -2.5])
    same(eager_gradient(lambda: x * jg.cast(jg.argmax(x), jg.float32), x), [0, 0])
    same(grad(lambda x: x * jg.stop_gradient(x), [3.0, -2.0]), [3, -2])


def test_mod_derivatives():
    dx, dy = grads(jg.math.floormod, [7.0, -7.0], [3.0, 3.0])
    same(dx, [1, 1])
    same(dy, [-2, 3])  # -floor(x / y)


# ---------------------------------------------------------------------------------------------
# Accumulation and shapes


def test_repeated_indices_accumulate_in_the_gradient():
    x = [10.0, 20.0, 30.0]
    same(grad(lambda t: jg.gather(t, [0, 0, 2, 0]), x), [3, 0, 1])
    same(grad(lambda t: t[[1, 1, -2]], x), [0, 3, 0])
    same(grad(lambda t: jg.take(t, [[2, 2], [2, 0]]), x), [1, 0, 3])
    m = [[1.0, 2.0], [3.0, 4.0]]
    same(grad(lambda t: jg.gather_nd(t, [[0, 1], [0, 1], [1, 0]]), m), [[0, 2], [1, 0]])
    same(grad(lambda t: jg.gather(t, [1, 1], axis=1), m), [[0, 2], [0, 2]])
    same(grad(lambda t: t[[0, 0], [1, 1]], m), [[0, 2], [0, 0]])


def test_unused_pieces_get_zero_gradients():
    x = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    same(grad(lambda t: jg.unstack(t)[1], x), [[0, 0], [1, 1], [0, 0]])
    same(grad(lambda t: jg.split(t, [1, -1], axis=0)[0] * 2.0, x), [[2, 2], [0, 0], [0, 0]])
    same(grad(lambda t: t[::-2, 1], x), [[0, 1], [0, 0], [0, 1]])


def test_empty_tensors_keep_their_shapes():
    same(jg.reduce_sum(np.zeros((0, 3)), axis=0), [0, 0, 0])
    same(jg.reduce_prod(np.zeros((0, 3)), axis=0), [1, 1, 1])
    g = grad(lambda t: jg.reduce_sum(t, axis=1), np.zeros((0, 3)))
    assert g.shape == (0, 3)
    da, db = grads(jg.matmul, np.ones((2, 0)), np.ones((0, 3)))
    assert da.shape == (2, 0) and db.shape == (0, 3)
    same(jg.matmul(np.ones((2, 0)), np.ones((0, 3))), np.zeros((2, 3)))
    assert np.isnan(float(jg.reduce_mean(np.zeros(0))))  # 0 / 0, as TensorFlow


def test_exact_small_values():
    same(jg.nn.l2_loss(np.array([3.0, 4.0])), 12.5)
    same(grad(jg.nn.l2_loss, [3.0, 4.0]), [3, 4])
    same(grad(jg.rsqrt, 4.0), -1 / 16)
    same(jg.nn.gelu(np.array([0.0])), [0])
    same(grad(jg.nn.gelu, [0.0]), [0.5])
    same(grad(lambda x: jg.nn.gelu(x, approximate=True), [0.0]), [0.5])
    same(grad(jg.nn.softsign, [0.0, 1.0]), [1, 0.25])
    same(grad(jg.nn.silu, [0.0]), [0.5])
    same(grad(jg.square, [3.0, -1.0]), [6, -2])
