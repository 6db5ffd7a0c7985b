"""runtime.span: a 1-D view of part of an array that holds no reference (helpers' inner loops),
checked against the array's bounds: outside them it raises, never reads or writes past them."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgrad.backend.numba.runtime import readonly, span


@numba.njit
def copy_of_span(a, start, length):
    view = span(a, start, length)
    out = np.empty(length, a.dtype)
    for k in range(length):
        out[k] = view[k]
    return out


@numba.njit
def fill_span(a, start, length, value):
    view = span(a, start, length)
    for k in range(length):
        view[k] = value


@numba.njit
def sum_of_read_only_span(a, start, length):
    view = span(readonly(a), start, length)
    total = 0.0
    for k in range(view.shape[0]):
        total += view[k]
    return total


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 12), st.data())
def test_span_equals_the_slice(size, data):
    a = np.arange(size, dtype=np.float32) * 1.5
    start = data.draw(st.integers(0, size))
    length = data.draw(st.integers(0, size - start))
    np.testing.assert_array_equal(copy_of_span(a, start, length), a[start : start + length])
    assert sum_of_read_only_span(a, start, length) == a[start : start + length].sum()


def test_writes_go_to_the_array():
    a = np.zeros(8)
    fill_span(a, 2, 3, 7.0)
    np.testing.assert_array_equal(a, [0, 0, 7, 7, 7, 0, 0, 0])


@pytest.mark.parametrize("start, length", [(-1, 2), (0, 9), (6, 3), (3, -1)])
def test_a_span_outside_the_array_raises(start, length):
    a = np.zeros(8)
    with pytest.raises(ValueError, match="not inside the array"):
        fill_span(a, start, length, 1.0)
    np.testing.assert_array_equal(a, 0.0)


def test_other_arrays_are_refused_when_compiling():
    with pytest.raises(numba.core.errors.TypingError):
        copy_of_span(np.zeros((2, 3)), 0, 2)
