"""The TensorFlow and numpy functions that ported code calls, composed from jitgrad's ops
(jitgrad/ops/composites.py, jitgrad/numpy/arrays.py and numeric.py): values against numpy (or
TensorFlow's documented results) eagerly and under jit, gradients against finite differences,
and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
SPECIAL = np.array([[1.0, 0.0, -3.0, np.nan], [np.inf, -np.inf, 2.0, 0.0]])

# (name, jitgrad's function of the arrays, numpy's, the arrays): eager and jit must match numpy.
VALUES = [
    ("all", lambda x: jnp.all(x, axis=1), lambda x: np.all(x, axis=1), [SPECIAL]),
    ("any", lambda x: jnp.any(x > 1.5), lambda x: np.any(x > 1.5), [X]),
    (
        "count_nonzero",
        lambda x: jnp.count_nonzero(x, axis=0),
        lambda x: np.count_nonzero(x, 0),
        [SPECIAL],
    ),
    ("flip", lambda x: jnp.flip(x), np.flip, [X]),
    ("flip axis", lambda x: jnp.flip(x, 1), lambda x: np.flip(x, 1), [X]),
    (
        "pad",
        lambda x: jnp.pad(x, ((1, 0), (2, 1)), constant_values=7.0),
        lambda x: np.pad(x, ((1, 0), (2, 1)), constant_values=7.0),
        [X],
    ),
    ("split", lambda x: jnp.split(x, [1, 3], axis=1), lambda x: np.split(x, [1, 3], axis=1), [X]),
    ("split sections", lambda x: jnp.split(x, 3), lambda x: np.split(x, 3), [X]),
    ("tril", lambda x: jnp.tril(x, 1), lambda x: np.tril(x, 1), [X]),
    ("triu", lambda x: jnp.triu(x, -1), lambda x: np.triu(x, -1), [X]),
    ("diff", lambda x: jnp.diff(x, 2), lambda x: np.diff(x, 2), [X]),
    ("diff axis 0", lambda x: jnp.diff(x, axis=0), lambda x: np.diff(x, axis=0), [X]),
    (
        "nan_to_num",
        lambda x: jnp.nan_to_num(x, nan=-1.0),
        lambda x: np.nan_to_num(x, nan=-1.0),
        [SPECIAL],
    ),
    (
        "broadcast_arrays",
        lambda x, y: jnp.broadcast_arrays(x, y),
        lambda x, y: np.broadcast_arrays(x, y),
        [X, X[:1]],
    ),
    ("diagonal", lambda x: jnp.diagonal(x, 1), lambda x: np.diagonal(x, 1), [X]),
    (
        "diagonal 3-d",
        lambda x: jnp.diagonal(x, -1, 2, 0),
        lambda x: np.diagonal(x, -1, 2, 0),
        [RNG.standard_normal((3, 2, 4))],
    ),
    ("meshgrid", lambda x, y: jnp.meshgrid(x, y), lambda x, y: np.meshgrid(x, y), [X[0], X[1, :3]]),
    (
        "meshgrid ij",
        lambda x, y: jnp.meshgrid(x, y, indexing="ij"),
        lambda x, y: np.meshgrid(x, y, indexing="ij"),
        [X[0], X[1, :3]],
    ),
    (
        "select",
        lambda x: jnp.select([x < -0.5, x > 0.5], [x, 2 * x], 9.0),
        lambda x: np.select([x < -0.5, x > 0.5], [x, 2 * x], 9.0),
        [X],
    ),
    ("kron", lambda x, y: jnp.kron(x, y), np.kron, [X[:2, :2], X[1:, 1:3]]),
    ("cross", lambda x, y: jnp.cross(x, y), np.cross, [X[:, :3], X[:, 1:]]),
    (
        "arctan2",
        lambda y, x: jnp.arctan2(y, x),
        np.arctan2,
        [
            np.array([1.0, -1.0, 0.0, 1.0, 0.0, -1.0, 2.0]),
            np.array([1.0, -1.0, -1.0, 0.0, 0.0, 0.0, -3.0]),
        ],
    ),
    (
        "heaviside",
        lambda x: jnp.heaviside(x, 0.5),
        lambda x: np.heaviside(x, 0.5),
        [np.array([-1.0, 0.0, 2.0])],
    ),
    ("sinc", lambda x: jnp.sinc(x), np.sinc, [np.array([0.0, 0.5, 1.0, -2.5])]),
    (
        "polyval",
        lambda x: jnp.polyval(np.array([1.0, -2.0, 3.0]), x),
        lambda x: np.polyval([1.0, -2.0, 3.0], x),
        [X],
    ),
    ("trapezoid", lambda y: jnp.trapezoid(y), np.trapezoid, [X]),
    (
        "trapezoid x",
        lambda y, x: jnp.trapezoid(y, x),
        lambda y, x: np.trapezoid(y, x),
        [X, np.array([0.0, 0.5, 2.0, 2.5])],
    ),
    ("median", lambda x: jnp.median(x, axis=1), lambda x: np.median(x, axis=1), [X]),
    ("median even", lambda x: jnp.median(x), np.median, [X]),
    (
        "quantile",
        lambda x: jnp.quantile(x, [0.1, 0.75], axis=0),
        lambda x: np.quantile(x, [0.1, 0.75], axis=0),
        [X],
    ),
    (
        "percentile",
        lambda x: jnp.percentile(x, 30, keepdims=True),
        lambda x: np.percentile(x, 30, keepdims=True),
        [X],
    ),
    ("tf.reverse", lambda x: jg.reverse(x, [0, 1]), lambda x: x[::-1, ::-1], [X]),
    ("tf.roll", lambda x: jg.roll(x, [1, -3], [0, 1]), lambda x: np.roll(x, (1, -3), (0, 1)), [X]),
    (
        "tf.repeat",
        lambda x: jg.repeat(x, [2, 0, 1], axis=0),
        lambda x: np.repeat(x, [2, 0, 1], 0),
        [X],
    ),
    ("tf.repeat flat", lambda x: jg.repeat(x, 2), lambda x: np.repeat(x, 2), [X]),
    ("tf.add_n", lambda x, y: jg.add_n([x, y, x]), lambda x, y: x + y + x, [X, X * 2]),
    (
        "tf.squared_difference",
        jg.math.squared_difference,
        lambda x, y: (x - y) ** 2,
        [X, X.T[:1].T],
    ),
    (
        "tf.l2_normalize",
        lambda x: jg.nn.l2_normalize(x, axis=1),
        lambda x: x / np.sqrt(np.maximum((x * x).sum(1, keepdims=True), 1e-12)),
        [X],
    ),
    ("tf.is_nan", jg.math.is_nan, np.isnan, [SPECIAL]),
    ("tf.is_inf", jg.math.is_inf, np.isinf, [SPECIAL]),
    ("tf.is_finite", jg.math.is_finite, np.isfinite, [SPECIAL]),
    ("tf.reduce_any", lambda x: jg.reduce_any(x > 1.0, axis=0), lambda x: (x > 1.0).any(0), [X]),
    ("tf.reduce_all", lambda x: jg.reduce_all(x < 3.0), lambda x: (x < 3.0).all(), [X]),
]


def _leaves(out):
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("name, ours, numpys, args", VALUES, ids=[v[0] for v in VALUES])
def test_values_match_numpy_eagerly_and_compiled(name, ours, numpys, args):
    want = _leaves(numpys(*args))
    eager = _leaves(ours(*args))
    compiled = _leaves(jg.jit(ours)(*args))
    assert len(eager) == len(compiled) == len(want)
    for got_eager, got_compiled, expected in zip(eager, compiled, want):
        assert got_eager.shape == expected.shape, (got_eager.shape, expected.shape)
        np.testing.assert_allclose(got_eager, expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got_compiled, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("flip", lambda x: jnp.flip(x, 0) * np.arange(12.0).reshape(3, 4), [X]),
        ("pad", lambda x: jnp.pad(x, 1) ** 2, [X]),
        ("tril", lambda x: jnp.tril(x) ** 2, [X]),
        ("diff", lambda x: jnp.diff(x, 2) ** 2, [X]),
        ("diagonal", lambda x: jnp.diagonal(x) ** 2, [X]),
        ("kron", lambda x, y: jnp.kron(x, y), [X[:2, :2], X[1:, 1:3]]),
        ("cross", jnp.cross, [X[:, :3], X[:, 1:]]),
        ("arctan2", jnp.arctan2, [X, X.T[:1].T + 0.1]),
        ("sinc", jnp.sinc, [np.array([0.3, 1.7, -2.2])]),
        ("polyval", lambda x: jnp.polyval(np.array([1.0, -2.0, 3.0]), x), [X]),
        ("trapezoid", lambda y: jnp.trapezoid(y, np.array([0.0, 0.5, 2.0, 2.5])), [X]),
        ("median", lambda x: jnp.median(x, axis=0), [X]),
        ("quantile", lambda x: jnp.quantile(x, [0.2, 0.9], axis=1), [X]),
        ("roll", lambda x: jg.roll(x, 2, 1) * np.arange(12.0).reshape(3, 4), [X]),
        ("repeat", lambda x: jg.repeat(x, [1, 3, 0], axis=0) ** 2, [X]),
        ("l2_normalize", lambda x: jg.nn.l2_normalize(x, axis=0), [X]),
        ("squared_difference", jg.math.squared_difference, [X, X[::-1]]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gradients_match_finite_differences(name, fn, args):
    check_grads(fn, args, order=2)


def test_sinc_and_arctan2_gradients_are_finite_at_their_special_points():
    assert float(jg.grad(lambda x: jnp.sinc(x))(0.0)) == 0.0  # sinc'(0), the limit
    g = jg.grad(lambda y, x: jnp.arctan2(y, x), argnums=(0, 1))(0.0, -1.0)
    assert np.allclose([float(v) for v in g], [-1.0, 0.0])


def test_tensorflow_forms():
    np.testing.assert_array_equal(
        jg.sequence_mask([1, 3, 2], 5).numpy(),
        [
            [True, False, False, False, False],
            [True, True, True, False, False],
            [True, True, False, False, False],
        ],
    )
    assert jg.sequence_mask([1, 2], dtype=jg.float32).numpy().tolist() == [[1.0, 0.0], [1.0, 1.0]]
    table = np.arange(8.0).reshape(4, 2)
    np.testing.assert_array_equal(
        jg.nn.embedding_lookup(table, [[3, 0], [3, 3]]).numpy(), table[[[3, 0], [3, 3]]]
    )
    _, grad = jg.jit_grad(lambda t: jg.reduce_sum(jg.nn.embedding_lookup(t, [3, 3, 1])))(table)
    np.testing.assert_array_equal(grad.numpy()[:, 0], [0.0, 1.0, 0.0, 2.0])  # repeats add up
    assert int(jg.math.count_nonzero([[0, 1], [2, 0]])) == 2
    assert jg.math.reciprocal(np.array([2.0, 4.0])).numpy().tolist() == [0.5, 0.25]
    x, y = jg.meshgrid([1, 2, 3], [4, 5])
    assert x.numpy().tolist() == [[1, 2, 3], [1, 2, 3]] and y.numpy().tolist() == [
        [4, 4, 4],
        [5, 5, 5],
    ]
    assert np.isnan(jnp.median(np.array([1.0, np.nan, 3.0])).numpy())  # as numpy's
    ints = np.arange(4)
    chosen = jnp.select([ints > 1], [ints], 0.5)  # numpy promotes a Python default weakly
    assert chosen.dtype == np.float64 and chosen.numpy().tolist() == [0.5, 0.5, 2.0, 3.0]
    assert jnp.select([ints > 1], [ints.astype(np.float32)], 0).dtype == np.float32


def test_numpy_calls_on_tensors_dispatch_to_them():
    t = jg.constant(X)
    np.testing.assert_allclose(np.median(t, axis=0).numpy(), np.median(X, axis=0))
    np.testing.assert_array_equal(np.flip(t).numpy(), np.flip(X))
    f = jg.jit(lambda x: np.quantile(x, 0.5) + np.trapezoid(x[0]))
    assert np.isclose(float(f(X)), np.quantile(X, 0.5) + np.trapezoid(X[0]))


def test_errors_name_the_function():
    with pytest.raises(TypeError, match="reduce_all: expects a bool tensor"):
        jg.reduce_all([1.0, 0.0])
    with pytest.raises(ValueError, match="add_n: all tensors must have one shape"):
        jg.add_n([np.ones(2), np.ones(3)])
    with pytest.raises(ValueError, match="repeat: repeats \\[1, 2\\] do not fit axis 0 of size 3"):
        jg.repeat(np.ones(3), [1, 2])
    with pytest.raises(ValueError, match="pad: mode 'edge' is not supported"):
        jnp.pad(np.ones(2), 1, mode="edge")
    with pytest.raises(ValueError, match="quantile: q must be a number or 1-d, in \\[0, 1\\]"):
        jnp.quantile(X, 1.5)
    with pytest.raises(jg.TracerError, match="quantile's q"):
        jg.jit(lambda x, q: jnp.quantile(x, q))(X, np.float64(0.5))
    with pytest.raises(jg.TracerError, match="repeat's repeats"):
        jg.jit(lambda x, r: jg.repeat(x, r))(np.ones(2), np.array([1, 2]))
    with pytest.raises(ValueError, match="cross: needs 3-vectors"):
        jnp.cross(np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="embedding_lookup: sharded params"):
        jg.nn.embedding_lookup([np.ones((2, 2)), np.ones((2, 2))], [0])
