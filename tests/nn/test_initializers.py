"""Initializers: Keras' fan rules and variances, bounds, dtypes and seeding."""

import math

import numpy as np
import pytest

from jitgrad.nn import initializers

SHAPE = (400, 600)  # fan_in 400, fan_out 600: 240k draws, variance estimates within ~1%


def test_glorot_uniform_bounds_and_variance():
    w = initializers.glorot_uniform(SHAPE, seed=0)
    limit = math.sqrt(6 / (400 + 600))
    assert w.dtype == np.float32 and w.shape == SHAPE
    assert np.abs(w).max() <= limit
    assert w.var() == pytest.approx(2 / (400 + 600), rel=0.02)
    assert abs(w.mean()) < 1e-3


def test_he_uniform_variance():
    w = initializers.he_uniform(SHAPE, seed=1)
    assert np.abs(w).max() <= math.sqrt(6 / 400)
    assert w.var() == pytest.approx(2 / 400, rel=0.02)


@pytest.mark.parametrize(
    "name, variance", [("glorot_normal", 2 / (400 + 600)), ("he_normal", 2 / 400)]
)
def test_truncated_normals_have_the_requested_variance_within_two_stddevs(name, variance):
    w = initializers.get(name)(SHAPE, seed=2)
    stddev = math.sqrt(variance) / 0.87962566103423978  # of the untruncated normal
    assert np.abs(w).max() <= 2 * stddev * (1 + 1e-6)
    assert w.var() == pytest.approx(variance, rel=0.02)


def test_fans_of_convolution_kernels_include_the_receptive_field():
    w = initializers.he_uniform((3, 3, 16, 32), seed=0)  # fan_in = 3 * 3 * 16
    assert np.abs(w).max() <= math.sqrt(6 / 144)
    assert w.var() == pytest.approx(2 / 144, rel=0.05)


def test_zeros_ones_random_uniform_and_dtype():
    np.testing.assert_array_equal(initializers.zeros((2, 3)), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(initializers.ones((2,), np.float64), np.ones(2))
    assert initializers.glorot_uniform((3, 4), np.float64, seed=0).dtype == np.float64
    u = initializers.random_uniform((1000,), seed=0)
    assert np.abs(u).max() <= 0.05 and u.dtype == np.float32


def test_seeding_is_reproducible_and_a_generator_advances():
    a = initializers.glorot_uniform((5, 5), seed=3)
    np.testing.assert_array_equal(a, initializers.glorot_uniform((5, 5), seed=3))
    assert not np.array_equal(a, initializers.glorot_uniform((5, 5), seed=4))
    rng = np.random.default_rng(3)
    first = initializers.glorot_uniform((5, 5), seed=rng)
    second = initializers.glorot_uniform((5, 5), seed=rng)
    np.testing.assert_array_equal(first, a)
    assert not np.array_equal(first, second)


def test_get_rejects_unknown_names():
    assert initializers.get("he_normal") is initializers.he_normal
    with pytest.raises(ValueError, match="unknown initializer"):
        initializers.get("xavier")
