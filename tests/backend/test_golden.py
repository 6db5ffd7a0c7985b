"""Golden files: the exact generated source of eight small kernels, so that every change to the
emitter shows up as a reviewed diff of the code Numba compiles.

Refresh them after an intended change, and read the diff before committing it:

    JITGRAD_UPDATE_GOLDEN=1 python -m pytest tests/backend/test_golden.py

Each golden kernel also runs against eager, so a golden file cannot hold broken code.
"""

from __future__ import annotations

import collections
import difflib
import math
import os
import pathlib
import re

import numba
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import kernels
from jitgrad.backend.numba.emit import np_dtype
from jitgrad.core import pytree
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import letters

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("JITGRAD_UPDATE_GOLDEN", "") not in ("", "0")

rng = np.random.default_rng(0)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def elementwise_sum(x, y):
    return jg.reduce_sum(jg.sin(x) * y + 2.0 * x)


def mlp_loss(p, x, labels):
    h = jg.relu(x @ p["w1"] + p["b1"])
    z = h @ p["w2"] + p["b2"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))


def row_loop(x):
    return jg.nn.log_softmax(x)


def matmul_epilogue(x, w, b):
    return jg.tanh(x @ w + b)


def euler_steps(theta, z0):
    """Two explicit Euler steps of a predator-prey model, read element by element."""
    a, b = theta[0], theta[1]
    x, y = z0[0], z0[1]
    for _ in range(2):
        x, y = x + 0.1 * (a * x - b * x * y), y + 0.1 * (b * x * y - a * y)
    return (x - 1.0) ** 2 + y


def rnn_steps(p, xs):
    """Three steps of a tanh RNN: the step's loop is one shared function, xs[t] a view."""
    h = jg.zeros((2, 3))
    for t in range(3):
        h = jg.tanh(xs[t] @ p["wx"] + h @ p["wh"])
    return jg.reduce_sum(h * h)


def relu_and_bias_grads(x, g):
    """A conv layer's relu and bias gradients, 8 channels: one loop in vectors of 8."""
    dx = jg.where(x > 0.0, g, jg.zeros_like(g))
    return dx, jg.reduce_sum(dx, axis=(0, 1, 2))


def sin_squared(x):
    return jg.reduce_sum(jg.sin(x) * jg.sin(x))


def second_derivative(x):
    """d^2/dx^2 sin(x)^2 = 2 cos(2x), elementwise."""
    return jg.grad(lambda x: jg.reduce_sum(jg.grad(sin_squared)(x)))(x)


MLP_PARAMS = {"w1": f32(3, 5), "b1": f32(5), "w2": f32(5, 2), "b2": f32(2)}
CASES = {
    # name: (jitted function, eager function, arguments)
    "elementwise_sum": (jg.jit(elementwise_sum), elementwise_sum, (f32(3, 4), f32(3, 4))),
    "mlp_value_and_grad": (
        jg.jit_grad(mlp_loss),
        jg.value_and_grad(mlp_loss),
        (MLP_PARAMS, f32(4, 3), np.array([0, 1, 1, 0], np.int32)),
    ),
    "row_loop": (jg.jit(row_loop), row_loop, (f32(4, 3),)),
    "matmul_epilogue": (jg.jit(matmul_epilogue), matmul_epilogue, (f32(4, 3), f32(3, 2), f32(2))),
    "second_derivative": (jg.jit(second_derivative), second_derivative, (f32(5),)),
    "rnn_steps": (
        jg.jit_grad(rnn_steps),
        jg.value_and_grad(rnn_steps),
        ({"wx": f32(4, 3), "wh": f32(3, 3)}, f32(3, 2, 4)),
    ),
    "vector_loop": (
        jg.jit(relu_and_bias_grads),
        relu_and_bias_grads,
        (f32(2, 3, 4, 8), f32(2, 3, 4, 8)),
    ),
    "scalar_reads": (
        jg.jit_grad(euler_steps),
        jg.value_and_grad(euler_steps),
        (np.array([1.1, 0.4], np.float32), np.array([1.0, 0.5], np.float32)),
    ),
}


@pytest.fixture(autouse=True)
def _specialised(monkeypatch):
    """Each case is the first signature of its structure: the specialised kernel (kernels.py),
    whatever other tests of this process compiled."""
    monkeypatch.setattr(kernels, "_first_specialised", collections.OrderedDict())


@pytest.mark.parametrize("name", CASES)
def test_golden_source(name):
    jitted, _, args = CASES[name]
    source = jitted.lower(*args).source
    path = GOLDEN / f"{name}.py"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source)
    expected = path.read_text()
    if source != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), source.splitlines(True), f"golden/{name}.py", "generated"
            )
        )
        pytest.fail(
            f"the generated source of {name} changed; if intended, refresh with "
            f"JITGRAD_UPDATE_GOLDEN=1 and review the diff:\n{diff}"
        )


@pytest.mark.parametrize("name", CASES)
def test_golden_kernel_runs(name):
    """The golden source is what the call compiles and runs, and it agrees with eager."""
    jitted, eager, args = CASES[name]
    assert jitted.lower(*args).source == (GOLDEN / f"{name}.py").read_text()
    got, want = jitted(*args), eager(*args)
    (got_leaves, _), (want_leaves, _) = pytree.flatten(got), pytree.flatten(want)
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-6, atol=1e-6)


OTHER_SHAPES = {  # a second signature of the same structure: the shape-polymorphic kernel
    "mlp_value_and_grad": (MLP_PARAMS, f32(6, 3), np.array([1, 0, 0, 1, 1, 0], np.int32)),
    "row_loop": (f32(7, 3),),
}


@pytest.mark.parametrize("name", OTHER_SHAPES)
def test_polymorphic_kernel_runs(name):
    """Sizes read from the arrays (kernels.py), size-1 dimensions still without a loop."""
    jitted, eager, args = CASES[name]
    jitted.lower(*args)
    source = jitted.lower(*OTHER_SHAPES[name]).source
    assert "?" in source.splitlines()[0] and "in range(1)" not in source
    (got, _), (want, _) = (
        pytree.flatten(jitted(*OTHER_SHAPES[name])),
        pytree.flatten(eager(*OTHER_SHAPES[name])),
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_golden_source_is_portable(name):
    """Only cache-independent text: no path, hash, address or user name."""
    source = (GOLDEN / f"{name}.py").read_text()
    assert source.startswith("# signature: (")
    assert "def kernel(" in source and source.count("def kernel") == 1
    assert not re.search(r"/(tmp|home|root|Users|var)/|0x[0-9a-f]{6,}|[0-9a-f]{32}", source)
    assert str(pathlib.Path.home()) not in source and jg.config.cache_dir not in source


@pytest.mark.parametrize("name", CASES)
def test_legend_names_the_graph_letters(name):
    """The legend maps each kernel value vN to the letter the graph printout gives it."""
    jitted, _, args = CASES[name]
    lowered = jitted.lower(*args)
    legend = re.findall(r"\bv(\d+)=([a-z]+)\b", lowered.source)
    assert legend
    defined = set(re.findall(r"^\s+([a-z]+):\S+ =", lowered.graph, re.M))
    defined |= set(re.findall(r"([a-z]+):\S+", lowered.graph.splitlines()[0]))
    for number, letter in legend:
        assert letters(int(number)) == letter and letter in defined
    used = {
        int(n)
        for n in re.findall(
            r"\b(?:v|x|acc|part)(\d+)(?:_\d+)?\b", lowered.source.split("def kernel", 1)[1]
        )
    }
    assert used == {int(n) for n, _ in legend}


@pytest.mark.parametrize("name", CASES)
def test_generated_code_has_no_noise(name):
    source = (GOLDEN / f"{name}.py").read_text()
    assert "in range(1)" not in source
    assert "True if" not in source
    assert not re.search(r"np\.float32\(\(?np\.float32\(", source)


BOOLEAN_RESULTS = {
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "logical_and",
    "logical_or",
    "logical_not",
}


# Ops on integers alone (ops/bitwise.py): no float template to type.
INTEGER_ONLY = {"bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift"}


def _float_templates():
    """Float elementwise templates the emitter writes for float32 (ops with a vmath helper use
    the helper instead; cast has its own code)."""
    return [
        name
        for name, op in sorted(REGISTRY.items())
        if op.kind == "elementwise"
        and op.vmath is None
        and name not in BOOLEAN_RESULTS | INTEGER_ONLY | {"cast"}
    ]


@pytest.mark.parametrize("name", _float_templates())
def test_float32_template_stays_float32(name):
    """The emitter casts no float template's result (only narrow integer arithmetic, which must
    wrap): each template must type float32 -> float32 in Numba, or float32 work would run in
    float64 (half the vector width, other accumulator types)."""
    args = ("c", "a", "b") if name == "select" else ("a", "b", "c")
    expr = REGISTRY[name].template.format(*args, dtype=np_dtype(np.dtype(np.float32)))
    namespace = {"np": np, "math": math}
    exec(f"def f(a, b, c):\n    return {expr}\n", namespace)
    kernel = numba.njit(namespace["f"])
    condition = numba.boolean if name == "select" else numba.float32
    kernel.compile((numba.float32, numba.float32, condition))
    result = kernel.nopython_signatures[0].return_type
    assert result == numba.float32, f"{name}: {expr} is {result} for float32 operands"
