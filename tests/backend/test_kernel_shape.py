"""The kernel shapes that keep Numba's compile time linear and small (issue 12): loops that
repeat (an unrolled RNN's steps) run as one shared function, a parallel loop is a function of
its own (only it goes through Numba's parallel pipeline), slices that are one contiguous
block of memory are C-contiguous views (no copies), and a one-element slice read as a scalar
is one indexing expression. Each is checked against eager, in specialised and shape-polymorphic
kernels.
"""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import kernels
from jitgrad.core import pytree

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _specialised(monkeypatch):
    """Each test starts with no structure seen (kernels.py): its first signature gets the
    specialised kernel, a second one of the same structure the polymorphic kernel."""
    monkeypatch.setattr(kernels, "_first_specialised", collections.OrderedDict())


def _assert_close(got, want, rtol=1e-5):
    (got, _), (want, _) = pytree.flatten(got), pytree.flatten(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=1e-6)


def rnn_loss(p, xs):
    h = jg.zeros((xs.shape[1], p["wh"].shape[0]))
    for t in range(xs.shape[0]):
        h = jg.tanh(xs[t] @ p["wx"] + h @ p["wh"] + p["b"])
    return jg.reduce_mean((h @ p["wo"]) ** 2)


def _rnn_args(steps, batch, hidden=6, features=3):
    p = {
        "wx": rng.normal(size=(features, hidden)).astype(np.float32) * 0.5,
        "wh": rng.normal(size=(hidden, hidden)).astype(np.float32) * 0.5,
        "b": rng.normal(size=hidden).astype(np.float32),
        "wo": rng.normal(size=(hidden, 1)).astype(np.float32),
    }
    return p, rng.normal(size=(steps, batch, features)).astype(np.float32)


def test_repeated_loops_share_one_function():
    f = jg.jit_grad(rnn_loss)
    args = _rnn_args(4, 5)
    source = f.lower(*args).source
    kernel = source.split("def kernel(", 1)[1]
    functions = re.findall(r"^def (loop\d+)\(", source, re.M)
    assert functions
    for name in functions:  # each defined once, called at every step
        assert kernel.count(f"{name}(") >= 2
    assert ".copy()" not in kernel  # xs[t] is a C-contiguous view
    _assert_close(f(*args), jg.value_and_grad(rnn_loss)(*args))


def test_shared_loops_in_a_polymorphic_kernel():
    """The shared functions take the sizes the polymorphic kernel reads from its arrays."""
    f = jg.jit_grad(rnn_loss)
    first, second = _rnn_args(3, 5), _rnn_args(3, 7)
    f.lower(*first)
    source = f.lower(*second).source
    assert "?" in source.splitlines()[0] and re.search(r"^def loop0\(.*n\d+_\d", source, re.M)
    for args in (first, second):
        _assert_close(f(*args), jg.value_and_grad(rnn_loss)(*args))


def bias_relu_sum(x, b):
    """A loop above the parallel threshold (2**17 elements): an elementwise output and a full
    sum, both from the prange loop."""
    h = jg.relu(x + b)
    return h, jg.reduce_sum(h)


def test_a_parallel_loop_is_a_function_of_its_own():
    """The prange loop moves into `parallelN` (compiled with parallel=True); the kernel that
    calls it is compiled without Numba's parallel pipeline, in both kernel kinds."""
    f = jg.jit(bias_relu_sum)
    first = (rng.standard_normal((512, 256)), rng.standard_normal(256))
    second = (rng.standard_normal((1024, 256)), rng.standard_normal(256))
    for args in (first, second):  # specialised, then polymorphic
        source = f.lower(*args).source
        (name,) = re.findall(r"^def (parallel\d+)\(", source, re.M)
        definition = source.split(f"def {name}(", 1)[0].rsplit("\n", 2)[-2]
        assert "parallel=True" in definition and "numba.prange(" in source.split("def kernel(")[0]
        kernel = source.split("def kernel(", 1)[1]
        assert "prange" not in kernel and f"{name}(" in kernel
        assert "parallel" not in source.split("def kernel(")[0].rsplit("\n", 2)[-2]
        _assert_close(f(*args), bias_relu_sum(*[jg.constant(a) for a in args]), rtol=1e-12)


SLICES = [
    (np.s_[1], (3, 4, 5)),  # leading index: x[1]
    (np.s_[1:3], (4, 5)),  # leading range: x[1:3]
    (np.s_[2, 1:3], (3, 4, 5)),  # index, then range, then whole dimensions
    (np.s_[0:1, 2:3, :], (2, 4, 5)),  # leading one-element ranges
    (np.s_[:, 1:3], (3, 4)),  # not contiguous: a strided view
    (np.s_[::2], (6, 3)),  # not contiguous
    (np.s_[1, 2, 1:4], (3, 4, 5)),  # the innermost range of a row
]


@pytest.mark.parametrize("index, shape", SLICES, ids=[str(i) for i in range(len(SLICES))])
def test_slices_as_views(index, shape):
    """Slices, read by elementwise code, a reshape and a matmul, and their gradients."""

    def f(x, w):
        s = x[index]
        flat = jg.reshape(s, (-1,))
        return (
            jg.reduce_sum(jg.sin(s) * 2.0)
            + jg.reduce_sum(flat * flat)
            + jg.reduce_sum(jg.reshape(s, (1, -1)) @ w)
        )

    x = rng.normal(size=shape)
    w = rng.normal(size=(x[index].size, 2))
    g = jg.jit_grad(f, wrt=(0, 1))
    _assert_close(g(x, w), jg.value_and_grad(f, argnums=(0, 1))(x, w), rtol=1e-10)
    bigger = rng.normal(size=tuple(n + 2 for n in shape))  # the polymorphic kernel
    if bigger[index].size == x[index].size:
        _assert_close(g(bigger, w), jg.value_and_grad(f, argnums=(0, 1))(bigger, w), rtol=1e-10)


def deep_cell(w, u, xs):
    """Steps whose elementwise part is large (a loop body that becomes a scalar block) and
    the same at each step."""
    h = jg.zeros((xs.shape[1], w.shape[1]))
    for t in range(xs.shape[0]):
        z = xs[t] @ w + h @ u
        for _ in range(12):
            z = jg.tanh(z) * 0.9 + jg.sin(z) * 0.1
        h = z
    return jg.reduce_sum(h * h)


def test_repeated_loop_bodies_share_one_block():
    f = jg.jit_grad(deep_cell, wrt=(0, 1))
    args = (rng.normal(size=(3, 4)), rng.normal(size=(4, 4)), rng.normal(size=(4, 5, 3)))
    source = f.lower(*args).source
    blocks = re.findall(r"^def (block\d+)\(", source, re.M)
    assert 0 < len(blocks) <= 3  # forward step, backward step, last step: not one per step
    loops = source.split("\ndef loop")[1:]
    assert loops and any("= block" in loop for loop in loops)  # shared loops call blocks
    _assert_close(f(*args), jg.value_and_grad(deep_cell, argnums=(0, 1))(*args), rtol=1e-10)
