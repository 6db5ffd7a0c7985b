"""Functional index updates (jitgrad/ops/scatter.py): TensorFlow's tensor_scatter_nd_* and
scatter_nd, JAX's `x.at[index]`; values against numpy, compiled against eager, gradients
against finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))

# (index, numpy's view of it): the index kinds x[index] takes.
INDICES = [
    1,
    -1,
    slice(1, None),
    (slice(None), 2),
    (Ellipsis, 0),
    np.array([3, 0, 3]),  # repeated
    (np.array([0, 2]), np.array([1, 1])),
    (slice(None, None, 2), None, np.array([2, 0])),
]


def numpy_set(x, index, values):
    out = x.copy()
    out[index] = values  # numpy: the last of repeated elements wins
    return out


def numpy_add(x, index, values):
    out = x.copy()
    np.add.at(out, index, values)  # repeated elements add up
    return out


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_at_set_and_add_match_numpy_eagerly_and_compiled(index):
    values = RNG.standard_normal(X[index].shape)
    x = jg.constant(X)
    for got_set, got_add in [
        (x.at[index].set(values), x.at[index].add(values)),
        (
            jg.jit(lambda x, v: x.at[index].set(v))(X, values),
            jg.jit(lambda x, v: x.at[index].add(v))(X, values),
        ),
    ]:
        np.testing.assert_array_equal(got_set.numpy(), numpy_set(X, index, values))
        np.testing.assert_allclose(got_add.numpy(), numpy_add(X, index, values), rtol=1e-12)
    np.testing.assert_array_equal(x.at[index].get().numpy(), X[index])
    np.testing.assert_array_equal(x.numpy(), X)  # functional: x unchanged


def test_at_with_a_traced_index():
    """Under jit a traced integer index is a gather of positions; repeated traced elements
    add up under add, and get the mean of their updates under set (module docstring)."""
    index = np.array([2, 0, 2])
    values = np.array([1.0, 2.0, 5.0])
    add = jg.jit(lambda x, i, v: x.at[i].add(v))(np.zeros(4), index, values)
    np.testing.assert_array_equal(add.numpy(), [2.0, 0.0, 6.0, 0.0])
    put = jg.jit(lambda x, i, v: x.at[i].set(v))(np.full(4, 7.0), index, values)
    np.testing.assert_array_equal(put.numpy(), [2.0, 7.0, 3.0, 7.0])
    two_d = jg.jit(lambda x, i: x.at[i, 1:].set(0.0))(X, np.int64(2))
    np.testing.assert_array_equal(two_d.numpy(), numpy_set(X, (2, slice(1, None)), 0.0))


def test_at_broadcasts_and_casts_the_values():
    x = jg.constant(np.zeros((2, 3), np.float32))
    out = x.at[:, 1].set(np.float64(2.5))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), [[0, 2.5, 0], [0, 2.5, 0]])
    ints = jg.constant(np.arange(3)).at[0].add(2)
    assert ints.dtype == np.int64 and list(ints.numpy()) == [2, 1, 2]


def test_tensor_scatter_nd_matches_tensorflow():
    """TensorFlow's documented examples (tf.tensor_scatter_nd_update, tf.scatter_nd)."""
    tensor = [0, 0, 0, 0, 0, 0, 0, 0]
    indices, updates = [[1], [3], [4], [7]], [9, 10, 11, 12]
    got = jg.tensor_scatter_nd_update(tensor, indices, updates)
    assert list(got.numpy()) == [0, 9, 0, 10, 11, 0, 0, 12]
    got = jg.tensor_scatter_nd_add(np.ones(8, np.int32), indices, updates)
    assert list(got.numpy()) == [1, 10, 1, 11, 12, 1, 1, 13]
    got = jg.tensor_scatter_nd_sub(np.ones(8, np.int32), indices, updates)
    assert list(got.numpy()) == [1, -8, 1, -9, -10, 1, 1, -11]
    # slices: indices address the leading axis of a (4, 4, 4) tensor
    slabs = np.stack([np.full((4, 4), 5.0), np.full((4, 4), 6.0)])
    got = jg.scatter_nd([[0], [2]], slabs, [4, 4, 4]).numpy()
    assert (got[0] == 5).all() and (got[2] == 6).all() and (got[[1, 3]] == 0).all()
    grid = jg.tensor_scatter_nd_update(np.zeros((3, 3)), [[0, 1], [2, 2]], [4.0, 5.0]).numpy()
    assert grid[0, 1] == 4 and grid[2, 2] == 5 and grid.sum() == 9


def test_tensor_scatter_nd_compiled_equals_eager():
    x, idx, upd = RNG.standard_normal((5, 2)), np.array([[4], [1], [4]]), np.ones((3, 2))
    for f in (jg.tensor_scatter_nd_update, jg.tensor_scatter_nd_add, jg.tensor_scatter_nd_sub):
        eager = f(x, idx, upd).numpy()
        np.testing.assert_array_equal(jg.jit(f)(x, idx, upd).numpy(), eager)  # traced indices
        np.testing.assert_array_equal(jg.jit(lambda x, u, f=f: f(x, idx, u))(x, upd), eager)


@pytest.mark.parametrize("mode", ["set", "add"])
@pytest.mark.parametrize("index", [np.array([0, 2]), (slice(None), 1), np.array([1, 1])], ids=repr)
def test_at_gradients(mode, index):
    """To x (ones where kept, zeros where overwritten by set) and to the values (a gather; a
    repeated set element passes only its last value's gradient)."""
    values = RNG.standard_normal(X[index].shape)

    def f(x, v):
        return getattr(x.at[index], mode)(v) * jg.constant(np.arange(12.0).reshape(4, 3))

    check_grads(f, [X, values], order=2)


def test_tensor_scatter_nd_gradients():
    def f(x, u):
        return jg.tensor_scatter_nd_update(x, [[2], [0]], u) ** 2

    check_grads(f, [RNG.standard_normal((3, 2)), RNG.standard_normal((2, 2))], order=2)
    g = jg.jit_grad(lambda x, u: jg.reduce_sum(jg.tensor_scatter_nd_add(x, [[1]], u) ** 2), wrt=1)
    _, grad = g(np.ones((3, 2)), np.ones((1, 2)))
    np.testing.assert_array_equal(grad.numpy(), [[4.0, 4.0]])  # 2 (x + u) at row 1


def test_index_updates_under_vmap():
    out = jg.vmap(lambda a, i: a.at[i].add(1.0))(np.zeros((2, 3)), np.array([0, 2]))
    np.testing.assert_array_equal(out.numpy(), [[1, 0, 0], [0, 0, 1]])


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    data=st.data(),
)
def test_at_add_and_set_of_random_element_lists(shape, data):
    x = RNG.standard_normal(shape)
    count = data.draw(st.integers(0, 6))
    index = tuple(
        np.array(
            data.draw(st.lists(st.integers(-d, d - 1), min_size=count, max_size=count)), np.int64
        )
        for d in shape
    )
    values = RNG.standard_normal(count)
    t = jg.constant(x)
    np.testing.assert_array_equal(t.at[index].set(values).numpy(), numpy_set(x, index, values))
    np.testing.assert_allclose(t.at[index].add(values).numpy(), numpy_add(x, index, values))


def test_errors_name_the_op_the_shapes_and_the_line():
    here = "test_scatter.py"
    with pytest.raises(IndexError, match=f"tensor_scatter_nd_update: index 5 .* size 3.*{here}"):
        jg.tensor_scatter_nd_update(np.zeros(3), [[5]], [1.0])
    with pytest.raises(IndexError, match=f"tensor_scatter_nd_add: index 3 .*{here}"):
        jg.jit(jg.tensor_scatter_nd_add)(np.zeros(3), np.array([[3]]), np.ones(1))
    with pytest.raises(
        ValueError, match=f"updates of shape \\(3,\\) do not fit .*\\(2,\\).*{here}"
    ):
        jg.tensor_scatter_nd_update(np.zeros(3), [[0], [1]], np.ones(3))
    with pytest.raises(ValueError, match="indices of shape \\(1, 3\\) cannot address .*\\(3,\\)"):
        jg.tensor_scatter_nd_update(np.zeros(3), [[0, 0, 0]], [1.0])
    with pytest.raises(IndexError, match=f"at: index 4 is out of bounds .*\\(4, 3\\).*{here}"):
        jg.constant(X).at[4].set(0.0)
    with pytest.raises(IndexError, match="index 9 is out of bounds"):
        jg.jit(lambda x, i: x.at[i].set(0.0))(X, np.array([9]))


@pytest.mark.parametrize("mode, ufunc", [("max", np.maximum), ("min", np.minimum)])
def test_at_max_and_min_match_numpy_eagerly_compiled_and_batched(mode, ufunc):
    """Repeated elements combine all their updates (numpy's maximum.at); a NaN wins."""
    x = np.array([1.0, 5.0, 3.0, -2.0])
    index = np.array([0, 0, 2, 3])
    values = np.array([4.0, 7.0, np.nan, -1.0])
    want = x.copy()
    with np.errstate(invalid="ignore"):  # the NaN
        ufunc.at(want, index, values)
    eager = getattr(jg.constant(x).at[index], mode)(values)
    compiled = jg.jit(lambda x, i, v: getattr(x.at[i], mode)(v))(x, index, values)
    np.testing.assert_array_equal(eager.numpy(), want)
    np.testing.assert_array_equal(compiled.numpy(), want)
    batched = jg.vmap(lambda x, i: getattr(x.at[i], mode)(0.5))(np.zeros((2, 3)), np.array([0, 2]))
    expected = np.zeros((2, 3))
    expected[[0, 1], [0, 2]] = ufunc(0.0, 0.5)
    np.testing.assert_array_equal(batched.numpy(), expected)


def test_at_max_gradient_goes_to_the_winner_shared_among_ties():
    x = np.array([1.0, 5.0, 3.0])
    values = np.array([4.0, 1.0, 3.0])  # row 0: the update 4 wins; row 2: x and 3 tie
    loss = lambda x, v: jg.reduce_sum(x.at[np.array([0, 0, 2])].max(v))  # noqa: E731
    for grad in (
        jg.grad(loss, argnums=(0, 1)),
        lambda x, v: jg.jit_grad(loss, wrt=(0, 1))(x, v)[1],
    ):
        dx, dv = grad(x, values)
        np.testing.assert_array_equal(dx.numpy(), [0.0, 1.0, 0.5])
        np.testing.assert_array_equal(dv.numpy(), [1.0, 0.0, 0.5])
    check_grads(lambda x, v: x.at[np.array([1, 1, 0])].min(v) ** 2, [x, np.array([0.5, 2.0, -1.0])])


def test_tensor_scatter_nd_max_min_and_segment_extremes_follow_tensorflow():
    got = jg.tensor_scatter_nd_max(np.zeros(4), [[1], [1], [3]], [2.0, 5.0, -1.0])
    np.testing.assert_array_equal(got.numpy(), [0.0, 5.0, 0.0, 0.0])
    got = jg.tensor_scatter_nd_min(np.ones((2, 2)), [[0]], [[0.5, 3.0]])
    np.testing.assert_array_equal(got.numpy(), [[0.5, 1.0], [1.0, 1.0]])
    data = np.array([[1.0, 8.0], [3.0, 2.0], [5.0, 0.0]])
    lowest = np.finfo(np.float64).min  # an empty segment: the lowest value (TensorFlow)
    np.testing.assert_array_equal(
        jg.math.unsorted_segment_max(data, [0, 0, 2], 3).numpy(),
        [[3.0, 8.0], [lowest, lowest], [5.0, 0.0]],
    )
    ints = jg.jit(lambda d, i: jg.math.unsorted_segment_min(d, i, 2))(
        np.array([3, 1, 2]), np.array([1, 1, -1])
    )
    np.testing.assert_array_equal(ints.numpy(), [np.iinfo(np.int64).max, 1])
    np.testing.assert_array_equal(
        jg.math.segment_max([1.0, 4.0, 2.0], [0, 0, 1]).numpy(), [4.0, 2.0]
    )
    np.testing.assert_array_equal(
        jg.math.segment_min([1.0, 4.0, 2.0], [0, 0, 1]).numpy(), [1.0, 2.0]
    )
    with pytest.raises(IndexError, match="unsorted_segment_max: segment id 3 is outside"):
        jg.math.unsorted_segment_max([1.0], [3], 2)
