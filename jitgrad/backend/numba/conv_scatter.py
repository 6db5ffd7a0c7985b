"""A conv by input positions, for convs whose output has more positions than their input (an
input gradient: the cotangent convolved with the flipped filters): register tiles added into
the outputs each input position reaches (conv2_scatter), or columns by BLAS then added
(conv2_col2im).
"""

import numba
import numpy as np

from jitgrad.backend.numba.conv_tiles import TILE
from jitgrad.backend.numba.runtime import matmul_into, span, strided, view
from jitgrad.backend.numba.simd import (
    load,
    vadd,
    vaddto,
    vfma,
    vload,
    vlower,
    vstraddle,
    vupper,
    vzeros,
)


@numba.njit(cache=True, nogil=True)
def conv2_col2im(x, w, out, columns, taps, strides, pads, lhs_dilation, rhs_dilation):
    """conv2 without groups as one matrix product per input position rather than per output
    position: columns = x (N * H * W, C_in) @ taps (C_in, KH * KW * C_out), then each input
    position's products are added into the outputs its taps reach. Cheaper than im2col when
    the output has more positions than the input (an input gradient: the cotangent, padded
    by the window, convolved with the flipped filters; lhs_dilation = the forward strides).
    `columns` and `taps` are caller-allocated scratch."""
    n_images, height, width, c_in = x.shape
    kh, kw, _, c_out = w.shape
    out_height, out_width = out.shape[1], out.shape[2]
    if out.shape[0] != n_images or w.shape[2] != c_in or out.shape[3] != c_out:
        raise ValueError("conv2_col2im: the input's, filters', output's shapes do not agree")
    if taps.shape[0] != c_in or taps.shape[1] != kh * kw * c_out:  # matmul_into checks columns
        raise ValueError("conv2_col2im: the taps scratch has the wrong shape")
    for c in range(c_in):
        for a in range(kh):
            for b in range(kw):
                for o in range(c_out):
                    taps[c, (a * kw + b) * c_out + o] = w[a, b, c, o]
    matmul_into(strided(view(x, (n_images * height * width, c_in))), strided(taps), columns)
    flat = view(out, (out.size,))
    for k in range(flat.shape[0]):
        flat[k] = 0
    # The output row that input row r reaches through window row a (-1: none), and the column
    # that input column q reaches through window column b: computed once, not per position
    # and tap (W10's second layer did 200,000 integer divisions per call in the loop below).
    reached_rows = _reached(
        height, kh, out_height, strides[0], pads[0], lhs_dilation[0], rhs_dilation[0]
    )
    reached_cols = _reached(
        width, kw, out_width, strides[1], pads[1], lhs_dilation[1], rhs_dilation[1]
    )
    products = view(columns, (columns.size,))
    row = 0
    for n in range(n_images):
        for r in range(height):
            for q in range(width):
                for a in range(kh):
                    i = reached_rows[r, a]
                    if i < 0:
                        continue
                    for b in range(kw):
                        j = reached_cols[q, b]
                        if j < 0:
                            continue
                        source = span(
                            products, row * columns.shape[1] + (a * kw + b) * c_out, c_out
                        )
                        target = span(flat, ((n * out_height + i) * out_width + j) * c_out, c_out)
                        for o in range(c_out):
                            target[o] += source[o]
                row += 1


@numba.njit(cache=True, nogil=True)
def conv2_scatter(x, w, out, strides, pads, lhs_dilation, rhs_dilation):
    """conv2 without groups by input positions, on register tiles: each TILE neighbouring
    positions of an input row and each filter tap (a, b) give TILE vectors of `lanes` output
    channels, sum over c of x[n, r, q, c] * w[a, b, c, :], added into the outputs they reach.
    For convs whose output has more positions than their input (an input gradient: the
    cotangent convolved with the flipped filters, its padding the window's), where a conv by
    output positions would multiply the padding's zeros. conv2_col2im's products without its
    columns: W10's second layer's input gradient, in one process, 0.52 against 0.76 ms.
    Each reached output column advances by the same step along a tile for a whole tile;
    taps where it does not (strides that skip some input columns, the edges) go position by
    position. Outputs of half a vector's channels (8 in float32) pair neighbouring taps in
    full vectors (_scatter_tiles)."""
    n_images, height, width, c_in = x.shape
    kh, kw, _, c_out = w.shape
    out_height, out_width = out.shape[1], out.shape[2]
    if out.shape[0] != n_images or w.shape[2] != c_in or out.shape[3] != c_out:
        raise ValueError("conv2_scatter: the input's, filters', output's shapes do not agree")
    flat = view(out, (out.size,))
    for k in range(flat.shape[0]):
        flat[k] = 0
    rows = _reached(height, kh, out_height, strides[0], pads[0], lhs_dilation[0], rhs_dilation[0])
    columns = _reached(width, kw, out_width, strides[1], pads[1], lhs_dilation[1], rhs_dilation[1])
    steps = _tile_steps(columns)
    images, filters = view(x, (x.size,)), view(w, (w.size,))
    tables = (rows, columns, steps)
    geometry = (n_images, height, width, c_in, out_height, out_width, c_out, kh, kw)
    # conv2_tiles' dispatch over lanes, written again (Numba does not cache a helper that
    # takes another as an argument); outputs of half a vector pair their taps.
    roles = _tap_roles(columns, steps, c_out * out.itemsize == 32)
    if out.itemsize == 4:  # 64-byte vectors, then 32-byte ones, then one lane
        packs = (
            (_paired_taps(w, 16), _stacked_rows(w, roles, 16)) if c_out == 8 else (filters, filters)
        )
        first = _scatter_tiles(images, filters, packs, flat, tables, geometry, 0, 16, 32, roles)
        first = _scatter_tiles(images, filters, packs, flat, tables, geometry, first, 8, 16, roles)
    else:
        packs = (
            (_paired_taps(w, 8), _stacked_rows(w, roles, 8)) if c_out == 4 else (filters, filters)
        )
        first = _scatter_tiles(images, filters, packs, flat, tables, geometry, 0, 8, 16, roles)
        first = _scatter_tiles(images, filters, packs, flat, tables, geometry, first, 4, 8, roles)
    _scatter_tiles(images, filters, packs, flat, tables, geometry, first, 1, 2, roles)


@numba.njit(nogil=True)
def _tap_roles(columns, steps, paired):
    """roles[t, b] for the taps of tile t: 2 where taps b and b + 1 go as a pair (both move
    one output column per input position, b + 1 one column behind b), 1 for that b + 1, 0
    for a tap alone (all of them unless `paired`)."""
    tiles, kw = steps.shape
    roles = np.zeros((tiles, kw), np.int64)
    for tile in range(tiles if paired else 0):
        q, b = tile * TILE, 0
        while b + 1 < kw:
            pair = steps[tile, b] == 1 and steps[tile, b + 1] == 1
            if pair and columns[q, b + 1] == columns[q, b] - 1:
                roles[tile, b], roles[tile, b + 1] = 2, 1
                b += 1
            b += 1
    return roles


@numba.njit(nogil=True)
def _paired_taps(w, lanes):
    """The filters (kh, kw, C_in, C_out = lanes / 2) laid out for conv2_scatter's paired
    taps: at tap (a, b) and input channel c, the `lanes` values w[a, b + 1, c, :] then
    w[a, b, c, :] (b + 1 reaches the output column before the one b reaches)."""
    kh, kw, c_in, c_out = w.shape
    packed = np.zeros(kh * kw * c_in * lanes, w.dtype)
    for a in range(kh):
        for b in range(kw - 1):
            for c in range(c_in):
                at = ((a * kw + b) * c_in + c) * lanes
                for o in range(c_out):
                    packed[at + o] = w[a, b + 1, c, o]
                    packed[at + c_out + o] = w[a, b, c, o]
    return packed


@numba.njit(nogil=True)
def _stacked_rows(w, roles, lanes):
    """The filters (kh, kw, C_in, C_out = lanes / 2) laid out for conv2_scatter's lone taps
    taken two filter rows at a time: at tap (a, b) and input channel c, the `lanes` values
    w[a, b, c, :] then w[a + 1, b, c, :], for the columns b where some tile has a lone tap
    (`roles`, from _tap_roles; zeros elsewhere and for the last row)."""
    kh, kw, c_in, c_out = w.shape
    stacked = np.zeros(kh * kw * c_in * lanes, w.dtype)
    for b in range(kw):
        lone = False
        for tile in range(roles.shape[0]):
            lone = lone or roles[tile, b] == 0
        for a in range(kh - 1 if lone else 0):
            for c in range(c_in):
                at = ((a * kw + b) * c_in + c) * lanes
                for o in range(c_out):
                    stacked[at + o] = w[a, b, c, o]
                    stacked[at + c_out + o] = w[a + 1, b, c, o]
    return stacked


@numba.njit(nogil=True)
def _tile_steps(columns):
    """steps[t, b]: how far the output column that tap b reaches moves from one input column
    to the next along tile t (input columns t * TILE ... t * TILE + TILE - 1), when it is
    reached from all of them and moves evenly; 0 otherwise."""
    width, window = columns.shape
    steps = np.zeros((width // TILE, window), np.int64)
    for t in range(width // TILE):
        for b in range(window):
            first, second = columns[t * TILE, b], columns[t * TILE + 1, b]
            step = second - first
            even = first >= 0 and step > 0
            for k in range(2, TILE):
                even = even and columns[t * TILE + k, b] == first + k * step
            steps[t, b] = step if even else 0
    return steps


@numba.njit(nogil=True, _nrt=False)
def _scatter_tiles(images, filters, packs, flat, tables, geometry, first, lanes, wide, roles):
    """conv2_scatter's sums for the output channels first, first + lanes, ... that fit in
    whole vectors of `lanes`. The next channel it did not do.

    Outputs of `lanes` channels that fill half a vector of `wide` lanes (8 of 16 in float32)
    pair their taps (`packs`: _paired_taps and _stacked_rows; else not read): taps b + 1 and b of a
    filter row reach output columns j - 1 and j from the same input position, side by side
    in NHWC, so one vector of `wide` lanes holds both. Position k of a tile then fills
    columns j - 1 + k and j + k, overlapping its neighbours' vectors by half: the
    overlapping halves are added in registers (vstraddle, one shuffle) and each output
    element is read and written once. Where the columns do not advance one per position
    (strides, the edges) the taps go one at a time (`roles`, from _tap_roles), and before the
    pairs: a pair's wide loads then find the lone tap's narrow stores in the cache, not half
    of one in the store buffer (measured: 186 against 236 us with the lone tap last). W10's
    second layer's input gradient (5 x 5 taps, 8 channels) alone: 220 -> 160-175 us, and
    140-145 us with two pairs at a time where a row has them (_sixteen_products). A lone tap
    (the last column of a 5-wide filter) would fill half a vector: filter rows a and a + 1
    (a even) take theirs together, one vector holding both rows' products of an input
    position, its halves added to two output rows (_stacked_rows).

    No reference counting (_nrt=False): it allocates nothing, and the counts Numba adds
    around each array passed to a callee (an atomic NRT call each) cost more than a tile's
    products (measured: 90 against 39 ns per tap through a callee)."""
    numba.literally(lanes)
    numba.literally(wide)
    rows, columns, steps = tables
    packed, stacked = packs
    n_images, height, width, c_in, out_height, out_width, c_out, kh, kw = geometry
    paired = first == 0 and lanes == c_out and wide == 2 * lanes
    stacking = paired and wide * flat.itemsize == 64  # `packs` built (conv2_scatter)
    o = first
    while o + lanes <= c_out:
        for n in range(n_images):
            for r in range(height):
                x_row = (n * height + r) * width * c_in
                for a in range(kh):
                    i = rows[r, a]
                    if i < 0:
                        continue
                    out_row = (n * out_height + i) * out_width * c_out + o
                    # lone taps two filter rows at a time: the next row's output row, if this
                    # row takes its lone taps; whether the row before took this row's
                    below = -1
                    if stacking and a % 2 == 0 and a + 1 < kh and rows[r, a + 1] >= 0:
                        below = (n * out_height + rows[r, a + 1]) * out_width * c_out + o
                    taken = stacking and a % 2 == 1 and rows[r, a - 1] >= 0
                    for tile in range(width // TILE):
                        q, at = tile * TILE, x_row + tile * TILE * c_in
                        # the taps alone first: a pair's wide loads then read their stores
                        # from the cache, not half of one from the store buffer
                        done = -1  # the pair that went with the one before it
                        for phase in range(2 if paired else 1):
                            for b in range(kw):
                                if roles[tile, b] != phase * 2 or b == done:
                                    continue
                                if phase == 1:
                                    p_at = (a * kw + b) * c_in * wide
                                    t = out_row + columns[q, b + 1] * c_out
                                    if b + 2 < kw and roles[tile, b + 2] == 2:
                                        # two pairs: 16 FMA chains, x read once for both
                                        p_next = p_at + 2 * c_in * wide
                                        first, second = _sixteen_products(
                                            images, at, c_in, packed, p_at, p_next, wide
                                        )
                                        _add_pair_tile(flat, t, first, wide)
                                        t = out_row + columns[q, b + 3] * c_out
                                        _add_pair_tile(flat, t, second, wide)
                                        done = b + 2
                                        continue
                                    products = _eight_products(
                                        images, at, c_in, packed, p_at, wide, wide
                                    )
                                    _add_pair_tile(flat, t, products, wide)
                                    continue
                                w_at = (a * kw + b) * c_in * c_out + o
                                step = steps[tile, b] * c_out
                                if step == 0:
                                    spans = (x_row, out_row, q, q + TILE, c_in, c_out)
                                    _scatter_positions(
                                        images, filters, flat, columns, spans, b, w_at, lanes
                                    )
                                    continue
                                if taken:
                                    continue
                                if below >= 0:
                                    s_at = (a * kw + b) * c_in * wide
                                    both = _eight_products(
                                        images, at, c_in, stacked, s_at, wide, wide
                                    )
                                    t = columns[q, b] * c_out
                                    _add_stacked_tile(flat, out_row + t, below + t, step, both)
                                    continue
                                a0, a1, a2, a3, a4, a5, a6, a7 = _eight_products(
                                    images, at, c_in, filters, w_at, c_out, lanes
                                )
                                t = out_row + columns[q, b] * c_out
                                vaddto(flat, t, a0)
                                vaddto(flat, t + step, a1)
                                vaddto(flat, t + 2 * step, a2)
                                vaddto(flat, t + 3 * step, a3)
                                vaddto(flat, t + 4 * step, a4)
                                vaddto(flat, t + 5 * step, a5)
                                vaddto(flat, t + 6 * step, a6)
                                vaddto(flat, t + 7 * step, a7)
                    if width % TILE == 0:  # (a call costs ~30 ns even when it does nothing)
                        continue
                    spans = (x_row, out_row, width - width % TILE, width, c_in, c_out)
                    for b in range(kw):
                        w_at = (a * kw + b) * c_in * c_out + o
                        _scatter_positions(images, filters, flat, columns, spans, b, w_at, lanes)
        o += lanes
    return o


@numba.njit(nogil=True, _nrt=False)
def _add_pair_tile(flat, target, tile, lanes):
    """A tile of paired taps (_scatter_tiles) added into the output from `target` (column
    j - 1): vector k holds columns j - 1 + k and j + k, so columns j - 1 + 2m and j + 2m
    get vector 2m plus the halves of vectors 2m - 1 and 2m + 1 that straddle it."""
    a0, a1, a2, a3, a4, a5, a6, a7 = tile
    vaddto(flat, target, vadd(a0, vstraddle(vzeros(flat, lanes), a1)))
    vaddto(flat, target + lanes, vadd(a2, vstraddle(a1, a3)))
    vaddto(flat, target + 2 * lanes, vadd(a4, vstraddle(a3, a5)))
    vaddto(flat, target + 3 * lanes, vadd(a6, vstraddle(a5, a7)))
    vaddto(flat, target + 4 * lanes, vupper(a7))


@numba.njit(nogil=True, _nrt=False)
def _add_stacked_tile(flat, this_row, next_row, step, tile):
    """A tile of two filter rows' lone taps (_scatter_tiles, _stacked_rows) added into the
    output: position k's lower half (filter row a) at `this_row` + k * step, its upper half
    (filter row a + 1) at `next_row` + k * step."""
    for k in range(TILE):
        vaddto(flat, this_row + k * step, vlower(tile[k]))
        vaddto(flat, next_row + k * step, vupper(tile[k]))


@numba.njit(nogil=True, _nrt=False)
def _sixteen_products(images, at, c_in, packed, p_at, q_at, lanes):
    """_eight_products for two pairs of taps at once (`packed` from `p_at` and `q_at`): each
    x read once for both, 16 accumulators."""
    numba.literally(lanes)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzeros(packed, lanes)
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = a0
    for c in range(c_in):
        u, v = vload(packed, p_at + c * lanes, lanes), vload(packed, q_at + c * lanes, lanes)
        x0, x1 = load(images, at + c), load(images, at + c_in + c)
        x2, x3 = load(images, at + 2 * c_in + c), load(images, at + 3 * c_in + c)
        x4, x5 = load(images, at + 4 * c_in + c), load(images, at + 5 * c_in + c)
        x6, x7 = load(images, at + 6 * c_in + c), load(images, at + 7 * c_in + c)
        a0, b0 = vfma(a0, x0, u), vfma(b0, x0, v)
        a1, b1 = vfma(a1, x1, u), vfma(b1, x1, v)
        a2, b2 = vfma(a2, x2, u), vfma(b2, x2, v)
        a3, b3 = vfma(a3, x3, u), vfma(b3, x3, v)
        a4, b4 = vfma(a4, x4, u), vfma(b4, x4, v)
        a5, b5 = vfma(a5, x5, u), vfma(b5, x5, v)
        a6, b6 = vfma(a6, x6, u), vfma(b6, x6, v)
        a7, b7 = vfma(a7, x7, u), vfma(b7, x7, v)
    return (a0, a1, a2, a3, a4, a5, a6, a7), (b0, b1, b2, b3, b4, b5, b6, b7)


@numba.njit(nogil=True, _nrt=False)
def _eight_products(images, at, c_in, weights, w_at, w_step, lanes):
    """A register tile of conv2_scatter: for TILE input positions (x from `at`, C_in apart)
    the sums over c of x[p, c] * weights[w_at + c * w_step : ... + lanes], as TILE vectors."""
    numba.literally(lanes)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzeros(weights, lanes)
    for c in range(c_in):
        row = vload(weights, w_at + c * w_step, lanes)
        a0 = vfma(a0, load(images, at + c), row)
        a1 = vfma(a1, load(images, at + c_in + c), row)
        a2 = vfma(a2, load(images, at + 2 * c_in + c), row)
        a3 = vfma(a3, load(images, at + 3 * c_in + c), row)
        a4 = vfma(a4, load(images, at + 4 * c_in + c), row)
        a5 = vfma(a5, load(images, at + 5 * c_in + c), row)
        a6 = vfma(a6, load(images, at + 6 * c_in + c), row)
        a7 = vfma(a7, load(images, at + 7 * c_in + c), row)
    return a0, a1, a2, a3, a4, a5, a6, a7


@numba.njit(nogil=True, _nrt=False)
def _scatter_positions(images, filters, flat, columns, spans, b, w_at, lanes):
    """The products of input positions p = first ... stop - 1 of a row through tap column b
    (w from `w_at`), each added to the output's lanes at the column it reaches (if any), one
    position at a time. `spans`: (the input row's offset, the output row's, first, stop,
    C_in, C_out)."""
    numba.literally(lanes)
    x_row, out_row, first, stop, c_in, c_out = spans
    for p in range(first, stop):
        j = columns[p, b]
        if j < 0:
            continue
        at, target = x_row + p * c_in, out_row + j * c_out
        total = vzeros(flat, lanes)
        for c in range(c_in):
            total = vfma(total, load(images, at + c), vload(filters, w_at + c * c_out, lanes))
        vaddto(flat, target, total)


@numba.njit(nogil=True)
def _reached(size, window, out_size, stride, pad, lhs_dilation, rhs_dilation):
    """reached[p, k]: the output position that input position p reaches through window tap k
    along one axis of a convolution (its output position o reads the lhs-dilated, padded input
    at o * stride + k * rhs_dilation - pad), or -1 when it reaches none."""
    reached = np.empty((size, window), np.int64)
    for p in range(size):
        for k in range(window):
            o = p * lhs_dilation + pad - k * rhs_dilation
            inside = o >= 0 and o % stride == 0 and o // stride < out_size
            reached[p, k] = o // stride if inside else -1
    return reached
