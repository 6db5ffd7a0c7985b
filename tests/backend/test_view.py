"""runtime.view: a C-contiguous array seen with another shape, as `reshape` gives it, for a
fraction of Numba's compile time; it checks the number of elements and refuses other layouts.
runtime.carve: a kernel's temporary as a part of the bytes of one buffer, checked to lie
inside it."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgrad.backend.numba.runtime import carve, readonly, view


@numba.njit
def as_matrix(a, rows, cols):
    return view(a, (rows, cols))


@numba.njit
def as_vector(a, n):
    return view(a, (n,))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.sampled_from([np.float32, np.float64, np.int32]))
def test_view_equals_reshape(rows, cols, dtype):
    a = np.arange(rows * cols).astype(dtype)
    m = as_matrix(a, rows, cols)
    np.testing.assert_array_equal(m, a.reshape(rows, cols))
    if a.size:  # numpy's strides of an empty array are its own choice
        assert m.strides == a.reshape(rows, cols).strides
    np.testing.assert_array_equal(as_vector(m, rows * cols), a)


def test_view_shares_the_data():
    a = np.zeros(6)
    as_matrix(a, 2, 3)[1, 2] = 5.0
    assert a[5] == 5.0


@numba.njit
def view_readonly(a):
    return view(readonly(a), (2, 3))


def test_a_read_only_array_stays_read_only():
    assert not view_readonly(np.arange(6.0)).flags.writeable


@pytest.mark.parametrize("rows, cols", [(4, 2), (-2, -3), (7, 0)])
def test_another_number_of_elements_raises(rows, cols):
    with pytest.raises(ValueError, match="different number of elements"):
        as_matrix(np.arange(6.0), rows, cols)


def test_other_layouts_are_refused_when_compiling():
    with pytest.raises(numba.core.errors.TypingError):
        as_vector(np.arange(6.0).reshape(2, 3).T, 6)


@numba.njit
def carved_pair(buffer, start, rows, cols):
    return carve(buffer, start, (rows, cols), np.float32), carve(buffer, 0, (rows,), np.bool_)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), st.sampled_from([64, 128]))
def test_carve_is_a_view_of_the_buffers_bytes(rows, cols, start):
    """runtime.carve (a kernel's temporaries, Emitter.carve_temporaries): the bytes at
    `start`, seen as a C-contiguous array of the dtype and shape; writes land in the buffer."""
    buffer = np.zeros(start + 4 * rows * cols, np.uint8)
    matrix, flags = carved_pair(buffer, start, rows, cols)
    assert matrix.shape == (rows, cols) and matrix.dtype == np.float32
    assert matrix.flags.c_contiguous and flags.shape == (rows,) and flags.dtype == np.bool_
    matrix[...] = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    flags[...] = True
    np.testing.assert_array_equal(buffer[start:].view(np.float32), np.arange(rows * cols))
    assert buffer[:rows].all() and not buffer[rows:start].any()


@pytest.mark.parametrize("start", [-1, 1, 200])
def test_carve_refuses_a_part_outside_the_buffer(start):
    with pytest.raises(ValueError, match="does not lie inside the buffer"):
        carved_pair(np.zeros(64 + 4 * 12, np.uint8), 64 + start if start > 0 else start, 3, 4)
