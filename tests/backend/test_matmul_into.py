"""runtime.matmul_into, the product kernels call with read-only operands (runtime.readonly): every
layout a kernel passes (C, F: a transpose), dimensions of one element and of none, float32 and
float64, against a float64 product."""

import numba
import numpy as np
import pytest

from jitgrad.backend.numba import runtime

# The same function behind a dispatcher of its own: the layouts tried here (a strided one) are
# not signatures kernels call, which tests/backend/test_precompile.py checks.
matmul_into = numba.njit(nogil=True)(runtime.matmul_into.py_func)


@numba.njit
def product(a, b, out):
    matmul_into(runtime.readonly(a), runtime.readonly(b), out)


SHAPES = [(5, 7, 3), (1, 7, 3), (5, 1, 3), (5, 7, 1), (1, 1, 1), (0, 3, 2), (3, 0, 2), (3, 2, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("a_order, b_order", [("C", "C"), ("C", "F"), ("F", "C"), ("F", "F")])
def test_matmul_into_equals_the_float64_product(dtype, m, k, n, a_order, b_order):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = np.asarray(rng.standard_normal((m, k)), dtype, order=a_order)
    b = np.asarray(rng.standard_normal((k, n)), dtype, order=b_order)
    out = np.full((m, n), np.nan, dtype)
    product(a, b, out)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")  # np.dot copies it
def test_a_block_of_columns_of_a_wider_matrix():
    wide = np.arange(40.0).reshape(5, 8)
    a, b = wide[:, 2:6], np.arange(12.0).reshape(4, 3)
    out = np.empty((5, 3))
    product(a, b, out)
    np.testing.assert_allclose(out, a @ b)
