"""Tensors and Variables: conversion and dtype rules, properties, indexing, Python protocols,
repr, and the operators with their one promotion rule (jitgrad/core/dtypes.py)."""

import numpy as np
import pytest

import jitgrad
from jitgrad.core import dtypes

# ---------------------------------------------------------------------------------------------
# constant / Variable dtype rules


@pytest.mark.parametrize("make", [jitgrad.constant, jitgrad.Variable])
@pytest.mark.parametrize(
    "value, dtype",
    [
        (1.0, np.float32),
        (1, np.int32),
        (True, np.bool_),
        ([1.0, 2.0], np.float32),
        ([[1, 2], [3, 4]], np.int32),
        ([1, 2.5], np.float32),
        ([True, False], np.bool_),
        ([], np.float32),
        (2**40, np.int64),  # too big for int32, as TensorFlow
        (np.float64(1.0), np.float64),
        (np.int16(3), np.int16),
        (np.arange(3), np.int64),
        (np.ones(2, np.float16), np.float16),
        (np.zeros((2, 2), np.uint8), np.uint8),
        (np.array(True), np.bool_),
        ([np.float32(1.0), 2.0], np.float32),
        ([np.ones(2, np.float64), [1.0, 2.0]], np.float64),
        ([np.int64(1), 2], np.int64),
    ],
)
def test_dtype_of_converted_values(make, value, dtype):
    t = make(value)
    assert t.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t.numpy(), np.asarray(value, dtype))


def test_a_list_mixing_tensors_and_python_floats_keeps_the_tensor_dtype():
    """Regression: numpy's rule made [float32 tensor, 2.0] float64; Python floats are weak."""
    t = jitgrad.constant([jitgrad.constant(1.0), 2.0])
    assert t.dtype == jitgrad.float32 and t.numpy().tolist() == [1.0, 2.0]
    assert jitgrad.constant([jitgrad.constant(1), 2.5]).dtype == jitgrad.float32
    assert jitgrad.constant([jitgrad.constant(1), 2]).dtype == jitgrad.int32


@pytest.mark.parametrize("make", [jitgrad.constant, jitgrad.Variable])
def test_dtype_argument_casts(make):
    assert make(1, dtype=jitgrad.float64).dtype == jitgrad.float64
    assert make([1.5, -2.5], dtype=jitgrad.int32).numpy().tolist() == [1, -2]
    assert make(np.ones(2), dtype="float32").dtype == jitgrad.float32
    assert make(jitgrad.constant(1.0), dtype=jitgrad.float64).dtype == jitgrad.float64
    assert make(0, dtype=jitgrad.bool).numpy().item() is False


@pytest.mark.parametrize(
    "ragged", [[[1, 2], [3]], [[1.0, 2.0], [3.0]], [[1], [2, 3]], [np.ones(2), np.ones(3)]]
)
def test_ragged_nested_lists_raise_a_clear_value_error(ragged):
    with pytest.raises(ValueError, match="constant: nested list .* is ragged"):
        jitgrad.constant(ragged)
    with pytest.raises(ValueError, match="ragged"):
        jitgrad.Variable(ragged)


@pytest.mark.parametrize(
    "bad",
    [
        "a",
        None,
        object(),
        1j,
        [1j],
        ["a"],
        [None],
        [1, None],
        {"a": 1},
        np.array([1j]),
        np.array(["a"]),
        np.array(None),
    ],
)
def test_unsupported_values_raise_type_error(bad):
    with pytest.raises(TypeError, match="constant: "):
        jitgrad.constant(bad)
    with pytest.raises(TypeError):
        jitgrad.Variable(bad)


@pytest.mark.parametrize("bad", ["complex64", np.complex128, str, object])
def test_unsupported_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match="not supported|not a dtype"):
        jitgrad.constant(1, dtype=bad)


def test_a_python_int_too_big_for_int64_raises_overflow_error_naming_the_op():
    with pytest.raises(OverflowError, match="constant: the Python int .* does not fit"):
        jitgrad.constant(2**70)


def test_dtype_objects():
    assert jitgrad.float32 == np.float32 and jitgrad.float64 == np.float64
    assert jitgrad.int32 == np.int32 and jitgrad.int64 == np.int64
    assert jitgrad.bool == np.bool_
    for dt in (jitgrad.float32, jitgrad.float64, jitgrad.int32, jitgrad.int64, jitgrad.bool):
        assert isinstance(dt, np.dtype)
        assert jitgrad.zeros(2, dtype=dt).dtype == dt
        assert jitgrad.constant(1, dtype=dt).dtype == dt
    assert jitgrad.constant(1.0).dtype == jitgrad.float32


def test_a_variable_owns_its_array():
    """Regression: a Variable made from (or assigned) a numpy array shared it, so changing the
    array afterwards changed the Variable."""
    a = np.ones(3, np.float32)
    v = jitgrad.Variable(a)
    a[0] = 5.0
    assert v.numpy().tolist() == [1.0, 1.0, 1.0]
    b = np.zeros(3, np.float32)
    v.assign(b)
    b[1] = 7.0
    assert v.numpy().tolist() == [0.0, 0.0, 0.0]
    v.numpy()[2] = 9.0  # numpy() is a copy for a Variable
    assert v.numpy().tolist() == [0.0, 0.0, 0.0]


def test_variable_name_and_trainable():
    w = jitgrad.Variable(1.0, name="w")
    assert w.name == "w:0" and w.trainable is True
    assert jitgrad.Variable(2.0).name == "Variable:0"
    assert jitgrad.Variable(1.0, trainable=False).trainable is False
    assert isinstance(w, jitgrad.Tensor)


# ---------------------------------------------------------------------------------------------
# properties and Python protocols


def test_numpy_shape_dtype_ndim_len():
    t = jitgrad.constant(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), np.arange(24).reshape(2, 3, 4))
    assert t.shape == (2, 3, 4) and type(t.shape) is tuple
    assert t.dtype == jitgrad.float32
    assert t.ndim == 3
    assert len(t) == 2
    s = jitgrad.constant(1.0)
    assert s.shape == () and s.ndim == 0
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(s)


def test_iteration_over_the_first_axis():
    t = jitgrad.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    rows = list(t)
    assert len(rows) == 3
    assert all(isinstance(r, jitgrad.Tensor) and r.shape == (2,) for r in rows)
    assert [r.numpy().tolist() for r in rows] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(jitgrad.constant(1.0))


def test_iteration_is_differentiable():
    x = jitgrad.Variable([1.0, 2.0, 3.0])
    with jitgrad.GradientTape() as tape:
        y = sum(e * e for e in x)
    assert tape.gradient(y, x).numpy().tolist() == [2.0, 4.0, 6.0]


ARRAY = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize(
    "index",
    [
        0,
        -1,
        (1, 2),
        (1, 2, 3),
        (-1, -2, -3),
        slice(None),
        slice(0, 1),
        (slice(None), slice(1, 3)),
        (0, slice(None, None, -1)),
        (slice(None), slice(None, None, 2), slice(1, None)),
        (slice(5, 10),),
        None,
        (None, 0),
        (slice(None), None, 1),
        (0, None, slice(None), None),
        np.array([1, 0, 1]),
        [1, 0],
        (slice(None), [0, 2], 1),
        (1, [0, 2], [1, 3]),
        (slice(None), slice(None), np.array([[0, 1], [2, 3]])),
        np.array([-1]),
        (0, 1, np.array([3, 0, 3])),
    ],
)
def test_indexing_and_slicing_match_numpy(index):
    t = jitgrad.constant(ARRAY)
    out = t[index]
    assert isinstance(out, jitgrad.Tensor)
    want = ARRAY[index]
    assert out.shape == want.shape
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize(
    "index",
    [
        Ellipsis,
        (Ellipsis, 1),
        (0, Ellipsis),
        (Ellipsis, None, slice(None, None, 2)),
        (1, Ellipsis, 2),
        (None, Ellipsis, np.array([0, 3])),
        (0, Ellipsis, 1, 2),
    ],
)
def test_indexing_with_an_ellipsis(index):
    out = jitgrad.constant(ARRAY)[index]
    np.testing.assert_array_equal(out.numpy(), ARRAY[index])


def test_indexing_with_integer_tensors_and_boolean_masks():
    t = jitgrad.constant(ARRAY)
    np.testing.assert_array_equal(t[jitgrad.constant(1)].numpy(), ARRAY[1])
    np.testing.assert_array_equal(t[jitgrad.constant([1, 0])].numpy(), ARRAY[[1, 0]])
    np.testing.assert_array_equal(t[t > 5.0].numpy(), ARRAY[ARRAY > 5])


@pytest.mark.parametrize(
    "index, exc",
    [(2, IndexError), ((0, 3), IndexError), ((0, 0, 0, 0), IndexError), ("a", IndexError)],
)
def test_bad_indices_raise(index, exc):
    with pytest.raises(exc, match="getitem"):
        jitgrad.constant(ARRAY)[index]


def test_a_float_index_raises():
    with pytest.raises((IndexError, TypeError)):
        jitgrad.constant(ARRAY)[0.5]


def test_indexing_a_variable_returns_a_tensor_and_is_differentiable():
    v = jitgrad.Variable(np.arange(6.0).reshape(2, 3))
    with jitgrad.GradientTape() as tape:
        y = v[1, [0, 0, 2]] * 2.0
    assert type(y) is jitgrad.Tensor
    np.testing.assert_array_equal(tape.gradient(y, v).numpy(), [[0, 0, 0], [4, 0, 2]])


def test_float_int_bool_of_one_element_tensors():
    assert float(jitgrad.constant(2.5)) == 2.5 and type(float(jitgrad.constant(2.5))) is float
    assert int(jitgrad.constant(3.7)) == 3 and type(int(jitgrad.constant(3))) is int
    assert bool(jitgrad.constant(True)) is True and bool(jitgrad.constant(0.0)) is False
    assert float(jitgrad.constant([[4.0]])) == 4.0
    assert float(jitgrad.Variable([1.5])) == 1.5
    assert int(jitgrad.constant(np.int64(2**40))) == 2**40
    assert [10, 20, 30][jitgrad.constant(1)] == 20  # __index__ for integer tensors


@pytest.mark.parametrize("convert", [float, int, bool])
@pytest.mark.parametrize("value", [[1.0, 2.0], [], [[1.0], [2.0]]])
def test_float_int_bool_of_other_tensors_raise_type_error(convert, value):
    with pytest.raises(TypeError, match=f"{convert.__name__}\\(\\) of a tensor of shape"):
        convert(jitgrad.constant(value))


def test_a_float_tensor_is_not_an_index():
    with pytest.raises(TypeError, match="cannot be used as an index"):
        [1, 2][jitgrad.constant(1.0)]


def test_np_asarray_shares_memory_with_numpy():
    t = jitgrad.constant(np.arange(6.0).reshape(2, 3))
    a = np.asarray(t)
    assert np.shares_memory(a, t.numpy())
    assert a.dtype == t.dtype and a.shape == t.shape
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert not np.shares_memory(np.array(t, copy=True), t.numpy())
    v = jitgrad.Variable([1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(v), [1.0, 2.0])


def test_repr_in_the_seeds_style():
    assert repr(jitgrad.constant(36.0)) == "<jitgrad.Tensor: shape=(), dtype=float32, numpy=36.0>"
    assert repr(jitgrad.constant(1)) == "<jitgrad.Tensor: shape=(), dtype=int32, numpy=1>"
    assert repr(jitgrad.constant(True)) == "<jitgrad.Tensor: shape=(), dtype=bool, numpy=True>"
    assert repr(jitgrad.constant([6.0131803, -4.5947046])) == (
        "<jitgrad.Tensor: shape=(2,), dtype=float32, "
        "numpy=array([ 6.0131803, -4.5947046], dtype=float32)>"
    )
    # A multi-line array starts on its own line, as TensorFlow prints it.
    assert repr(jitgrad.constant([[1, 2], [3, 4]])) == (
        "<jitgrad.Tensor: shape=(2, 2), dtype=int32, numpy=\n"
        "array([[1, 2],\n"
        "       [3, 4]], dtype=int32)>"
    )
    assert repr(jitgrad.Variable(5.0, name="w")) == (
        "<jitgrad.Variable 'w:0' shape=() dtype=float32, numpy=5.0>"
    )


def test_str_in_the_seeds_style():
    assert str(jitgrad.constant(0.9999546)) == (
        "jitgrad.Tensor(0.9999546, shape=(), dtype=float32)"
    )
    assert str(jitgrad.constant([1.0, 2.0])) == (
        "jitgrad.Tensor([1. 2.], shape=(2,), dtype=float32)"
    )
    assert str(jitgrad.constant([[8.0, 8.0], [8.0, 8.0]])) == (
        "jitgrad.Tensor(\n[[8. 8.]\n [8. 8.]], shape=(2, 2), dtype=float32)"
    )
    # print(v) shows a Variable as a Variable (regression: it printed as a Tensor).
    w = jitgrad.Variable(5.0, name="w")
    assert str(w) == repr(w)


# ---------------------------------------------------------------------------------------------
# operators

X = np.array([1.5, 2.0, -3.0], np.float32)
Y = np.array([0.5, -4.0, 2.0], np.float32)

BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "**": lambda a, b: a**b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("other", ["tensor", "numpy", "list", "scalar"])
@pytest.mark.parametrize("tensor_on_the_left", [True, False])
def test_binary_operators_with_anything_on_either_side(op, other, tensor_on_the_left):
    fn = BINARY[op]
    t = jitgrad.constant(X)
    o = {"tensor": jitgrad.constant(Y), "numpy": Y, "list": Y.tolist(), "scalar": 2.0}[other]
    o_np = 2.0 if other == "scalar" else Y
    with np.errstate(all="ignore"):
        got = fn(t, o) if tensor_on_the_left else fn(o, t)
        want = fn(X, np.float32(o_np)) if tensor_on_the_left else fn(np.float32(o_np), X)
    assert isinstance(got, jitgrad.Tensor)
    assert got.dtype == want.dtype  # float32, or bool for comparisons
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_matmul_with_nested_lists_and_numpy_on_either_side():
    w = jitgrad.constant(np.arange(6.0, dtype=np.float32).reshape(3, 2))
    wn = w.numpy()
    for got, want in [
        ([[1.0, 2.0, 3.0]] @ w, [[1.0, 2.0, 3.0]] @ wn),
        (np.ones((1, 3), np.float32) @ w, np.ones((1, 3)) @ wn),
        (w.T @ [1.0, 2.0, 3.0], wn.T @ [1.0, 2.0, 3.0]),
        (w @ np.ones(2, np.float32), wn @ np.ones(2)),
        (jitgrad.constant([1.0, 2.0, 3.0]) @ w, np.array([1.0, 2.0, 3.0]) @ wn),
    ]:
        assert isinstance(got, jitgrad.Tensor) and got.dtype == jitgrad.float32
        np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(ValueError, match="matmul: \\(3, 2\\) @ \\(3,\\) cannot contract"):
        w @ [1.0, 2.0, 3.0]


def test_unary_minus_and_abs():
    t = jitgrad.constant(X)
    assert (-t).numpy().tolist() == (-X).tolist()
    assert abs(t).numpy().tolist() == np.abs(X).tolist()
    i = jitgrad.constant([-2, 3])
    assert (-i).dtype == jitgrad.int32 and (-i).numpy().tolist() == [2, -3]
    assert abs(i).dtype == jitgrad.int32 and abs(i).numpy().tolist() == [2, 3]
    assert (+t) is t


def test_comparisons_give_bool_tensors_and_are_not_differentiable():
    x = jitgrad.Variable([1.0, 2.0, 3.0])
    with jitgrad.GradientTape() as tape:
        mask = x > 1.5
        y = jitgrad.where(mask, x * x, x)
    assert mask.dtype == jitgrad.bool and mask.numpy().tolist() == [False, True, True]
    assert tape.gradient(y, x).numpy().tolist() == [1.0, 4.0, 6.0]
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        m = jitgrad.cast(x > 1.5, jitgrad.float32)
    assert tape.gradient(m, x) is None
    both = (x > 1.5) & (x < 2.5)
    assert both.numpy().tolist() == [False, True, False]
    assert (~both).numpy().tolist() == [True, False, True]
    assert ((x < 1.5) | (x > 2.5)).numpy().tolist() == [True, False, True]


def test_tensors_are_hashable_by_identity():
    a, b = jitgrad.constant(1.0), jitgrad.constant(1.0)
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"


# ---------------------------------------------------------------------------------------------
# the promotion rule (jitgrad/core/dtypes.py)


@pytest.mark.parametrize(
    "a, b, want",
    [
        ("int32", "float32", "float32"),  # a float meets an integer: the float's dtype
        ("int64", "float32", "float32"),  # (numpy would say float64)
        ("int64", "float16", "float16"),
        ("bool", "float64", "float64"),
        ("bool", "int8", "int8"),
        ("int32", "int64", "int64"),  # same kind: the wider (numpy's rule)
        ("uint8", "int8", "int16"),
        ("float32", "float64", "float64"),
        ("float16", "float32", "float32"),
        ("float32", "float32", "float32"),
    ],
)
def test_promotion_between_two_tensors(a, b, want):
    assert dtypes.promote(np.dtype(a), np.dtype(b)) == np.dtype(want)
    assert dtypes.promote(np.dtype(b), np.dtype(a)) == np.dtype(want)
    x, y = jitgrad.zeros(2, dtype=a), jitgrad.zeros(2, dtype=b)
    if "bool" not in (a, b):
        assert (x + y).dtype == np.dtype(want)
        assert (y * x).dtype == np.dtype(want)
    assert jitgrad.where(True, x, y).dtype == np.dtype(want)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int32", "int64"])
def test_a_python_scalar_takes_the_tensor_dtype(dtype):
    x = jitgrad.ones(3, dtype=dtype)
    for out in (x + 2, 2 * x, x - 1, x * True, 3 % x):
        assert out.dtype == np.dtype(dtype)
    if np.dtype(dtype).kind == "f":
        for out in (x * 2.5, 2.5 - x, x**2.0, x / 2.0):
            assert out.dtype == np.dtype(dtype)


def test_a_python_float_meeting_an_integer_tensor_gives_float32():
    i = jitgrad.constant([1, 2, 3])
    assert (i + 1.5).dtype == jitgrad.float32 and (i + 1.5).numpy().tolist() == [2.5, 3.5, 4.5]
    assert (2.0 * jitgrad.constant([1, 2], dtype=jitgrad.int64)).dtype == jitgrad.float32
    assert dtypes.weak_scalar_dtype(1.5, np.dtype("int64")) == jitgrad.float32
    assert dtypes.weak_scalar_dtype(1, np.dtype("float16")) == jitgrad.float16


def test_numpy_arrays_are_strongly_typed_operands():
    x = jitgrad.constant([1.0, 2.0, 3.0])
    assert (np.ones(3) * x).dtype == jitgrad.float64
    assert (x + np.ones(3, np.float16)).dtype == jitgrad.float32
    assert (np.array(2.0) * x).dtype == jitgrad.float64
    assert (np.float32(2.0) * x).dtype == jitgrad.float32
    assert (np.int64(2) * jitgrad.constant([1, 2])).dtype == jitgrad.int64


def test_numpy_float64_scalars_are_strongly_typed_like_other_numpy_scalars():
    x = jitgrad.constant([1.0, 2.0, 3.0])
    assert (np.float64(2.0) * x).dtype == (np.array(2.0) * x).dtype


def test_integer_division_and_powers():
    i = jitgrad.constant([1, 2, 3])
    assert (i / 2).dtype == jitgrad.float64  # TensorFlow's truediv of int32
    assert (i // 2).dtype == jitgrad.int32 and (i // 2).numpy().tolist() == [0, 1, 1]
    assert (i % 2).numpy().tolist() == [1, 0, 1]
    assert (i**2).dtype == jitgrad.int32 and (i**2).numpy().tolist() == [1, 4, 9]
    assert (2**i).numpy().tolist() == [2, 4, 8]
    assert ((-7) // jitgrad.constant(2)).numpy() == -4  # floor, as Python
    assert (jitgrad.constant(-7.0) % 3).numpy() == 2.0


def test_bool_tensors_refuse_arithmetic():
    with pytest.raises(TypeError, match="add: expects a numeric tensor, got bool"):
        jitgrad.constant([True]) + jitgrad.constant([False])
    with pytest.raises(TypeError, match="neg"):
        -jitgrad.constant([True])


def test_broadcasting_and_its_errors():
    x = jitgrad.constant([1.0, 2.0, 3.0])
    assert (x + [[10.0], [20.0]]).shape == (2, 3)
    with pytest.raises(ValueError, match=r"add: shapes \(3,\) and \(2,\) cannot be broadcast"):
        x + jitgrad.constant([1.0, 2.0])


def test_every_dtype_object_is_a_jitgrad_dtype():
    for dt in (jitgrad.float32, jitgrad.float64, jitgrad.int32, jitgrad.int64, jitgrad.bool):
        assert isinstance(dt, jitgrad.DType)


def test_convert_to_tensor_passes_tensors_through_as_tensorflow_does():
    """A Variable or Tensor converts to itself, so a tape still sees it; a dtype it does not
    have is refused (TensorFlow's ValueError); other values become constants."""
    v = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        y = jitgrad.convert_to_tensor(v) * 3.0
    assert float(tape.gradient(y, v)) == 3.0
    assert float(jitgrad.jit(lambda x: jitgrad.convert_to_tensor(x) * 2.0)(3.0)) == 6.0
    assert jitgrad.convert_to_tensor([1, 2], dtype_hint=jitgrad.float32).dtype == np.float32
    with pytest.raises(ValueError, match="convert_to_tensor"):
        jitgrad.convert_to_tensor(jitgrad.constant(1.0), dtype=jitgrad.float64)
