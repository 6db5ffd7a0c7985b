"""Bad input gets a clear error naming the op, the shapes/dtypes and the user's line; never a
Numba traceback, never a silently wrong number. One case per row."""

import re

import numpy as np
import pytest

import jitgrad as jg

HERE = r"test_errors\.py:\d+"


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (regex) and this file's line."""
    pattern = "".join(f"(?=[\\s\\S]*(?:{f}))" for f in (*fragments, HERE))
    return pytest.raises(exc, match=pattern)


# -- shapes -----------------------------------------------------------------------------------


def test_broadcast_mismatch():
    with raises(ValueError, "add", re.escape("(3,)"), re.escape("(4,)"), "broadcast"):
        jg.constant(np.ones(3)) + np.ones(4)


def test_matmul_contraction_mismatch():
    a, b = jg.ones((128, 784)), jg.ones((256, 10))
    with raises(
        ValueError, "matmul", re.escape("(128, 784) @ (256, 10)"), "cannot contract 784 with 256"
    ):
        a @ b


def test_concat_shape_mismatch():
    with raises(ValueError, "concat", r"\[2, 3\]", r"\[2, 4\]", "axis 0"):
        jg.concat([jg.ones((2, 3)), jg.ones((2, 4))], axis=0)


def test_reshape_size_mismatch():
    with raises(ValueError, "reshape", re.escape("(6,)"), re.escape("(4,)")):
        jg.reshape(jg.ones(6), (4,))


def test_axis_out_of_range():
    with raises(ValueError, "reduce_sum", "axis 3", "rank 2"):
        jg.reduce_sum(jg.ones((2, 3)), axis=3)


def test_index_out_of_range():
    with raises(IndexError, "getitem", "index 5", "size 3"):
        jg.ones(3)[5]


def test_gather_index_out_of_range():
    with raises(IndexError, "gather", "index 7", "size 3"):
        jg.gather(jg.ones(3), [0, 7])


# -- argument types ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["text", object(), 1 + 2j, None, np.array(["a"])])
def test_unconvertible_arguments(value):
    with raises(TypeError, "exp", "convert|dtype"):
        jg.exp(value)


def test_complex_array_is_refused():
    with raises(TypeError, "constant", "complex128"):
        jg.constant(np.ones(2, np.complex128))


def test_ragged_nested_list():
    with raises(ValueError, "constant", "ragged"):
        jg.constant([[1.0, 2.0], [3.0]])


# -- tapes ------------------------------------------------------------------------------------


def test_gradient_of_integer_target():
    """TensorFlow's rule: a warning naming the dtype, and None (tests/test_tf_compat.py)."""
    x = jg.Variable(1.0)
    with jg.GradientTape() as tape:
        y = jg.cast(x * 2.0, jg.int32)
    with pytest.warns(RuntimeWarning, match="GradientTape.gradient: the target has dtype int32"):
        assert tape.gradient(y, x) is None


def test_gradient_with_respect_to_a_non_tensor():
    x = jg.Variable(1.0)
    with jg.GradientTape() as tape:
        y = x * 2.0
    with raises(TypeError, "GradientTape.gradient", "sources", "float"):
        tape.gradient(y, [x, 3.0])


@pytest.mark.parametrize("transform", [jg.grad, jg.jit_grad, jg.value_and_grad])
@pytest.mark.parametrize(
    "returns, what",
    [
        (lambda x: (jg.reduce_sum(x), x), "a tuple of 2"),
        (lambda x: None, "None"),
        (lambda x: [jg.reduce_sum(x)], "a list of 1"),
        (lambda x: {"loss": jg.reduce_sum(x)}, "a dict of 1"),
    ],
)
def test_gradient_of_a_function_that_returns_no_single_value(transform, returns, what):
    """Not numpy's "ragged nested list" (a tuple) or "cannot convert NoneType": what the
    function returned, and the two ways out."""
    with raises(TypeError, f"<lambda> returned {what}, but a gradient is of one value", "has_aux"):
        transform(returns)(np.arange(3.0))


def test_non_persistent_tape_used_twice():
    x = jg.Variable(1.0)
    with jg.GradientTape() as tape:
        y = x * x
    tape.gradient(y, x)
    with raises(RuntimeError, "non-persistent", "persistent=True"):
        tape.gradient(y, x)


def test_watch_of_a_non_tensor():
    with jg.GradientTape() as tape:
        with raises(ValueError, "watch", "list|float"):
            tape.watch([1.0])


# -- tracing ----------------------------------------------------------------------------------


def test_tracer_leaked_after_the_trace():
    kept = []

    @jg.jit
    def f(x):
        kept.append(x)
        return x + 1.0

    f(1.0)
    with raises(jg.LeakedTracerError, "mul", "outside the jit trace"):
        kept[0] * 2.0


def test_tracer_from_one_jitted_function_used_in_another():
    kept = []

    @jg.jit
    def f(x):
        kept.append(x)
        return x + 1.0

    @jg.jit
    def g(y):
        return y + kept[0]

    f(1.0)
    with raises(jg.LeakedTracerError, "traced value", "'f'", "'g'"):
        g(2.0)


@pytest.mark.parametrize("convert", ["bool", "int", "float"])
def test_python_conversion_of_a_traced_value(convert):
    fn = {
        "bool": lambda x: x if x else -x,
        "int": lambda x: x * int(x),
        "float": lambda x: x * float(x),
    }[convert]
    with raises(jg.TracerError, f"{convert}\\(\\)", "static_argnums", "jitgrad.where"):
        jg.jit(fn)(1.0)


def test_iteration_over_a_traced_scalar():
    def f(x):
        return sum(v for v in x)

    with raises(TypeError, "iteration over a 0-d tensor"):
        jg.jit(f)(1.0)


def test_wrt_names_an_argument_that_does_not_exist():
    with raises(ValueError, "jit_grad", "'z'", r"\['x', 'y'\]"):
        jg.jit_grad(lambda x, y: x * y, wrt="z")


def test_unsupported_dtype_under_jit_raises_at_trace_time():
    with pytest.raises(TypeError, match="float16.*not supported under jit"):
        jg.jit(lambda x: jg.exp(x) * 2.0)(np.ones(3, np.float16))


def test_static_argument_must_be_hashable():
    with raises(TypeError, "static argument", "list", "hashable"):
        jg.jit(lambda x, n: x * len(n), static_argnums=1)(1.0, [1, 2])


# -- jit arguments and outputs (safety issue, item 11) ----------------------------------------


def test_jit_dict_keys_that_cannot_be_ordered():
    with raises(TypeError, "dict keys", re.escape("(1, 'a')"), "deterministic order"):
        jg.jit(lambda d: d[(1, 2)])({(1, 2): 1.0, (1, "a"): 2.0})


def test_jit_output_that_is_not_a_tensor():
    def label(x):
        return "abc"

    with raises(TypeError, "label output", "cannot convert str 'abc'"):
        jg.jit(label)(1.0)


def test_jit_ragged_list_argument():
    with raises(ValueError, "jit", "ragged", re.escape("[[1.0], [2.0, 3.0]]")):
        jg.jit(jg.sin)([[1.0], [2.0, 3.0]])


# -- numerics: a compiled result is numpy's number, never an OverflowError nor another number --


def test_compiled_integer_overflow_wraps_instead_of_raising():
    out = np.asarray(jg.jit(lambda x, y: x + y)(np.int32(2**31 - 1), np.int32(1)))
    assert out.dtype == np.int32 and int(out) == -(2**31)


def test_compiled_maximum_with_nan_is_nan_not_the_number():
    assert np.isnan(np.asarray(jg.jit(jg.maximum)(np.float32(1.0), np.float32(np.nan))))


# -- indices and labels in compiled code (safety issue, items 1 and 2) --------------------------


def test_compiled_gradient_of_gather_index_out_of_range():
    d = jg.jit(jg.grad(lambda x, i: jg.reduce_sum(jg.gather(x, i))))
    with raises(IndexError, "scatter_add", "gradient of gather", "index 7", "axis 0", "size 5"):
        d(np.arange(5, dtype=np.float32), np.array([7], np.int32))


def test_compiled_gather_nd_component_out_of_range():
    with raises(IndexError, "gather_nd", "index 4", "axis 1", "size 3"):
        jg.jit(jg.gather_nd)(np.zeros((3, 3)), np.array([[0, 4]]))


def test_compiled_label_out_of_range():
    loss = jg.jit(lambda y, z: jg.nn.sparse_softmax_cross_entropy(y, z))
    with raises(
        IndexError, "sparse_softmax_cross_entropy_with_logits", "label 10", re.escape("[0, 10)")
    ):
        loss(np.array([10]), np.zeros((1, 10), np.float32))
