"""simd.py: vectors as Numba values (loads, stores, fused multiply-adds) and the unchecked
scalar load, for every lane count the helpers use, in float32 and float64."""

import numba
import numpy as np
import pytest

from jitgrad.backend.numba.simd import (
    load,
    vaddto,
    vfma,
    vjoin,
    vload,
    vlower,
    vlowmask,
    vselect,
    vstore,
    vstraddle,
    vtranspose8,
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
def halves_apart_and_joined(a, b, out, lanes):
    """out = [b's lower half, a's lower half], then a's lanes where the lower-half mask is
    set and b's elsewhere."""
    numba.literally(lanes)
    u, v = vload(a, 0, lanes), vload(b, 0, lanes)
    vstore(out, 0, vjoin(vlower(v), vlower(u)))
    vstore(out, lanes, vselect(vlowmask(out, lanes), u, v))


@numba.njit
def transposed(a, out):
    """The 8 x 16 matrix `a` (rows: channels) as 16 x 8 (rows: positions), by vtranspose8."""
    b = vtranspose8(
        vload(a, 0, 16),
        vload(a, 16, 16),
        vload(a, 32, 16),
        vload(a, 48, 16),
        vload(a, 64, 16),
        vload(a, 80, 16),
        vload(a, 96, 16),
        vload(a, 112, 16),
    )
    for m in range(8):
        vstore(out, 16 * m, b[m])


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [2, 16])
def test_lower_halves_joined_and_selected_by_the_lower_mask(dtype, lanes):
    a, b = np.arange(lanes, dtype=dtype), -np.arange(lanes, dtype=dtype) - 1
    out = np.empty(2 * lanes, dtype)
    halves_apart_and_joined(a, b, out, lanes)
    half = lanes // 2
    np.testing.assert_array_equal(out[:lanes], np.concatenate([b[:half], a[:half]]))
    np.testing.assert_array_equal(out[lanes:], np.concatenate([a[:half], b[half:]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_of_eight_vectors_of_sixteen(dtype):
    a = np.arange(128, dtype=dtype)
    out = np.empty(128, dtype)
    transposed(a, out)
    np.testing.assert_array_equal(out.reshape(16, 8), a.reshape(8, 16).T)


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
