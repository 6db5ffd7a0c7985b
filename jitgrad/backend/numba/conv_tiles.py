"""Convolutions by register tiles straight from NHWC (conv2_tiles: a conv's forward pass), and
what the register-tile helpers share: the plan of a conv's geometry (`_tile_plan`: x itself
or x padded and dilated into scratch, each filter tap's offset, the loop bounds) and the tile
steps on SIMD values (`_tile_of`, `_tile_fmas`, `_select_tile`).

conv_filters.py (a conv's filter gradient) and conv_scatter.py (its input gradient) build on
these. Kernels call the public helpers through symbols (symbols.py; precompile.helper finds
them here).
"""

import numba
import numpy as np

from jitgrad.backend.numba.runtime import span, view
from jitgrad.backend.numba.simd import (
    load,
    vadd,
    vfma,
    vjoin,
    vload,
    vrelu,
    vselect,
    vsplat,
    vstore,
    vtranspose8,
    vzeros,
)

TILE = 8  # accumulators per register tile (conv2_tiles, conv2_filters): 8 FMA chains in flight


WIDE_TILE = 16  # conv2_filters' taps side by side in x: 16 chains, one address register


@numba.njit(cache=True, nogil=True)
def conv2_tiles(x, w, bias, out, prepared, strides, pads, lhs_dilation, rhs_dilation, relu):
    """A 2-D conv without groups, out[n, i, j, o] = sum over a, b, c of
    xp[n, i * strides[0] + a * d[0], j * strides[1] + b * d[1], c] * w[a, b, c, o], straight
    from x and w in NHWC / HWIO (xp and d as in conv2_filters). TILE neighbouring output
    positions of a row against `lanes` output channels make a register tile (simd.py): each
    filter tap loads its lanes of w once and adds TILE products, FMA-bound. No im2col: at
    small channel counts the window copy cost as much as the product (W10, float32, same
    process: 0.42 against 0.70 ms for direct loops over wide rows of the image (the first
    layer, one input channel), 0.49 against 0.90 ms for conv2_gemm).

    Its epilogue, on the registers before they are stored: `+ bias` (per output channel;
    none when `bias` is empty) then relu when `relu` (`x if x > 0 else 0`), the loop the
    fusion pass would run over the output after it (W10: 0.12-0.22 ms for its first layer's
    bias and relu over 295K elements). Bit for bit that loop's results."""
    n_images, _, _, c_in = x.shape
    kh, kw, _, c_out = w.shape
    _, out_h, out_w, _ = out.shape
    if out.shape[0] != n_images or w.shape[2] != c_in:
        raise ValueError("conv2_tiles: the input's, filters', output's shapes do not agree")
    if bias.size != 0 and bias.size != c_out:
        raise ValueError("conv2_tiles: the bias has not one element per output channel")
    if out.size == 0:
        return
    window, spatial = (kh, kw), (out_h, out_w)
    plan = (prepared, spatial, window, strides, pads, lhs_dilation, rhs_dilation, "conv2_tiles")
    source, taps, geometry = _tile_plan(x, c_out, c_in, *plan)
    filters, flat_out = view(w, (w.size,)), view(out, (out.size,))
    if out.itemsize == 4 and c_in == 1 and c_out == 8 and strides[1] == 1:
        # one input channel, eight outputs: vectors of positions (_position_tiles) then the
        # rest of each row by channels
        done = _position_tiles(source, filters, flat_out, taps, geometry, bias, relu)
        _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, 0, 8, done)
        return
    if out.itemsize == 4:  # 64-byte vectors, then 32-byte ones, then one lane
        first = _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, 0, 16, 0)
        first = _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, first, 8, 0)
    else:
        first = _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, 0, 8, 0)
        first = _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, first, 4, 0)
    _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, first, 1, 0)


@numba.njit(nogil=True)
def _output_tiles(source, filters, flat_out, taps, geometry, bias, relu, first, lanes, column):
    """conv2_tiles' outputs for the output channels first, first + lanes, ... that fit in
    whole vectors of `lanes`, from output column `column` of each row on: TILE positions of
    a row at a time, then one at a time. The next channel it did not do."""
    numba.literally(lanes)
    n_images, rows, pitch, c_in, out_h, out_w, c_out, step_h, step_w = geometry
    count, x_step = taps.size, step_w * c_in
    o, has_bias = first, bias.size != 0
    while o + lanes <= c_out:
        shift = vzeros(flat_out, lanes)
        if has_bias:
            shift = vload(bias, o, lanes)
        for n in range(n_images):
            for i in range(out_h):
                row = (n * rows + i * step_h) * pitch * c_in
                out_row = (n * out_h + i) * out_w * c_out + o
                j = column
                while j + TILE <= out_w:
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzeros(flat_out, lanes)
                    at = row + j * x_step
                    for k in range(count):
                        weights = vload(filters, k * c_out + o, lanes)
                        p = at + taps[k]
                        a0 = vfma(a0, load(source, p), weights)
                        a1 = vfma(a1, load(source, p + x_step), weights)
                        a2 = vfma(a2, load(source, p + 2 * x_step), weights)
                        a3 = vfma(a3, load(source, p + 3 * x_step), weights)
                        a4 = vfma(a4, load(source, p + 4 * x_step), weights)
                        a5 = vfma(a5, load(source, p + 5 * x_step), weights)
                        a6 = vfma(a6, load(source, p + 6 * x_step), weights)
                        a7 = vfma(a7, load(source, p + 7 * x_step), weights)
                    q = out_row + j * c_out
                    vstore(flat_out, q, _epilogue(a0, shift, has_bias, relu))
                    vstore(flat_out, q + c_out, _epilogue(a1, shift, has_bias, relu))
                    vstore(flat_out, q + 2 * c_out, _epilogue(a2, shift, has_bias, relu))
                    vstore(flat_out, q + 3 * c_out, _epilogue(a3, shift, has_bias, relu))
                    vstore(flat_out, q + 4 * c_out, _epilogue(a4, shift, has_bias, relu))
                    vstore(flat_out, q + 5 * c_out, _epilogue(a5, shift, has_bias, relu))
                    vstore(flat_out, q + 6 * c_out, _epilogue(a6, shift, has_bias, relu))
                    vstore(flat_out, q + 7 * c_out, _epilogue(a7, shift, has_bias, relu))
                    j += TILE
                while j < out_w:
                    total, at = vzeros(flat_out, lanes), row + j * x_step
                    for k in range(count):
                        weights = vload(filters, k * c_out + o, lanes)
                        total = vfma(total, load(source, at + taps[k]), weights)
                    total = _epilogue(total, shift, has_bias, relu)
                    vstore(flat_out, out_row + j * c_out, total)
                    j += 1
        o += lanes
    return o


@numba.njit(nogil=True, _nrt=False)
def _position_tiles(source, filters, flat_out, taps, geometry, bias, relu):
    """conv2_tiles for one input channel and 8 output channels in float32 (a grayscale
    image's first layer), stride 1 along the rows: 16 positions are one vector of x (one
    load a tap: one channel, contiguous), times each output channel's weight, into 8
    accumulators of 16 positions; then the epilogue, and a transpose (vtranspose8) gives
    the NHWC rows. By channels, 8 outputs would fill half a vector. The 16 positions are
    16 columns of a row, and where 8 columns are left at the end of the rows, 8 columns of
    two rows (their two halves loaded apart). W10's first layer alone: 120 -> 60 us.
    Returns the columns it did in every row."""
    n_images, rows, pitch, _, out_h, out_w, _, step_h, _ = geometry
    has_bias = bias.size != 0
    zeros = vzeros(flat_out, 16)
    shifts = (zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros)
    if has_bias:
        shifts = (
            vsplat(flat_out, bias[0], 16),
            vsplat(flat_out, bias[1], 16),
            vsplat(flat_out, bias[2], 16),
            vsplat(flat_out, bias[3], 16),
            vsplat(flat_out, bias[4], 16),
            vsplat(flat_out, bias[5], 16),
            vsplat(flat_out, bias[6], 16),
            vsplat(flat_out, bias[7], 16),
        )
    epilogue = (shifts, has_bias, relu)
    wide = out_w - out_w % 16
    two_rows = out_w % 16 >= 8 and out_h % 2 == 0
    for n in range(n_images):
        for i in range(out_h):
            row = (n * rows + i * step_h) * pitch
            out_row = (n * out_h + i) * out_w * 8
            for j in range(0, wide, 16):
                tile = _positions(source, filters, taps, row + j, row + j + 8)
                _store_positions(flat_out, tile, epilogue, out_row + j * 8, out_row + j * 8 + 64)
            if two_rows and i % 2 == 0:
                below, out_below = row + step_h * pitch, out_row + out_w * 8
                tile = _positions(source, filters, taps, row + wide, below + wide)
                _store_positions(flat_out, tile, epilogue, out_row + wide * 8, out_below + wide * 8)
    return wide + 8 if two_rows else wide


@numba.njit(nogil=True, _nrt=False)
def _positions(source, filters, taps, first, second):
    """_position_tiles' products: 8 positions from `first` and 8 from `second` (x's offsets)
    of the window's first tap, against each of the 8 output channels."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzeros(filters, 16)
    for k in range(taps.size):
        x = vjoin(vload(source, first + taps[k], 8), vload(source, second + taps[k], 8))
        a0 = vfma(a0, load(filters, 8 * k), x)
        a1 = vfma(a1, load(filters, 8 * k + 1), x)
        a2 = vfma(a2, load(filters, 8 * k + 2), x)
        a3 = vfma(a3, load(filters, 8 * k + 3), x)
        a4 = vfma(a4, load(filters, 8 * k + 4), x)
        a5 = vfma(a5, load(filters, 8 * k + 5), x)
        a6 = vfma(a6, load(filters, 8 * k + 6), x)
        a7 = vfma(a7, load(filters, 8 * k + 7), x)
    return a0, a1, a2, a3, a4, a5, a6, a7


@numba.njit(nogil=True, _nrt=False)
def _store_positions(flat_out, tile, epilogue, first, second):
    """_positions' sums after the epilogue, in NHWC order: 8 positions of 8 channels from
    `first`, the next 8 from `second`."""
    shifts, has_bias, relu = epilogue
    b = vtranspose8(
        _epilogue(tile[0], shifts[0], has_bias, relu),
        _epilogue(tile[1], shifts[1], has_bias, relu),
        _epilogue(tile[2], shifts[2], has_bias, relu),
        _epilogue(tile[3], shifts[3], has_bias, relu),
        _epilogue(tile[4], shifts[4], has_bias, relu),
        _epilogue(tile[5], shifts[5], has_bias, relu),
        _epilogue(tile[6], shifts[6], has_bias, relu),
        _epilogue(tile[7], shifts[7], has_bias, relu),
    )
    vstore(flat_out, first, b[0])
    vstore(flat_out, first + 16, b[1])
    vstore(flat_out, first + 32, b[2])
    vstore(flat_out, first + 48, b[3])
    vstore(flat_out, second, b[4])
    vstore(flat_out, second + 16, b[5])
    vstore(flat_out, second + 32, b[6])
    vstore(flat_out, second + 48, b[7])


@numba.njit(nogil=True)
def _epilogue(acc, shift, has_bias, relu):
    """conv2_tiles' epilogue on a vector of outputs: + shift (the bias), then relu."""
    if has_bias:
        acc = vadd(acc, shift)
    if relu:
        acc = vrelu(acc)
    return acc


@numba.njit(nogil=True)
def _tile_plan(
    x,
    c_out,
    tap_channels,
    prepared,
    out_spatial,
    window,
    strides,
    pads,
    lhs_dilation,
    rhs_dilation,
    helper,
):
    """What conv2_tiles and conv2_filters read: (x as a flat array, the offset of each filter
    tap (a, b, c < tap_channels, a group's input channels) from its window's first element,
    the geometry their tile loops take).
    x itself when the conv reads no padding and no dilation of it, else x dilated and padded
    into `prepared` (its first N * reach_h * reach_w * C elements, `reach` being the rows and
    columns the windows span)."""
    n_images, height, width, c_in = x.shape
    reach_h = (out_spatial[0] - 1) * strides[0] + (window[0] - 1) * rhs_dilation[0] + 1
    reach_w = (out_spatial[1] - 1) * strides[1] + (window[1] - 1) * rhs_dilation[1] + 1
    if (
        pads[0] == 0
        and pads[1] == 0
        and lhs_dilation[0] == 1
        and lhs_dilation[1] == 1
        and reach_h <= height
        and reach_w <= width
    ):
        source, rows, pitch = view(x, (x.size,)), height, width
    else:
        size = n_images * reach_h * reach_w * c_in
        if prepared.size < size:
            raise ValueError(helper + ": the prepared-image scratch is too small")
        source = span(view(prepared, (prepared.size,)), 0, size)
        _dilate_and_pad(x, source, reach_h, reach_w, pads, lhs_dilation)
        rows, pitch = reach_h, reach_w
    taps = _tap_offsets(window[0], window[1], tap_channels, c_in, pitch, rhs_dilation)
    geometry = (n_images, rows, pitch, c_in) + out_spatial + (c_out, strides[0], strides[1])
    return source, taps, geometry


@numba.njit(nogil=True)
def _tap_offsets(kh, kw, channels, c_in, pitch, rhs_dilation):
    """x's offset of each filter tap (a, b, c < `channels`), flattened, from its window's
    first element, in an image of `c_in` channels per position and `pitch` positions a row."""
    taps = np.empty(kh * kw * channels, np.int64)
    for a in range(kh):
        for b in range(kw):
            for c in range(channels):
                row = a * rhs_dilation[0] * pitch + b * rhs_dilation[1]
                taps[(a * kw + b) * channels + c] = row * c_in + c
    return taps


@numba.njit(nogil=True)
def _dilate_and_pad(x, target, reach_h, reach_w, pads, lhs_dilation):
    """target (N, reach_h, reach_w, C), flat = x with lhs_dilation - 1 zeros between its
    elements, shifted by pads (negative pads crop), zeros elsewhere."""
    n_images, height, width, c_in = x.shape
    for n in range(n_images):
        for r in range(reach_h):
            rr = r - pads[0]
            row_inside = rr >= 0 and rr % lhs_dilation[0] == 0 and rr // lhs_dilation[0] < height
            for q in range(reach_w):
                qq = q - pads[1]
                start = ((n * reach_h + r) * reach_w + q) * c_in
                inside = (
                    row_inside
                    and qq >= 0
                    and qq % lhs_dilation[1] == 0
                    and qq // lhs_dilation[1] < width
                )
                if inside:
                    i, j = rr // lhs_dilation[0], qq // lhs_dilation[1]
                    for c in range(c_in):
                        target[start + c] = x[n, i, j, c]
                else:
                    for c in range(c_in):
                        target[start + c] = 0


@numba.njit(nogil=True, _nrt=False)
def _tile_of(offsets, k):
    """offsets[k], ..., offsets[k + TILE - 1] as a tuple (registers, not loads, in a tile's
    loop)."""
    return (
        offsets[k],
        offsets[k + 1],
        offsets[k + 2],
        offsets[k + 3],
        offsets[k + 4],
        offsets[k + 5],
        offsets[k + 6],
        offsets[k + 7],
    )


@numba.njit(nogil=True, _nrt=False)
def _tile_fmas(tile, source, at, taps, vector):
    """A register tile's step: accumulator m + source[at + taps[m]] * vector, fused, for
    each of its TILE accumulators (inlined: a leaf this small costs no call)."""
    a0, a1, a2, a3, a4, a5, a6, a7 = tile
    t0, t1, t2, t3, t4, t5, t6, t7 = taps
    return (
        vfma(a0, load(source, at + t0), vector),
        vfma(a1, load(source, at + t1), vector),
        vfma(a2, load(source, at + t2), vector),
        vfma(a3, load(source, at + t3), vector),
        vfma(a4, load(source, at + t4), vector),
        vfma(a5, load(source, at + t5), vector),
        vfma(a6, load(source, at + t6), vector),
        vfma(a7, load(source, at + t7), vector),
    )


@numba.njit(nogil=True, _nrt=False)
def _select_tile(mask, a, b):
    """Lane by lane, each accumulator of tile a where `mask`, else b's."""
    return (
        vselect(mask, a[0], b[0]),
        vselect(mask, a[1], b[1]),
        vselect(mask, a[2], b[2]),
        vselect(mask, a[3], b[3]),
        vselect(mask, a[4], b[4]),
        vselect(mask, a[5], b[5]),
        vselect(mask, a[6], b[6]),
        vselect(mask, a[7], b[7]),
    )
