"""The max-pool helpers against a reference written window by window: each window's first
maximum in row-major order among its taps inside the input, NaN winning (the first NaN), on
inputs full of ties, NaNs and infinities, over windows, strides and paddings, overlapping
windows included. The helpers find the maximum down the window's rows and then along its
columns (runtime._pooled_row), so a tie between rows and columns is where they could differ."""

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jitgrad.backend.numba import runtime


@numba.njit
def pool(x, out, window, strides, pads):
    runtime.max_pool2(runtime.readonly(x), out, window, strides, pads)


@numba.njit
def scatter(x, g, out, window, strides, pads):
    runtime.max_pool_scatter2(runtime.readonly(x), runtime.readonly(g), out, window, strides, pads)


@numba.njit
def gather(x, h, out, window, strides, pads):
    runtime.max_pool_gather2(runtime.readonly(x), runtime.readonly(h), out, window, strides, pads)


def first_maxima(x, out_shape, window, strides, pads):
    """(value, (row, column) or None) per window and channel, tap by tap in row-major order."""
    n, height, width, channels = x.shape
    found = {}
    for b in range(n):
        for i in range(out_shape[1]):
            for j in range(out_shape[2]):
                for c in range(channels):
                    best, at = -np.inf, None
                    for a in range(window[0]):
                        for e in range(window[1]):
                            r, q = i * strides[0] + a - pads[0], j * strides[1] + e - pads[1]
                            if not (0 <= r < height and 0 <= q < width):
                                continue
                            v = x[b, r, q, c]
                            if at is None or v > best or (np.isnan(v) and not np.isnan(best)):
                                best, at = v, (r, q)
                    found[b, i, j, c] = best, at
    return found


def i64(pair):
    return tuple(np.int64(v) for v in pair)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 3),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_pool_helpers_route_to_the_first_maximum(
    n, height, width, channels, window, strides, pads, dtype, data
):
    pads = tuple(min(p, w - 1) for p, w in zip(pads, window))  # TF: padding < window
    out_h = (height + 2 * pads[0] - window[0]) // strides[0] + 1
    out_w = (width + 2 * pads[1] - window[1]) // strides[1] + 1
    assume(out_h >= 1 and out_w >= 1)
    values = st.sampled_from([0.0, 1.0, 2.0, -1.0, -np.inf, np.inf, np.nan])
    x = np.array(
        data.draw(
            st.lists(
                values,
                min_size=n * height * width * channels,
                max_size=n * height * width * channels,
            )
        ),
        dtype,
    ).reshape(n, height, width, channels)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((n, out_h, out_w, channels)).astype(dtype)
    h = rng.standard_normal(x.shape).astype(dtype)
    args = (i64(window), i64(strides), i64(pads))
    pooled = np.empty((n, out_h, out_w, channels), dtype)
    routed = np.empty_like(x)
    gathered = np.empty_like(pooled)
    pool(x, pooled, *args)
    scatter(x, g, routed, *args)
    gather(x, h, gathered, *args)

    expected_routed = np.zeros_like(x)
    for (b, i, j, c), (value, at) in first_maxima(x, pooled.shape, window, strides, pads).items():
        np.testing.assert_array_equal(pooled[b, i, j, c], value)
        if at is None:
            assert gathered[b, i, j, c] == 0
            continue
        expected_routed[b, at[0], at[1], c] += g[b, i, j, c]
        assert gathered[b, i, j, c] == h[b, at[0], at[1], c]
    np.testing.assert_allclose(routed, expected_routed, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 2),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.sampled_from([1, 3, 8, 16, 24, 25, 40]),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_the_gradient_of_side_by_side_windows_routes_to_the_first_maximum(
    n, window, count, extra, channels, dtype, data
):
    """Windows that tile the image (stride = window, no padding) over a multiple of
    runtime.WINDOW_LANES channels take the vector path (runtime._window_tiles: the
    gradient's every element written once, the rows and columns past the last window
    zeroed); 1, 3 and 25 channels the general one."""
    height, width = count[0] * window[0] + extra[0], count[1] * window[1] + extra[1]
    values = st.sampled_from([0.0, 1.0, 2.0, -1.0, -np.inf, np.inf, np.nan])
    size = n * height * width * channels
    x = np.array(data.draw(st.lists(values, min_size=size, max_size=size)), dtype)
    x = x.reshape(n, height, width, channels)
    check_side_by_side_windows(x, count, window)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [8, 16, 24])
@pytest.mark.parametrize("extra", [(0, 0), (1, 1)])
def test_two_by_two_windows_route_to_the_first_maximum(extra, channels, dtype):
    """The 2 x 2 windows' straight-line path (runtime._two_by_two), over ties, signed zeros,
    infinities and NaN in every order of a window's four taps."""
    values = np.array([0.0, -0.0, 1.0, 2.0, -1.0, -np.inf, np.inf, np.nan], dtype)
    count = (3, 4)
    shape = (2, 2 * count[0] + extra[0], 2 * count[1] + extra[1], channels)
    x = np.random.default_rng(channels).choice(values, size=shape)
    check_side_by_side_windows(x, count, (2, 2))


def check_side_by_side_windows(x, count, window):
    """max_pool2 and max_pool_scatter2 over windows that tile x, against first_maxima."""
    n, channels, dtype = x.shape[0], x.shape[-1], x.dtype
    g = np.random.default_rng(1).standard_normal((n, *count, channels)).astype(dtype)
    routed = np.full_like(x, 7.0)  # every element is written
    pooled = np.full_like(g, 7.0)
    scatter(x, g, routed, i64(window), i64(window), i64((0, 0)))
    pool(x, pooled, i64(window), i64(window), i64((0, 0)))
    expected = np.zeros_like(x)
    for (b, i, j, c), (value, at) in first_maxima(x, g.shape, window, window, (0, 0)).items():
        expected[b, at[0], at[1], c] = g[b, i, j, c]
        np.testing.assert_array_equal(pooled[b, i, j, c], value)
    np.testing.assert_array_equal(routed, expected)
