"""Differential fuzzing of indices and labels, in and out of range: eager, `jit` and `jit_grad`
must agree with numpy's rule for every drawn index array, either on the values (and the
gradient's scatter-add) or on raising IndexError naming the op.

Before the safety issue, compiled code read and wrote without bounds checks where the forward
gather was dead code (jit_grad's scatter-add), where several index arrays were merged into one
flat index (gather_nd, x[i, j]) and for labels; these draws reach all of them. Structures
repeat across shapes, so most examples run an already compiled shape-polymorphic kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jitgrad as jg

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _indices(draw, shape, low, high):
    return draw(hnp.arrays(np.int64, shape, elements=st.integers(low, high)))


@st.composite
def gather_cases(draw):
    x_shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(0, len(x_shape) - 1))
    n = x_shape[axis]
    idx = _indices(draw, draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)), -2 * n, 2 * n)
    valid = bool(np.all((idx >= -n) & (idx < n)))
    return "gather", (x_shape, idx, axis), valid


@st.composite
def gather_nd_cases(draw):
    x_shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    depth = draw(st.integers(1, len(x_shape)))
    rows = draw(st.integers(1, 3))
    idx = np.stack([_indices(draw, (rows,), -1, 2 * n) for n in x_shape[:depth]], -1)
    valid = bool(np.all((idx >= 0) & (idx < np.array(x_shape[:depth]))))
    return "gather_nd", (x_shape, idx), valid


@st.composite
def getitem_cases(draw):
    x_shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4))
    k = draw(st.integers(1, 3))
    i = _indices(draw, (k,), -2 * x_shape[0], 2 * x_shape[0])
    j = _indices(draw, (k,), -2 * x_shape[1], 2 * x_shape[1])
    valid = bool(np.all(np.abs(i + 0.5) < x_shape[0]) and np.all(np.abs(j + 0.5) < x_shape[1]))
    return "getitem", (x_shape, i, j), valid


@st.composite
def label_cases(draw):
    batch, classes = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    labels = _indices(draw, (batch,), -1, classes)
    valid = bool(np.all((labels >= 0) & (labels < classes)))
    return "labels", (batch, classes, labels), valid


def _run(kind, spec, mode):
    """(value, gradient) of the case's function in `mode`: eager, jit or jit_grad."""
    rng = np.random.default_rng(0)
    if kind == "gather":
        x_shape, idx, axis = spec
        f = lambda x: jg.reduce_sum(jg.gather(x, idx, axis=axis) * 3.0)  # noqa: E731
    elif kind == "gather_nd":
        x_shape, idx = spec
        f = lambda x: jg.reduce_sum(jg.gather_nd(x, idx) * 3.0)  # noqa: E731
    elif kind == "getitem":
        x_shape, i, j = spec
        f = lambda x: jg.reduce_sum(x[i, j] * 3.0)  # noqa: E731
    else:
        batch, classes, labels = spec
        x_shape = (batch, classes)
        f = lambda x: jg.reduce_sum(  # noqa: E731
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)
        )
    x = rng.normal(size=x_shape)
    if mode == "eager":
        value, grad = jg.value_and_grad(f)(jg.constant(x))
    elif mode == "jit":
        value, grad = jg.jit(f)(x), None
    else:
        value, grad = jg.jit_grad(f)(x)
    return x, np.asarray(value), None if grad is None else np.asarray(grad)


def _reference(kind, spec, x):
    """numpy's value and gradient for a valid case."""
    grad = np.zeros_like(x)
    if kind == "gather":
        _, idx, axis = spec
        moved = np.moveaxis(grad, axis, 0)
        np.add.at(moved, idx.ravel(), 3.0)
        return 3.0 * np.take(x, idx, axis=axis).sum(), grad
    if kind == "gather_nd":
        _, idx = spec
        where = tuple(idx[:, d] for d in range(idx.shape[-1]))
        np.add.at(grad, where, 3.0)
        return 3.0 * x[where].sum(), grad
    if kind == "getitem":
        _, i, j = spec
        np.add.at(grad, (i, j), 3.0)
        return 3.0 * x[i, j].sum(), grad
    _, _, labels = spec
    shifted = x - x.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    rows = np.arange(len(labels))
    grad = np.exp(logp)
    grad[rows, labels] -= 1.0
    return -logp[rows, labels].sum(), grad


_OP_NAME = {
    "gather": "gather",
    "gather_nd": "gather_nd",
    "getitem": "getitem",
    "labels": "sparse_softmax_cross_entropy_with_logits",
}


@pytest.mark.fuzz
@settings(deadline=None, max_examples=30, suppress_health_check=SLOW_OK)
@given(
    case=st.one_of(gather_cases(), gather_nd_cases(), getitem_cases(), label_cases()),
    mode=st.sampled_from(["eager", "jit", "jit_grad"]),
)
def test_indices_in_and_out_of_range(case, mode):
    kind, spec, valid = case
    note(f"{kind} {spec} valid={valid} mode={mode}")
    event(f"{kind}, {'valid' if valid else 'out of range'}, {mode}")
    if not valid:
        # The gradient of gather is a scatter-add that checks the indices too (which of the
        # two runs first in the kernel is the scheduler's choice).
        name = "(gather|scatter_add)" if kind == "gather" else _OP_NAME[kind]
        with pytest.raises(IndexError, match=rf"^{name}\b.*(out of bounds|outside the valid)"):
            _run(kind, spec, mode)
        return
    x, value, grad = _run(kind, spec, mode)
    expected_value, expected_grad = _reference(kind, spec, x)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12, atol=1e-12)
    if grad is not None:
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
