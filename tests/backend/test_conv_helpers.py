"""The convolution helpers that kernels call with caller-allocated scratch check the shapes
they index (Numba does not): a wrong shape is a clear ValueError, never a read out of
bounds. Their values are tested through the kernels (tests/test_conv.py)."""

import numba
import numpy as np
import pytest

from jitgrad.backend.numba import runtime
from jitgrad.backend.numba.emit import direct_conv_scratch

ONES = (np.int64(1), np.int64(1))
ZEROS = (np.int64(0), np.int64(0))


@numba.njit
def by_windows(x, w, out, taps):
    runtime.conv2_windows(runtime.readonly(x), runtime.readonly(w), out, taps)


@numba.njit
def by_rows(x, w, out, rows, strides, pads, dilation):
    runtime.conv2_direct(
        runtime.readonly(x), runtime.readonly(w), out, rows, strides, pads, dilation
    )


def test_conv2_windows_sums_each_window():
    out = np.empty((1, 8, 8, 2))
    by_windows(np.ones((1, 10, 10, 4)), np.ones((3, 3, 4, 2)), out, np.empty((3, 2, 12)))
    np.testing.assert_array_equal(out, 36.0)


@pytest.mark.parametrize("c_out", [1, 4, 6, 9])  # blocks of four output channels, and the rest
def test_conv2_windows_equals_the_windows_sums(c_out):
    rng = np.random.default_rng(c_out)
    x, w = rng.standard_normal((2, 7, 6, 3)), rng.standard_normal((3, 2, 3, c_out))
    out = np.empty((2, 5, 5, c_out))
    by_windows(x, w, out, np.empty((3, c_out, 6)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 2), axis=(1, 2))
    np.testing.assert_allclose(out, np.einsum("nijcab,abco->nijo", windows, w), rtol=1e-12)


@pytest.mark.parametrize(
    "out_shape, taps_shape, what",
    [
        ((1, 9, 8, 2), (3, 2, 12), "shapes do not agree"),
        ((1, 8, 8, 3), (3, 2, 12), "shapes do not agree"),
        ((1, 8, 8, 2), (3, 2, 11), "taps scratch has the wrong shape"),
    ],
)
def test_conv2_windows_checks_its_shapes(out_shape, taps_shape, what):
    x, w = np.ones((1, 10, 10, 4)), np.ones((3, 3, 4, 2))
    with pytest.raises(ValueError, match=what):
        by_windows(x, w, np.empty(out_shape), np.empty(taps_shape))


def test_conv2_direct_checks_its_scratch():
    x, w, out = np.ones((2, 10, 30)), np.ones((3, 3, 2)), np.empty((2, 8, 28, 2))
    params = {"strides": (1, 1), "rhs_dilation": (1, 1), "padding": ((0, 0), (0, 0))}
    shape = direct_conv_scratch((2, 10, 30, 1), (3, 3, 1, 2), out.shape, params)
    assert shape == (2, 7 * 30 + 28)  # wide rows: the input's pitch
    by_rows(x, w, out, np.empty(shape), ONES, ZEROS, ONES)
    np.testing.assert_array_equal(out, 9.0)
    with pytest.raises(ValueError, match="smaller than the output"):
        by_rows(x, w, out, np.empty((2, shape[1] - 1)), ONES, ZEROS, ONES)
    with pytest.raises(ValueError, match="shapes do not agree"):
        by_rows(x, w, np.empty((2, 8, 28, 3)), np.empty((3, shape[1])), ONES, ZEROS, ONES)


def test_conv2_direct_copies_a_padded_image_into_its_last_scratch_row():
    x, w = np.arange(2 * 6 * 7.0).reshape(2, 6, 7), np.ones((3, 3, 2))
    params = {"strides": (2, 1), "rhs_dilation": (1, 1), "padding": ((1, 1), (1, 1))}
    out = np.empty((2, 3, 7, 2))
    shape = direct_conv_scratch((2, 6, 7, 1), (3, 3, 1, 2), out.shape, params)
    assert shape == (3, 7 * 9)  # a row per filter, then the padded image (7 x 9)
    by_rows(x, w, out, np.empty(shape), (np.int64(2), np.int64(1)), ONES, ONES)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    sums = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2)).sum((-1, -2))
    np.testing.assert_array_equal(out, np.repeat(sums[:, ::2, :, None], 2, axis=-1))
    with pytest.raises(ValueError, match="smaller than the output"):
        by_rows(x, w, out, np.empty((2, shape[1])), (np.int64(2), np.int64(1)), ONES, ONES)


@numba.njit
def by_columns(x, w, out, columns, taps):
    one = (np.int64(1), np.int64(1))
    runtime.conv2_col2im(
        runtime.readonly(x), runtime.readonly(w), out, columns, taps, one, one, one, one
    )


def test_conv2_col2im_checks_its_scratch():
    x, w, out = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5)), np.empty((1, 2, 2, 5))
    with pytest.raises(ValueError, match="taps scratch has the wrong shape"):
        by_columns(x, w, out, np.empty((16, 45)), np.empty((2, 44)))
    with pytest.raises(ValueError, match="shapes do not agree"):
        by_columns(x, w, np.empty((2, 2, 2, 5)), np.empty((16, 45)), np.empty((2, 45)))


@numba.njit
def filters(x, g, out, prepared, strides, pads, lhs_dilation, rhs_dilation):
    runtime.conv2_filters(
        runtime.readonly(x),
        runtime.readonly(g),
        out,
        prepared,
        strides,
        pads,
        lhs_dilation,
        rhs_dilation,
    )


def filter_gradient_by_definition(x, g, window, strides, pads, lhs_dilation, rhs_dilation):
    """out[a, b, c, o] = sum over n, i, j of xp[n, i s0 + a d0, j s1 + b d1, c] g[n, i, j, o],
    xp = x lhs-dilated, then shifted by pads (zeros around), in float64."""
    n, h, w, c_in = x.shape
    _, oh, ow, c_out = g.shape
    xd = np.zeros((n, (h - 1) * lhs_dilation[0] + 1, (w - 1) * lhs_dilation[1] + 1, c_in))
    xd[:, :: lhs_dilation[0], :: lhs_dilation[1]] = x
    reach = [
        (o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip((oh, ow), strides, window, rhs_dilation)
    ]
    xp = np.zeros((n, reach[0] + xd.shape[1] + pads[0], reach[1] + xd.shape[2] + pads[1], c_in))
    xp[:, pads[0] : pads[0] + xd.shape[1], pads[1] : pads[1] + xd.shape[2]] = xd
    out = np.zeros((*window, c_in, c_out))
    for a in range(window[0]):
        for b in range(window[1]):
            r, q = a * rhs_dilation[0], b * rhs_dilation[1]
            taps = xp[:, r : r + (oh - 1) * strides[0] + 1 : strides[0]]
            taps = taps[:, :, q : q + (ow - 1) * strides[1] + 1 : strides[1]]
            out[a, b] = np.einsum("nijc,nijo->co", taps, g.astype(np.float64))
    return out


# Output channels that fill 16-lane vectors, 8-lane ones and single lanes (and mixes of them),
# taps in tiles of 8 with and without a rest, and the prepared (padded, dilated) image.
FILTER_CASES = [
    # x shape, c_out, window, strides, pads, lhs_dilation, rhs_dilation
    ((3, 9, 9, 1), 8, (5, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 8, 8, 8), 16, (3, 3), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 7, 6, 3), 25, (3, 2), (2, 1), (1, 0), (1, 1), (1, 2)),
    ((2, 5, 5, 2), 9, (3, 3), (1, 1), (1, 1), (2, 2), (1, 1)),
    ((1, 6, 7, 5), 7, (2, 3), (1, 2), (0, 2), (1, 1), (2, 1)),
    ((2, 4, 4, 1), 1, (1, 1), (1, 1), (0, 0), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_CASES, ids=str)
def test_conv2_filters_equals_the_definition(case, dtype):
    x_shape, c_out, window, strides, pads, lhs, rhs = case
    n, h, w, c_in = x_shape
    hd, wd = (h - 1) * lhs[0] + 1, (w - 1) * lhs[1] + 1
    oh = (hd + pads[0] - (window[0] - 1) * rhs[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] - (window[1] - 1) * rhs[1] - 1) // strides[1] + 1
    rng = np.random.default_rng(c_out)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal((n, oh, ow, c_out)).astype(dtype)
    reach = (
        (oh - 1) * strides[0] + (window[0] - 1) * rhs[0] + 1,
        (ow - 1) * strides[1] + (window[1] - 1) * rhs[1] + 1,
    )
    prepared = np.full(n * reach[0] * reach[1] * c_in, np.nan, dtype)  # every element written
    out = np.full((*window, c_in, c_out), np.nan, dtype)
    as_pairs = [tuple(np.int64(v) for v in pair) for pair in (strides, pads, lhs, rhs)]
    filters(x, g, out, prepared, *as_pairs)
    expected = filter_gradient_by_definition(x, g, window, strides, pads, lhs, rhs)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(
        out, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max()
    )


def test_conv2_filters_checks_its_shapes_and_scratch():
    x, g = np.ones((2, 6, 6, 3)), np.ones((2, 4, 4, 5))
    pairs = [(np.int64(a), np.int64(a)) for a in (1, 0, 1, 1)]
    with pytest.raises(ValueError, match="shapes do not agree"):
        filters(x, g, np.empty((3, 3, 2, 5)), np.empty(1), *pairs)
    with pytest.raises(ValueError, match="shapes do not agree"):
        filters(x, np.ones((1, 4, 4, 5)), np.empty((3, 3, 3, 5)), np.empty(1), *pairs)
    padded = [pairs[0], (np.int64(1), np.int64(1)), pairs[2], pairs[3]]
    with pytest.raises(ValueError, match="prepared-image scratch is too small"):
        filters(x, np.ones((2, 6, 6, 5)), np.empty((3, 3, 3, 5)), np.empty(10), *padded)
