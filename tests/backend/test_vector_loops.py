"""vector_loops.py: fused loops whose innermost dimension is one SIMD vector compute the bits of
the scalar loops they replace (every op's vector form against its scalar template, on NaNs,
infinities, signed zeros and subnormals), and kernels choose them only where they qualify."""

from __future__ import annotations

import collections
import math

import numba
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import emit, kernels, simd
from jitgrad.backend.numba.emit import np_dtype
from jitgrad.backend.numba.vector_loops import MASK_OPS, SIMD_FUNCTIONS, VECTOR_TEMPLATES
from jitgrad.core import pytree
from jitgrad.core.opdef import REGISTRY

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e-40, -1e-40, 7.0, 0.5]
FLOAT_LANES = {np.dtype(np.float32): (4, 8, 16), np.dtype(np.float64): (2, 4, 8)}


def test_every_vector_form_is_an_elementwise_op_with_a_scalar_template():
    for name in VECTOR_TEMPLATES:
        op = REGISTRY[name]
        assert op.kind == "elementwise" and op.template, name
    assert all(hasattr(simd, name) for name in SIMD_FUNCTIONS)


def _operands(name: str) -> tuple:
    """(vector operand names, scalar operand names) of the op's template: floats va, vb (a, b
    element by element), masks vm = va > vb and vn = va < 1 (c and d)."""
    if name == "select":
        return ("vm", "va", "vb"), ("c", "a", "b")
    if name == "logical_not":
        return ("vm",), ("c",)
    if name.startswith("logical"):
        return ("vm", "vn"), ("c", "d")
    arity = 2 if "{1}" in REGISTRY[name].template else 1
    return ("va", "vb")[:arity], ("a", "b")[:arity]


def _checker(dtype: np.dtype, lanes: int):
    """One njit function that runs every op's vector form on `lanes` lanes and its scalar
    template on each element, writing both (masks as 0/1)."""
    body, n = [], len(VECTOR_TEMPLATES)
    for k, name in enumerate(VECTOR_TEMPLATES):
        vector_args, scalar_args = _operands(name)
        vector = VECTOR_TEMPLATES[name].format(*vector_args)
        scalar = REGISTRY[name].template.format(*scalar_args, dtype=np_dtype(dtype))
        if name in MASK_OPS:
            vector = f"vselect({vector}, one, zero)"
            scalar = f"(1.0 if {scalar} else 0.0)"
        body.append(f"        vstore(vec_out, ({k} * rows + r) * {lanes}, {vector})")
        body.append(f"        for j in range({lanes}):")
        body.append(f"            i = r * {lanes} + j")
        body.append("            a, b, c, d = x[i], y[i], x[i] > y[i], x[i] < 1.0")
        body.append(f"            scalar_out[({k} * rows + r) * {lanes} + j] = {scalar}")
    source = (
        "def check(x, y, vec_out, scalar_out):\n"
        f"    rows = x.size // {lanes}\n"
        f"    zero = vzeros(x, {lanes})\n"
        f"    one = vsplat(x, 1.0, {lanes})\n"
        "    for r in range(rows):\n"
        f"        va = vload(x, r * {lanes}, {lanes})\n"
        f"        vb = vload(y, r * {lanes}, {lanes})\n"
        "        vm = vgreater(va, vb)\n"
        "        vn = vless(va, one)\n" + "\n".join(body) + "\n"
    )
    namespace = {"np": np, "math": math} | {name: getattr(simd, name) for name in dir(simd)}
    exec(source, namespace)
    return numba.njit(error_model="numpy")(namespace["check"]), n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_forms_match_scalar_templates_bit_for_bit(dtype):
    dtype = np.dtype(dtype)
    lanes = FLOAT_LANES[dtype][1]
    values = np.array(SPECIAL, dtype)
    pairs = np.array([(a, b) for a in values for b in values], dtype)  # every ordered pair
    count = -(-len(pairs) // lanes) * lanes
    x = np.resize(pairs[:, 0], count).astype(dtype)
    y = np.resize(pairs[:, 1], count).astype(dtype)
    check, n = _checker(dtype, lanes)
    vec_out, scalar_out = np.empty(n * count, dtype), np.empty(n * count, dtype)
    check(x, y, vec_out, scalar_out)
    for k, name in enumerate(VECTOR_TEMPLATES):
        got = vec_out[k * count : (k + 1) * count]
        want = scalar_out[k * count : (k + 1) * count]
        # the same bits; any NaN is the same NaN to numpy (payloads may differ)
        same = (got.view(f"u{dtype.itemsize}") == want.view(f"u{dtype.itemsize}")) | (
            np.isnan(got) & np.isnan(want)
        )
        assert same.all(), (name, x[~same], y[~same], got[~same], want[~same])


def relu_and_bias_grads(x, g):
    """A conv layer's relu gradient and its bias gradient: one loop over (N, H, W, C)."""
    dx = jg.where(x > 0.0, g, jg.zeros_like(g))
    return dx, jg.reduce_sum(dx, axis=(0, 1, 2))


def mixed_ops(x, y, s):
    """Most vector forms in one loop, with a 0-d operand, a broadcast row and a sum."""
    z = jg.maximum(x, y) * s - jg.minimum(x, 0.5) / (jg.abs(y) + 1.0)
    w = jg.where(jg.logical_and(x > y, jg.logical_not(y < -1.0)), jg.sqrt(jg.abs(z)), -z)
    return w, jg.reduce_sum(w + y[0, 0], axis=(0, 1))


def _special_array(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(dtype)
    flat = values.reshape(-1)
    picks = rng.choice(flat.size, size=flat.size // 4, replace=False)
    flat[picks] = rng.choice(np.array(SPECIAL, dtype), size=picks.size)
    return values


def _compiled_both_ways(monkeypatch, fn, args, transform=jg.jit):
    """(source, outputs) of a fresh `transform` (jit, jit_grad) of `fn` with vector loops,
    then without."""
    results = []
    for vectors in (True, False):
        monkeypatch.setattr(kernels, "_first_specialised", collections.OrderedDict())
        if not vectors:
            monkeypatch.setattr(emit, "vector_lanes", lambda *a: 0)
        jitted = transform(fn)
        results.append((jitted.lower(*args).source, jitted(*args)))
    return results


@pytest.mark.parametrize(
    "dtype, channels, label",
    [
        (np.float32, 8, "vectors of 8"),
        (np.float32, 16, "vectors of 16"),
        (np.float32, 4, "vectors of 4"),
        (np.float64, 4, "vectors of 4"),
        (np.float32, 32, "2 vectors of 16"),
        (np.float32, 64, "4 vectors of 16"),
        (np.float64, 16, "2 vectors of 8"),
        (np.float32, 160, "10 vectors of 16"),  # a loop over the row's vectors
        (np.float64, 48, "6 vectors of 8"),
    ],
)
def test_relu_and_bias_gradients_in_vectors_are_the_scalar_loops_bits(
    monkeypatch, dtype, channels, label
):
    shape = (3, 5, 4, channels)
    x, g = _special_array(shape, dtype, 0), _special_array(shape, dtype, 1)
    (vector_source, got), (scalar_source, want) = _compiled_both_ways(
        monkeypatch, relu_and_bias_grads, (x, g)
    )
    assert f"(in {label})" in vector_source and "vload(" in vector_source
    assert "vload(" not in scalar_source
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    reference = np.where(x > 0, g, 0)
    np.testing.assert_array_equal(np.asarray(got[0]), reference)
    np.testing.assert_allclose(
        np.asarray(got[1]), reference.astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-5
    )


@pytest.mark.parametrize("dtype, row", [(np.float32, 16), (np.float64, 8), (np.float32, 48)])
def test_mixed_ops_in_vectors_are_the_scalar_loops_bits(monkeypatch, dtype, row):
    x, y = _special_array((6, 7, row), dtype, 2), _special_array((6, 7, row), dtype, 3)
    s = np.asarray(1.5, dtype)
    (vector_source, got), (_, want) = _compiled_both_ways(monkeypatch, mixed_ops, (x, y, s))
    assert "vectors of" in vector_source and "vload(" in vector_source
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    eager = mixed_ops(x, y, s)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(eager[0]))


def _scalar_only(x):
    """A full sum in the loop: its partial sums are the scalar loop's (emit.float_sums)."""
    return jg.reduce_sum(jg.where(x > 0.0, x, 0.0) * 2.0)


def _per_row(x):
    """A sum that keeps an outer dimension."""
    return jg.reduce_sum(x * x, axis=(1, 2))


def _compared_masks(x):
    """Booleans compared with each other: the vector comparisons take floats."""
    return jg.where(jg.equal(x > 0.0, x < 2.0), x, -x)


def _long_rows(x):
    """Rows of more than MAX_ROW_VECTORS vectors and no sum: LLVM vectorises them itself
    (the result cannot be x's own array: its shape differs)."""
    return x[None] * 2.0 + jg.abs(x)


@pytest.mark.parametrize(
    "fn, shape, dtype",
    [
        (relu_and_bias_grads, (2, 3, 2, 12), np.float32),  # 12 lanes fill no vector
        (_long_rows, (2, 3, 160), np.float32),
        (_compared_masks, (2, 3, 8), np.float32),
        (_scalar_only, (2, 3, 8), np.float32),
        (_per_row, (2, 3, 8), np.float32),
        (relu_and_bias_grads, (2, 3, 2, 8), np.int32),
    ],
)
def test_loops_that_do_not_qualify_stay_scalar(fn, shape, dtype):
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype) - 5
    args = (x, x + 1) if fn is relu_and_bias_grads else (x,)
    jitted = jg.jit(fn)
    assert "vload(" not in jitted.lower(*args).source
    got, want = jitted(*args), fn(*args)
    for a, b in zip(pytree.flatten(got)[0], pytree.flatten(want)[0], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_a_strided_view_keeps_the_scalar_loop():
    """A slice with a step is a strided view, not C-contiguous: no flat vector loads."""

    def fn(x, g):
        return relu_and_bias_grads(x[:, ::2], g)

    x = _special_array((2, 6, 3, 8), np.float32, 4)
    g = _special_array((2, 3, 3, 8), np.float32, 5)
    jitted = jg.jit(fn)
    source = jitted.lower(x, g).source
    assert "0:6:2" in source and "vload(" not in source
    got, want = jitted(x, g), fn(x, g)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5)


def dense_relu_loss(p, x, labels):
    """W3's MLP: the relu's forward loop stores its mask, the gradient's loop reads it."""
    h = jg.relu(x @ p["w"] + p["b"])
    z = h @ p["v"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))


@pytest.mark.parametrize("hidden", [32, 160])
def test_a_stored_relu_mask_is_read_as_vectors(monkeypatch, hidden):
    """A dense layer's gradient reads the relu's mask (a boolean array the forward pass
    stored) as vectors of booleans: the same bits as the scalar loop, and eager's values."""
    rng = np.random.default_rng(6)
    p = {
        "w": rng.standard_normal((5, hidden)).astype(np.float32),
        "b": rng.standard_normal(hidden).astype(np.float32),
        "v": rng.standard_normal((hidden, 3)).astype(np.float32),
    }
    x = rng.standard_normal((12, 5)).astype(np.float32)
    t = rng.integers(0, 3, 12).astype(np.int32)
    (source, got), (_, want) = _compiled_both_ways(
        monkeypatch, dense_relu_loss, (p, x, t), transform=jg.jit_grad
    )
    assert "vload_mask(" in source
    if hidden == 32:  # the forward loop too: rows of two vectors
        assert "vstore_mask(" in source
    got_leaves, want_leaves = pytree.flatten(got)[0], pytree.flatten(want)[0]
    for a, b in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    eager = pytree.flatten(jg.value_and_grad(dense_relu_loss)(p, x, t))[0]
    for a, b in zip(got_leaves, eager, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def scan_of_masked_sums(c0, xs):
    """A scan whose body's loop qualifies: the body is a function of the kernel's module."""

    def step(c, x):
        kept = jg.where(c > 0.0, x, jg.zeros_like(x))
        return c * 0.5 + kept, jg.reduce_sum(kept, axis=0)

    c, ys = jg.lax.scan(step, c0, xs)
    return jg.reduce_sum(c * c) + jg.reduce_sum(ys * ys)


def test_a_loop_body_runs_its_loops_in_vectors():
    rng = np.random.default_rng(7)
    c0 = rng.standard_normal((6, 16)).astype(np.float32)
    xs = rng.standard_normal((5, 6, 16)).astype(np.float32)
    jitted = jg.jit_grad(scan_of_masked_sums, wrt=(0, 1))
    assert "vectors of 16" in jitted.lower(c0, xs).source
    got, want = jitted(c0, xs), jg.value_and_grad(scan_of_masked_sums, argnums=(0, 1))(c0, xs)
    got_leaves, want_leaves = pytree.flatten(got)[0], pytree.flatten(want)[0]
    for a, b in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_an_update_written_in_place_runs_in_vectors():
    """A train step writes its new parameters and state into the caller's arrays. In LLVM's own
    vectorised loop the run-time overlap check then takes the scalar loop (Adam's sqrt a call
    per element), so such loops are written in vectors even with long rows."""

    def loss(p, x):
        return jg.reduce_sum(jg.sin(p["w"] @ x))

    opt = jg.optim.Adam(0.01)
    params = {"w": np.linspace(-1.0, 1.0, 8 * 160, dtype=np.float32).reshape(8, 160)}
    state = opt.init(params)
    x = np.cos(np.arange(160 * 3, dtype=np.float32)).reshape(160, 3)
    step = jg.jit_train_step(loss, opt)
    assert "vsqrt(" in step.lower(params, state, x).source
    grads = jg.grad(loss)(params, x)
    want, want_state = opt.update(params, grads, state)
    step(params, state, x)
    np.testing.assert_allclose(params["w"], np.asarray(want["w"]), rtol=1e-6)
    np.testing.assert_allclose(state["v"]["w"], np.asarray(want_state["v"]["w"]), rtol=1e-5)
