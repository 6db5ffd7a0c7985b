"""A conv's gradient with respect to its filters (ops/conv.py's conv_filters) by register
tiles straight from x and the cotangent in NHWC (conv2_filters), and by window rows
(conv2_windows). The tile plan and steps they share are conv_tiles.py's.
"""

import numba
import numpy as np
from numba.extending import overload

from jitgrad.backend.numba.conv_tiles import (
    TILE,
    WIDE_TILE,
    _select_tile,
    _tile_fmas,
    _tile_of,
    _tile_plan,
)
from jitgrad.backend.numba.runtime import span, view
from jitgrad.backend.numba.simd import (
    load,
    vfma,
    vload,
    vlower,
    vlowmask,
    vselect,
    vstore,
    vstraddle,
    vupper,
    vzeros,
)


@numba.njit(cache=True, nogil=True)
def conv2_filters(x, g, out, prepared, strides, pads, lhs_dilation, rhs_dilation, groups):
    """A 2-D conv's gradient with respect to its filters (ops/conv.py's conv_filters), for
    `groups` feature groups of cg = C_in / groups input and og = C_out / groups output
    channels:

        out[a, b, c, q * og + o] = sum over n, i, j of
            xp[n, i * strides[0] + a * d[0], j * strides[1] + b * d[1], q * cg + c]
            * g[n, i, j, q * og + o]

    with xp = x dilated by `lhs_dilation` and padded by `pads` (copied into `prepared`,
    caller-allocated, when either is not trivial; then of at least N * reach_h * reach_w * C
    elements) and d = `rhs_dilation`. Straight from x and g in NHWC: no transposes, no im2col.
    The filter taps (a, b, c), flattened, are taken TILE at a time against `lanes` output
    channels of one group: each step over (n, i, j) loads the cotangent's lanes once and adds
    TILE products into accumulators kept in SIMD registers (simd.py), so the work is
    FMA-bound, not load-bound, and sums run in the output's type, fused, as BLAS sums. W10's
    filter gradients (float32, same process): 0.33 ms for the first layer against 0.78 for
    transposes plus conv2_windows, 0.35 against 0.61 for the second."""
    n_images, _, _, c_in = x.shape
    _, out_h, out_w, c_out = g.shape
    kh, kw = out.shape[0], out.shape[1]
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError("conv2_filters: the groups do not divide the channels")
    if g.shape[0] != n_images or out.shape[2] * groups != c_in or out.shape[3] != c_out:
        raise ValueError("conv2_filters: the input's, cotangent's, output's shapes do not agree")
    if out_h == 0 or out_w == 0 or n_images == 0:
        out[...] = 0
        return
    window, spatial = (kh, kw), (out_h, out_w)
    plan = (prepared, spatial, window, strides, pads, lhs_dilation, rhs_dilation, "conv2_filters")
    cg, og = c_in // groups, c_out // groups
    source, taps, geometry = _tile_plan(x, c_out, cg, *plan)
    cotangents, flat_out = view(g, (g.size,)), view(out, (out.size,))
    narrow = c_out * out.itemsize == 32 and groups == 1 and out_w >= 2 and kw >= 2
    if narrow and strides[1] == 1 and rhs_dilation[1] == 1:  # half a vector: pairs of taps
        if c_in == 1 and kw == 5:  # a grayscale image's 5-wide filters: rows of 3 pairs
            row_step = taps[kw] if kh > 1 else 0
            if out.itemsize == 4:
                _five_wide_filter_pairs(source, cotangents, flat_out, geometry, kh, row_step, 16)
            else:
                _five_wide_filter_pairs(source, cotangents, flat_out, geometry, kh, row_step, 8)
            return
        pairs = _filter_pair_table(taps, kh, kw, c_in, c_out)
        if out.itemsize == 4:
            _filter_pairs(source, cotangents, flat_out, geometry, pairs, 16)
        else:
            _filter_pairs(source, cotangents, flat_out, geometry, pairs, 8)
        return
    for group in range(groups):
        first, last, shift = group * og, (group + 1) * og, group * cg
        # conv2_tiles' dispatch over lanes, written again: Numba does not cache a helper that
        # takes another (the tile loop) as an argument.
        if out.itemsize == 4:  # 64-byte vectors, then 32-byte ones, then one lane
            first = _filter_tiles(
                source, cotangents, flat_out, taps, geometry, first, last, shift, 16
            )
            first = _filter_tiles(
                source, cotangents, flat_out, taps, geometry, first, last, shift, 8
            )
        else:
            first = _filter_tiles(
                source, cotangents, flat_out, taps, geometry, first, last, shift, 8
            )
            first = _filter_tiles(
                source, cotangents, flat_out, taps, geometry, first, last, shift, 4
            )
        _filter_tiles(source, cotangents, flat_out, taps, geometry, first, last, shift, 1)


@numba.njit(nogil=True)
def _filter_pair_table(taps, kh, kw, c_in, c_out):
    """conv2_filters' pairs of taps (a, b, c) and (a, b + 1, c), b even, for _filter_pairs:
    x's offset of tap (a, b, c) from a window's first element, the same for the last
    column's products (one column back where b + 1 is past the window: its lanes are
    dropped, the read must stay inside x), and where the pair's outputs go in the flat
    filter gradient (tap b + 1's, -1 past the window; tap b's). Padded with pairs that go
    nowhere to a whole number of tiles."""
    count = kh * ((kw + 1) // 2) * c_in
    count += -count % TILE
    offsets, rights = np.zeros(count, np.int64), np.zeros(count, np.int64)
    lows, highs = np.full(count, -1, np.int64), np.full(count, -1, np.int64)
    k = 0
    for a in range(kh):
        for b in range(0, kw, 2):
            for c in range(c_in):
                tap = (a * kw + b) * c_in + c
                offsets[k], rights[k], highs[k] = taps[tap], taps[tap], tap * c_out
                if b + 1 < kw:
                    lows[k] = (tap + c_in) * c_out
                else:
                    rights[k] = taps[tap] - c_in
                k += 1
    return offsets, rights, lows, highs


@numba.njit(nogil=True, _nrt=False)
def _filter_pairs(source, cotangents, flat_out, geometry, pairs, lanes):
    """conv2_filters for outputs of half a vector's channels (8 in float32), stride 1 and no
    dilation along the rows: one vector of `lanes` holds the cotangents of two neighbouring
    positions q and q + 1, G = [g(q), g(q + 1)], and x at position q + 1 + b times G adds
    x(q + 1 + b) g(q) to tap b + 1's gradient (lower half) and x(q + 1 + b) g(q + 1) to tap
    b's (upper half): over q = -1 ... out_w - 1 each half is its tap's whole sum, so pairs
    of taps (_filter_pair_table) go in full vectors. The two ends of a row hold one
    position each (q = -1: g(0) only; q = out_w - 1: g(out_w - 1) only): there the other
    half keeps its value (vselect), so an infinite x never meets a zero it does not
    multiply. W10's first layer's filter gradient (5 x 5 x 1 x 8) alone: 145 -> 103 us (16
    pairs a tile instead of 8: 155 us, their offsets no longer fit the general registers)."""
    numba.literally(lanes)
    n_images, rows, pitch, c_in, out_h, out_w, c_out, step_h, _ = geometry
    offsets, rights, lows, highs = pairs
    lower, zeros = vlowmask(flat_out, lanes), vzeros(flat_out, lanes)
    for k in range(0, offsets.size, TILE):
        taps, last_taps = _tile_of(offsets, k), _tile_of(rights, k)
        tile = (zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros)
        for n in range(n_images):
            for i in range(out_h):
                at = (n * rows + i * step_h) * pitch * c_in
                g_at = (n * out_h + i) * out_w * c_out
                left = vstraddle(zeros, vload(cotangents, g_at, lanes))  # [0, g(0)]
                tile = _select_tile(lower, tile, _tile_fmas(tile, source, at, taps, left))
                for _ in range(out_w - 1):
                    at += c_in
                    both = vload(cotangents, g_at, lanes)
                    tile = _tile_fmas(tile, source, at, taps, both)
                    g_at += c_out
                right = vstraddle(vload(cotangents, g_at - c_out, lanes), zeros)  # [g(end), 0]
                ends = _tile_fmas(tile, source, at + c_in, last_taps, right)
                tile = _select_tile(lower, ends, tile)
        for m in range(TILE):
            if lows[k + m] >= 0:
                vstore(flat_out, lows[k + m], vlower(tile[m]))
            if highs[k + m] >= 0:
                vstore(flat_out, highs[k + m], vupper(tile[m]))


@numba.njit(nogil=True, _nrt=False)
def _five_wide_filter_pairs(source, cotangents, flat_out, geometry, kh, row_step, lanes):
    """_filter_pairs for one input channel and 5-wide filters (LeNet's first layer), with
    every tap's address a constant away from its filter row's: the pairs of a row are taps
    (0, 1), (2, 3) and (4) at x offsets 0, 2 and 4 from the row (3, one column back, at a
    row's last position, where tap 4 has no right neighbour). Filter rows go three at a time
    (9 accumulators), the last one or two in a tile of two rows (a lone last row paired
    with itself, its copy not stored). _filter_pairs' table of 8 offsets a tile took 8
    general registers, twice over as LLVM unrolled the loop by two, and the rest were
    reloaded from the stack before each FMA: here a tile takes one register per filter row.
    W10's first filter gradient alone (batch 32, one core, alternated in one process): 113
    -> 87 us, equal bit for bit (each sum adds the same terms in the same order)."""
    numba.literally(lanes)
    lower, z = vlowmask(flat_out, lanes), vzeros(flat_out, lanes)
    first = 0
    while first < kh:
        if kh - first >= 3:
            rows = (first * row_step, (first + 1) * row_step, (first + 2) * row_step)
            nine = (z, z, z, z, z, z, z, z, z)
            tile = _filter_rows(source, cotangents, geometry, rows, nine, lower, z, lanes)
            _store_pair_rows(flat_out, tile, first, 3, geometry[6])
            first += 3
        else:
            last = min(first + 1, kh - 1)
            rows = (first * row_step, last * row_step)
            six = (z, z, z, z, z, z)
            tile = _filter_rows(source, cotangents, geometry, rows, six, lower, z, lanes)
            _store_pair_rows(flat_out, tile, first, kh - first, geometry[6])
            first = kh


@numba.njit(nogil=True, _nrt=False)
def _filter_rows(source, cotangents, geometry, rows, tile, lower, zeros, lanes):
    """The sums of _five_wide_filter_pairs' tile for the filter rows at x offsets `rows`
    (two or three), three pairs a row, added to `tile`. A row's positions go in blocks of
    4 after the rest: an inner loop of a constant trip count, which LLVM lays out as
    straight-line code. With the run-time count alone the same tiles took 0.89 of
    _filter_pairs' time instead of 0.77 (with _filter_pairs' own tiles blocks made no
    difference: their offsets, in registers, crowd the unrolled code)."""
    n_images, height, pitch, _, out_h, out_w, c_out, step_h, _ = geometry
    for n in range(n_images):
        for i in range(out_h):
            at = (n * height + i * step_h) * pitch
            g_at = (n * out_h + i) * out_w * c_out
            left = vstraddle(zeros, vload(cotangents, g_at, lanes))  # [0, g(0)]
            tile = _select_tiles(lower, tile, _rows_of_pairs(tile, source, at, rows, left, 4))
            for _ in range((out_w - 1) % 4):
                at += 1
                tile = _rows_of_pairs(tile, source, at, rows, vload(cotangents, g_at, lanes), 4)
                g_at += c_out
            for _ in range((out_w - 1) // 4):
                for _ in range(4):
                    at += 1
                    both = vload(cotangents, g_at, lanes)
                    tile = _rows_of_pairs(tile, source, at, rows, both, 4)
                    g_at += c_out
            right = vstraddle(vload(cotangents, g_at - c_out, lanes), zeros)  # [g(end), 0]
            ends = _rows_of_pairs(tile, source, at + 1, rows, right, 3)
            tile = _select_tiles(lower, ends, tile)
    return tile


def _rows_of_pairs(tile, source, at, rows, vector, lone):
    """A step of two or three filter rows' pairs (typed by `_rows_of_pairs_typed`)."""


@overload(_rows_of_pairs, jit_options={"_nrt": False})
def _rows_of_pairs_typed(tile, source, at, rows, vector, lone):
    """A step of a tile of filter rows' pairs: x at offsets 0, 2 and `lone` (a constant at
    each call: 4, or 3 at a row's end) from each row (`at` + rows[r]) times `vector`, fused
    into the tile's accumulators, three a row."""
    if rows.count == 3:
        return lambda tile, source, at, rows, vector, lone: (
            _pairs_of_row(tile[0:3], source, at + rows[0], vector, lone)
            + _pairs_of_row(tile[3:6], source, at + rows[1], vector, lone)
            + _pairs_of_row(tile[6:9], source, at + rows[2], vector, lone)
        )
    return lambda tile, source, at, rows, vector, lone: (
        _pairs_of_row(tile[0:3], source, at + rows[0], vector, lone)
        + _pairs_of_row(tile[3:6], source, at + rows[1], vector, lone)
    )


@numba.njit(nogil=True, _nrt=False)
def _pairs_of_row(acc, source, row, vector, lone):
    """One filter row's three pair accumulators plus x(row), x(row + 2), x(row + lone)
    times `vector`."""
    return (
        vfma(acc[0], load(source, row), vector),
        vfma(acc[1], load(source, row + 2), vector),
        vfma(acc[2], load(source, row + lone), vector),
    )


def _select_tiles(mask, a, b):
    """Lane by lane, each accumulator of tile a where `mask`, else b's (typed by
    `_select_tiles_typed`)."""


@overload(_select_tiles, jit_options={"_nrt": False})
def _select_tiles_typed(mask, a, b):
    """_select_tiles for tiles of 6 or 9 accumulators, three at a time."""
    if a.count == 9:
        return lambda mask, a, b: (
            _select_three(mask, a[0:3], b[0:3])
            + _select_three(mask, a[3:6], b[3:6])
            + _select_three(mask, a[6:9], b[6:9])
        )
    return lambda mask, a, b: (
        _select_three(mask, a[0:3], b[0:3]) + _select_three(mask, a[3:6], b[3:6])
    )


@numba.njit(nogil=True, _nrt=False)
def _select_three(mask, a, b):
    """_select_tiles for one filter row's three accumulators."""
    return (vselect(mask, a[0], b[0]), vselect(mask, a[1], b[1]), vselect(mask, a[2], b[2]))


@numba.njit(nogil=True, _nrt=False)
def _store_pair_rows(flat_out, tile, first, count, c_out):
    """Filter rows first ... first + count - 1 of a 5-wide, one-channel filter gradient from
    a tile of pair accumulators (three a row): pair p holds tap 2p + 1 in its lower half, tap
    2p in its upper half (_filter_pairs)."""
    for r in range(count):
        for p in range(3):
            tap = (first + r) * 5 + 2 * p
            vstore(flat_out, tap * c_out, vupper(tile[3 * r + p]))
            if p < 2:
                vstore(flat_out, (tap + 1) * c_out, vlower(tile[3 * r + p]))


@numba.njit(nogil=True)
def _filter_tiles(source, cotangents, flat_out, taps, geometry, first, last, shift, lanes):
    """conv2_filters' outputs for the output channels first, first + lanes, ... (one group's,
    below `last`, whose input channels start `shift` into each position) that fit in whole
    vectors of `lanes`: TILE taps at a time, then one at a time. The next channel it did
    not do."""
    numba.literally(lanes)
    n_images, rows, pitch, c_in, out_h, out_w, c_out, step_h, step_w = geometry
    count, x_step = taps.size, step_w * c_in
    o = first
    while o + lanes <= last:
        k = 0
        while k + TILE <= count:
            if k + WIDE_TILE <= count and taps[k + WIDE_TILE - 1] == taps[k] + WIDE_TILE - 1:
                tap = taps[k]
                _filter_wide_tile(source, cotangents, flat_out, tap, k, geometry, o, shift, lanes)
                k += WIDE_TILE
                continue
            tile_taps, zeros = _tile_of(taps, k), vzeros(flat_out, lanes)
            tile = (zeros, zeros, zeros, zeros, zeros, zeros, zeros, zeros)
            for n in range(n_images):
                for i in range(out_h):
                    at = (n * rows + i * step_h) * pitch * c_in + shift
                    g_at = (n * out_h + i) * out_w * c_out + o
                    for _ in range(out_w):
                        cotangent = vload(cotangents, g_at, lanes)
                        tile = _tile_fmas(tile, source, at, tile_taps, cotangent)
                        at += x_step
                        g_at += c_out
            for m in range(TILE):
                vstore(flat_out, (k + m) * c_out + o, tile[m])
            k += TILE
        while k < count:
            tap, total = taps[k], vzeros(flat_out, lanes)
            for n in range(n_images):
                for i in range(out_h):
                    at = (n * rows + i * step_h) * pitch * c_in + shift + tap
                    g_at = (n * out_h + i) * out_w * c_out + o
                    for _ in range(out_w):
                        total = vfma(total, load(source, at), vload(cotangents, g_at, lanes))
                        at += x_step
                        g_at += c_out
            vstore(flat_out, k * c_out + o, total)
            k += 1
        o += lanes
    return o


@numba.njit(nogil=True, _nrt=False)
def _filter_wide_tile(source, cotangents, flat_out, tap, k, geometry, o, shift, lanes):
    """conv2_filters' sums for WIDE_TILE taps k, k + 1, ... whose elements lie side by side in x
    (from offset `tap` of each window: a filter row's neighbouring columns' channels), against
    `lanes` output channels from o: twice the accumulators of a TILE, so the FMAs never wait
    on each other's results, and one register addresses all the taps (W10's second layer's
    filter gradient (5 x 5 x 8 x 16) alone: 157 -> 105 us)."""
    numba.literally(lanes)
    n_images, rows, pitch, c_in, out_h, out_w, c_out, step_h, step_w = geometry
    x_step = step_w * c_in
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = vzeros(
        flat_out, lanes
    )
    for n in range(n_images):
        for i in range(out_h):
            at = (n * rows + i * step_h) * pitch * c_in + shift + tap
            g_at = (n * out_h + i) * out_w * c_out + o
            for _ in range(out_w):
                cotangent = vload(cotangents, g_at, lanes)
                a0 = vfma(a0, load(source, at + 0), cotangent)
                a1 = vfma(a1, load(source, at + 1), cotangent)
                a2 = vfma(a2, load(source, at + 2), cotangent)
                a3 = vfma(a3, load(source, at + 3), cotangent)
                a4 = vfma(a4, load(source, at + 4), cotangent)
                a5 = vfma(a5, load(source, at + 5), cotangent)
                a6 = vfma(a6, load(source, at + 6), cotangent)
                a7 = vfma(a7, load(source, at + 7), cotangent)
                a8 = vfma(a8, load(source, at + 8), cotangent)
                a9 = vfma(a9, load(source, at + 9), cotangent)
                a10 = vfma(a10, load(source, at + 10), cotangent)
                a11 = vfma(a11, load(source, at + 11), cotangent)
                a12 = vfma(a12, load(source, at + 12), cotangent)
                a13 = vfma(a13, load(source, at + 13), cotangent)
                a14 = vfma(a14, load(source, at + 14), cotangent)
                a15 = vfma(a15, load(source, at + 15), cotangent)
                at += x_step
                g_at += c_out
    vstore(flat_out, k * c_out + o, a0)
    vstore(flat_out, (k + 1) * c_out + o, a1)
    vstore(flat_out, (k + 2) * c_out + o, a2)
    vstore(flat_out, (k + 3) * c_out + o, a3)
    vstore(flat_out, (k + 4) * c_out + o, a4)
    vstore(flat_out, (k + 5) * c_out + o, a5)
    vstore(flat_out, (k + 6) * c_out + o, a6)
    vstore(flat_out, (k + 7) * c_out + o, a7)
    vstore(flat_out, (k + 8) * c_out + o, a8)
    vstore(flat_out, (k + 9) * c_out + o, a9)
    vstore(flat_out, (k + 10) * c_out + o, a10)
    vstore(flat_out, (k + 11) * c_out + o, a11)
    vstore(flat_out, (k + 12) * c_out + o, a12)
    vstore(flat_out, (k + 13) * c_out + o, a13)
    vstore(flat_out, (k + 14) * c_out + o, a14)
    vstore(flat_out, (k + 15) * c_out + o, a15)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def conv2_windows(x, w, out, taps):
    """conv2 with stride 1, no padding, no dilation and no groups, by one dot product per
    output element and window row: a filter gradient (the batch is the channel axis, the
    cotangent the filter: few output positions, windows as large as the image), where
    im2col copies every window whole (W10's first layer: 25 x 36,864 elements) for a GEMM of
    25 x 8 outputs. Window row a of output (i, j) reads x[n, i + a, j : j + kw, :], which is
    contiguous, against the filters' row a laid out per output channel in `taps` (kh, c_out,
    kw * c_in; caller-allocated scratch). The dot products reassociate and fuse their
    multiply-adds, as BLAS does (Numba emitted separate multiplies and adds: 5-15% slower)."""
    kh, kw, c_in, c_out = w.shape
    n_images, out_height, out_width = out.shape[0], out.shape[1], out.shape[2]
    if (
        x.shape[0] != n_images
        or x.shape[1] != out_height + kh - 1
        or x.shape[2] != out_width + kw - 1
        or x.shape[3] != c_in
        or out.shape[3] != c_out
    ):
        raise ValueError("conv2_windows: the input's, filters', output's shapes do not agree")
    if taps.shape[0] != kh or taps.shape[1] != c_out or taps.shape[2] != kw * c_in:
        raise ValueError("conv2_windows: the taps scratch has the wrong shape")
    window_row = kw * c_in
    zero = np.zeros(1, out.dtype)[0]  # sums in the output's type, as BLAS
    for a in range(kh):
        for b in range(kw):
            for c in range(c_in):
                for o in range(c_out):
                    taps[a, o, b * c_in + c] = w[a, b, c, o]
    flat_taps = view(taps, (kh * c_out * window_row,))
    images = view(x, (x.size,))
    out[...] = 0
    # Window rows and filter rows are `span` views: no reference counting in the loops. Four
    # output channels at a time share each load of the window row (W10's filter gradients,
    # float32: 0.83 -> 0.63 and 0.87 -> 0.67 ms; with two window rows as well, 2-5% more).
    for n in range(n_images):
        for i in range(out_height):
            for a in range(kh):
                line = ((n * x.shape[1] + i + a) * x.shape[2]) * c_in
                for j in range(out_width):
                    window = span(images, line + j * c_in, window_row)
                    blocked = c_out - c_out % 4
                    for o in range(0, blocked, 4):
                        first = (a * c_out + o) * window_row
                        r0 = span(flat_taps, first, window_row)
                        r1 = span(flat_taps, first + window_row, window_row)
                        r2 = span(flat_taps, first + 2 * window_row, window_row)
                        r3 = span(flat_taps, first + 3 * window_row, window_row)
                        t0, t1, t2, t3 = zero, zero, zero, zero
                        for k in range(window_row):
                            v = window[k]
                            t0 += v * r0[k]
                            t1 += v * r1[k]
                            t2 += v * r2[k]
                            t3 += v * r3[k]
                        out[n, i, j, o] += t0
                        out[n, i, j, o + 1] += t1
                        out[n, i, j, o + 2] += t2
                        out[n, i, j, o + 3] += t3
                    for o in range(blocked, c_out):
                        row = span(flat_taps, (a * c_out + o) * window_row, window_row)
                        total = zero
                        for k in range(window_row):
                            total += window[k] * row[k]
                        out[n, i, j, o] += total
