"""Weight initializers: Keras' formulas, returning numpy arrays (float32 by default).

Every initializer is `init(shape, dtype=float32, seed=None) -> np.ndarray`, where `seed` is an
int, None (fresh entropy) or a `numpy.random.Generator` (drawn from, so one generator threaded
through a model gives every layer different weights, reproducibly):

>>> w = glorot_uniform((784, 128), seed=0)
>>> w.dtype, w.shape
(dtype('float32'), (784, 128))

Fans follow Keras: a kernel of shape (..., fan_in, fan_out) has fan_in = shape[-2] * r and
fan_out = shape[-1] * r, with r the product of the leading (receptive field) dimensions.
"""

from __future__ import annotations

import math

import numpy as np

# The standard deviation of a unit normal truncated to [-2, 2]; dividing by it makes the
# truncated draw have the requested variance (Keras' VarianceScaling constant).
_TRUNCATED_STDDEV = 0.87962566103423978


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def _uniform(shape, dtype, seed, limit):
    draw = np.random.default_rng(seed).uniform(-limit, limit, tuple(shape))
    return draw.astype(dtype)


def _truncated_normal(shape, dtype, seed, stddev):
    """Normal draws redrawn until within two standard deviations, as Keras."""
    rng, shape = np.random.default_rng(seed), tuple(shape)
    draw = rng.standard_normal(shape)
    bad = np.abs(draw) > 2.0
    while bad.any():
        draw[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(draw) > 2.0
    return (draw * stddev).astype(dtype)


def glorot_uniform(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) (Xavier; Keras' default for Dense).

    >>> glorot_uniform((2, 3), seed=0).shape
    (2, 3)
    """
    fan_in, fan_out = _fans(tuple(shape))
    return _uniform(shape, dtype, seed, math.sqrt(6.0 / (fan_in + fan_out)))


def glorot_normal(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """Truncated normal with variance 2 / (fan_in + fan_out).

    >>> glorot_normal((2, 3), seed=0).dtype
    dtype('float32')
    """
    fan_in, fan_out = _fans(tuple(shape))
    stddev = math.sqrt(2.0 / (fan_in + fan_out)) / _TRUNCATED_STDDEV
    return _truncated_normal(shape, dtype, seed, stddev)


def he_normal(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """Truncated normal with variance 2 / fan_in (for ReLU layers).

    >>> he_normal((64, 32), seed=1).shape
    (64, 32)
    """
    fan_in, _ = _fans(tuple(shape))
    return _truncated_normal(shape, dtype, seed, math.sqrt(2.0 / fan_in) / _TRUNCATED_STDDEV)


def he_uniform(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """U(-l, l) with l = sqrt(6 / fan_in).

    >>> he_uniform((64, 32), seed=1).shape
    (64, 32)
    """
    fan_in, _ = _fans(tuple(shape))
    return _uniform(shape, dtype, seed, math.sqrt(6.0 / fan_in))


def random_uniform(shape, dtype=np.float32, seed=None, minval=-0.05, maxval=0.05) -> np.ndarray:
    """U(minval, maxval); Keras' RandomUniform (the default for Embedding).

    >>> float(abs(random_uniform((100,), seed=0)).max()) <= 0.05
    True
    """
    draw = np.random.default_rng(seed).uniform(minval, maxval, tuple(shape))
    return draw.astype(dtype)


def zeros(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """All zeros (`seed` is accepted so every initializer has one signature).

    >>> zeros((2,))
    array([0., 0.], dtype=float32)
    """
    return np.zeros(tuple(shape), dtype)


def ones(shape, dtype=np.float32, seed=None) -> np.ndarray:
    """All ones.

    >>> ones((2,))
    array([1., 1.], dtype=float32)
    """
    return np.ones(tuple(shape), dtype)


_BY_NAME = {
    f.__name__: f
    for f in (glorot_uniform, glorot_normal, he_normal, he_uniform, random_uniform, zeros, ones)
}


def get(initializer):
    """An initializer from its name ("he_normal") or the callable itself.

    >>> get("zeros") is zeros
    True
    """
    if callable(initializer):
        return initializer
    if initializer not in _BY_NAME:
        raise ValueError(f"unknown initializer {initializer!r}; known: {sorted(_BY_NAME)}")
    return _BY_NAME[initializer]
