"""runtime.matmul_into, the product kernels call by one BLAS gemm with operands of any layout
(runtime.strided): every layout a kernel passes (C; F, a transpose), dimensions of one element
and of none, float32 and float64, against a float64 product; one compiled signature per dtype;
an operand BLAS cannot read, or shapes that do not agree, raise instead of computing garbage."""

import numba
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from jitgrad.backend.numba import runtime


@numba.njit
def product(a, b, out):
    runtime.matmul_into(runtime.strided(a), runtime.strided(b), out)


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


def test_one_compiled_signature_per_dtype_whatever_the_layouts():
    a, b = np.ones((3, 4)), np.ones((4, 2))
    for x, y in [(a, b), (a, np.asfortranarray(b)), (np.asfortranarray(a), b)]:
        product(x, y, np.empty((3, 2)))
    float64 = [s for s in runtime.matmul_into.signatures if s[0].dtype == numba.float64]
    assert len(float64) == 1 and float64[0][0].layout == "A"


def test_rows_of_a_wider_matrix_are_read_in_place():
    """A block of columns has a leading dimension larger than its width: BLAS reads it as is."""
    wide = np.arange(40.0).reshape(5, 8)
    a, b = wide[:, 2:6], np.arange(12.0).reshape(4, 3)
    out = np.empty((5, 3))
    product(a, b, out)
    np.testing.assert_allclose(out, a @ b)


def test_an_operand_blas_cannot_read_raises():
    """The emitter copies strided views before a product; the helper checks it all the same."""
    a, b = np.arange(40.0).reshape(5, 8)[:, ::2], np.ones((4, 3))
    with pytest.raises(ValueError, match="an operand is neither row- nor column-major"):
        product(a, b, np.empty((5, 3)))
    with pytest.raises(ValueError, match="an operand is neither"):
        product(np.ones((3, 3)), np.arange(12.0).reshape(3, 4)[::-1], np.empty((3, 4)))


def test_shapes_that_do_not_agree_raise():
    with pytest.raises(ValueError, match="shapes do not agree"):
        product(np.ones((3, 4)), np.ones((4, 2)), np.empty((3, 3)))


def _blas_readable(x: np.ndarray) -> bool:
    """The rule runtime._blas_layout implements: rows contiguous and not overlapping (BLAS
    reads the transpose), or columns so; a dimension of one element may have any stride."""
    (rows, cols), (row_stride, col_stride), size = x.shape, x.strides, x.itemsize
    by_rows = (cols == 1 or col_stride == size) and (rows == 1 or row_stride >= cols * size)
    by_cols = (rows == 1 or row_stride == size) and (cols == 1 or col_stride >= rows * size)
    return by_rows or by_cols


@st.composite
def views(draw, rows, cols):
    """A (rows, cols) view of a larger matrix: every-nth rows / columns, maybe transposed."""
    transpose = draw(st.booleans())
    if transpose:
        rows, cols = cols, rows
    row_step, col_step = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    extra_rows, extra_cols = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    base = (
        np.arange(
            (rows * row_step + extra_rows) * (cols * col_step + extra_cols), dtype=np.float64
        ).reshape(rows * row_step + extra_rows, cols * col_step + extra_cols)
        / 7.0
    )
    view = base[: rows * row_step : row_step, : cols * col_step : col_step]
    return view.T if transpose else view


@settings(max_examples=60, deadline=None)
@given(data=st.data(), m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5))
def test_strided_views_are_multiplied_or_refused_by_the_layout_rule(data, m, k, n):
    a, b = data.draw(views(m, k)), data.draw(views(k, n))
    out = np.full((m, n), np.nan)
    if _blas_readable(a) and _blas_readable(b):
        event("multiplied")
        product(a, b, out)
        np.testing.assert_allclose(out, a @ b, rtol=1e-13, atol=1e-13)
    else:
        event("refused")
        with pytest.raises(ValueError, match="neither row- nor column-major"):
            product(a, b, out)
