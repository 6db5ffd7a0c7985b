"""TensorFlow's sequence ops and shape queries (jitgrad/ops/sequences.py): values against
numpy, compiled against eager, gradients against finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.testing import check_grads

RNG = np.random.default_rng(0)


def numpy_running(x, axis, exclusive, reverse, ufunc):
    y = np.flip(x, axis) if reverse else x
    out = ufunc.accumulate(y, axis=axis)
    if exclusive and out.shape[axis]:
        identity = np.full_like(np.take(out, [0], axis=axis), ufunc.identity)
        out = np.concatenate([identity, np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis) if reverse else out


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple),
    data=st.data(),
    exclusive=st.booleans(),
    reverse=st.booleans(),
)
def test_cumsum_and_cumprod_match_numpy(shape, data, exclusive, reverse):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = RNG.standard_normal(shape)
    ints = RNG.integers(-5, 5, shape)
    for op, ufunc, value in [
        (jg.cumsum, np.add, x),
        (jg.cumsum, np.add, ints),
        (jg.math.cumprod, np.multiply, x),
    ]:
        got = op(value, axis=axis, exclusive=exclusive, reverse=reverse).numpy()
        want = numpy_running(value, axis, exclusive, reverse, ufunc)
        assert got.dtype == value.dtype
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_running_ops_compiled_equal_eager_and_differentiate(exclusive, reverse):
    x = RNG.standard_normal((3, 5))
    for op in (jg.cumsum, jg.math.cumprod):
        eager = op(x, axis=1, exclusive=exclusive, reverse=reverse).numpy()
        compiled = jg.jit(lambda x, op=op: op(x, 1, exclusive, reverse))(x).numpy()
        np.testing.assert_allclose(compiled, eager, rtol=1e-14)
        check_grads(lambda x, op=op: op(x, 1, exclusive, reverse), [x], order=2)


def test_numpy_cumsum_and_cumprod_on_tensors():
    t = jg.constant(np.arange(1.0, 7.0).reshape(2, 3))
    np.testing.assert_array_equal(np.cumsum(t).numpy(), np.cumsum(t.numpy()))
    np.testing.assert_array_equal(jg.numpy.cumprod(t, axis=1).numpy(), np.cumprod(t.numpy(), 1))


def test_unsorted_segment_sum_matches_tensorflow():
    data = np.arange(12.0).reshape(4, 3)
    got = jg.math.unsorted_segment_sum(data, [0, 2, 0, -1], 3).numpy()  # -1: dropped
    np.testing.assert_array_equal(got, [data[0] + data[2], np.zeros(3), data[1]])
    two_d = jg.math.unsorted_segment_sum(np.ones((2, 2, 3)), [[0, 1], [1, 1]], 2).numpy()
    np.testing.assert_array_equal(two_d, [np.ones(3), 3 * np.ones(3)])
    compiled = jg.jit(lambda d, i: jg.math.unsorted_segment_sum(d, i, 3))(
        data, np.array([0, 2, 0, -1])
    )
    np.testing.assert_array_equal(compiled.numpy(), got)
    check_grads(lambda d: jg.math.unsorted_segment_sum(d, [1, 1, 0, -3], 2) ** 2, [data])
    np.testing.assert_array_equal(
        jg.math.segment_sum([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 3]).numpy(), [3.0, 3.0, 0.0, 4.0]
    )


def test_segment_means():
    """tf.math.unsorted_segment_mean / segment_mean: empty segments give 0; -1 drops a row."""
    data = np.arange(8.0).reshape(4, 2)
    want = [[2.0, 3.0], [0.0, 0.0], [4.0, 5.0]]
    got = jg.math.unsorted_segment_mean(data, [0, 2, 0, 2], 3)
    np.testing.assert_array_equal(got.numpy(), [[2.0, 3.0], [0.0, 0.0], [4.0, 5.0]])
    mean = jg.jit(lambda d, i: jg.math.unsorted_segment_mean(d, i, 3))
    np.testing.assert_array_equal(mean(data, np.array([0, -1, 0, 2])).numpy()[0], want[0])
    np.testing.assert_array_equal(
        jg.math.segment_mean([1.0, 2.0, 3.0], [0, 0, 2]).numpy(), [1.5, 0.0, 3.0]
    )
    check_grads(lambda d: jg.math.unsorted_segment_mean(d, [1, 1, 0, 1], 2) ** 2, [data])
    with pytest.raises(TypeError, match="unsorted_segment_mean: needs float data"):
        jg.math.unsorted_segment_mean([1, 2], [0, 0], 1)


def test_boolean_mask_matches_numpy_and_tensorflow():
    x = np.arange(24).reshape(2, 3, 4)
    mask = np.array([[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(jg.boolean_mask(x, mask).numpy(), x[mask])
    np.testing.assert_array_equal(
        jg.boolean_mask(x, [True, False, False, True], axis=2).numpy(), x[:, :, [0, 3]]
    )
    # a known mask compiles; its gradient puts the cotangent back where the mask is True
    f = jg.jit(lambda x: jg.reduce_sum(jg.boolean_mask(x, mask) ** 2))
    assert float(f(x.astype(float))) == float((x[mask] ** 2).sum())
    check_grads(lambda x: jg.boolean_mask(x, mask), [x.astype(float)])


def test_shape_size_and_rank():
    x = np.ones((2, 3, 4))
    assert jg.shape(x).dtype == np.int32 and list(jg.shape(x).numpy()) == [2, 3, 4]
    assert jg.shape(x, out_type=jg.int64).dtype == np.int64
    assert int(jg.size(x)) == 24 and int(jg.rank(x)) == 3 and jg.rank(x).dtype == np.int32
    scaled = jg.jit(lambda x: x / jg.cast(jg.shape(x)[0], x.dtype))(np.ones((4, 2)))
    np.testing.assert_array_equal(scaled.numpy(), np.full((4, 2), 0.25))


def test_errors_name_the_op_and_the_line():
    here = "test_sequences.py"
    with pytest.raises(IndexError, match=f"unsorted_segment_sum: segment id 3 is outside .*{here}"):
        jg.math.unsorted_segment_sum([1.0, 2.0], [0, 3], 2)
    with pytest.raises(IndexError, match="segment id 3 is outside the valid range"):
        jg.jit(lambda d, i: jg.math.unsorted_segment_sum(d, i, 2))(np.ones(2), np.array([0, 3]))
    with pytest.raises(ValueError, match="segment_ids of shape \\(3,\\) are not a prefix"):
        jg.math.unsorted_segment_sum(np.ones(2), [0, 0, 1], 2)
    with pytest.raises(ValueError, match="segment_sum: segment_ids must be sorted"):
        jg.math.segment_sum([1.0, 2.0], [1, 0])
    with pytest.raises(jg.TracerError, match="segment_sum's segment_ids"):
        jg.jit(lambda d, i: jg.math.segment_sum(d, i))(np.ones(2), np.array([0, 1]))
    with pytest.raises(jg.TracerError, match="boolean-mask indexing with the value of a traced"):
        jg.jit(jg.boolean_mask)(np.ones(3), np.array([True, False, True]))
    with pytest.raises(
        ValueError, match=f"boolean_mask: mask of shape \\(2,\\) does not match.*{here}"
    ):
        jg.boolean_mask(np.ones(3), [True, False])
    with pytest.raises(ValueError, match="cumsum: needs a tensor of at least one dimension"):
        jg.cumsum(1.0)
    with pytest.raises(TypeError, match="shape: out_type must be int32 or int64"):
        jg.shape(np.ones(2), out_type=jg.float32)
