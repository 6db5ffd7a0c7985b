"""The generated call path: the per-signature fast entry, its guards and fallbacks, and the
0-d results kept as Python numbers (CompiledScalar)."""

import collections
import re
import threading

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.compiler import call_path


@jg.jit
def scale_sum(x, y, scale):
    return jg.reduce_sum(x * y) * scale, x * scale


X = np.arange(6, dtype=np.float32).reshape(2, 3)
Y = np.ones((2, 3), np.float32)


def expected(x, y, scale):
    return np.float32((x * y).sum() * np.float32(scale)), x * np.float32(scale)


def check(out, x, y, scale):
    total, scaled = out
    want_total, want_scaled = expected(x, y, scale)
    assert float(total) == pytest.approx(float(want_total), rel=1e-6)
    np.testing.assert_allclose(np.asarray(scaled), want_scaled, rtol=1e-6)


def test_fast_entry_is_installed_and_counts_hits():
    f = jg.jit(lambda x, y: x * y)
    f(X, Y)
    assert "if not (" in type(f).__call__.source  # the guarded fast path
    before = f.cache_info().hits
    for _ in range(3):
        f(X, Y)
    assert f.cache_info().hits == before + 3
    assert type(jg.jit(lambda x: x)).__call__ is not type(f).__call__  # one class each


@pytest.mark.parametrize(
    "args",
    [
        (X, Y, 2.0),  # the signature the entry was built for
        (X, Y, 3),  # int instead of float: another version
        (X[:, ::-1], Y, 2.0),  # non-contiguous array
        (np.asfortranarray(X), Y, 2.0),  # Fortran order
        (X.astype(np.float64), Y, 2.0),  # another dtype
        (X[:1], Y[:1], 2.0),  # another shape
        (jg.constant(X), Y, 2.0),  # a Tensor
        (X, Y, np.float32(2.0)),  # a numpy scalar
        (X, Y, jg.constant(2.0)),  # a 0-d Tensor
    ],
)
def test_every_call_shape_after_the_fast_entry_is_right(args):
    scale_sum(X, Y, 2.0)  # installs the entry for (array, array, float)
    check(scale_sum(*args), *(np.asarray(a) for a in args))
    check(scale_sum(X, Y, 2.0), X, Y, 2.0)  # and back


def test_read_only_arrays_are_accepted_before_and_after_writeable_ones():
    frozen = X.copy()
    frozen.flags.writeable = False
    f = jg.jit(lambda x: x + 1.0)
    np.testing.assert_array_equal(np.asarray(f(X)), X + 1)
    np.testing.assert_array_equal(np.asarray(f(frozen)), X + 1)
    g = jg.jit(lambda x: x + 1.0)
    np.testing.assert_array_equal(np.asarray(g(frozen)), X + 1)
    np.testing.assert_array_equal(np.asarray(g(X)), X + 1)


def test_pytree_arguments_guard_their_structure():
    @jg.jit
    def f(params, x):
        return params["w"] * x + params["b"]

    params = {"w": np.float32(2.0) * Y, "b": Y}
    np.testing.assert_array_equal(np.asarray(f(params, X)), 2 * X + 1)
    np.testing.assert_array_equal(np.asarray(f(params, X)), 2 * X + 1)
    more = dict(params, c=Y)  # an extra key is another structure: a new version
    np.testing.assert_array_equal(np.asarray(f({"w": Y, "b": Y}, X)), X + 1)
    with pytest.raises(KeyError):
        f({"w": Y, "c": Y}, X)  # the function itself reads params["b"]
    assert np.asarray(f(more, X)).shape == (2, 3)
    assert f.cache_info().versions == 2


def test_static_arguments_are_part_of_the_guard():
    @jg.jit(static_argnums=1)
    def power(x, n):
        return x**n

    np.testing.assert_array_equal(np.asarray(power(X, 2)), X**2)
    np.testing.assert_array_equal(np.asarray(power(X, 2)), X**2)
    np.testing.assert_array_equal(np.asarray(power(X, 3)), X**3)
    np.testing.assert_array_equal(np.asarray(power(X, 2)), X**2)
    assert power.cache_info().versions == 2


def test_keyword_and_wrong_arity_calls_take_the_general_path():
    f = jg.jit(lambda x, y: x - y)
    f(X, Y)
    np.testing.assert_array_equal(np.asarray(f(x=X, y=Y)), X - Y)
    np.testing.assert_array_equal(np.asarray(f(X, y=Y)), X - Y)
    with pytest.raises(TypeError):
        f(X)


def test_tapes_and_traces_bypass_the_fast_entry():
    f = jg.jit(lambda x: x * x)
    x = jg.constant(3.0)
    f(x)
    f(x)  # the fast entry exists now
    with jg.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    assert float(tape.gradient(y, x)) == 6.0
    assert float(jg.grad(lambda v: f(v))(3.0)) == 6.0


def test_debug_nans_bypasses_the_fast_entry(monkeypatch):
    f = jg.jit(lambda x: jg.log(x))
    f(np.ones(3, np.float32))
    f(np.ones(3, np.float32))
    monkeypatch.setattr(jg.config, "debug_nans", True)
    with pytest.raises(FloatingPointError):
        f(-np.ones(3, np.float32))


def test_compiled_scalars_behave_like_tensors():
    value, (g1, g2) = jg.jit_grad(lambda a, b: a * b * 2.0, wrt=(0, 1))(3.0, 4.0)
    assert isinstance(value, jg.Tensor)
    assert value.dtype == np.float32 and value.shape == ()
    assert type(value.numpy()) is np.float32 and value.numpy() == 24.0
    assert float(value) == 24.0 and int(g1) == 8 and bool(g2)
    assert float(value * 2 + g1) == 56.0
    assert repr(value) == "<jitgrad.Tensor: shape=(), dtype=float32, numpy=24.0>"
    assert np.asarray(value).dtype == np.float32
    assert float(jg.constant(value)) == 24.0
    f64 = jg.jit(lambda x: jg.reduce_sum(x))(np.ones(3))
    assert f64.dtype == np.float64 and f64.numpy() == 3.0
    count = jg.jit(lambda x: jg.reduce_sum(x))(np.ones(3, np.int32))
    assert count.dtype == np.int32 and int(count) == 3


@pytest.mark.parametrize("path", ["fast", "general"])
def test_each_call_returns_scalars_of_its_own(path):
    """The call path makes a compiled scalar without calling its class (call_path._Body.leaves):
    each call still returns new objects, of the output's dtype, that later calls leave alone."""
    vg = jg.jit_grad(lambda a, b: a * b * 2.0, wrt=(0, 1))
    call = vg if path == "fast" else (lambda a, b: vg(a=a, b=b))
    first = call(3.0, 4.0)
    second = call(5.0, 6.0)
    assert [float(first[0]), float(first[1][0]), float(first[1][1])] == [24.0, 8.0, 6.0]
    assert [float(second[0]), float(second[1][0]), float(second[1][1])] == [60.0, 12.0, 10.0]
    assert first[0] is not second[0] and type(first[0]) is type(second[0])
    assert first[0].dtype == np.float32 and first[0].numpy() == np.float32(24.0)


def test_compiled_scalars_feed_compiled_functions():
    f = jg.jit(lambda x: x * 2.0)
    y = f(1.5)
    assert float(f(y)) == 6.0
    assert float(f(f(y))) == 12.0


def test_fast_entries_are_thread_safe():
    f = jg.jit_grad(lambda w, x: jg.reduce_sum(jg.tanh(w * x)), wrt=0)
    xs = [np.full(64, k, np.float32) for k in range(4)]
    w = np.linspace(-1, 1, 64).astype(np.float32)
    want = [np.asarray(f(w, x)[1]).copy() for x in xs]
    errors = []

    def work(k):
        for _ in range(200):
            got = np.asarray(f(w, xs[k])[1])
            if not np.array_equal(got, want[k]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_function_without_arguments_has_a_fast_entry():
    v = jg.Variable(np.arange(3, dtype=np.float32))
    f = jg.jit(lambda: v * 2.0)
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(f()), [0.0, 2.0, 4.0])
    assert f.cache_info().hits == 2
    v.assign([1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(f()), [2.0, 2.0, 2.0])


Pair = collections.namedtuple("Pair", "a b")
SamePair = collections.namedtuple("SamePair", "a b")


def test_fast_entry_guards_namedtuple_types_and_lists_of_numbers():
    f = jg.jit(lambda p, xs: (p.a * xs[0] + xs[1], p))
    for _ in range(3):
        total, p = f(Pair(2.0, 3.0), [1.0, 2.0])
        assert type(p) is Pair and float(total) == 4.0
    assert f.cache_info().hits == 2  # lists of numbers take the fast entry too
    assert type(f(SamePair(2.0, 3.0), [1.0, 2.0])[1]) is SamePair  # the exact type
    assert f(Pair(2, 3), [1, 2])[0].dtype == np.int32
    # numpy scalars are not Python numbers: a list of them is a structure, two scalar inputs
    assert float(f(Pair(2.0, 3.0), [np.float32(1.0), np.float32(2.0)])[0]) == 4.0
    assert f.cache_info().versions == 4
    assert float(f(Pair(2.0, 3.0), [1.0, 2.0])[0]) == 4.0


def affine(x):
    return x * 2.0 + 1.0


# An output buffer of 4 floats (np.empty's), and one of 2,048 (aligned_empty's: a view of the
# bytes it was cut from, whose reuse check also counts those bytes' references).
SIZES = [4, 2048]


def _caller(path, size=4):
    """A jitted `affine` called through the fast entry, or through the general path (keyword
    arguments always take it)."""
    f = jg.jit(affine)
    call = f if path == "fast" else (lambda x: f(x=x))
    call(np.zeros(size, np.float32))  # compiles and installs the fast entry
    (compiled,) = f._versions.values()
    assert compiled.kernel_source.outputs[0][0] == "param"  # a pooled output buffer
    return f, call


HOLD = {"tensor": lambda t: t, "numpy": lambda t: t.numpy(), "view": lambda t: t.numpy()[1:]}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("hold", list(HOLD))
def test_an_output_the_caller_holds_survives_later_calls(path, hold, size):
    f, call = _caller(path, size)
    a, b = np.arange(size, dtype=np.float32), np.full(size, 10.0, np.float32)
    held = HOLD[hold](call(a))  # only this is kept: the Tensor is dropped unless held
    want = np.array(held)
    hits = f.cache_info().hits
    for x in (a, b):  # the same input, then another (which would overwrite it)
        call(x)
    np.testing.assert_array_equal(np.asarray(held), want)
    assert f.cache_info().hits == hits + 2


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", ["fast", "general"])
def test_a_dropped_output_buffer_is_reused(path, size):
    _, call = _caller(path, size)
    a = np.arange(size, dtype=np.float32)
    # The pool keeps last call's buffer alive, so the same address means the same buffer.
    assert len({call(a).numpy().ctypes.data for _ in range(5)}) == 1


def test_large_buffers_start_on_a_cache_line():
    """A kernel's 64-byte vectors must not span two cache lines (call_path.aligned_empty)."""
    _, call = _caller("fast", 2048)
    out = call(np.arange(2048, dtype=np.float32)).numpy()
    assert out.ctypes.data % call_path.CACHE_LINE == 0
    np.testing.assert_array_equal(out, np.arange(2048, dtype=np.float32) * 2.0 + 1.0)
    for shape, dtype in (((3, 1000), np.float32), ((7,), np.float64), ((2, 0), np.int32)):
        buffer = call_path.aligned_empty(shape, dtype)
        assert buffer.shape == shape and buffer.dtype == dtype and buffer.flags.c_contiguous
        assert buffer.flags.writeable
        assert buffer.size == 0 or buffer.ctypes.data % call_path.CACHE_LINE == 0


@pytest.mark.parametrize("path", ["fast", "general"])
def test_a_returned_view_of_an_intermediate_survives_later_calls(path):
    """The kernel returns a reshape of a buffer no output is: the buffer is still the
    caller's (through the view's base), and the next call must not write into it."""
    f = jg.jit(lambda x: (jg.exp(x) * 2.0).reshape((2, 3)))
    call = f if path == "fast" else (lambda x: f(x=x))
    held = call(np.zeros(6))
    (compiled,) = f._versions.values()
    assert compiled.kernel_source.outputs[0][0] == "ret"  # a view, not a buffer output
    call(np.ones(6))
    call(np.ones(6))
    np.testing.assert_array_equal(held.numpy(), np.full((2, 3), 2.0))


def two_products(x, w):
    """A kernel whose two temporaries (the products) are parts of one buffer, and whose first
    output is a view of the second of them."""
    h = jg.matmul(x, w)
    return jg.matmul(h, w).reshape((-1,)), jg.reduce_sum(h * h)


@pytest.mark.parametrize("path", ["fast", "general"])
def test_a_returned_view_of_a_carved_temporary_survives_later_calls(path):
    """The temporaries' buffer is then the caller's (through the view's base): the next calls
    carve theirs from another one."""
    f = jg.jit(two_products)
    call = f if path == "fast" else (lambda x, w: f(x=x, w=w))
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    held, _ = call(np.eye(2, dtype=np.float32), w)
    (compiled,) = f._versions.values()
    source = compiled.kernel_source
    assert [plan[0] for plan in source.params] == ["input", "input", "buffer"]
    assert source.outputs[0][0] == "ret" and "carve(temporaries, " in source.source
    for x in (np.ones((2, 2), np.float32), np.full((2, 2), 3.0, np.float32)):
        out, total = call(x, w)
        np.testing.assert_allclose(out.numpy(), (x @ w @ w).reshape(-1))
        np.testing.assert_allclose(float(total), float(np.sum((x @ w) ** 2)))
    np.testing.assert_array_equal(held.numpy(), (w @ w).reshape(-1))


def test_a_kernels_temporaries_share_one_buffer_reused_at_every_call():
    """A train step's temporaries (activations, gradients) are views of one pooled buffer,
    each on cache lines of its own, and the next call reuses it: the kernel takes one
    argument for all of them, and results stay right from call to call."""

    def loss(params, x, y):
        h = jg.relu(jg.matmul(x, params["w1"]) + params["b1"])
        return jg.reduce_mean(jg.square(jg.matmul(h, params["w2"]) - y))

    rng = np.random.default_rng(0)
    params = {
        "w1": rng.standard_normal((6, 8)).astype(np.float32),
        "b1": np.zeros(8, np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
    }
    grad = jg.jit_grad(loss)
    x, y = rng.standard_normal((5, 6)).astype(np.float32), np.ones((5, 3), np.float32)
    grad(params, x, y)
    (compiled,) = grad._versions.values()
    plans = compiled.kernel_source.params
    assert sum(plan[0] == "buffer" and plan[2] == np.uint8 for plan in plans) == 1
    carved = re.findall(r"= carve\(temporaries, (\d+), ", compiled.kernel_source.source)
    assert len(carved) >= 2 and all(int(start) % 64 == 0 for start in carved)
    pool = compiled.pools.buffers
    arena = len(plans) - 1
    before = pool[arena].ctypes.data  # its address: holding it would keep it from reuse
    for scale in (1.0, -2.0, 0.5):  # other inputs: no value of an earlier call may leak
        got = grad(params, x * np.float32(scale), y)[1]  # (loss, gradients)
        want = jg.grad(loss)(params, x * np.float32(scale), y)
        for k in params:
            np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-5, atol=1e-6)
    assert pool[arena].ctypes.data == before
