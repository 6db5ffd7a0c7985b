"""Losses: values against float64 numpy, the reductions, stability at +-1e4 (values and
gradients finite and right), and eager == compiled (one kernel for all four)."""

import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax

import jitgrad as jg
from jitgrad.nn import losses

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(5, 4)).astype(np.float32)
SPARSE = np.array([0, 3, 1, 1, 2])
ONE_HOT = np.eye(4, dtype=np.float32)[SPARSE]
BINARY = (rng.random((5, 4)) < 0.5).astype(np.float32)
TARGETS = rng.normal(size=(5, 4)).astype(np.float32)


def _reference(name):
    z = LOGITS.astype(np.float64)
    if name == "mse":
        return (z - TARGETS) ** 2
    if name == "sparse":
        return -np_log_softmax(z, -1)[np.arange(5), SPARSE]
    if name == "one_hot":
        return -(ONE_HOT * np_log_softmax(z, -1)).sum(-1)
    sig = 1 / (1 + np.exp(-z))
    return -(BINARY * np.log(sig) + (1 - BINARY) * np.log(1 - sig))


def _ours(name, logits=LOGITS, reduction="mean"):
    if name == "mse":
        return losses.mean_squared_error(TARGETS, logits, reduction)
    if name == "sparse":
        return losses.sparse_softmax_cross_entropy(SPARSE, logits, reduction)
    if name == "one_hot":
        return losses.softmax_cross_entropy(ONE_HOT, logits, reduction)
    return losses.binary_cross_entropy_with_logits(BINARY, logits, reduction)


NAMES = ["mse", "sparse", "one_hot", "binary"]


@pytest.mark.parametrize("name", NAMES)
def test_values_and_reductions_match_numpy(name):
    expected = _reference(name)
    none = _ours(name, reduction="none")
    assert none.shape == expected.shape
    np.testing.assert_allclose(none.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert float(_ours(name)) == pytest.approx(expected.mean(), rel=1e-5)
    assert float(_ours(name, reduction="sum")) == pytest.approx(expected.sum(), rel=1e-5)


def test_stable_at_extreme_logits():
    big = np.array([[1e4, -1e4, 0.0, 5e3]], np.float32)
    cases = [
        (lambda z: losses.sparse_softmax_cross_entropy(np.array([1]), z), 2e4),
        (lambda z: losses.softmax_cross_entropy(np.array([[0.0, 0.0, 1.0, 0.0]]), z), 1e4),
        (
            lambda z: losses.binary_cross_entropy_with_logits(
                np.array([[0.0, 1.0, 1.0, 1.0]]), z, reduction="sum"
            ),
            1e4 + 1e4 + np.log(2.0),
        ),
    ]
    for fn, expected in cases:
        value, grad = jg.value_and_grad(fn)(big)
        assert float(value) == pytest.approx(expected, rel=1e-6)
        assert np.isfinite(grad.numpy()).all()
    # softmax cross-entropy gradient is softmax - labels: exactly one-hot at these logits
    grad = jg.grad(lambda z: losses.sparse_softmax_cross_entropy(np.array([1]), z))(big)
    np.testing.assert_allclose(grad.numpy(), [[1.0, -1.0, 0.0, 0.0]], atol=1e-6)


def test_shape_mismatch_and_bad_reduction_are_errors():
    with pytest.raises(ValueError, match="do not match"):
        losses.mean_squared_error(np.zeros(5, np.float32), np.zeros((5, 1), np.float32))
    with pytest.raises(ValueError, match="reduction"):
        losses.mean_squared_error(TARGETS, LOGITS, reduction="batch")


def test_losses_eager_equal_compiled():
    def all_losses(logits):
        return [_ours(name, logits) for name in NAMES] + [
            jg.grad(lambda z: _ours("sparse", z) + _ours("binary", z))(logits)
        ]

    eager = all_losses(LOGITS)
    compiled = jg.jit(all_losses)(LOGITS)
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
