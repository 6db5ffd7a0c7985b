"""The call signature: a fast entry's guard passes exactly the calls whose version key and
leaf types equal those of the call it was generated for."""

import collections

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.compiler.signature import Guard, call_key, entry_key

Pair = collections.namedtuple("Pair", "a b")
X = np.arange(6, dtype=np.float32).reshape(2, 3)

# Contiguous leaves only: the kernel's dispatcher, not the guard, refuses other layouts.
SAMPLES = [
    1.0,
    2.0,
    3,
    4,
    2**31,
    True,
    False,
    np.float32(1.0),
    np.float64(1.0),
    np.int32(3),
    X,
    X + 1,
    X.astype(np.float64),
    X[:1],
    jg.constant(X),
    jg.Variable(X),
    jg.constant(2.0),
    (1.0, X),
    (2.0, X),
    (X, 1.0),
    [1.0, 2.0],
    [3.0, 4.0],
    [1, 2],
    [1.0, 2.0, 3.0],
    [[1.0], [2.0]],
    {"a": X, "b": 1.0},
    {"a": X, "c": 1.0},
    Pair(1.0, X),
    (1.0, None),
    [X, X],
    (X, X),
]


def guard(args):
    """The guard for calls shaped like `args` as a function, or None if it has none."""
    env = {"ndarray": np.ndarray}
    g = Guard(env, "return False")
    if not g.arguments(args, frozenset()):
        return None
    names = "".join(f"a{i}, " for i in range(len(args)))
    source = "\n".join(
        [
            f"def passes({names}):",
            "    try:",
            *("    " + x for x in g.lines),
            "    except (KeyError, IndexError, TypeError, AttributeError):",
            "        return False",
            "    return True",
        ]
    )
    exec(source, env)
    return env["passes"]


def signature(args):
    return call_key(args, frozenset(), "f")[0], entry_key(args, frozenset())


@pytest.mark.parametrize("seen", SAMPLES, ids=repr)
def test_a_guard_passes_exactly_the_calls_of_its_signature(seen):
    passes = guard((seen,))
    if passes is None:
        assert seen == 2**31  # an int64 scalar: served by the general path
        return
    for call in SAMPLES:
        assert passes(call) == (signature((seen,)) == signature((call,))), call


def test_static_arguments_are_guarded_by_value():
    env = {"ndarray": np.ndarray}
    g = Guard(env, "return False")
    assert g.arguments((X, "mean"), frozenset({1}))
    source = "\n".join(["def passes(a0, a1):", *g.lines, "    return True"])
    exec(source, env)
    assert env["passes"](X, "mean") and not env["passes"](X, "sum")
    assert not Guard({}, "").arguments(([1],), frozenset({0}))  # unhashable: no entry


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i4"])
def test_arrays_in_the_other_byte_order_are_taken_as_numpy_reads_them(dtype):
    """Big-endian data (read from a file) gives numpy's values, eagerly, on the tape and
    compiled: converted to this machine's byte order at the boundary, as JAX and TF do. A
    compiled call used to hand the array to the kernel as it was, and Numba refused it."""
    native = np.arange(1, 7).reshape(2, 3).astype(np.dtype(dtype).newbyteorder("="))
    swapped = native.astype(dtype)
    assert not swapped.dtype.isnative

    def f(x):
        return jg.reduce_sum(jg.cast(x, jg.float64) * 0.5) * 3.0

    assert float(f(swapped)) == float(f(native)) == 31.5
    compiled = jg.jit(f)
    assert float(compiled(swapped)) == float(compiled(native)) == 31.5
    grad = jg.jit_grad(lambda w, x: jg.reduce_sum(jg.cast(x, jg.float64) * w), wrt=0)
    np.testing.assert_array_equal(grad(2.0, swapped)[1], grad(2.0, native)[1])
    assert jg.constant(swapped).dtype == native.dtype


@pytest.mark.parametrize("value", [np.array([1 + 2j]), np.array([1], object), np.array(["a"])])
def test_an_array_of_a_dtype_jitgrad_does_not_hold_is_refused_at_the_call(value):
    with pytest.raises(TypeError, match=r"jit: dtype .* is not supported .*test_signature.py"):
        jg.jit(lambda x: jg.reshape(x, (-1,)))(value)


class _ArrayLike:
    """An object with numpy's array protocol only (as pandas' and xarray's objects have)."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def test_objects_with_numpys_array_protocol_are_taken_as_their_arrays():
    values = np.arange(6.0).reshape(2, 3)
    like = _ArrayLike(values)
    np.testing.assert_array_equal(jg.constant(like).numpy(), values)
    assert float(jg.reduce_sum(like)) == 15.0
    assert float(jg.jit(lambda v: jg.reduce_sum(v * 2.0))(like)) == 30.0
    value, grad = jg.jit_grad(lambda v: jg.reduce_sum(v * v))(like)
    assert float(value) == 55.0
    np.testing.assert_array_equal(grad, 2 * values)


def test_a_masked_array_is_refused_rather_than_losing_its_mask():
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    for call in (jg.constant, jg.jit(lambda v: jg.reduce_sum(v))):
        with pytest.raises(TypeError, match="masked array would lose its mask"):
            call(masked)
