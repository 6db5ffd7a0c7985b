"""numpy's functions with data-dependent lengths (jitgrad/numpy/selection.py): nonzero,
flatnonzero, argwhere, where(condition), extract, unique. Eagerly against numpy over
hypothesis-drawn arrays; under jit with JAX's `size=` against numpy's result cut or padded;
the refusal without `size`; gradients of the values they gather; the errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jitgrad as jg
import jitgrad.numpy as jnp
from jitgrad.core.errors import TracerError

# Small integers make repeats and zeros likely; NaNs test unique's equal_nan.
ARRAYS = st.one_of(
    hnp.arrays(
        np.int64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), elements=st.integers(-2, 2)
    ),
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=5),
        elements=st.sampled_from([0.0, 1.5, -1.0, np.nan, 2.0]),
    ),
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)),
)


def values(result):
    if isinstance(result, tuple):
        return tuple(np.asarray(r) for r in result)
    return np.asarray(result)


def assert_same(got, expected):
    got, expected = values(got), expected
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
        return
    assert got.shape == expected.shape, (got, expected)
    assert got.dtype == expected.dtype or got.dtype.kind == expected.dtype.kind == "i"
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(ARRAYS)
def test_eager_results_are_numpys(a):
    assert_same(jnp.nonzero(a), np.nonzero(a))
    assert_same(jnp.flatnonzero(a), np.flatnonzero(a))
    assert_same(jnp.argwhere(a), np.argwhere(a))
    assert_same(jnp.where(a), np.where(a))
    condition = np.asarray(a) != 0
    assert_same(jnp.extract(condition, a), np.extract(condition, a))
    every = dict(return_index=True, return_inverse=True, return_counts=True)
    assert_same(jnp.unique(a, **every), np.unique(a, **every))
    if a.dtype == np.float64:
        assert_same(
            jnp.unique(a, equal_nan=False, return_counts=True),
            np.unique(a, equal_nan=False, return_counts=True),
        )


def padded(array, size, fill):
    """numpy's 1-d result cut or padded to `size` with `fill`, as a `size=` call gives it."""
    out = np.full(size, fill, array.dtype)
    out[: min(size, len(array))] = array[:size]
    return out


@pytest.mark.parametrize("size", [0, 2, 3, 6])
def test_under_jit_size_cuts_or_pads(size):
    a = np.array([[0.0, 2.0, 0.0], [3.0, 0.0, 4.0]])  # three nonzero entries
    rows, cols = jg.jit(lambda x: jnp.nonzero(x, size=size, fill_value=(-1, -2)))(a)
    expected_rows, expected_cols = np.nonzero(a)
    np.testing.assert_array_equal(rows, padded(expected_rows, size, -1))
    np.testing.assert_array_equal(cols, padded(expected_cols, size, -2))
    flat = jg.jit(lambda x: jnp.flatnonzero(x, size=size))(a)
    np.testing.assert_array_equal(flat, padded(np.flatnonzero(a), size, 0))
    where = jg.jit(lambda x: jnp.where(x > 2.5, size=size, fill_value=9))(a)
    np.testing.assert_array_equal(where[1], padded(np.where(a > 2.5)[1], size, 9))
    rows_of = jg.jit(lambda x: jnp.argwhere(x, size=size, fill_value=7))(a)
    assert rows_of.shape == (size, 2)
    np.testing.assert_array_equal(rows_of[:, 0], padded(np.argwhere(a)[:, 0], size, 7))
    kept = jg.jit(lambda c, x: jnp.extract(c, x, size=size, fill_value=-5.0))(a > 0, a)
    np.testing.assert_array_equal(kept, padded(np.extract(a > 0, a), size, -5.0))


def test_unique_under_jit():
    a = np.array([3.0, np.nan, 1.0, np.nan, 3.0, 1.0, 1.0])
    fn = jg.jit(
        lambda x: jnp.unique(x, return_index=True, return_inverse=True, return_counts=True, size=5)
    )
    got = values(fn(a))
    want = np.unique(a, return_index=True, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(got[0][:3], want[0])
    np.testing.assert_array_equal(got[0][3:], [1.0, 1.0])  # padded with the smallest value (JAX)
    np.testing.assert_array_equal(got[1][:3], want[1])
    np.testing.assert_array_equal(got[2], want[2])  # the inverse has a's shape: no padding
    np.testing.assert_array_equal(got[3], [*want[3], 0, 0])
    cut = jg.jit(lambda x: jnp.unique(x, size=2, fill_value=-1.0, return_counts=True))(a)
    np.testing.assert_array_equal(values(cut)[0], [1.0, 3.0])
    np.testing.assert_array_equal(values(cut)[1], [3, 2])
    filled = jg.jit(lambda x: jnp.unique(x, size=4, fill_value=-1.0))(np.array([2.0, 2.0]))
    np.testing.assert_array_equal(filled, [2.0, -1.0, -1.0, -1.0])


def test_without_size_jit_refuses_and_says_what_to_pass():
    for fn in (jnp.nonzero, jnp.flatnonzero, jnp.argwhere, jnp.unique, jnp.where):
        with pytest.raises(TracerError, match=r"pass size= .* as in JAX \(test_selection.py:"):
            jg.jit(lambda x, fn=fn: fn(x))(np.ones(3))


def test_numpys_own_functions_on_tensors_come_here():
    t = jg.constant([0.0, 2.0, 2.0])
    assert_same(np.nonzero(t), np.nonzero(np.asarray(t)))
    assert isinstance(np.unique(t), jg.Tensor)
    assert_same(np.unique(t), np.array([0.0, 2.0], np.float32))


def test_gradients_flow_to_the_entries_gathered():
    x = jg.Variable(np.array([3.0, 1.0, 3.0, 2.0]))
    with jg.GradientTape() as tape:
        distinct = jnp.unique(x)  # [1, 2, 3]: x[1], x[3], and x[0] (the first 3)
        picked = jnp.extract(x > 1.5, x)  # x[0], x[2], x[3]
        loss = jnp.sum(distinct * jnp.array([1.0, 10.0, 100.0])) + jnp.sum(picked * 1000.0)
    np.testing.assert_array_equal(tape.gradient(loss, x), [1100.0, 1.0, 1000.0, 1010.0])
    compiled = jg.jit_grad(lambda x: jnp.sum(jnp.unique(x, size=3) ** 2))
    np.testing.assert_array_equal(compiled(np.array([3.0, 1.0, 3.0, 2.0]))[1], [6.0, 2.0, 0.0, 4.0])


def test_vmap_with_size():
    rows = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    got = jg.vmap(lambda r: jnp.nonzero(r, size=2, fill_value=-1)[0])(rows)
    np.testing.assert_array_equal(got, [[1, 2], [0, -1]])


def test_errors():
    with pytest.raises(ValueError, match="a 0-d array has no axis to index"):
        jnp.nonzero(np.float64(1.0))
    with pytest.raises(TypeError, match="unique: axis=0 is not supported"):
        jnp.unique(np.ones((2, 2)), axis=0)
    with pytest.raises(ValueError, match="size must be >= 0, got -1"):
        jnp.nonzero(np.ones(3), size=-1)
    with pytest.raises(TypeError, match="size must be an integer, got 2.5"):
        jnp.flatnonzero(np.ones(3), size=2.5)
    with pytest.raises(ValueError, match="fill_value has 3 entries for an array of 2 axes"):
        jnp.nonzero(np.ones((2, 2)), fill_value=(0, 0, 0))
    with pytest.raises(ValueError, match="condition has 2 entries and arr 3"):
        jnp.extract(np.ones(2, bool), np.ones(3))
    with pytest.raises(TypeError, match="give both x and y, or neither"):
        jnp.where(np.ones(2, bool), 1.0)
    with pytest.raises(TypeError, match="size and fill_value belong to the one-argument form"):
        jnp.where(np.ones(2, bool), 1.0, 2.0, size=2)


def test_tensorflows_where_with_a_condition_alone():
    got = jg.where([[True, False, True], [False, False, True]])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[0, 0], [0, 2], [1, 2]])  # tf.where's documented rows
    np.testing.assert_array_equal(jg.where(jg.constant([0.0, 2.0])), [[1]])  # nonzero: true
    assert jg.where(np.bool_(True)).shape == (1, 0)
    with pytest.raises(
        TypeError, match=r"where: with only a condition.*argwhere\(condition, size=n"
    ):
        jg.jit(lambda c: jg.where(c))(np.array([True, False]))
    with pytest.raises(TypeError, match="where: give both x and y, or neither"):
        jg.where([True], 1.0)
