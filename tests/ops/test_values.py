"""Eager values against numpy for every case of the op table, in float32 and float64, and the
dtype promotion rules of jitgrad/core/dtypes.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.core.tensor import Tensor

from .cases import CASES, Draw, examples

VALUE_CASES = [c for c in CASES if c.ref is not None]
# Empty axes and extreme values evaluate log(0) or 0/0 on the way to empty or infinite
# results; numpy warns about them as it would for the same arrays.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
# float64: numpy's own functions give identical bits, composites (softmax, variance...) agree
# to a few ulps; float32: composites may round differently by a few float32 ulps.
TOLERANCE = {np.float64: {"rtol": 1e-12, "atol": 1e-14}, np.float32: {"rtol": 2e-6, "atol": 1e-6}}


def _leaves(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", VALUE_CASES, ids=str)
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_eager_values_match_numpy(case, dtype, data):
    args, params = case.draw(Draw(data))
    args = [np.asarray(a) for a in args]
    args = [a.astype(dtype) if a.dtype.kind == "f" else a for a in args]
    got = _leaves(case.fn(*[Tensor(a) for a in args], **params))
    with np.errstate(all="ignore"):
        want = _leaves(case.ref(*args, **params))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g, jg.Tensor)
        w = np.asarray(w)
        assert g.shape == w.shape
        if w.dtype.kind == "f" and "mixed_dtype" not in case.tags:
            assert g.dtype == dtype  # float32 in, float32 out
        elif w.dtype.kind != "f":
            assert g.dtype == w.dtype
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g.numpy(), w.astype(g.dtype), **TOLERANCE[dtype])
        else:
            np.testing.assert_array_equal(g.numpy(), w)


# ---------------------------------------------------------------------------------------------
# Dtype promotion (jitgrad/core/dtypes.py)


def _t(values, dtype):
    return jg.constant(np.asarray(values, dtype))


@pytest.mark.parametrize(
    "op",
    [
        jg.add,
        jg.subtract,
        jg.multiply,
        jg.maximum,
        jg.minimum,
        jg.divide,
        jg.pow,
        lambda x, y: x * y,
        lambda x, y: y + x,
    ],
)
def test_python_floats_are_weak_next_to_float_tensors(op):
    for dtype in (np.float16, np.float32, np.float64):
        x = _t([1.0, 2.0], dtype)
        assert op(x, 2.0).dtype == dtype
        assert op(2.0, x).dtype == dtype
        assert op(x, 2).dtype == dtype


def test_float32_tensor_times_two_stays_float32():
    x = _t([1.5, 2.5], np.float32)
    y = x * 2.0
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.array([3.0, 5.0], np.float32))
    assert (2.0 * x).dtype == np.float32
    assert (x / 3.0).dtype == np.float32
    assert (x**2.0).dtype == np.float32


def test_integer_tensor_and_python_float_give_float32():
    x = _t([1, 2], np.int32)
    y = x + 1.5
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.array([2.5, 3.5], np.float32))
    assert (1.5 * x).dtype == np.float32
    assert (x + 1).dtype == np.int32
    assert (_t([1, 2], np.int64) + 1).dtype == np.int64
    assert (_t([1, 2], np.int8) * 2).dtype == np.int8


def test_integer_tensor_and_float_array_take_the_float_dtype():
    assert (_t([1, 2], np.int32) + np.array([0.5, 0.5])).dtype == np.float64
    assert (_t([1, 2], np.int64) + _t([0.5, 0.5], np.float32)).dtype == np.float32  # as JAX
    np.testing.assert_array_equal((_t([1, 2], np.int32) + np.array([0.5, 0.5])).numpy(), [1.5, 2.5])


def test_same_kind_promotes_to_the_wider():
    assert (_t([1.0], np.float32) + _t([1.0], np.float64)).dtype == np.float64
    assert (_t([1.0], np.float16) * _t([1.0], np.float32)).dtype == np.float32
    assert (_t([1], np.int32) + _t([1], np.int64)).dtype == np.int64
    assert (_t([1], np.int8) + _t([1], np.uint8)).dtype == np.int16


def test_python_lists_and_scalars_convert_like_tensorflow():
    assert jg.constant([1.0, 2.0]).dtype == np.float32
    assert jg.constant([[1.0], [2.0]]).dtype == np.float32
    assert jg.constant(1.0).dtype == np.float32
    assert jg.constant([1, 2]).dtype == np.int32
    assert jg.constant(np.array([1.0])).dtype == np.float64
    assert jg.exp([1.0, 2.0]).dtype == np.float32
    assert jg.add([1.0, 2.0], [3.0, 4.0]).dtype == np.float32
    assert jg.matmul([[1.0, 2.0]], np.ones((2, 1))).dtype == np.float64


def test_integer_inputs_to_float_functions():
    assert jg.exp(_t([1, 2], np.int32)).dtype == np.float32
    assert jg.divide(_t([1, 2], np.int32), 2).dtype == np.float64  # TensorFlow's truediv
    np.testing.assert_array_equal(jg.divide(_t([1, 3], np.int32), 2).numpy(), [0.5, 1.5])
    assert jg.pow(_t([2, 3], np.int32), 2).dtype == np.int32
    np.testing.assert_array_equal(jg.pow(_t([2, 3], np.int32), 2).numpy(), [4, 9])
    np.testing.assert_array_equal((_t([7, -7], np.int32) // 2).numpy(), [3, -4])
    np.testing.assert_array_equal((_t([7, -7], np.int32) % 3).numpy(), [1, 2])
    np.testing.assert_array_equal(jg.reduce_mean(_t([1, 2], np.int32)).numpy(), 1)  # truncates
    assert jg.reduce_sum(_t([True, True, False], bool)).dtype == np.int32
    assert int(jg.reduce_sum(_t([True, True, False], bool))) == 2
    assert jg.abs(_t([-3, 2], np.int32)).numpy().tolist() == [3, 2]


def test_where_and_concat_promote():
    assert jg.where([True, False], _t([1.0, 2.0], np.float32), 0.0).dtype == np.float32
    assert jg.where([True, False], 1.0, _t([1.0, 2.0], np.float64)).dtype == np.float64
    assert jg.concat([_t([1], np.int32), _t([1.5], np.float32)], 0).dtype == np.float32
    assert jg.stack([_t([1.0], np.float32), _t([2.0], np.float64)]).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_keep_the_float_dtype(dtype):
    x = _t(np.arange(6.0).reshape(2, 3), dtype)
    for fn in (
        jg.reduce_sum,
        jg.reduce_mean,
        jg.reduce_max,
        jg.reduce_min,
        jg.reduce_prod,
        jg.reduce_variance,
        jg.reduce_std,
        jg.reduce_logsumexp,
    ):
        assert fn(x, axis=1).dtype == dtype
    assert jg.argmax(x, axis=1).dtype == np.int64
    assert jg.argmax(x, axis=1, output_type=jg.int32).dtype == np.int32


# ---------------------------------------------------------------------------------------------
# Integer and bool tensors


INT_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@settings(max_examples=examples(15), deadline=None)
@given(data=st.data())
def test_integer_reductions_match_numpy_at_the_extremes(dtype, data):
    """Regression: reduce_min computed -max(-x), which overflows at a signed type's minimum
    (int8: -(-128) = -128) and wraps 0 of an unsigned type."""
    d = Draw(data)
    shape, axis, keepdims = d.reduction(min_dims=1, nonempty=True)
    info = np.iinfo(dtype)
    x = d.rng.choice(
        np.array([info.min, info.min + 1, -1 if info.min else 2, 0, 1, info.max - 1, info.max]),
        shape,
    ).astype(dtype)
    for ours, theirs in [(jg.reduce_min, np.min), (jg.reduce_max, np.max)]:
        got = ours(x, axis=axis, keepdims=keepdims)
        want = theirs(x, axis=axis, keepdims=keepdims)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integer_reductions_of_nothing_are_the_identities(dtype):
    info = np.iinfo(dtype)
    empty = np.zeros((0, 2), dtype)
    assert jg.reduce_min(empty, axis=0).numpy().tolist() == [info.max] * 2
    assert jg.reduce_max(empty, axis=0).numpy().tolist() == [info.min] * 2
    assert jg.reduce_sum(empty, axis=0).numpy().tolist() == [0, 0]
    assert jg.reduce_prod(empty, axis=0).numpy().tolist() == [1, 1]
    assert float(jg.reduce_min(np.zeros(0))) == np.inf


def test_bool_reductions_count():
    b = np.array([[True, False], [True, True]])
    assert jg.reduce_min(b).numpy() == 0 and jg.reduce_max(b).numpy() == 1
    assert jg.reduce_sum(b, axis=0).numpy().tolist() == [2, 1]


def test_one_hot_takes_the_dtype_of_its_values():
    assert jg.one_hot([0, 1], 2).dtype == np.float32
    assert jg.one_hot([0, 1], 2, on_value=5, off_value=0).dtype == np.int32
    assert jg.one_hot([0, 1], 2, on_value=np.float64(2.0)).dtype == np.float64
    assert jg.one_hot([0, 1], 2, dtype=jg.int64).dtype == np.int64
    np.testing.assert_array_equal(
        jg.one_hot([0, 3, -1], 3, on_value=5, off_value=-1).numpy(),
        [[5, -1, -1], [-1, -1, -1], [-1, -1, -1]],
    )
    np.testing.assert_array_equal(
        jg.one_hot([[0, 2]], 3, axis=1).numpy(), [[[1, 0], [0, 0], [0, 1]]]
    )


# ---------------------------------------------------------------------------------------------
# Creation ops


def test_creation_ops_match_numpy_and_tensorflows_dtypes():
    assert jg.range(5).dtype == np.int32
    np.testing.assert_array_equal(jg.range(5).numpy(), np.arange(5))
    np.testing.assert_array_equal(
        jg.range(1.0, 2.0, 0.25).numpy(), np.arange(1.0, 2.0, 0.25, dtype=np.float32)
    )
    np.testing.assert_array_equal(jg.range(5, 0, -2).numpy(), [5, 3, 1])
    assert jg.range(3, dtype=jg.float64).dtype == np.float64
    lin = jg.linspace(0.0, 1.0, 5)
    assert lin.dtype == np.float32
    np.testing.assert_array_equal(lin.numpy(), np.linspace(0, 1, 5).astype(np.float32))
    np.testing.assert_array_equal(jg.eye(2, 3).numpy(), np.eye(2, 3, dtype=np.float32))
    assert jg.eye(2, batch_shape=[3]).shape == (3, 2, 2)
    assert jg.fill([2, 3], 1.5).dtype == np.float32
    assert jg.fill([2], 7).numpy().tolist() == [7, 7]
    assert jg.zeros_like(np.ones((2, 1), np.int8)).dtype == np.int8
    assert jg.ones([2], dtype=jg.float64).numpy().tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(jg.constant(2.0, shape=[2, 2]).numpy(), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(jg.constant([1, 2, 3, 4], shape=[2, 2]).numpy(), [[1, 2], [3, 4]])


def test_seeded_random_draws_are_reproducible():
    a = jg.random.normal([3], seed=7).numpy()
    b = jg.random.normal([3], seed=7).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    t = jg.random.truncated_normal([1000], stddev=2.0, seed=1).numpy()
    assert np.abs(t).max() <= 4.0
    u = jg.random.uniform([1000], 2, 5, dtype=jg.int32, seed=3).numpy()
    assert u.dtype == np.int32 and u.min() >= 2 and u.max() <= 4


# ---------------------------------------------------------------------------------------------
# Indexing and shape regressions


def test_negative_step_slices_that_start_before_the_first_element_are_empty():
    """Regression: slice.indices() gives start -1 there, which as a slice meant the last
    element, so x[-10::-1] returned the whole reversed array (and its shape rule said 0)."""
    a = np.arange(5.0)
    x = jg.constant(a)
    for index in [
        slice(-10, None, -1),
        slice(-10, -20, -1),
        slice(3, -10, -1),
        slice(None, None, -2),
        slice(10, None, -3),
        slice(-6, 2, -1),
    ]:
        np.testing.assert_array_equal(x[index].numpy(), a[index])
    with jg.GradientTape() as tape:
        tape.watch(x)
        total = jg.reduce_sum(x[-10::-1])
    assert tape.gradient(total, x).numpy().tolist() == [0.0] * 5


def test_ellipsis_indices():
    """Regression: `...` expanded to full slices and then the missing axes were added again."""
    a = np.arange(24.0).reshape(2, 3, 4)
    x = jg.constant(a)
    for index in [
        (Ellipsis,),
        (Ellipsis, 1),
        (0, Ellipsis),
        (Ellipsis, None),
        (None, Ellipsis, slice(None, None, -1)),
        (1, Ellipsis, 2),
    ]:
        np.testing.assert_array_equal(x[index].numpy(), a[index])
    assert jg.constant(np.zeros(0))[...].shape == (0,)


def test_integer_scalars_next_to_arrays_follow_numpys_placement_rule():
    """Regression: with an integer array present, integer scalars are advanced indices too; a
    slice between them sends the broadcast axes to the front (x[0, :, [1, 2]] is (2, 3))."""
    a = np.arange(24.0).reshape(2, 3, 4)
    x = jg.constant(a)
    for index in [
        (0, slice(None), [1, 2]),
        (slice(None), 0, [1, 2]),
        ([0, 1], slice(None), [1, 2]),
        ([1, 0], None, [2, 2]),
        (-1, [0, 2]),
        (np.array([[0], [1]]), [0, 2], 1),
    ]:
        got = x[index]
        assert got.shape == a[index].shape, index
        np.testing.assert_array_equal(got.numpy(), a[index])


def test_a_traced_0d_integer_index_is_gathered():
    """Regression: a 0-d integer tracer was read as a static int (a TracerError under jit)."""
    from jitgrad.core.aval import AVal
    from jitgrad.ir.interpret import eval_graph
    from jitgrad.ir.trace import Trace, tracing

    trace = Trace("index")
    with tracing(trace):
        x = trace.new_input(AVal((3, 2), np.dtype(np.float64)))
        i = trace.new_input(AVal((), np.dtype(np.int32)))
        graph = trace.to_graph([x[i, ::-1], x[:, i - 1]])
    a = np.arange(6.0).reshape(3, 2)
    first, second = eval_graph(graph, a, np.int32(1))
    np.testing.assert_array_equal(first, a[1, ::-1])
    np.testing.assert_array_equal(second, a[:, 0])


def test_pad_of_a_0d_tensor_and_tensordot_with_empty_axes():
    """Regressions: np.pad refused the empty paddings of a 0-d tensor; tensordot reshaped
    with -1, ambiguous when an axis is empty."""
    np.testing.assert_array_equal(jg.pad(jg.constant(2.0), []).numpy(), 2.0)
    a, b = np.zeros((0, 0, 2)), np.zeros((0, 3, 0))
    got = jg.tensordot(a, b, [[0, 1], [0, 2]])
    np.testing.assert_array_equal(got.numpy(), np.tensordot(a, b, [[0, 1], [0, 2]]))
    assert jg.tensordot(np.ones((2, 0)), np.ones((0, 3)), 1).numpy().tolist() == [[0.0] * 3] * 2
