"""The convolution helpers that kernels call with caller-allocated scratch check the shapes
they index (Numba does not): a wrong shape is a clear ValueError, never a read out of
bounds. Their values are tested through the kernels (tests/test_conv.py), and those of the
register-tile helpers (conv2_tiles, conv2_filters) here too, against their definitions, over
every remainder of their tiles."""

import numba
import numpy as np
import pytest

from jitgrad.backend.numba import conv_filters, conv_scatter, conv_tiles, runtime

ONES = (np.int64(1), np.int64(1))
ZEROS = (np.int64(0), np.int64(0))


@numba.njit
def by_windows(x, w, out, taps):
    conv_filters.conv2_windows(runtime.readonly(x), runtime.readonly(w), out, taps)


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


@numba.njit
def by_columns(x, w, out, columns, taps):
    one = (np.int64(1), np.int64(1))
    conv_scatter.conv2_col2im(
        runtime.readonly(x), runtime.readonly(w), out, columns, taps, one, one, one, one
    )


def test_conv2_col2im_checks_its_scratch():
    x, w, out = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5)), np.empty((1, 2, 2, 5))
    with pytest.raises(ValueError, match="taps scratch has the wrong shape"):
        by_columns(x, w, out, np.empty((16, 45)), np.empty((2, 44)))
    with pytest.raises(ValueError, match="shapes do not agree"):
        by_columns(x, w, np.empty((2, 2, 2, 5)), np.empty((16, 45)), np.empty((2, 45)))


def read_only(*arrays):
    """Views the helpers' dispatchers type read-only, as kernels pass their operands: the
    calls then run the signatures precompile.py compiled (loaded from Numba's cache, no new
    compile in the test run)."""
    views = [np.asarray(a).view() for a in arrays]
    for view in views:
        view.flags.writeable = False
    return views


def filters(x, g, out, prepared, *pairs, groups=1):
    conv_filters.conv2_filters(*read_only(x, g), out, prepared, *pairs, np.int64(groups))


def tiles(x, w, out, prepared, strides, pads, lhs, rhs, bias=None, relu=False):
    """conv2_tiles without an epilogue, or with `bias` and/or relu."""
    bias = np.empty(0, out.dtype) if bias is None else bias
    x, w, bias = read_only(x, w, bias)
    conv_tiles.conv2_tiles(x, w, bias, out, prepared, strides, pads, lhs, rhs, np.bool_(relu))


def prepared_by_definition(x, reach, pads, lhs_dilation):
    """x lhs-dilated, then shifted by pads, zeros around: at least `reach` rows and columns."""
    n, h, w, c_in = x.shape
    xd = np.zeros((n, (h - 1) * lhs_dilation[0] + 1, (w - 1) * lhs_dilation[1] + 1, c_in))
    xd[:, :: lhs_dilation[0], :: lhs_dilation[1]] = x
    xp = np.zeros((n, reach[0] + xd.shape[1] + pads[0], reach[1] + xd.shape[2] + pads[1], c_in))
    xp[:, pads[0] : pads[0] + xd.shape[1], pads[1] : pads[1] + xd.shape[2]] = xd
    return xp


def window_taps(xp, a, b, out_spatial, strides, rhs_dilation):
    """xp[n, i s0 + a d0, j s1 + b d1, c] over the output positions (i, j)."""
    r, q = a * rhs_dilation[0], b * rhs_dilation[1]
    taps = xp[:, r : r + (out_spatial[0] - 1) * strides[0] + 1 : strides[0]]
    return taps[:, :, q : q + (out_spatial[1] - 1) * strides[1] + 1 : strides[1]]


def reach_of(out_spatial, window, strides, rhs_dilation):
    spans = zip(out_spatial, window, strides, rhs_dilation)
    return [(o - 1) * s + (k - 1) * d + 1 for o, k, s, d in spans]


def filter_gradient_by_definition(x, g, window, strides, pads, lhs_dilation, rhs_dilation):
    """out[a, b, c, o] = sum over n, i, j of xp[n, i s0 + a d0, j s1 + b d1, c] g[n, i, j, o],
    in float64."""
    out_spatial = g.shape[1:3]
    reach = reach_of(out_spatial, window, strides, rhs_dilation)
    xp = prepared_by_definition(x, reach, pads, lhs_dilation)
    out = np.zeros((*window, x.shape[-1], g.shape[-1]))
    for a in range(window[0]):
        for b in range(window[1]):
            taps = window_taps(xp, a, b, out_spatial, strides, rhs_dilation)
            out[a, b] = np.einsum("nijc,nijo->co", taps, g.astype(np.float64))
    return out


def conv_by_definition(x, w, out_spatial, strides, pads, lhs_dilation, rhs_dilation):
    """out[n, i, j, o] = sum over a, b, c of xp[n, i s0 + a d0, j s1 + b d1, c] w[a, b, c, o],
    in float64."""
    window = w.shape[:2]
    reach = reach_of(out_spatial, window, strides, rhs_dilation)
    xp = prepared_by_definition(x, reach, pads, lhs_dilation)
    out = np.zeros((x.shape[0], *out_spatial, w.shape[-1]))
    for a in range(window[0]):
        for b in range(window[1]):
            taps = window_taps(xp, a, b, out_spatial, strides, rhs_dilation)
            out += np.einsum("nijc,co->nijo", taps, w[a, b].astype(np.float64))
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
    # half a vector of output channels (8 in float32, 4 in float64): conv2_filters pairs taps
    # in odd and even windows, down to rows of two positions
    ((2, 7, 9, 3), 8, (3, 4), (2, 1), (1, 1), (1, 1), (2, 1)),
    ((1, 5, 6, 2), 4, (2, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 6, 6, 1), 8, (3, 2), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((1, 4, 9, 2), 4, (2, 3), (1, 2), (0, 0), (1, 1), (1, 1)),
]

# one input channel, 5-wide filters and half a vector of output channels: conv2_filters'
# rows of three pairs (tiles of three filter rows, then of two, a lone last row paired with
# itself), with strides, padding and dilations along the rows, down to rows of 2 positions.
FIVE_WIDE_CASES = [
    # x shape, window, strides, pads, lhs_dilation, rhs_dilation
    ((3, 9, 9, 1), (5, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 6, 7, 1), (1, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 6, 7, 1), (2, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((2, 8, 6, 1), (4, 5), (2, 1), (1, 0), (1, 1), (1, 1)),
    ((1, 12, 9, 1), (7, 5), (1, 1), (0, 2), (1, 1), (1, 1)),
    ((2, 9, 8, 1), (3, 5), (1, 1), (1, 1), (2, 1), (2, 1)),
]


def case_arrays(case, dtype):
    """(x, g, out spatial shape, prepared scratch full of NaN, the pairs as int64 tuples)."""
    x_shape, c_out, window, strides, pads, lhs, rhs = case
    n, h, w, c_in = x_shape
    dilated = ((h - 1) * lhs[0] + 1, (w - 1) * lhs[1] + 1)
    spans = zip(dilated, pads, window, rhs, strides)
    out_spatial = tuple((d + p - (k - 1) * r - 1) // s + 1 for d, p, k, r, s in spans)
    rng = np.random.default_rng(c_out)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal((n, *out_spatial, c_out)).astype(dtype)
    reach = reach_of(out_spatial, window, strides, rhs)
    prepared = np.full(n * reach[0] * reach[1] * c_in, np.nan, dtype)  # every element written
    pairs = [tuple(np.int64(v) for v in pair) for pair in (strides, pads, lhs, rhs)]
    return x, g, out_spatial, prepared, pairs


def assert_close_in(dtype, actual, expected):
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    atol = tolerance * np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_CASES, ids=str)
def test_conv2_filters_equals_the_definition(case, dtype):
    x, g, _, prepared, pairs = case_arrays(case, dtype)
    window = case[2]
    out = np.full((*window, x.shape[-1], g.shape[-1]), np.nan, dtype)
    filters(x, g, out, prepared, *pairs)
    assert_close_in(dtype, out, filter_gradient_by_definition(x, g, window, *case[3:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_CASES, ids=str)
def test_conv2_tiles_equals_the_definition(case, dtype):
    """The same geometries as a forward conv: rows of 8 positions and their rest, output
    channels in 16-, 8- and 1-lane vectors."""
    x, _, out_spatial, prepared, pairs = case_arrays(case, dtype)
    c_out, window = case[1], case[2]
    w = np.random.default_rng(0).standard_normal((*window, x.shape[-1], c_out)).astype(dtype)
    out = np.full((x.shape[0], *out_spatial, c_out), np.nan, dtype)
    tiles(x, w, out, prepared, *pairs)
    assert_close_in(dtype, out, conv_by_definition(x, w, out_spatial, *case[3:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FIVE_WIDE_CASES, ids=str)
def test_conv2_filters_five_wide_rows_of_pairs_equal_the_definition(case, dtype):
    c_out = 32 // np.dtype(dtype).itemsize
    x, g, _, prepared, pairs = case_arrays((case[0], c_out, *case[1:]), dtype)
    out = np.full((*case[1], 1, c_out), np.nan, dtype)
    filters(x, g, out, prepared, *pairs)
    assert_close_in(dtype, out, filter_gradient_by_definition(x, g, case[1], *case[2:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [(2, 3), (3, 5)], ids=str)  # pairs; rows of three pairs
def test_conv2_filters_pairs_keep_an_infinity_out_of_the_neighbouring_tap(window, dtype):
    """x's first and last columns meet only one tap's cotangents; paired with the next tap
    in one vector, the other lane must not take inf * 0 = NaN."""
    c_out = 32 // np.dtype(dtype).itemsize
    case = ((1, 5, 7, 1), c_out, window, (1, 1), (0, 0), (1, 1), (1, 1))
    x, g, _, prepared, pairs = case_arrays(case, dtype)
    x[0, 1, 0, 0], x[0, 2, 6, 0] = np.inf, -np.inf
    out = np.full((*window, 1, c_out), np.nan, dtype)
    filters(x, g, out, prepared, *pairs)
    expected = filter_gradient_by_definition(x, g, window, *case[3:])
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(expected))
    finite = np.isfinite(expected)
    assert_close_in(dtype, out[finite], expected[finite])


GROUPED_FILTER_CASES = [
    # x shape, c_out, window, strides, pads, lhs_dilation, rhs_dilation, groups
    ((2, 7, 6, 4), 4, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 4),  # depthwise
    ((2, 6, 6, 3), 6, (3, 2), (2, 1), (1, 0), (1, 1), (1, 2), 3),  # depthwise, multiplier 2
    ((2, 5, 5, 6), 50, (2, 2), (1, 1), (0, 0), (2, 2), (1, 1), 2),  # 25 per group: 16 + 8 + 1
    ((1, 8, 8, 32), 32, (3, 3), (1, 1), (0, 0), (1, 1), (1, 1), 2),  # 16 per group: one vector
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GROUPED_FILTER_CASES, ids=str)
def test_conv2_filters_with_groups_equals_the_definition_per_group(case, dtype):
    """Each group's filters are its channels' filter gradient: its vectors of output
    channels never reach into the next group's."""
    groups = case[-1]
    x, g, _, prepared, pairs = case_arrays(case[:-1], dtype)
    window = case[2]
    cg, og = x.shape[-1] // groups, g.shape[-1] // groups
    out = np.full((*window, cg, g.shape[-1]), np.nan, dtype)
    filters(x, g, out, prepared, *pairs, groups=groups)
    expected = np.concatenate(
        [
            filter_gradient_by_definition(
                x[..., q * cg : (q + 1) * cg], g[..., q * og : (q + 1) * og], window, *case[3:-1]
            )
            for q in range(groups)
        ],
        axis=-1,
    )
    assert_close_in(dtype, out, expected)


def test_conv2_tiles_checks_its_shapes_and_scratch():
    x, w = np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 5))
    pairs = [(np.int64(a), np.int64(a)) for a in (1, 0, 1, 1)]
    out = np.empty((2, 4, 4, 5))
    tiles(x, w, out, np.empty(1), *pairs)
    np.testing.assert_array_equal(out, 27.0)
    with pytest.raises(ValueError, match="shapes do not agree"):
        tiles(x, np.ones((3, 3, 2, 5)), out, np.empty(1), *pairs)
    with pytest.raises(ValueError, match="shapes do not agree"):
        tiles(x, w, np.empty((1, 4, 4, 5)), np.empty(1), *pairs)
    padded = [pairs[0], (np.int64(1), np.int64(1)), pairs[2], pairs[3]]
    with pytest.raises(ValueError, match="prepared-image scratch is too small"):
        tiles(x, w, np.empty((2, 6, 6, 5)), np.empty(10), *padded)


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
    with pytest.raises(ValueError, match="groups do not divide the channels"):
        filters(x, g, np.empty((3, 3, 1, 5)), np.empty(1), *pairs, groups=3)
    with pytest.raises(ValueError, match="shapes do not agree"):  # 3 channels in 3 groups
        filters(x, np.ones((2, 4, 4, 6)), np.empty((3, 3, 3, 6)), np.empty(1), *pairs, groups=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", [FILTER_CASES[2], FILTER_CASES[-3]], ids=["channels", "positions"])
def test_conv2_tiles_epilogue_adds_the_bias_then_applies_relu(case, relu, dtype):
    """On the registers: out + bias (one rounding, as the loop after the conv), then
    `x if x > 0 else +0.0` (NaN and -0.0 give +0.0). 25 output channels take every lane
    count; one input channel and 8 outputs, vectors of positions."""
    x, _, out_spatial, prepared, pairs = case_arrays(case, dtype)
    x[0, 1, 1, 0] = np.nan
    c_out, window = case[1], case[2]
    w = np.random.default_rng(1).standard_normal((*window, x.shape[-1], c_out)).astype(dtype)
    bias = np.random.default_rng(2).standard_normal(c_out).astype(dtype)
    plain = np.empty((x.shape[0], *out_spatial, c_out), dtype)
    tiles(x, w, plain, prepared, *pairs)
    finished = np.empty_like(plain)
    tiles(x, w, finished, prepared, *pairs, bias=bias, relu=relu)
    expected = plain + bias
    if relu:
        expected = np.where(expected > 0, expected, dtype(0))
    assert np.isnan(plain).any()
    np.testing.assert_array_equal(finished, expected)
    assert np.array_equal(np.signbit(finished), np.signbit(expected))


def test_conv2_tiles_checks_its_bias():
    x, w = np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 5))
    pairs = [(np.int64(a), np.int64(a)) for a in (1, 0, 1, 1)]
    with pytest.raises(ValueError, match="one element per output channel"):
        tiles(x, w, np.empty((2, 4, 4, 5)), np.empty(1), *pairs, bias=np.ones(4))


def _scatter(x, w, out, *pairs):
    conv_scatter.conv2_scatter(*read_only(x, w), out, *pairs)


# Convs with more output positions than input ones (input gradients): x shape, output
# channels, window, input dilation (the forward's strides), rhs dilation; stride 1, padded by
# the dilated window less one on both sides. Widths with and without a rest after the tiles,
# output channels in 16-, 8- and 1-lane vectors, input dilations that make a tile's taps
# reach columns unevenly (position by position). Outputs of half a vector (8 channels in
# float32, 4 in float64) pair their taps where the columns allow: odd and even windows, rows
# of several tiles and a rest, and dilations that leave every tap alone.
SCATTER_CASES = [
    ((2, 8, 8, 16), 8, (5, 5), (1, 1), (1, 1)),
    ((2, 6, 19, 3), 8, (3, 4), (1, 1), (1, 1)),
    ((1, 5, 16, 5), 4, (2, 5), (1, 1), (1, 1)),
    ((1, 4, 9, 2), 8, (2, 3), (1, 1), (1, 2)),
    ((2, 3, 12, 2), 8, (3, 3), (2, 2), (1, 1)),
    ((2, 5, 11, 3), 25, (3, 2), (2, 2), (1, 1)),
    ((1, 4, 9, 2), 9, (2, 3), (1, 3), (1, 2)),
    ((3, 3, 3, 4), 1, (3, 3), (1, 1), (2, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SCATTER_CASES, ids=str)
def test_conv2_scatter_equals_the_definition(case, dtype):
    x_shape, c_out, window, lhs, rhs = case
    rng = np.random.default_rng(c_out)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((*window, x_shape[-1], c_out)).astype(dtype)
    reach = [(k - 1) * d + 1 for k, d in zip(window, rhs)]
    pads = tuple(r - 1 for r in reach)
    dilated = [(n - 1) * d + 1 for n, d in zip(x_shape[1:3], lhs)]
    out_spatial = tuple(n + 2 * p - r + 1 for n, p, r in zip(dilated, pads, reach))
    assert np.prod(out_spatial) > np.prod(x_shape[1:3])
    out = np.full((x_shape[0], *out_spatial, c_out), np.nan, dtype)
    as_pairs = [tuple(np.int64(v) for v in pair) for pair in ((1, 1), pads, lhs, rhs)]
    _scatter(x, w, out, *as_pairs)
    expected = conv_by_definition(x, w, out_spatial, (1, 1), pads, lhs, rhs)
    assert_close_in(dtype, out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pads", [(1, 4), (0, 4), (3, 4)], ids=str)
def test_conv2_scatter_stacks_lone_taps_only_where_both_filter_rows_reach(pads, dtype):
    """A 5-wide window's lone tap column goes two filter rows at a time (half-vector
    outputs); with less than full padding along the rows, some input rows reach an output row
    through one filter row of a pair and not the other."""
    c_out = 32 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 8, 3)).astype(dtype)
    w = rng.standard_normal((5, 5, 3, c_out)).astype(dtype)
    out_spatial = (7 + 2 * pads[0] - 4, 8 + 2 * pads[1] - 4)
    out = np.full((2, *out_spatial, c_out), np.nan, dtype)
    ones = (np.int64(1), np.int64(1))
    _scatter(x, w, out, ones, tuple(np.int64(p) for p in pads), ones, ones)
    expected = conv_by_definition(x, w, out_spatial, (1, 1), pads, (1, 1), (1, 1))
    assert_close_in(dtype, out, expected)


def test_conv2_scatter_checks_its_shapes():
    pairs = [(np.int64(a), np.int64(a)) for a in (1, 2, 1, 1)]
    with pytest.raises(ValueError, match="shapes do not agree"):
        _scatter(np.ones((1, 4, 4, 3)), np.ones((3, 3, 2, 5)), np.empty((1, 6, 6, 5)), *pairs)
    with pytest.raises(ValueError, match="shapes do not agree"):
        _scatter(np.ones((1, 4, 4, 3)), np.ones((3, 3, 3, 5)), np.empty((1, 6, 6, 4)), *pairs)


def test_the_tile_helpers_ran_only_precompiled_signatures():
    """These tests call the helpers as kernels do (read_only): no signature of their own."""
    from jitgrad.backend.numba.precompile import helper_signatures

    for helper in (conv_tiles.conv2_tiles, conv_filters.conv2_filters, conv_scatter.conv2_scatter):
        precompiled = {tuple(sig) for h, sig in helper_signatures() if h is helper}
        assert set(map(tuple, helper.signatures)) <= precompiled, helper
