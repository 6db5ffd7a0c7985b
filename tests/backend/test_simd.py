"""simd.py: vectors as Numba values (loads, stores, fused multiply-adds) and the unchecked
scalar load, for every lane count the helpers use, in float32 and float64."""

import numba
import numpy as np
import pytest

from jitgrad.backend.numba.simd import (
    load,
    vaddto,
    vfma,
    vload,
    vstore,
    vstraddle,
    vupper,
    vzeros,
)


@numba.njit
def axpy_by_vectors(x, y, s, lanes):
    """y[:n] += s * x[:n] for the n = whole vectors of `lanes`; the rest untouched."""
    numba.literally(lanes)
    stop = x.size - x.size % lanes
    for i in range(0, stop, lanes):
        vstore(y, i, vfma(vload(y, i, lanes), s, vload(x, i, lanes)))


@numba.njit
def zeros_then_store(out, lanes):
    numba.literally(lanes)
    vstore(out, 1, vzeros(out, lanes))


@numba.njit
def halves(a, b, out, lanes):
    """out = [a's upper half, b's lower half], then a's upper half added after it."""
    numba.literally(lanes)
    vstore(out, 0, vstraddle(vload(a, 0, lanes), vload(b, 0, lanes)))
    vaddto(out, lanes, vupper(vload(a, 0, lanes)))


@numba.njit
def unchecked_loads(x):
    return load(x, 0) + load(x, x.size - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [1, 4, 8, 16])
def test_vector_multiply_adds_are_numpy_multiply_adds(dtype, lanes):
    rng = np.random.default_rng(lanes)
    x, y = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    expected = y.copy()
    stop = 37 - 37 % lanes
    expected[:stop] = y[:stop] + 2 * x[:stop]
    axpy_by_vectors(x, y, dtype(2), lanes)
    np.testing.assert_array_equal(y, expected)  # 2 * x is exact: one rounding either way


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_multiply_add_rounds_once(dtype):
    """(1 + e) * (1 - e) - 1 is -e * e when fused; the product rounded first gives 0."""
    eps = np.finfo(dtype).eps
    x = np.full(8, 1 + eps, dtype)
    y = np.full(8, -1, dtype)
    axpy_by_vectors(x, y, dtype(1 - eps), 8)
    np.testing.assert_array_equal(y, np.full(8, -eps * eps, dtype))


@pytest.mark.parametrize("lanes", [4, 16])
def test_vzeros_stores_exactly_its_lanes(lanes):
    out = np.full(lanes + 2, 7.0, np.float32)
    zeros_then_store(out, lanes)
    np.testing.assert_array_equal(out, [7.0] + [0.0] * lanes + [7.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [2, 8, 16])
def test_straddling_halves_and_adding_into_memory(dtype, lanes):
    a, b = np.arange(lanes, dtype=dtype), -np.arange(lanes, dtype=dtype) - 1
    out = np.full(lanes + lanes // 2 + 1, 10, dtype)
    halves(a, b, out, lanes)
    straddle = np.concatenate([a[lanes // 2 :], b[: lanes // 2]])
    np.testing.assert_array_equal(out[:lanes], straddle)
    np.testing.assert_array_equal(out[lanes:], np.concatenate([10 + a[lanes // 2 :], [10]]))


def test_unchecked_load_reads_the_element():
    assert unchecked_loads(np.arange(5.0)) == 4.0
    assert unchecked_loads(np.arange(3, dtype=np.float32)) == 2.0


def test_integer_arrays_and_unknown_lane_counts_do_not_type():
    @numba.njit
    def integers(x):
        return vload(x, 0, 4)

    @numba.njit
    def lanes_at_run_time(x, lanes):
        return vzeros(x, lanes)

    with pytest.raises(numba.core.errors.TypingError):
        integers(np.arange(8))
    with pytest.raises(numba.core.errors.TypingError):
        lanes_at_run_time(np.zeros(8), 4)
