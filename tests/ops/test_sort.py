"""Sorting (jitgrad/ops/sort.py): ties and NaNs in both directions against numpy's stable
order, eager against compiled, top_k as TensorFlow documents it, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.testing import check_grads

TIES = np.array([[3.0, 1.0, 3.0, np.nan, 1.0, -np.inf], [0.0, -0.0, 2.0, 2.0, np.nan, 5.0]])
INTS = np.array([[3, -128, 3, 127, 0], [1, 1, -1, 0, -128]], np.int8)
UNSIGNED = np.array([[3, 255, 0, 3], [1, 0, 1, 7]], np.uint8)


def stable_descending(x, axis):
    """numpy's stable order of -x (floats) or ~x (integers): largest first, ties by position,
    NaNs last."""
    return np.argsort(-x if x.dtype.kind == "f" else ~x, axis, kind="stable")


@pytest.mark.parametrize("x", [TIES, INTS, UNSIGNED], ids=["floats", "int8", "uint8"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_argsort_is_stable_and_compiled_equals_eager(x, axis):
    up = np.argsort(x, axis, kind="stable")
    down = stable_descending(x, axis)
    for run in (lambda f: f(x), lambda f: jg.jit(f)(x)):
        got_up = run(lambda v: jg.argsort(v, axis)).numpy()
        got_down = run(lambda v: jg.argsort(v, axis, direction="DESCENDING")).numpy()
        assert got_up.dtype == np.int32
        np.testing.assert_array_equal(got_up, up)
        np.testing.assert_array_equal(got_down, down)
        np.testing.assert_array_equal(
            run(lambda v: jg.sort(v, axis)).numpy(), np.take_along_axis(x, up, axis)
        )


def test_top_k_follows_tensorflow():
    """Largest first; of equal values the lower index first (tf.math.top_k's promise)."""
    values, indices = jg.math.top_k([1.0, 3.0, 2.0, 3.0], k=3)
    np.testing.assert_array_equal(values.numpy(), [3.0, 3.0, 2.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 3, 2])
    assert indices.dtype == np.int32
    batch = np.random.default_rng(0).standard_normal((4, 6))
    v, i = jg.jit(lambda x: jg.math.top_k(x, 2))(batch)
    np.testing.assert_array_equal(v.numpy(), -np.sort(-batch, 1)[:, :2])
    np.testing.assert_array_equal(np.take_along_axis(batch, i.numpy(), 1), v.numpy())


def test_sort_gradients_follow_the_values():
    x = np.random.default_rng(1).standard_normal((3, 5))
    check_grads(lambda x: jg.sort(x, axis=0) * np.arange(15.0).reshape(3, 5), [x])
    check_grads(lambda x: jg.math.top_k(x, 2)[0] ** 2, [x])
    _, grad = jg.jit_grad(lambda x: jg.reduce_sum(jg.math.top_k(x, 1)[0]))(
        np.array([1.0, 4.0, 2.0])
    )
    np.testing.assert_array_equal(grad.numpy(), [0.0, 1.0, 0.0])


def test_numpy_sort_and_argsort():
    x = np.array([[2.0, 1.0], [0.5, 3.0]])
    np.testing.assert_array_equal(jg.numpy.sort(x).numpy(), np.sort(x))
    np.testing.assert_array_equal(jg.numpy.sort(x, axis=None).numpy(), np.sort(x, axis=None))
    got = jg.numpy.argsort(x, axis=0)
    assert got.dtype == np.int64 and np.array_equal(got.numpy(), np.argsort(x, 0))
    np.testing.assert_array_equal(np.sort(jg.constant(x)).numpy(), np.sort(x))  # on a tensor


def test_sort_under_vmap():
    x = np.array([[3.0, 1.0, 2.0], [0.0, -1.0, 5.0]])
    np.testing.assert_array_equal(jg.vmap(jg.sort)(x).numpy(), np.sort(x, 1))
    np.testing.assert_array_equal(jg.vmap(jg.argsort)(x).numpy(), np.argsort(x, 1))


def test_errors_name_the_op():
    with pytest.raises(ValueError, match="sort: needs a tensor of at least one dimension"):
        jg.sort(1.0)
    with pytest.raises(ValueError, match="direction must be 'ASCENDING' or 'DESCENDING'"):
        jg.argsort([1.0], direction="UP")
    with pytest.raises(ValueError, match="top_k: k = 4 is not in \\[0, 3\\]"):
        jg.math.top_k([1.0, 2.0, 3.0], k=4)
    with pytest.raises(ValueError, match="sort: axis 2 is out of range"):
        jg.sort(np.ones((2, 2)), axis=2)
