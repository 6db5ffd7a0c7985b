"""A conv's bias and relu done on its registers (epilogues.py, conv_tiles.conv2_tiles): which
kernels get the epilogue, and that their results are bit for bit those of the kernel that
runs the loop group after the conv instead."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import emit

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 9, 9, 3)).astype(np.float32)
X[0, 4, 4, 1] = np.nan  # a NaN pre-activation: relu gives +0.0, as the loop does
W = RNG.standard_normal((3, 3, 3, 5)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)
B[1] = -0.0


def conv(x, w, padding="VALID"):
    return jg.nn.conv2d(x, w, 1, padding)


def pool(h):
    return jg.nn.max_pool2d(h, 2, 2, "VALID")


CASES = {
    # name: (function, the epilogue's comment in the kernel, or None)
    "bias, relu, pool": (lambda x, w, b: pool(jg.nn.relu(conv(x, w, "SAME") + b)), "+ bias, relu"),
    "relu, pool": (lambda x, w, b: pool(jg.nn.relu(conv(x, w))), "relu"),
    "bias, pool": (lambda x, w, b: pool(conv(x, w) + b), "+ bias"),
    "bias, relu, square": (lambda x, w, b: jg.nn.relu(conv(x, w) + b) ** 2, "+ bias, relu"),
    # The relu's mask is read again (the where below): the bias alone is the epilogue.
    "mask read": (
        lambda x, w, b: jg.where(
            conv(x, w) + b > 0, jg.nn.relu(conv(x, w) + b), 2 * (conv(x, w) + b)
        ),
        "+ bias",
    ),
    # The pre-activation is read after the relu: only the bias is the epilogue.
    "pre-activation read": (
        lambda x, w, b: jg.nn.relu(conv(x, w) + b) * (conv(x, w) + b),
        "+ bias",
    ),
    # The conv's own output is a result: no epilogue.
    "conv returned": (lambda x, w, b: (conv(x, w), jg.nn.relu(conv(x, w) + b)), None),
    # Not relu (the else branch is not +0.0): the bias only.
    "floor at one": (
        lambda x, w, b: pool(jg.where(conv(x, w) + b > 0, conv(x, w) + b, jg.ones_like(b))),
        "+ bias",
    ),
}


def leaves(result):
    return list(result) if isinstance(result, tuple) else [result]


def kernel_and_source(fn):
    jitted = jg.jit(fn)
    return jitted, jitted.lower(X, W, B).source


@pytest.mark.parametrize("name", list(CASES))
def test_epilogue_results_are_the_loop_groups_bit_for_bit(name, monkeypatch):
    fn, epilogue = CASES[name]
    jitted, source = kernel_and_source(fn)
    comments = [line.strip() for line in source.splitlines() if "its epilogue" in line]
    if epilogue is None:
        assert not comments
    else:
        assert comments == [f"# and its epilogue: {epilogue} (from the loop group after it)"]
    with_epilogue = jitted(X, W, B)
    monkeypatch.setattr(emit, "conv_epilogues", lambda schedule, accepts: {})
    plain, plain_source = kernel_and_source(fn)
    assert "its epilogue" not in plain_source
    for a, b in zip(leaves(with_epilogue), leaves(plain(X, W, B))):
        a, b = np.asarray(a), np.asarray(b)
        assert np.array_equal(a, b, equal_nan=True)
        assert np.array_equal(np.signbit(a), np.signbit(b))
    eager = leaves(fn(X, W, B))
    for a, b in zip(leaves(with_epilogue), eager):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_gradients_through_an_epilogue_equal_eager():
    def loss(x, w, b):
        return jg.reduce_sum(pool(jg.nn.relu(conv(x, w, "SAME") + b)) ** 2)

    x = np.nan_to_num(X)
    value, grads = jg.jit_grad(loss, wrt=(1, 2))(x, W, B)
    assert "its epilogue" in jg.jit_grad(loss, wrt=(1, 2)).lower(x, W, B).source
    np.testing.assert_allclose(value, loss(x, W, B), rtol=1e-5)
    for g, e in zip(grads, jg.grad(loss, argnums=(1, 2))(x, W, B)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-4)
