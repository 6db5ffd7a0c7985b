"""Control flow (issue 13): `jitgrad.lax.scan`, `fori_loop`, `while_loop`, `cond`, `switch`,
`map` and TensorFlow's `while_loop`, `cond`, `scan`, `foldl`, `foldr`, `map_fn`.

Every construct is checked against a plain Python/numpy loop three ways: eagerly (a Python
loop over ops), in the graph interpreter (`make_graph` + `eval_graph`: the `loop`/`cond`
primitives' numpy implementation) and compiled (`jit`: a native loop in the kernel), in float32
and float64. Gradients (eager `grad`, GradientTape, the interpreter on the traced gradient
graph, `jit(grad(f))` and `jit_grad`) are checked against central finite differences in
float64, to second order; then the semantics one by one (reverse and zero-length scans, pytree
carries, nested loops, closures and Variables, `jit_train_step`, data-dependent while loops,
only-the-taken-branch) and the errors.

Each bug these tests found has a test here that failed before its fix: merging a second
derivative's loops, a while loop's gradient inside a scan, jvp under jit, and the error for a
carry with more leaves than the input.
"""

import contextlib
import functools
import io
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.core import pytree
from jitgrad.ir.interpret import eval_graph
from jitgrad.testing import graph_vjp_fn

lax = jg.lax

# ---------------------------------------------------------------------------------------------
# Helpers

DTYPES = [np.float32, np.float64]


def tolerances(dtype):
    return (2e-5, 1e-6) if np.dtype(dtype) == np.float32 else (1e-11, 1e-12)


def leaves(tree) -> list:
    return [np.asarray(x) for x in pytree.flatten(tree)[0]]


def graph_of(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):  # make_graph prints the graph
        return jg.make_graph(fn)(*args)


def interpret(fn, *args) -> list:
    """`fn`'s traced graph run by the reference interpreter (the primitives' numpy impls)."""
    flat = [np.asarray(a) for a in pytree.flatten(args)[0]]
    return eval_graph(graph_of(fn, *args), *flat)


def assert_close(got, want, dtype=np.float64, what=""):
    """`got` (a pytree or a flat list) equals the numpy reference `want`: the same number of
    leaves, shapes, `dtype` for float leaves, exact int leaves, float values to tolerance."""
    rtol, atol = tolerances(dtype)
    got = got if isinstance(got, list) else leaves(got)
    want = leaves(want)
    assert len(got) == len(want), f"{what}: {len(got)} outputs, want {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{what} output {k}: shape {g.shape}, want {w.shape}"
        if w.dtype.kind == "f":
            assert g.dtype == np.dtype(dtype), f"{what} output {k}: dtype {g.dtype}"
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what} {k}")
        else:
            assert g.dtype.kind in "iub", f"{what} output {k}: dtype {g.dtype}"
            np.testing.assert_array_equal(g, w, err_msg=f"{what} {k}")


def as_dtype(args, dtype):
    return tuple(
        np.asarray(a, dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in args
    )


def numeric_grads(f, args, argnums, eps=1e-6):
    """Central finite differences (float64) of the scalar `f` w.r.t. args[argnums]."""
    args = [np.array(a, np.float64) if np.asarray(a).dtype.kind == "f" else a for a in args]
    out = []
    for i in argnums:
        g = np.zeros_like(args[i])
        for j in np.ndindex(args[i].shape):
            shifted = []
            for step in (eps, -eps):
                moved = list(args)
                moved[i] = args[i].copy()
                moved[i][j] += step
                shifted.append(float(np.asarray(f(*moved))))
            g[j] = (shifted[0] - shifted[1]) / (2 * eps)
        out.append(g)
    return out


def tape_grads(f, args, argnums):
    tensors = [jg.constant(a) for a in args]
    with jg.GradientTape() as tape:
        tape.watch([tensors[i] for i in argnums])
        y = f(*tensors)
    return tape.gradient(y, [tensors[i] for i in argnums])


def float_argnums(args):
    return tuple(i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f")


# ---------------------------------------------------------------------------------------------
# Every construct: eager == interpreter == compiled == a Python-loop reference

RNG = np.random.default_rng(0)
H0 = RNG.uniform(-1, 1, 3)
XS = RNG.uniform(-1, 1, (4, 3))
W = RNG.uniform(-1, 1, 3)
POS = np.array([0.3, 0.5, 0.2])


def rnn_step(w):
    def step(h, x):
        h = jg.tanh(h * w + x)
        return h, {"hx": h * x, "total": jg.reduce_sum(h)}

    return step


def rnn(h0, xs, w):
    return lax.scan(rnn_step(w), h0, xs, unroll=2)


def rnn_ref(h0, xs, w, reverse=False):
    h, hx, total = h0, [], []
    for x in xs[::-1] if reverse else xs:
        h = np.tanh(h * w + x)
        hx.append(h * x)
        total.append(h.sum())
    if reverse:
        hx, total = hx[::-1], total[::-1]
    return h, {"hx": np.stack(hx), "total": np.array(total)}


def rnn_reverse(h0, xs, w):
    return lax.scan(rnn_step(w), h0, xs, reverse=True)


def scan_no_xs(h0):
    return lax.scan(lambda c, _: (c * 0.5 + 1.0, c * c), h0, length=3)


def scan_no_xs_ref(h0):
    c, ys = h0, []
    for _ in range(3):
        ys.append(c * c)
        c = c * 0.5 + 1.0
    return c, np.stack(ys)


def fori(h0, w):
    return lax.fori_loop(2, 6, lambda i, v: jg.sin(v * w) + jg.cast(i, v.dtype) * 0.1, h0)


def fori_ref(h0, w):
    v = h0
    for i in range(2, 6):
        v = np.sin(v * w) + i * 0.1
    return v


def fori_traced_bounds(h0, n):
    return lax.fori_loop(1, n, lambda i, v: v * 0.5 + jg.cast(i, v.dtype), h0)


def fori_traced_bounds_ref(h0, n):
    v = h0
    for i in range(1, int(n)):
        v = v * 0.5 + i
    return v


def while_(x):
    return lax.while_loop(lambda v: jg.reduce_sum(v * v) < 50.0, lambda v: v * 1.3 + 0.1, x)


def while_ref(x):
    v = x
    while (v * v).sum() < 50.0:
        v = v * 1.3 + 0.1
    return v


def while_max(x):
    return lax.while_loop(
        lambda v: jg.reduce_sum(v * v) < 50.0, lambda v: v * 1.3 + 0.1, x, maximum_iterations=2
    )


def while_max_ref(x):
    return (x * 1.3 + 0.1) * 1.3 + 0.1


def cond_(x, w, p):
    return lax.cond(p > 0, lambda a, b: jg.sin(a) * b, lambda a, b: jg.exp(a) - b, x, w)


def cond_ref(x, w, p):
    return np.sin(x) * w if p > 0 else np.exp(x) - w


BRANCHES = [lambda a: a + 1.0, lambda a: jg.sin(a) * 2.0, lambda a: a * a]
BRANCHES_REF = [lambda a: a + 1.0, lambda a: np.sin(a) * 2.0, lambda a: a * a]


def switch_(x, k):
    return jg.switch(k, BRANCHES, x)


def switch_ref(x, k):
    return BRANCHES_REF[min(max(int(k), 0), 2)](x)


def map_(xs):
    return lax.map(lambda r: {"sq": jg.reduce_sum(r * r), "r2": r * 2.0}, xs)


def map_ref(xs):
    return {"sq": (xs * xs).sum(1), "r2": xs * 2.0}


def tf_while(x):
    return jg.while_loop(lambda i, v: i < 4, lambda i, v: (i + 1, v * 1.5 - 0.1), [0, x])


def tf_while_ref(x):
    v = x
    for _ in range(4):
        v = v * 1.5 - 0.1
    return [np.int32(4), v]


def tf_cond(x, p):
    return jg.cond(p > 0, true_fn=lambda: jg.sin(x), false_fn=lambda: jg.cos(x))


def tf_cond_ref(x, p):
    return np.sin(x) if p > 0 else np.cos(x)


def tf_scan(xs, init):
    return (
        jg.scan(lambda a, x: a * 0.5 + x, xs),
        jg.scan(lambda a, x: a * x - 0.1, xs, initializer=init, reverse=True),
    )


def tf_scan_ref(xs, init):
    a, first = xs[0], [xs[0]]
    for x in xs[1:]:
        a = a * 0.5 + x
        first.append(a)
    a, second = init, []
    for x in xs[::-1]:
        a = a * x - 0.1
        second.append(a)
    return np.stack(first), np.stack(second[::-1])


def folds(xs, init):
    step = lambda a, x: jg.sin(a) * 0.5 + x
    return (
        jg.foldl(step, xs),
        jg.foldl(step, xs, initializer=init),
        jg.foldr(step, xs),
        jg.foldr(step, xs, initializer=init),
    )


def folds_ref(xs, init):
    def fold(a, rows):
        for x in rows:
            a = np.sin(a) * 0.5 + x
        return a

    return (fold(xs[0], xs[1:]), fold(init, xs), fold(xs[-1], xs[-2::-1]), fold(init, xs[::-1]))


def map_fn_(xs):
    return jg.map_fn(lambda r: jg.tanh(r) * r, xs)


def map_fn_ref(xs):
    return np.tanh(xs) * xs


N4 = np.int32(4)
FORWARD = {
    # name: (fn, reference, calls: argument tuples, each run through one compiled version)
    "lax.scan": (rnn, rnn_ref, [(H0, XS, W)]),
    "lax.scan reverse": (
        rnn_reverse,
        lambda h, xs, w: rnn_ref(h, xs, w, reverse=True),
        [(H0, XS, W)],
    ),
    "lax.scan length, no xs": (scan_no_xs, scan_no_xs_ref, [(H0,)]),
    "lax.fori_loop": (fori, fori_ref, [(H0, W)]),
    "lax.fori_loop traced bounds": (
        fori_traced_bounds,
        fori_traced_bounds_ref,
        [(H0, N4), (H0, np.int32(1)), (H0, np.int32(-3))],
    ),
    "lax.while_loop": (while_, while_ref, [(POS,), (POS * 30,)]),
    "lax.while_loop maximum_iterations": (while_max, while_max_ref, [(POS,)]),
    "lax.cond": (cond_, cond_ref, [(H0, W, 1.0), (H0, W, -1.0)]),
    "lax.switch": (switch_, switch_ref, [(H0, np.int32(k)) for k in (-2, 0, 1, 2, 9)]),
    "lax.map": (map_, map_ref, [(XS,)]),
    "while_loop (TF)": (tf_while, tf_while_ref, [(H0,)]),
    "cond (TF)": (tf_cond, tf_cond_ref, [(H0, 1.0), (H0, -1.0)]),
    "scan (TF)": (tf_scan, tf_scan_ref, [(XS, H0)]),
    "foldl, foldr": (folds, folds_ref, [(XS, H0)]),
    "map_fn": (map_fn_, map_fn_ref, [(XS,)]),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(FORWARD))
def test_construct_eager_interpreter_compiled_agree_with_python_loop(name, dtype):
    fn, ref, calls = FORWARD[name]
    compiled = jg.jit(fn)
    for call in calls:
        args = as_dtype(call, dtype)
        want = ref(*[np.asarray(a, np.float64) if a.dtype.kind == "f" else a for a in args])
        assert_close(fn(*args), want, dtype, f"{name} eager")
        assert_close(interpret(fn, *args), want, dtype, f"{name} interpreter")
        assert_close(compiled(*args), want, dtype, f"{name} compiled")
    assert compiled.cache_info().misses == 1  # one version served every call


def test_traced_loops_are_primitives_whose_graph_does_not_grow_with_the_trip_count():
    def f(x, xs):
        return lax.scan(lambda c, r: (jg.sin(c) + r, c * r), x, xs)

    small = graph_of(f, H0, XS[:2])
    large = graph_of(f, H0, np.zeros((500, 3)))
    assert len(small.eqns) == len(large.eqns)
    assert "loop" in {e.op.name for e in small.eqns}
    g = graph_of(lambda x, p: lax.cond(p > 0, jg.sin, jg.cos, x), H0, 1.0)
    assert "cond" in {e.op.name for e in g.eqns}


# ---------------------------------------------------------------------------------------------
# Reverse-mode gradients vs finite differences (float64), in every mode

S = np.float64(0.5)
XS1 = np.array([0.3, 0.2, 0.4, -0.1])


def g_scan_scalar(s, xs, w):
    c, ys = lax.scan(lambda c, x: (jg.sin(c * w) + x, c * c), s, xs)
    return c + jg.reduce_sum(ys)


def g_scan_rnn(h0, xs, w):
    h, ys = rnn(h0, xs, w)
    return jg.reduce_sum(h) + jg.reduce_sum(ys["hx"] ** 2) + jg.reduce_sum(ys["total"])


def g_scan_remat(h0, xs, w):
    h, ys = lax.scan(rnn_step(w), h0, xs, remat=True)
    return jg.reduce_sum(h) + jg.reduce_sum(ys["hx"] ** 2) + jg.reduce_sum(ys["total"])


def g_scan_reverse(s, xs, w):
    c, ys = lax.scan(lambda c, x: (jg.tanh(c * w + x), jg.sin(c) * x), s, xs, reverse=True)
    return c + jg.reduce_sum(ys * ys)


def g_scan_pytree(s, xs, w):
    def step(c, inp):
        a, b = inp["a"], inp["b"]
        h = jg.sin(c["h"] * w) + a * c["n"][1]
        return {"h": h, "n": (c["n"][0] + h * b, c["n"][1] * 0.9)}, (h, b * c["n"][0])

    c, (ys, zs) = lax.scan(step, {"h": s, "n": (s * 2.0, w)}, {"a": xs, "b": jg.cos(xs)})
    return c["h"] + c["n"][0] * c["n"][1] + jg.reduce_sum(ys) + jg.reduce_sum(zs * zs)


def g_scan_no_xs(s, w):
    c, ys = lax.scan(lambda c, _: (jg.sin(c) * w + 0.5, c * w), s, length=5)
    return c + jg.reduce_sum(ys * ys)


def g_fori(s, w):
    return lax.fori_loop(0, 5, lambda i, v: jg.sin(v * w) + jg.cast(i, v.dtype) * v * 0.1, s)


def g_while(x):
    v = lax.while_loop(lambda v: jg.reduce_sum(v * v) < 50.0, lambda v: v * 1.3 + jg.sin(v), x)
    return jg.reduce_sum(jg.sin(v))


def g_while_tf_vector(x, w):
    _, v = jg.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, jg.sin(v * w)), [0, x])
    return jg.reduce_sum(v)


def g_cond(x, w):
    out = lax.cond(jg.reduce_sum(x) > 0.0, lambda a: jg.sin(a) * w, lambda a: jg.exp(a * w), x)
    return jg.reduce_sum(out * out)


def g_switch(x, k):
    return jg.reduce_sum(jg.switch(k, BRANCHES, x))


def g_tf_scan(xs, w):
    return jg.reduce_sum(jg.scan(lambda a, x: jg.sin(a * w) + x, xs) ** 2)


def g_folds(xs, w):
    step = lambda a, x: jg.sin(a * w) + x
    return jg.foldl(step, xs) * jg.foldr(step, xs, initializer=w)


def g_map_fn(xs, w):
    return jg.reduce_sum(jg.map_fn(lambda r: jg.tanh(r * w), xs) ** 2)


def g_fori_in_scan(s, xs):
    def step(c, r):
        return lax.fori_loop(0, 3, lambda i, v: jg.sin(v) * r + 0.5, c), c * r

    c, ys = lax.scan(step, s, xs)
    return c + jg.reduce_sum(ys)


def g_loop_in_cond_in_loop(s, xs):
    def step(c, r):
        c = lax.cond(
            r > 0.25,
            lambda v: lax.fori_loop(0, 2, lambda i, u: jg.sin(u * r) + 0.1, v),
            lambda v: v * r - r,
            c,
        )
        return c, c * c

    c, ys = lax.scan(step, s, xs)
    return c + jg.reduce_sum(ys)


def g_cond_in_while(s):
    def body(c):
        i, v = c
        v = lax.cond(i % 2 == 0, lambda v: jg.sin(v) * 2.0, lambda v: v * v - 1.0, v)
        return i + 1, v

    return lax.while_loop(lambda c: c[0] < 6, body, (0, s))[1]


def g_scan_in_scan(s, xs):
    def outer(c, r):
        inner, ys = lax.scan(lambda c2, q: (jg.sin(c2 * q) + r, c2 * q), c, xs)
        return inner, jg.reduce_sum(ys)

    c, ys = lax.scan(outer, s, xs)
    return c + jg.reduce_sum(ys)


def g_while_in_scan(s, xs):
    def step(c, r):
        return lax.while_loop(lambda v: v < 10.0, lambda v: v * 2.0 + r * v, c), c

    c, ys = lax.scan(step, s, xs)
    return c + jg.reduce_sum(ys)


GRAD = {
    "scan, scalar carry": (g_scan_scalar, (S, XS1, np.float64(0.8))),
    "scan, array carry": (g_scan_rnn, (H0, XS, W)),
    "scan, array carry, remat": (g_scan_remat, (H0, XS, W)),
    "scan reverse": (g_scan_reverse, (S, XS1, np.float64(0.8))),
    "scan, pytree carry and xs": (g_scan_pytree, (S, XS1, np.float64(0.8))),
    "scan, length without xs": (g_scan_no_xs, (S, np.float64(0.8))),
    "fori_loop": (g_fori, (S, np.float64(0.8))),
    "while_loop": (g_while, (POS,)),
    "while_loop (TF), array carry": (g_while_tf_vector, (H0, W)),
    "cond true": (g_cond, (POS, np.float64(0.7))),
    "cond false": (g_cond, (-POS, np.float64(0.7))),
    "switch": (g_switch, (H0, np.int32(1))),
    "switch clamped high": (g_switch, (H0, np.int32(7))),
    "switch clamped low": (g_switch, (H0, np.int32(-3))),
    "scan (TF)": (g_tf_scan, (XS1, np.float64(0.8))),
    "foldl, foldr": (g_folds, (XS1, np.float64(0.8))),
    "map_fn": (g_map_fn, (XS, W)),
    "fori_loop in scan": (g_fori_in_scan, (S, XS1)),
    "loop in cond in loop": (g_loop_in_cond_in_loop, (S, XS1)),
    "cond in while_loop": (g_cond_in_while, (S,)),
    "scan in scan": (g_scan_in_scan, (S, XS1)),
    "while_loop in scan": (g_while_in_scan, (S, XS1)),
}


def gradients(mode, f, args, argnums):
    if mode == "grad":
        return list(jg.grad(f, argnums=argnums)(*args))
    if mode == "tape":
        return tape_grads(f, args, argnums)
    if mode == "interpreter":
        return interpret(jg.grad(f, argnums=argnums), *args)
    if mode == "jit(grad)":
        return list(jg.jit(jg.grad(f, argnums=argnums))(*args))
    value, grads = jg.jit_grad(f, wrt=argnums)(*args)
    np.testing.assert_allclose(float(value), float(f(*args)), rtol=1e-12)
    return grads


GRAD_MODES = ["grad", "tape", "interpreter", "jit(grad)", "jit_grad"]
# jit_grad runs for every case; jit(grad(f)) (another kernel each) for these, and for the
# others under `pytest -m slow`.
JIT_GRAD_FN_CASES = {
    "scan, array carry",
    "scan reverse",
    "while_loop",
    "while_loop (TF), array carry",
    "cond true",
    "switch clamped high",
    "loop in cond in loop",
}


def grad_params():
    for name in GRAD:
        for mode in GRAD_MODES:
            marks = []
            # The compiled modes (a compile each) run for representative cases by default.
            if mode in ("jit(grad)", "jit_grad") and name not in JIT_GRAD_FN_CASES:
                marks.append(pytest.mark.slow)
            yield pytest.param(name, mode, id=f"{name}-{mode}", marks=marks)


@functools.cache
def numeric_grads_of_case(name):
    f, args = GRAD[name]
    return numeric_grads(f, args, float_argnums(args))


@pytest.mark.parametrize("name, mode", list(grad_params()))
def test_gradient_matches_finite_differences(name, mode, monkeypatch):
    # The tape's compiled backward (a kernel per recorded structure) has its own test below.
    monkeypatch.setattr(jg.config, "compile_tape_backward", False)
    f, args = GRAD[name]
    want = numeric_grads_of_case(name)
    got = gradients(mode, f, args, float_argnums(args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.asarray(g).shape == w.shape and np.asarray(g).dtype == np.float64
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["scan, array carry", "while_loop", "cond in while_loop"])
def test_tape_compiled_backward_through_loops(name):
    """A tape that records a structure again runs a compiled backward for it."""
    f, args = GRAD[name]
    argnums = float_argnums(args)
    want = numeric_grads_of_case(name)
    for _ in range(3):  # eager, then compiled (config.tape_compile_after), then reused
        for g, w in zip(tape_grads(f, args, argnums), want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["scan reverse", "scan, pytree carry and xs", "cond true"])
def test_compiled_float32_gradient_matches_float64(name):
    f, args = GRAD[name]
    argnums = float_argnums(args)
    want = jg.grad(f, argnums=argnums)(*args)
    got = jg.jit(jg.grad(f, argnums=argnums))(*as_dtype(args, np.float32))
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


def test_compiled_ys_that_are_the_array_carry_itself():
    """ys = the carry before each step (the compiled loop once stored the updated carry)."""
    f = lambda c: lax.scan(lambda c, _: (c * 2.0, c), c, length=3)[1]
    want = [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    np.testing.assert_array_equal(f(np.ones(2)).numpy(), want)
    np.testing.assert_array_equal(jg.jit(f)(np.ones(2)).numpy(), want)


def test_compiled_ys_that_are_the_scalar_carry_itself():
    f = lambda c: lax.scan(lambda c, _: (c * 2.0, c), c, length=3)[1]
    np.testing.assert_array_equal(jg.jit(f)(np.float64(1.0)).numpy(), [1.0, 2.0, 4.0])


# ---------------------------------------------------------------------------------------------
# Second order and forward mode


def d2_scan(a):
    c, ys = lax.scan(lambda c, x: (jg.sin(c * a) + x, c * c), a, np.array([0.1, 0.2, 0.3]))
    return c + jg.reduce_sum(ys)


def d2_while(a):
    return lax.while_loop(lambda v: v < 5.0, lambda v: v * v + a, a)


@pytest.mark.parametrize("f", [d2_scan, d2_while], ids=["scan", "while_loop"])
def test_second_derivative_eager_and_compiled(f):
    a = np.float64(0.9)
    eps = 1e-6
    first = lambda a: float(jg.grad(f)(np.float64(a)))
    want = (first(a + eps) - first(a - eps)) / (2 * eps)
    np.testing.assert_allclose(first(a), numeric_grads(f, (a,), (0,))[0], rtol=1e-7)
    np.testing.assert_allclose(float(jg.grad(jg.grad(f))(a)), want, rtol=1e-6)
    np.testing.assert_allclose(float(jg.jit(jg.grad(jg.grad(f)))(a)), want, rtol=1e-6)
    np.testing.assert_allclose(float(interpret(jg.grad(jg.grad(f)), a)[0]), want, rtol=1e-6)


def h_scan(x):
    c, ys = lax.scan(lambda c, r: (jg.sin(c * x) + r, c * c), x, np.array([[0.1, 0.2], [0.3, 0.4]]))
    return jg.reduce_sum(c) + jg.reduce_sum(ys) + x[0] * x[1]


def h_while(x):
    v = lax.while_loop(lambda v: jg.reduce_sum(v) < 5.0, lambda v: v * v + x, x)
    return jg.reduce_sum(v * v) + x[0] * x[1]


def numeric_hessian(f, x, eps=1e-6):
    g = lambda x: np.asarray(jg.grad(f)(x))
    cols = [(g(x + eps * e) - g(x - eps * e)) / (2 * eps) for e in np.eye(len(x))]
    return np.stack(cols, 1)


@pytest.mark.parametrize("f", [h_scan, h_while], ids=["scan", "while_loop"])
def test_hessian_eager_and_interpreted(f):
    x = np.array([0.6, 0.5])
    want = numeric_hessian(f, x)
    np.testing.assert_allclose(np.asarray(jg.hessian(f)(x)), want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(interpret(jg.hessian(f), x)[0], want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "f",
    [
        h_scan,
        h_while,
    ],
    ids=["scan", "while_loop"],
)
def test_hessian_compiled(f):
    x = np.array([0.6, 0.5])
    np.testing.assert_allclose(
        np.asarray(jg.jit(jg.hessian(f))(x)), numeric_hessian(f, x), rtol=1e-6, atol=1e-8
    )


def test_hessian_compiled_merge_loops_minimal():
    f = lambda x: jg.reduce_sum(lax.fori_loop(0, 2, lambda i, c: c * c, jg.sin(x)))
    x = np.array([0.7, -0.4])
    np.testing.assert_allclose(
        np.asarray(jg.jit(jg.hessian(f))(x)), np.asarray(jg.hessian(f)(x)), rtol=1e-12
    )


def test_hessian_compiled_scalar_carry():
    f = lambda x: lax.fori_loop(0, 3, lambda i, c: jg.sin(c) * c, x * x)
    x = np.float64(0.7)
    want = np.asarray(jg.hessian(f)(x))
    np.testing.assert_allclose(want, numeric_hessian(lambda x: f(x[0]), np.array([x]))[0, 0])
    np.testing.assert_allclose(np.asarray(jg.jit(jg.hessian(f))(x)), want, rtol=1e-12)


CHECK_GRADS = {
    "scan": (lambda h0, xs, w: rnn(h0, xs, w), (H0, XS, W)),
    "scan reverse": (rnn_reverse, (H0, XS, W)),
    "while_loop": (
        lambda x: lax.while_loop(lambda v: v[0] < 4.0, lambda v: v * 1.2 + v * v, x),
        (POS,),
    ),
    "cond": (lambda x, p: cond_(x, W, p), (H0, np.float64(-1.0))),
    "switch": (switch_, (H0, np.int32(2))),
    "foldr": (lambda xs: jg.foldr(lambda a, x: jg.tanh(a * x), xs), (XS,)),
}


@pytest.mark.parametrize("name", list(CHECK_GRADS))
@pytest.mark.parametrize("grad_fn", [None, graph_vjp_fn], ids=["tape", "graph"])
def test_check_grads_to_second_order(name, grad_fn):
    f, args = CHECK_GRADS[name]
    jg.test.check_grads(f, args, order=2, grad_fn=grad_fn)


def test_jvp_through_scan_eager():
    t = np.array([1.0, 0.5, -0.3])
    out, tangent = jg.jvp(lambda h: rnn(h, XS, W), (H0,), (t,))
    eps = 1e-6
    plus, minus = rnn_ref(H0 + eps * t, XS, W), rnn_ref(H0 - eps * t, XS, W)
    want = [(p - m) / (2 * eps) for p, m in zip(leaves(plus), leaves(minus))]
    assert_close(out, rnn_ref(H0, XS, W))
    for g, w in zip(leaves(tangent), want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-9)


def test_jvp_through_scan_compiled():
    f = lambda h, t: jg.jvp(lambda h: jg.reduce_sum(rnn(h, XS, W)[0]), (h,), (t,))[1]
    t = np.array([1.0, 0.5, -0.3])
    np.testing.assert_allclose(float(jg.jit(f)(H0, t)), float(f(H0, t)), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Scans: reverse, zero-length, pytrees, several xs, no xs


def test_reverse_scan_visits_last_element_first_and_stacks_in_input_order():
    order = []

    def step(c, x):
        order.append(float(x))
        return c + x, c * 10.0 + x

    c, ys = lax.scan(step, jg.constant(0.0, jg.float64), np.array([1.0, 2.0, 3.0]), reverse=True)
    assert order == [3.0, 2.0, 1.0]
    np.testing.assert_array_equal(ys.numpy(), [51.0, 32.0, 3.0])
    assert float(c) == 6.0
    f = lambda xs: lax.scan(lambda c, x: (c + x, c * 10.0 + x), 0.0 * xs[0], xs, reverse=True)
    c2, ys2 = jg.jit(f)(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(ys2.numpy(), [51.0, 32.0, 3.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_zero_length_scan_returns_init_and_empty_ys(dtype):
    def f(h, xs):
        return lax.scan(lambda c, x: (c * x + 1.0, {"y": c * x, "s": jg.reduce_sum(c)}), h, xs)

    def g(h):
        return lax.scan(lambda c, _: (c * 2.0, (c * 3.0, jg.cast(c, jg.int32))), h, length=0)

    h = np.asarray(H0, dtype)
    xs = np.zeros((0, 3), dtype)
    want_f = (H0, {"y": np.zeros((0, 3)), "s": np.zeros(0)})
    want_g = (H0, (np.zeros((0, 3)), np.zeros((0, 3), np.int32)))
    for fn, args, want in [(f, (h, xs), want_f), (g, (h,), want_g)]:
        assert_close(fn(*args), want, dtype, "eager")
        assert_close(interpret(fn, *args), want, dtype, "interpreter")
        assert_close(jg.jit(fn)(*args), want, dtype, "compiled")


def test_zero_length_loops_and_their_gradients():
    f = lambda h, xs: jg.reduce_sum(lax.scan(lambda c, x: (jg.sin(c) * x, c), h, xs)[0] * 3.0)
    xs = np.zeros((0, 3))
    for grads in [jg.grad(f)(H0, xs), jg.jit(jg.grad(f))(H0, xs), jg.jit_grad(f)(H0, xs)[1]]:
        np.testing.assert_array_equal(np.asarray(grads), [3.0, 3.0, 3.0])
    empty = lambda x: lax.fori_loop(5, 2, lambda i, v: v * 2.0, x)
    zero_trips = lambda x: lax.while_loop(
        lambda v: True, lambda v: v * 2.0, x, maximum_iterations=0
    )
    for fn in (empty, zero_trips):
        assert_close(jg.jit(fn)(H0), H0)
        total = lambda x, fn=fn: jg.reduce_sum(fn(x))
        assert_close(jg.jit(jg.grad(total))(H0), np.ones(3))
    foldl = lambda xs, a: jg.foldl(lambda a, x: a * x, xs, initializer=a)
    assert_close(jg.jit(foldl)(xs, H0), H0)


def test_pytree_carry_several_xs_and_pytree_ys():
    def f(x, xs, zs):
        def step(c, inp):
            a, (b, k) = inp["a"], inp["bk"]
            h = c["h"] * a + b
            count, acc = c["n"]
            return {"h": h, "n": (count + 1, acc + jg.reduce_sum(h) * k)}, {
                "h": h,
                "pair": (jg.reduce_sum(a), count),
            }

        init = {"h": x, "n": (0, jg.constant(0.0, jg.float64))}
        return lax.scan(step, init, {"a": xs, "bk": (xs * 2.0, zs)})

    def ref(x, xs, zs):
        h, count, acc, hs, sums, counts = x, 0, 0.0, [], [], []
        for a, k in zip(xs, zs):
            h = h * a + a * 2.0
            hs.append(h)
            sums.append(a.sum())
            counts.append(count)
            count, acc = count + 1, acc + h.sum() * k
        carry = {"h": h, "n": (np.int32(count), np.float64(acc))}
        return carry, {"h": np.stack(hs), "pair": (np.array(sums), np.array(counts, np.int32))}

    zs = np.array([1.0, -1.0, 0.5, 2.0])
    want = ref(H0, XS, zs)
    (carry, ys) = f(H0, XS, zs)
    assert set(carry) == {"h", "n"} and isinstance(carry["n"], tuple)
    assert set(ys) == {"h", "pair"} and isinstance(ys["pair"], tuple)
    assert_close((carry, ys), want, what="eager")
    assert_close(interpret(f, H0, XS, zs), want, what="interpreter")
    compiled = jg.jit(f)(H0, XS, zs)
    assert pytree.flatten(compiled)[1] == pytree.flatten((carry, ys))[1]
    assert_close(compiled, want, what="compiled")


def test_scan_ys_none_and_python_scalar_outputs_keep_the_carry_dtype():
    def f(h):
        return lax.scan(lambda c, _: (c * 0.5 + 1, None), h, length=4)

    for fn in (f, jg.jit(f)):
        c, ys = fn(np.float32(1.0))
        assert ys is None and c.dtype == np.float32
        assert float(c) == 1.9375


def test_switch_clamps_its_index_eager_and_compiled():
    f = jg.jit(switch_)
    for k, branch in [(-100, 0), (-1, 0), (0, 0), (1, 1), (2, 2), (3, 2), (2**30, 2)]:
        want = BRANCHES_REF[branch](H0)
        assert_close(switch_(H0, np.int32(k)), want)
        assert_close(f(H0, np.int32(k)), want)
    assert_close(jg.switch(np.int32(5), BRANCHES, H0), BRANCHES_REF[2](H0))


@settings(max_examples=8, deadline=None)
@given(n=st.integers(0, 7), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_compiled_scan_of_any_length_matches_the_python_loop(n, reverse, seed):
    rng = np.random.default_rng(seed)
    h, xs = rng.standard_normal(2), rng.standard_normal((n, 2))
    fn = _SCAN_ANY_LENGTH[reverse]
    want = rnn_ref(h, xs, W[:2], reverse) if n else (h, None)
    c, ys = fn(h, xs)
    assert_close(c, want[0])
    assert ys["hx"].shape == (n, 2) and ys["total"].shape == (n,)
    if n:
        assert_close(ys, want[1])


_SCAN_ANY_LENGTH = {
    r: jg.jit(lambda h, xs, r=r: lax.scan(rnn_step(W[:2]), h, xs, reverse=r)) for r in (0, 1)
}


# ---------------------------------------------------------------------------------------------
# Nested loops and branches (values; gradients are in GRAD above)


def nested_fori_in_scan(x, xs):
    def step(c, r):
        c = lax.fori_loop(0, 3, lambda i, v: jg.sin(v) + r, c)
        return c, c * 2.0

    return lax.scan(step, x, xs)


def nested_fori_in_scan_ref(x, xs):
    c, ys = x, []
    for r in xs:
        for _ in range(3):
            c = np.sin(c) + r
        ys.append(c * 2.0)
    return c, np.stack(ys)


def nested_loop_in_cond_in_loop(x, xs):
    def step(c, r):
        c = lax.cond(
            jg.reduce_sum(r) > 0.0,
            lambda v: lax.fori_loop(0, 2, lambda i, u: u * r + 0.1, v),
            lambda v: lax.while_loop(lambda u: jg.reduce_sum(u) < 2.0, lambda u: u + 0.7, v),
            c,
        )
        return c, jg.reduce_sum(c)

    return lax.scan(step, x, xs)


def nested_loop_in_cond_in_loop_ref(x, xs):
    c, ys = x, []
    for r in xs:
        if r.sum() > 0:
            for _ in range(2):
                c = c * r + 0.1
        else:
            while c.sum() < 2.0:
                c = c + 0.7
        ys.append(c.sum())
    return c, np.array(ys)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "fn, ref",
    [
        (nested_fori_in_scan, nested_fori_in_scan_ref),
        (nested_loop_in_cond_in_loop, nested_loop_in_cond_in_loop_ref),
    ],
    ids=["fori_loop in scan", "loop in cond in loop"],
)
def test_nested_control_flow(fn, ref, dtype):
    xs = np.concatenate([XS, -np.abs(XS[:2])])  # both branches are taken
    args = as_dtype((H0 * 0.1, xs), dtype)
    want = ref(H0 * 0.1, xs)
    assert_close(fn(*args), want, dtype, "eager")
    assert_close(interpret(fn, *args), want, dtype, "interpreter")
    assert_close(jg.jit(fn)(*args), want, dtype, "compiled")


# ---------------------------------------------------------------------------------------------
# Closures: traced values, numpy constants and Variables read in a body


def test_closure_over_traced_values_and_numpy_constants():
    table = np.array([1.0, 2.0, 3.0])  # a numpy constant, frozen into the kernel

    def f(x, a):
        b = a * 2.0  # an intermediate of the enclosing trace

        def step(c, k):
            return c * a + b * jg.reduce_sum(table * k), c * b

        c, ys = lax.scan(step, x, np.array([0.1, 0.3, -0.2]))
        return c + jg.reduce_sum(ys)

    def ref(x, a):
        c, total = x, 0.0
        for k in (0.1, 0.3, -0.2):
            total += c * 2 * a
            c = c * a + 2 * a * (table * k).sum()
        return c + total

    x, a = np.float64(0.5), np.float64(0.9)
    assert float(jg.jit(f)(x, a)) == pytest.approx(ref(x, a), rel=1e-12)
    want = numeric_grads(ref, (x, a), (0, 1))
    for grads in [jg.grad(f, (0, 1))(x, a), jg.jit(jg.grad(f, (0, 1)))(x, a)]:
        np.testing.assert_allclose(np.asarray(grads), np.asarray(want), rtol=1e-7)


def variable_scan(v):
    def f(x):
        c, ys = lax.scan(lambda c, r: (jg.sin(c * jg.reduce_sum(v * r)) + 0.3, c), x, XS[:, :2])
        return c + jg.reduce_sum(ys)

    return f


def test_variable_read_in_a_body_is_an_input_of_every_call():
    v = jg.Variable(np.array([0.8, -0.3]))
    f = variable_scan(v)
    compiled = jg.jit(f)
    x = np.float64(0.5)
    assert float(compiled(x)) == pytest.approx(float(f(x)), rel=1e-12)
    v.assign(np.array([1.1, 0.4]))
    assert float(compiled(x)) == pytest.approx(float(f(x)), rel=1e-12)
    assert compiled.cache_info().misses == 1

    w = jg.Variable(np.float64(0.5))
    g = jg.jit(lambda x: lax.while_loop(lambda c: c < 3.0, lambda c: c * (1.0 + w), x))
    assert float(g(np.float64(0.5))) == pytest.approx(0.5 * 1.5**5)  # 5 trips
    w.assign(2.0)
    assert float(g(np.float64(0.5))) == pytest.approx(4.5)


def test_gradient_with_respect_to_a_variable_read_in_a_body():
    v = jg.Variable(np.array([0.8, -0.3]))
    f = variable_scan(v)
    x = np.float64(0.5)

    def at(value):
        v.assign(value)
        return float(f(x))

    base = v.numpy().copy()
    want = numeric_grads(at, (base,), (0,))[0]
    v.assign(base)
    value, (got,) = jg.jit_grad(f, wrt="variables")(x)
    assert float(value) == pytest.approx(float(f(x)), rel=1e-12)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    compiled = jg.jit(f)
    for fn in (f, compiled):  # the tape records a jitted call as one op and differentiates it
        with jg.GradientTape() as tape:
            y = fn(x)
        np.testing.assert_allclose(np.asarray(tape.gradient(y, v)), want, rtol=1e-6)

    w = jg.Variable(np.float64(0.5))
    g = lambda x: lax.while_loop(lambda c: c < 3.0, lambda c: c * (1.0 + w), x)
    # 5 trips: g = x (1 + w)^5, d/dw = 5 x (1 + w)^4
    want = 5 * 0.5 * 1.5**4
    assert float(jg.jit_grad(g, wrt="variables")(np.float64(0.5))[1][0]) == pytest.approx(want)
    with jg.GradientTape() as tape:
        y = jg.jit(g)(np.float64(0.5))
    assert float(tape.gradient(y, w)) == pytest.approx(want)


# ---------------------------------------------------------------------------------------------
# jit_train_step through a scan: fit Lotka-Volterra parameters (a tuple carry)

DT, STEPS = 0.05, 12


def simulate(p):
    def step(state, _):
        u, v = state
        u2 = u + DT * (p["a"] * u - p["b"] * u * v)
        v2 = v + DT * (p["d"] * u * v - p["g"] * v)
        return (u2, v2), jg.stack([u2, v2])

    _, traj = lax.scan(step, (p["u0"], p["v0"]), length=STEPS)
    return traj


def ode_loss(p, observed):
    return jg.reduce_mean((simulate(p) - observed) ** 2)


def ode_params(**values):
    p = {"a": 1.1, "b": 0.4, "d": 0.1, "g": 0.4, "u0": 2.0, "v0": 1.0}
    p.update(values)
    return {k: np.array(v) for k, v in p.items()}


def test_jit_train_step_through_a_scan_updates_parameters_in_place():
    observed = np.asarray(simulate(ode_params()))
    params = ode_params(a=0.8, g=0.6, u0=1.7)
    reference = {k: v.copy() for k, v in params.items()}
    opt = jg.optim.SGD(0.05)
    state = opt.init(params)
    step = jg.jit_train_step(ode_loss, opt)
    ids = {k: id(v) for k, v in params.items()}
    losses = [float(step(params, state, observed)) for _ in range(4)]
    assert {k: id(v) for k, v in params.items()} == ids
    assert losses[-1] < losses[0]
    ref_losses = []
    for _ in range(4):
        loss, grads = jg.value_and_grad(ode_loss)(reference, observed)
        ref_losses.append(float(loss))
        reference = {k: reference[k] - 0.05 * np.asarray(grads[k]) for k in reference}
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-9)
    for k in params:
        np.testing.assert_allclose(params[k], reference[k], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# A while loop whose trip count depends on the data: Newton's method for sqrt(a)


def newton_sqrt(a, maximum_iterations=None):
    def cond(c):
        x, _ = c
        return jg.abs(x * x - a) > 1e-12 * a

    def body(c):
        x, n = c
        return 0.5 * (x + a / x), n + 1

    return lax.while_loop(cond, body, (a, 0), maximum_iterations=maximum_iterations)


def newton_ref(a, maximum_iterations=None):
    """(x, dx/da, iterations) by the same iteration, its derivative carried along."""
    x, dx, n = a, 1.0, 0
    while abs(x * x - a) > 1e-12 * a and (maximum_iterations is None or n < maximum_iterations):
        x, dx = 0.5 * (x + a / x), 0.5 * (dx + 1 / x - a * dx / x**2)
        n += 1
    return x, dx, n


@pytest.mark.parametrize("maximum_iterations", [None, 100], ids=["unbounded", "bound 100"])
@pytest.mark.parametrize("a", [2.0, 1e12], ids=["a=2", "a=1e12"])
def test_newton_while_loop_differentiated_in_reverse_mode(a, maximum_iterations):
    a = np.float64(a)
    x, _, trips = newton_ref(a)
    assert (trips > 16) == (a > 100)  # a=1e12 grows the residual stacks past their start size
    value = lambda a: newton_sqrt(a, maximum_iterations)[0]
    both = lambda a: newton_sqrt(a, maximum_iterations)
    for fn in (both, jg.jit(both)):
        root, n = fn(a)
        assert int(n) == trips
        assert float(root) == x  # the same arithmetic as the Python loop
        np.testing.assert_allclose(float(root), np.sqrt(a), rtol=1e-12)
    want = 1 / (2 * np.sqrt(a))
    for grad in [jg.grad(value)(a), jg.jit(jg.grad(value))(a), jg.jit_grad(value)(a)[1]]:
        np.testing.assert_allclose(float(grad), want, rtol=1e-10)
    assert float(interpret(jg.grad(value), a)[0]) == pytest.approx(want, rel=1e-10)
    with jg.GradientTape() as tape:
        t = jg.constant(a)
        tape.watch(t)
        y = value(t)
    np.testing.assert_allclose(float(tape.gradient(y, t)), want, rtol=1e-10)


def test_newton_while_loop_stopped_by_maximum_iterations():
    a = np.float64(1e12)
    x3, dx3, n3 = newton_ref(a, maximum_iterations=3)
    assert n3 == 3 and x3 > 1e10  # far from converged: the bound stopped it
    value = lambda a: newton_sqrt(a, 3)[0]
    for fn in (lambda a: newton_sqrt(a, 3), jg.jit(lambda a: newton_sqrt(a, 3))):
        root, n = fn(a)
        assert int(n) == 3
        np.testing.assert_allclose(float(root), x3, rtol=1e-14)
    for grad in [jg.grad(value)(a), jg.jit(jg.grad(value))(a), jg.jit_grad(value)(a)[1]]:
        np.testing.assert_allclose(float(grad), dx3, rtol=1e-10)


def test_newton_while_loop_on_a_vector_compiled_gradient():
    def f(a):
        x = lax.while_loop(
            lambda x: jg.reduce_max(jg.abs(x * x - a) / a) > 1e-13, lambda x: 0.5 * (x + a / x), a
        )
        return jg.reduce_sum(x)

    a = np.array([2.0, 9.0, 1e6, 1e12])
    np.testing.assert_allclose(np.asarray(jg.jit(f)(a)), np.sqrt(a).sum(), rtol=1e-13)
    for grad in [jg.grad(f)(a), jg.jit(jg.grad(f))(a)]:
        np.testing.assert_allclose(np.asarray(grad), 0.5 / np.sqrt(a), rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# cond / switch: only the taken branch runs


def test_eagerly_only_the_taken_branch_is_called():
    calls = []
    true_fn = lambda x: calls.append("true") or x * 2.0
    false_fn = lambda x: calls.append("false") or x * 3.0
    assert float(lax.cond(jg.constant(True), true_fn, false_fn, jg.constant(1.0))) == 2.0
    assert float(jg.cond(jg.constant(0.0), lambda: false_fn(1.0), lambda: true_fn(1.0))) == 2.0
    assert calls == ["true", "true"]
    calls.clear()
    jg.switch(jg.constant(1, jg.int32), [true_fn, false_fn, true_fn], jg.constant(1.0))
    assert calls == ["false"]


def test_compiled_untaken_branch_does_not_run():
    """A branch whose index check would raise runs only when taken."""

    def f(xs, i):
        return lax.cond(i < 3, lambda: xs[i] * 2.0, lambda: jg.constant(-1.0, jg.float64))

    compiled = jg.jit(f)
    xs = np.array([1.0, 2.0, 3.0])
    assert float(compiled(xs, np.int32(1))) == 4.0
    assert float(compiled(xs, np.int32(5))) == -1.0
    with pytest.raises(IndexError, match="out of bounds"):
        jg.jit(lambda xs, i: xs[i])(xs, np.int32(5))


def safe_sqrt(x):
    return lax.cond(x > 0.0, jg.sqrt, lambda a: a * 0.0, x)


def safe_log_sum(x, xs):
    """A scan whose cond takes log only of positive values."""

    def step(c, r):
        return c + jg.cond(r > 0.0, true_fn=lambda: jg.log(r * x), false_fn=lambda: r * x), c

    return lax.scan(step, x * 0.0, xs)[0]


def test_untaken_branch_does_not_poison_the_gradient():
    for x, want in [(-1.0, 0.0), (0.0, 0.0), (4.0, 0.25)]:
        x = np.float64(x)
        for grad in [
            jg.grad(safe_sqrt)(x),
            jg.jit(jg.grad(safe_sqrt))(x),
            jg.jit_grad(safe_sqrt)(x)[1],
            interpret(jg.grad(safe_sqrt), x)[0],
        ]:
            assert float(grad) == want
    xs = np.array([1.0, -2.0, 3.0, -4.0])
    x = np.float64(0.5)
    want = 2 / x + (-2.0 - 4.0)
    for grad in [jg.grad(safe_log_sum)(x, xs), jg.jit(jg.grad(safe_log_sum))(x, xs)]:
        assert np.isfinite(float(grad))
        assert float(grad) == pytest.approx(want, rel=1e-12)


def test_tf_cond_keywords_name_and_jax_operands():
    x = np.float64(0.3)

    def f(x, p):
        a = jg.cond(p > 0, true_fn=lambda: jg.sin(x), false_fn=lambda: jg.cos(x))
        b = jg.cond(p > 0, lambda: x * 2.0, lambda: x * 3.0, "named")  # TF's name
        c = jg.cond(p > 0, lambda u, v: u * v, lambda u, v: u - v, x, a)  # JAX's operands
        return a, b, c

    for p, want in [
        (1.0, (np.sin(x), 2 * x, x * np.sin(x))),
        (-1.0, (np.cos(x), 3 * x, x - np.cos(x))),
    ]:
        p = np.float64(p)
        assert_close(f(x, p), want, what="eager")
        assert_close(jg.jit(f)(x, p), want, what="compiled")
    assert float(jg.cond(True, lambda: 1.0, lambda: 0.0)) == 1.0  # a Python predicate


# ---------------------------------------------------------------------------------------------
# Errors


def _both(fn, *args):
    """`fn` eagerly, then compiled: yields once per mode (pytest.raises wraps each)."""
    yield lambda: fn(*args)
    yield lambda: jg.jit(fn)(*args)


CARRY_ERRORS = {
    "scan shape": (
        lambda x: lax.scan(lambda c, r: (jg.reshape(c, (1,)), r), x, np.ones(3)),
        "scan: the body's carry output f64[1] differs from its input f64[]",
    ),
    "scan dtype": (
        lambda x: lax.scan(lambda c, r: (jg.cast(c, jg.float32), r), x, np.ones(3)),
        "scan: the body's carry output f32[] differs from its input f64[]",
    ),
    "scan structure": (
        lambda x: lax.scan(lambda c, r: ({"a": c["b"]}, r), {"b": x}, np.ones(3)),
        "scan: the body's carry output {'a': f64[]} differs from its input {'b': f64[]}",
    ),
    "fori_loop dtype": (
        lambda x: lax.fori_loop(0, 3, lambda i, c: jg.cast(c, jg.float32), x),
        "fori_loop: the body's carry output f32[] differs from its input f64[]",
    ),
    "while_loop structure": (
        lambda x: lax.while_loop(lambda c: c["a"] < 3.0, lambda c: {"b": c["a"]}, {"a": x}),
        "while_loop: the body's loop variables output {'b': f64[]} differs from its input "
        "{'a': f64[]}",
    ),
    "while_loop (TF) shape": (
        lambda x: jg.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, jg.stack([v, v])), [0, x]),
        "while_loop: the body's loop variables output [i32[], f64[2]] differs from its input "
        "[i32[], f64[]]",
    ),
}


@pytest.mark.parametrize("name", list(CARRY_ERRORS))
def test_carry_mismatch_raises_type_error_naming_both_structures(name):
    fn, message = CARRY_ERRORS[name]
    for run in _both(fn, np.float64(1.0)):
        with pytest.raises(TypeError, match=re.escape(message)) as info:
            run()
        assert "test_control_flow.py" in str(info.value)  # the user's line


def test_carry_with_more_leaves_than_the_input_compiled_names_both_structures():
    fn = lambda x: lax.scan(lambda c, r: ((c, c), r), x, np.ones(3))
    message = "scan: the body's carry output (f64[], f64[]) differs from its input f64[]"
    with pytest.raises(TypeError, match=re.escape(message)):
        fn(np.float64(1.0))  # eagerly: right
    with pytest.raises(TypeError, match=re.escape(message)):
        jg.jit(fn)(np.float64(1.0))


def test_branches_of_different_types_raise_naming_both():
    fn = lambda x, p: lax.cond(p > 0, lambda a: a, lambda a: (a, a), x)
    message = "cond: branch 1 returns f64[] but branch 0 returns (f64[], f64[])"
    with pytest.raises(TypeError, match=re.escape(message)):
        jg.jit(fn)(np.float64(1.0), np.float64(1.0))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: lax.cond(x > 0, lambda a: a, lambda a: a * 2.0, x),
        lambda x: jg.cond(x > 0, lambda: x, lambda: x * 2.0),
        lambda x: lax.while_loop(lambda c: c < 3.0, lambda c: c + 1.0, x),
        lambda x: jg.while_loop(lambda c: c < 3.0, lambda c: c + 1.0, [x]),
    ],
    ids=["lax.cond", "cond (TF)", "lax.while_loop", "while_loop (TF)"],
)
def test_non_scalar_predicate_suggests_where(fn):
    x = np.array([1.0, -1.0])
    for run in _both(fn, x):
        with pytest.raises(TypeError, match=r"predicate must be a scalar.*jitgrad\.where"):
            run()


def python_if(x):
    if x > 0:
        return x
    return -x


def python_while(x):
    while x < 10.0:
        x = x * 2.0
    return x


@pytest.mark.parametrize("fn", [python_if, python_while], ids=["if", "while"])
def test_python_control_flow_on_a_traced_value_raises_tracer_error(fn):
    assert float(fn(np.float64(3.0))) in (3.0, 12.0)  # eagerly it is plain Python
    with pytest.raises(jg.TracerError, match=r"test_control_flow.py:\d+"):
        jg.jit(fn)(np.float64(3.0))
    with pytest.raises(jg.TracerError):
        jg.jit_grad(fn)(np.float64(3.0))


@pytest.mark.parametrize(
    "fn, construct",
    [(python_if, r"jitgrad\.cond"), (python_while, r"jitgrad\.while_loop")],
    ids=["if", "while"],
)
def test_tracer_error_names_the_control_flow_construct(fn, construct):
    with pytest.raises(jg.TracerError, match=construct):
        jg.jit(fn)(np.float64(3.0))


def test_scanned_inputs_of_different_lengths_raise():
    f = lambda x, a, b: lax.scan(lambda c, r: (c + r[0] + r[1], 0.0), x, (a, b))
    for run in _both(f, np.float64(1.0), np.ones(3), np.ones(4)):
        with pytest.raises(ValueError, match=r"different leading sizes \[3, 4\]"):
            run()
    g = lambda x, a: lax.scan(lambda c, r: (c + r, 0.0), x, a, length=5)
    for run in _both(g, np.float64(1.0), np.ones(3)):
        with pytest.raises(ValueError, match=r"different leading sizes \[3, 5\]"):
            run()
    with pytest.raises(ValueError, match="needs xs or a length"):
        lax.scan(lambda c, r: (c, r), 1.0, None)
    with pytest.raises(ValueError, match="leading axis"):
        lax.scan(lambda c, r: (c, r), 1.0, np.float64(2.0))
    with pytest.raises(ValueError, match="at least one element"):
        jg.foldl(lambda a, x: a + x, np.zeros((0, 2)))


def test_body_must_return_a_pair():
    f = lambda x: lax.scan(lambda c, r: c + r, x, np.ones(3))
    for run in _both(f, np.float64(1.0)):
        with pytest.raises(TypeError, match=r"must return a pair \(carry, y\)"):
            run()


def test_rnn_loop_bodies_allocate_nothing():
    """No allocation per iteration: the bodies of an RNN's forward and gradient loops write
    into buffers the kernel's caller allocates once per call (issue 13)."""
    rng = np.random.default_rng(0)
    params = {
        "W": rng.normal(size=(8, 8)).astype(np.float32) * 0.3,
        "U": rng.normal(size=(3, 8)).astype(np.float32),
        "b": np.zeros(8, np.float32),
    }
    xs = rng.normal(size=(5, 4, 3)).astype(np.float32)

    def loss(p, xs):
        def step(h, x):
            h = jg.tanh(h @ p["W"] + x @ p["U"] + p["b"])
            return h, jg.reduce_mean(h) ** 2

        h, means = lax.scan(step, np.zeros((4, 8), np.float32), xs)
        return jg.reduce_mean(h**2) + jg.reduce_sum(means)

    source = jg.jit_grad(loss, wrt=0).lower(params, xs).source
    bodies = re.findall(r"\ndef (body\d+)\(.*?\n\n\n", source, re.S)
    assert len(bodies) == 2  # the forward loop and the reverse loop
    for body in re.findall(r"\ndef body\d+\(.*?\n\n\n", source, re.S):
        for allocation in ("np.empty(", "np.zeros(", "np.full(", ".copy()", "np.concatenate("):
            assert allocation not in body, body


def _stored_residuals(loss, *args) -> int:
    """How many residual stacks the forward loop of `loss`'s compiled gradient stores."""
    graph = jg.jit_grad(loss, wrt=0).lower(*args)._compiled.graph
    (forward,) = [e for e in graph.eqns if e.op.name == "loop" and not e.params["reverse"]]
    return len(forward.params["body"].outputs) - forward.params["n_carry"] - 1  # 1: the y


@pytest.mark.parametrize(
    "step, stored",
    [
        # The square's VJP reads c + x, one add from the stored carry: recomputed.
        (lambda c, x: (c * 0.5 + x, (c + x) * (c + x)), 1),
        # It reads c * (c - 1) * 0.5 + x - 2, five operations from the carry: stored.
        (lambda c, x: (c * 0.5 + x, (c * (c - 1.0) * 0.5 + x - 2.0) ** 2), 2),
    ],
)
def test_a_residual_costing_more_than_two_operations_is_stored(step, stored):
    """The reverse loop recomputes what two elementwise operations make from the stored
    values, and loads the rest: recomputing W8a's x[t+1] from x[t] in its adjoint loop made the
    gradient 7% slower than the hand-written one, storing it made it 7% faster."""

    def loss(c0, xs):
        _, ys = lax.scan(lambda c, x: (step(c, x)[0], jg.reduce_sum(step(c, x)[1])), c0, xs)
        return jg.reduce_sum(ys * ys)

    c0, xs = np.float64(0.3), np.linspace(0.0, 1.0, 6)
    assert _stored_residuals(loss, c0, xs) == stored
    got = float(jg.jit_grad(loss, wrt=0)(c0, xs)[1])
    assert np.isclose(got, float(jg.grad(loss)(jg.constant(c0), xs)), rtol=1e-12)


def test_carries_and_ys_of_different_ranks_compile():
    """Each array copy after a body call has a name of its own (Numba gives a name one type:
    a 2-D carry and a 1-D y once shared one and did not compile)."""

    def f(c, xs):
        return lax.scan(lambda c, x: (c * 2.0 + x[0], c[0] * x), c, xs)

    c, xs = np.ones((2, 3)), np.arange(12.0).reshape(4, 3)
    for got, want in zip(jg.jit(f)(c, xs), f(jg.constant(c), jg.constant(xs))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want))


def test_debug_nans_names_the_loop_that_made_a_nan(monkeypatch):
    """With config.debug_nans, a NaN made inside a compiled loop's body is reported at the loop
    with the user's line (the locator walked into the loop's tuple and crashed)."""
    monkeypatch.setattr(jg.config, "debug_nans", True)
    f = jg.jit(lambda x: lax.scan(lambda c, v: (c + jg.log(v), c), 0.0, x)[0])
    with (
        np.errstate(invalid="ignore"),
        pytest.raises(FloatingPointError, match="loop: produced NaN"),
    ):
        f(np.array([1.0, -1.0, 2.0], np.float32))


def test_a_python_float_carry_under_jit_is_weak_like_its_argument():
    """A Python float argument of jit is weak (float64 inside); the loop's final carry stays
    weak, so the result leaves as float32, as the eager loop's."""
    loop = jg.jit(lambda x: jg.fori_loop(0, 3, lambda i, c: c * 1.5, x))
    out = loop(1.0)
    assert out.dtype == np.float32 and float(out) == 3.375
    grow = jg.jit(lambda x: jg.while_loop(lambda c: c < 5.0, lambda c: (c * 1.5,), (x,)))
    assert grow(1.0)[0].dtype == np.float32
    scanned = jg.jit(jg.grad(lambda x: lax.scan(lambda c, v: (c * x, c), x, None, length=3)[0]))
    assert scanned(1.5).dtype == np.float32 and float(scanned(1.5)) == 13.5


def test_a_python_float_carry_takes_the_float_dtype_the_body_gives_it():
    """JAX's rule for a weakly typed initial carry: `scan(f, 0.0, float64 xs)` carries float64
    (TensorFlow's float32 for a Python float would not match the body's float64), eagerly, in
    jit and in jit_grad; a numpy scalar or an array keeps its dtype (strict)."""
    xs = np.arange(4.0)
    running_sum = lambda c, x: (c + x, c * x)  # noqa: E731
    for run in _both(lambda xs: lax.scan(running_sum, 0.0, xs), xs):
        carry, ys = run()
        assert carry.dtype == np.float64 and float(carry) == 6.0
        np.testing.assert_array_equal(ys.numpy(), [0.0, 0.0, 2.0, 9.0])
    for run in _both(lambda xs: lax.fori_loop(0, 3, lambda i, v: v + xs[i], 0.0), xs):
        assert run().dtype == np.float64 and float(run()) == 3.0
    for run in _both(lambda xs: lax.while_loop(lambda v: v < 10.0, lambda v: v + xs[1], 0.0), xs):
        assert float(run()) == 10.0
    for run in _both(
        lambda xs: jg.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v + xs[i]), [0, 0.0]), xs
    ):  # TensorFlow's form
        assert float(run()[1]) == 3.0
    value, grad = jg.jit_grad(lambda xs: lax.scan(lambda c, x: (c + x * x, c), 0.0, xs)[0])(xs)
    assert float(value) == 14.0 and np.array_equal(grad.numpy(), 2 * xs)
    assert lax.scan(running_sum, 0.0, xs.astype(np.float32))[0].dtype == np.float32
    strict = re.escape("carry output f64[] differs from its input f32[]")
    with pytest.raises(TypeError, match=strict):
        lax.scan(running_sum, np.float32(0.0), xs)


def test_a_body_of_thirty_or_more_arguments_compiles():
    """CPython calls a function of 30 arguments or more as f(*args), which Numba cannot
    inline: such a body stays a function of its own (the GRU example's has 57)."""
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(3) for _ in range(32)]

    def f(ws, xs):
        def step(c, x):
            for w in ws:
                c = jg.tanh(c * w + x)
            return c, jg.reduce_sum(c)

        return jg.reduce_sum(jg.lax.scan(step, xs[0], xs)[1])

    xs = rng.standard_normal((4, 3))
    source = jg.jit(f).lower(ws, xs).source
    assert "inline='always'" not in source
    np.testing.assert_allclose(float(jg.jit(f)(ws, xs)), float(f(ws, xs)), rtol=1e-12)
