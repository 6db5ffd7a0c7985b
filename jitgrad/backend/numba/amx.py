"""float32 matrix products on Intel's AMX tiles, as exact bfloat16 parts: kernels' large
float32 products on CPUs that have AMX (emit.py's op_matmul, `amx_matmul_into`).

AMX (Sapphire Rapids and later Xeons) multiplies bfloat16 tiles at ~16x the float32 FMA rate of
AVX-512 on the same core (3.1 TFLOP/s against ~175 GFLOP/s for OpenBLAS's sgemm, one core of
session 20's host), but bfloat16 keeps 8 of float32's 24 significand bits. Each float32 is
therefore cut into three bfloat16 parts, x = x0 + x1 + x2, by truncation: x0 is x's top 8
significand bits, x1 the next 8 of the remainder, x2 the last 8; all three are exact, and so is
every product of two parts (16 significand bits fit in float32). a @ b is then the sum of the
part products a_i @ b_j, which AMX accumulates in float32. Six of the nine are computed
(i + j <= 2); the three left out are below 2^-23 of |a_ik * b_kj| together (a1 b2 and a2 b1
at 2^-24 each, a2 b2 at 2^-32), and adding the six costs up to six float32 roundings where an
FMA costs one: a product term's error is up to ~8 unit roundoffs instead of one. Over a sum of
hundreds of terms both stay at float32's order (perf/amx_vs_blas.py and
tests/backend/test_amx.py check them against float64: 1.4-1.6e-7 of sum |a||b| on W3L's
products, OpenBLAS 1.2-3.3e-7); the bits differ from BLAS's, as two BLAS libraries' do.

What differs from BLAS:
- AMX's bfloat16 arithmetic loses the low bits of part products below ~2^-120 and drops them
  below 2^-126, so terms a_ik b_kj below ~2^-105 (2.5e-32) lose accuracy (measured, one term
  alone: 2^-104 off by 3.2e-7, 2^-108 by 5.7e-6, 2^-120 by 1.4e-2, 2^-128 zero), like a
  flush-to-zero mode 2^21 higher than float32's (XLA's CPU code flushes subnormals). Beside a
  term of 2^-80 or more, such terms weigh less than float32's rounding; where no term of a
  panel of C's columns can reach 2^-80 (the operands' largest exponents), the product goes to
  BLAS. A row of a whose elements are all that small beside others that are not still gets
  its outputs (tiny too) only to ~2^-105 absolutely.
- Infinities and NaNs do not survive the split (inf - inf is NaN): `matmul` reports an operand
  holding one, and `amx_matmul_into` multiplies by BLAS instead.
`jitgrad.config.amx = False` (JITGRAD_AMX=0) keeps every product on BLAS.

Layouts (uint32 words, each holding two bfloat16 of consecutive k; zero padding to whole tiles):
- a's parts: (3, M / 16, K / 32, 16, 16): per (row block, k block), a 16-row tile of 32 k;
- b's parts: (3, N / 16, K / 32, 16, 16): per (column block, k block), the tile AMX wants for a
  right operand: 16 rows of k pairs, each row the 16 columns' two consecutive k.

The product walks C in blocks of 2 x 2 tiles (32 x 32 floats in tmm0-3), the operand tiles in
tmm4-5 (a) and tmm6-7 (b). The operating system must let the process use AMX's state (Linux:
arch_prctl ARCH_REQ_XCOMP_PERM, `request_permission`): without it the first tile instruction
raises SIGILL: the emitter names these helpers only where `available()` said yes, in the
process that runs the kernel (kernels are emitted where they run).
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jitgrad.backend.numba.blas_threads import bind_blas_threads, set_blas_threads
from jitgrad.backend.numba.runtime import matmul_into

ROWS, K_TILE = 16, 32  # a tile: 16 rows of 32 bfloat16 (64 bytes)
PARTS = 3
_INT8, _INT64 = ir.IntType(8), ir.IntType(64)
_POINTER = ir.IntType(8).as_pointer()


# 1 once this process holds AMX's tile state: amx_matmul_into reads it (through the symbol
# below) before any tile instruction, so that code reached without `available()` (a kernel
# loaded by some path that skipped the emitter) falls back to BLAS instead of dying of SIGILL.
_PERMITTED = ctypes.c_int32(0)
_PERMITTED_SYMBOL = "jitgrad_amx_permitted"
ll.add_symbol(_PERMITTED_SYMBOL, ctypes.addressof(_PERMITTED))


def request_permission() -> bool:
    """Ask Linux for AMX's tile data state for this process (arch_prctl ARCH_REQ_XCOMP_PERM,
    XFEATURE_XTILEDATA); True when granted. Forked children inherit it."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    arch_prctl, request_xcomp_permission, tile_data = 158, 0x1023, 18  # x86-64 numbers
    return libc.syscall(arch_prctl, request_xcomp_permission, tile_data) == 0


@functools.cache
def available() -> bool:
    """Whether this process may run the tile code: the CPU (as LLVM sees it) has AMX-TILE and
    AMX-BF16, and the operating system granted the tile state (asked once per process)."""
    features = ll.get_host_cpu_features()
    granted = bool(features.get("amx-tile") and features.get("amx-bf16")) and request_permission()
    _PERMITTED.value = int(granted)
    return granted


@intrinsic
def _permitted(typingctx):
    """Whether `available()` said yes in this process (see _PERMITTED)."""

    def codegen(context, builder, signature, args):
        flag = builder.module.globals.get(_PERMITTED_SYMBOL)
        if flag is None:
            flag = ir.GlobalVariable(builder.module, ir.IntType(32), _PERMITTED_SYMBOL)
        return builder.icmp_signed("!=", builder.load(flag), ir.Constant(ir.IntType(32), 0))

    return types.boolean(), codegen


def _declare(builder, name, argument_types):
    function_type = ir.FunctionType(ir.VoidType(), argument_types)
    return cgutils.get_or_insert_function(builder.module, function_type, name)


def _tile_numbers(*tiles):
    if not all(isinstance(t, types.IntegerLiteral) for t in tiles):
        return None
    return [ir.Constant(_INT8, t.literal_value) for t in tiles]


@intrinsic
def _configure(typingctx, address):
    """ldtilecfg: load the tile configuration at `address` (64 bytes)."""

    def codegen(context, builder, signature, args):
        builder.call(
            _declare(builder, "llvm.x86.ldtilecfg", [_POINTER]),
            [builder.inttoptr(args[0], _POINTER)],
        )
        return context.get_dummy_value()

    return types.none(types.intp), codegen


@intrinsic
def _release(typingctx):
    """tilerelease: return the tile state to its initial, unused configuration."""

    def codegen(context, builder, signature, args):
        builder.call(_declare(builder, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _zero(typingctx, tile):
    numbers = _tile_numbers(tile)
    if numbers is None:
        return None

    def codegen(context, builder, signature, args):
        builder.call(_declare(builder, "llvm.x86.tilezero", [_INT8]), numbers)
        return context.get_dummy_value()

    return types.none(tile), codegen


def _tile_rows(llvm_name: str):
    """An intrinsic (tile, address, stride) moving a tile's 16 rows of 64 bytes, `stride`
    bytes apart in memory: tileloadd or tilestored."""

    def rows(typingctx, tile, address, stride):
        numbers = _tile_numbers(tile)
        if numbers is None:
            return None

        def codegen(context, builder, signature, args):
            function = _declare(builder, llvm_name, [_INT8, _POINTER, _INT64])
            builder.call(function, [numbers[0], builder.inttoptr(args[1], _POINTER), args[2]])
            return context.get_dummy_value()

        return types.none(tile, types.intp, types.intp), codegen

    return intrinsic(rows)


_load = _tile_rows("llvm.x86.tileloadd64")  # tile <- memory
_store = _tile_rows("llvm.x86.tilestored64")  # memory <- tile


@intrinsic
def _multiply(typingctx, c, a, b):
    """tdpbf16ps: tile c (16 x 16 float32) += tile a (16 x 32 bf16) @ tile b (pairs)."""
    numbers = _tile_numbers(c, a, b)
    if numbers is None:
        return None

    def codegen(context, builder, signature, args):
        builder.call(_declare(builder, "llvm.x86.tdpbf16ps", [_INT8] * 3), numbers)
        return context.get_dummy_value()

    return types.none(c, a, b), codegen


@intrinsic
def _float_bits(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float32 of the low 32 bits of an integer (Numba widens uint32 arithmetic to 64)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@numba.njit(inline="always")
def _split(x):
    """x's three bfloat16 parts, by truncation (x = x0 + x1 + x2 exactly, but where x2 would
    be subnormal), each as the top 16 bits of a uint32 (its low 16 bits zero)."""
    head = _float_bits(x) & np.uint32(0xFFFF0000)
    rest = x - _bits_float(head)
    middle = _float_bits(rest) & np.uint32(0xFFFF0000)
    last = _float_bits(rest - _bits_float(middle)) & np.uint32(0xFFFF0000)  # see _vector_parts
    return head, middle, last


_EXPONENT = np.uint32(0x7F800000)  # a float32's exponent bits: all ones for inf and NaN
_SPECIAL = 255  # the exponent field of an infinity or a NaN
# The exponent fields (biased by 127) of |a_ik| and |b_kj| sum to at least this where their
# product may reach 2^-80: far above the terms whose parts' products AMX loses (module notes).
_SMALLEST_LARGEST = 2 * 127 - 80


@numba.njit(inline="always")
def _element(matrix, i, j):
    """matrix[i, j], or 0 outside it (a tile's padding)."""
    if i < matrix.shape[0] and j < matrix.shape[1]:
        return matrix[i, j]
    return np.float32(0)


@numba.njit(inline="always")
def _put_pair(words, block, kb, row, column, x, y):
    """Store x and y, two elements of consecutive k (x's even), as their parts at one word of
    a tile: words[part, block, kb, row, column] = (y's part << 16) | x's part. Returns the
    larger of their exponent bits (x & _EXPONENT: all of them for an infinity or a NaN)."""
    x0, x1, x2 = _split(x)
    y0, y1, y2 = _split(y)
    half = np.uint32(16)
    words[0, block, kb, row, column] = (x0 >> half) | y0
    words[1, block, kb, row, column] = (x1 >> half) | y1
    words[2, block, kb, row, column] = (x2 >> half) | y2
    return max(_float_bits(x) & _EXPONENT, _float_bits(y) & _EXPONENT)


def _vector_parts(builder, vector):
    """The three bfloat16 parts of each lane of a float32 vector, as i32 vectors holding the
    part's bits in their top 16 bits (the scalar _split, lane by lane)."""
    lanes = vector.type.count
    words, floats = ir.VectorType(ir.IntType(32), lanes), vector.type
    top = ir.Constant(words, [0xFFFF0000] * lanes)
    head = builder.and_(builder.bitcast(vector, words), top)
    rest = builder.fsub(vector, builder.bitcast(head, floats))
    middle = builder.and_(builder.bitcast(rest, words), top)
    # Exact, with its low 16 bits zero, but where it is subnormal (below 2^-126): then they
    # are cut off, or they would land in the other half of a pair's word.
    last = builder.and_(
        builder.bitcast(builder.fsub(rest, builder.bitcast(middle, floats)), words), top
    )
    return head, middle, last


def _pair_words(builder, low, high):
    """Words holding a part of `low` in their low 16 bits and of `high` in their top 16."""
    sixteen = ir.Constant(low.type, [16] * low.type.count)
    return builder.or_(builder.lshr(low, sixteen), high)


def _note_exponents(builder, seen, vector):
    """The 16 uint32 at address `seen` <- their lane-wise maximum with the exponent fields
    (bits 23-30; all ones for an infinity or a NaN) of a float32 vector of 16 or 32 lanes: a
    running maximum in L1, reduced across lanes once per packing (`seen.max()`)."""
    sixteen = ir.VectorType(ir.IntType(32), 16)
    lanes = vector.type.count
    words = ir.VectorType(ir.IntType(32), lanes)
    exponents = builder.and_(
        builder.bitcast(vector, words), ir.Constant(words, [0x7F800000] * lanes)
    )
    maximum = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(sixteen, [sixteen, sixteen]), "llvm.umax.v16i32"
    )
    pointer = _vector_at(builder, seen, sixteen)
    running = builder.load(pointer, align=4)
    for first in range(0, lanes, 16):
        half = exponents
        if lanes > 16:
            indices = ir.Constant(sixteen, list(range(first, first + 16)))
            half = builder.shuffle_vector(exponents, exponents, indices)
        running = builder.call(maximum, [running, half])
    builder.store(running, pointer, align=4)


def _vector_at(builder, address, vector_type):
    return builder.inttoptr(address, vector_type.as_pointer())


def _store_parts(builder, parts, destinations):
    for words, destination in zip(parts, destinations):
        builder.store(words, _vector_at(builder, destination, words.type), align=4)


@intrinsic
def _pack_pairs(typingctx, source, part0, part1, part2, seen):
    """32 consecutive float32 at `source` (k = 0..31 of one row) as 16 words per part at the
    three destinations (word i: elements 2i and 2i + 1); their exponent fields noted at
    `seen` (see _note_exponents)."""

    def codegen(context, builder, signature, args):
        floats = ir.VectorType(ir.FloatType(), 32)
        vector = builder.load(_vector_at(builder, args[0], floats), align=4)
        even = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(0, 32, 2)))
        odd = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(1, 32, 2)))
        parts = [
            _pair_words(
                builder,
                builder.shuffle_vector(part, part, even),
                builder.shuffle_vector(part, part, odd),
            )
            for part in _vector_parts(builder, vector)
        ]
        _store_parts(builder, parts, args[1:4])
        _note_exponents(builder, args[4], vector)
        return context.get_dummy_value()

    return types.none(*[types.intp] * 5), codegen


@intrinsic
def _pack_rows(typingctx, low, high, part0, part1, part2, seen):
    """16 float32 at `low` and 16 at `high` (two consecutive k of 16 columns or rows) as 16
    words per part at the three destinations (word i: low[i] | high[i] << 16); their exponent
    fields noted at `seen`."""

    def codegen(context, builder, signature, args):
        floats = ir.VectorType(ir.FloatType(), 16)
        lows = builder.load(_vector_at(builder, args[0], floats), align=4)
        highs = builder.load(_vector_at(builder, args[1], floats), align=4)
        parts = [
            _pair_words(builder, low_part, high_part)
            for low_part, high_part in zip(
                _vector_parts(builder, lows), _vector_parts(builder, highs)
            )
        ]
        _store_parts(builder, parts, args[2:5])
        _note_exponents(builder, args[5], lows)
        _note_exponents(builder, args[5], highs)
        return context.get_dummy_value()

    return types.none(*[types.intp] * 6), codegen


@numba.njit(inline="always")
def _word_address(words, part, block, kb, row):
    """The byte address of row `row` (16 words) of one tile in a packed array."""
    return (
        words.ctypes.data
        + (((part * words.shape[1] + block) * words.shape[2] + kb) * 16 + row) * 64
    )


@intrinsic
def _transpose_words(typingctx, source, destination):
    """The 16 x 16 words at `source` (rows of 64 bytes), transposed, to `destination` (rows of
    64 bytes): four rounds of zipping rows i and i + 8 (the perfect shuffle), 64 two-vector
    shuffles in registers. Element by element, the tiles of a transposed operand cost 0.5 ms
    for a 1024 x 1024 b."""

    def codegen(context, builder, signature, args):
        words = ir.VectorType(ir.IntType(32), ROWS)
        rows = [
            builder.load(_vector_at(builder, builder.add(args[0], _offset(i)), words), align=4)
            for i in range(ROWS)
        ]
        half = ROWS // 2
        low = ir.Constant(words, [j // 2 + (j % 2) * ROWS for j in range(ROWS)])
        high = ir.Constant(words, [half + j // 2 + (j % 2) * ROWS for j in range(ROWS)])
        for _ in range(4):
            zipped = []
            for i in range(half):
                zipped.append(builder.shuffle_vector(rows[i], rows[i + half], low))
                zipped.append(builder.shuffle_vector(rows[i], rows[i + half], high))
            rows = zipped
        for i, row in enumerate(rows):
            destination = builder.add(args[1], _offset(i))
            builder.store(row, _vector_at(builder, destination, words), align=4)
        return context.get_dummy_value()

    return types.none(types.intp, types.intp), codegen


def _offset(row: int) -> ir.Constant:
    return ir.Constant(ir.IntType(64), row * 64)


@numba.njit(inline="always")
def _transpose_tiles(staging, words, block, kb):
    """words' three tiles at (block, kb) <- the transposes of staging's three 16 x 16 words."""
    for part in range(PARTS):
        destination = _word_address(words, part, block, kb, 0)
        _transpose_words(staging.ctypes.data + part * ROWS * ROWS * 4, destination)


@numba.njit(inline="always")
def _pack_tile_by_elements(matrix, words, word_block, word_kb, block, kb, rows_are_k):
    """Tile (word_block, word_kb) of a packed array from `matrix`'s tile (block, kb), element
    by element, zero outside it: the tiles at its edges. rows_are_k: matrix is a right operand
    (rows are k), else a left one."""
    worst = np.uint32(0)
    for row in range(ROWS):
        for column in range(ROWS):
            if rows_are_k:
                p, j = kb * K_TILE + 2 * row, block * ROWS + column
                x, y = _element(matrix, p, j), _element(matrix, p + 1, j)
            else:
                i, p = block * ROWS + row, kb * K_TILE + 2 * column
                x, y = _element(matrix, i, p), _element(matrix, i, p + 1)
            worst = max(worst, _put_pair(words, word_block, word_kb, row, column, x, y))
    return worst


@numba.njit(nogil=True)
def pack_left(a, words):
    """a (M x K float32, any strides) cut into parts, `words` (3, >= M/16, K/32, 16, 16): tile
    row r, word w holds a[r, 2w] and a[r, 2w + 1]. Returns the largest exponent field among
    a's elements (255: an infinity or a NaN, and the words are then incomplete). Whole tiles
    go by vectors: a row-major a's rows 32 k at a time; a column-major one's columns two k at
    a time, staged and transposed; others element by element."""
    m, k = a.shape
    seen = np.zeros(ROWS, np.uint32)  # the largest exponent field in each lane
    worst = np.uint32(0)  # ... and in the tiles packed element by element
    row_major = a.strides[1] == 4  # whole tiles by vectors need 32 k, 16 rows
    column_major = a.strides[0] == 4
    staging = np.empty((PARTS, ROWS, ROWS), np.uint32)
    stage = staging.ctypes.data
    base, item = a.ctypes.data, a.itemsize
    for block in range(2 * ((m + 2 * ROWS - 1) // (2 * ROWS))):  # a's row pairs, padded
        for kb in range(words.shape[2]):
            whole = (block + 1) * ROWS <= m and (kb + 1) * K_TILE <= k
            if whole and row_major:
                for row in range(ROWS):
                    source = base + (block * ROWS + row) * a.strides[0] + kb * K_TILE * item
                    _pack_pairs(
                        source,
                        _word_address(words, 0, block, kb, row),
                        _word_address(words, 1, block, kb, row),
                        _word_address(words, 2, block, kb, row),
                        seen.ctypes.data,
                    )
            elif whole and column_major:
                for pair in range(ROWS):
                    low = base + block * ROWS * item + (kb * K_TILE + 2 * pair) * a.strides[1]
                    _pack_rows(
                        low,
                        low + a.strides[1],
                        stage + pair * 64,
                        stage + (ROWS + pair) * 64,
                        stage + (2 * ROWS + pair) * 64,
                        seen.ctypes.data,
                    )
                _transpose_tiles(staging, words, block, kb)
            else:
                worst = max(worst, _pack_tile_by_elements(a, words, block, kb, block, kb, False))
    return max(worst, seen.max()) >> np.uint32(23)


@numba.njit(nogil=True)
def pack_right(b, words, first_block, blocks):
    """b's column blocks first_block .. first_block + blocks - 1 (16 columns each; b is K x N
    float32 of any strides) cut into parts, `words` (3, >= blocks, K/32, 16, 16): tile row
    r, word c holds b[2r, c] and b[2r + 1, c] (AMX's layout of a right operand). Returns the
    largest exponent field among those columns' elements (255: an infinity or a NaN). Whole
    tiles go by vectors, others element by element.

    A row-major b goes a column block at a time, down all its k tiles (the rows past K's end
    read from a row of zeros): a block's tiles of one part are consecutive in `words`, so each
    row pair's three words continue three sequential streams, in one loop of K/2 turns.
    Before, the row pairs went across the panel's blocks in loops of 4 turns, and the last k
    tile of a K that is not a multiple of 32 went element by element: W3's 784 x 256 weight
    took 0.050-0.052 ms to cut, now 0.044-0.047 (perf/amx_cuts.py). A column-major b goes 32 k
    of a column at a time, staged and transposed."""
    k, n = b.shape
    seen = np.zeros(ROWS, np.uint32)
    worst = np.uint32(0)
    row_major = b.strides[1] == 4
    column_major = b.strides[0] == 4
    base, item = b.ctypes.data, b.itemsize
    whole_blocks = max(0, min(blocks, n // ROWS - first_block))  # the blocks inside b
    whole_kbs = min(k // K_TILE, words.shape[2])  # the k tiles inside b
    if row_major:
        stride = b.strides[0]
        zeros = np.zeros(ROWS, np.float32)  # the rows past K's end, to its last k tile
        present = k // 2  # row pairs inside b
        for block in range(whole_blocks):
            source = base + (first_block + block) * ROWS * item
            part0 = _word_address(words, 0, block, 0, 0)
            part1 = _word_address(words, 1, block, 0, 0)
            part2 = _word_address(words, 2, block, 0, 0)
            for pair in range(words.shape[2] * ROWS):  # tile kb's row r is pair kb * 16 + r
                low = source + 2 * pair * stride
                high = low + stride
                if pair >= present:  # K's odd last row, or padding
                    high = zeros.ctypes.data
                    if 2 * pair >= k:
                        low = high
                line = pair * 64
                _pack_rows(low, high, part0 + line, part1 + line, part2 + line, seen.ctypes.data)
    elif column_major:
        staging = np.empty((PARTS, ROWS, ROWS), np.uint32)
        stage = staging.ctypes.data
        for kb in range(whole_kbs):
            for block in range(whole_blocks):
                for column in range(ROWS):
                    j = (first_block + block) * ROWS + column
                    _pack_pairs(
                        base + kb * K_TILE * item + j * b.strides[1],
                        stage + column * 64,
                        stage + (ROWS + column) * 64,
                        stage + (2 * ROWS + column) * 64,
                        seen.ctypes.data,
                    )
                _transpose_tiles(staging, words, block, kb)
    by_vectors = words.shape[2] if row_major else whole_kbs if column_major else 0
    for kb in range(words.shape[2]):
        for block in range(whole_blocks if kb < by_vectors else 0, blocks):
            tile = _pack_tile_by_elements(b, words, block, kb, first_block + block, kb, True)
            worst = max(worst, tile)
    return max(worst, seen.max()) >> np.uint32(23)


@numba.njit(inline="always")
def _aligned_words(parts, blocks, k_blocks):
    """An uninitialised (parts, blocks, k_blocks, 16, 16) uint32 array starting on a 64-byte
    boundary: each tile row is then one cache line. Numba's allocations are aligned to less;
    before this, some processes ran whole kernels ~40% slower than others, the same code (W3L
    on one thread: 8.4-8.8 ms against 5.9-6.4), and since, none has (6.0-6.6 ms)."""
    size = parts * blocks * k_blocks * ROWS * ROWS
    raw = np.empty(size + 16, np.uint32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + size].reshape((parts, blocks, k_blocks, ROWS, ROWS))


@numba.njit(inline="always")
def _tile_address(parts, part, block, kb):
    """The byte address of one packed tile (1,024 bytes) in a pack_left / pack_right array."""
    blocks, k_blocks = parts.shape[1], parts.shape[2]
    return parts.ctypes.data + ((part * blocks + block) * k_blocks + kb) * 1024


@numba.njit(inline="always")
def _multiply_block(left, right, row_block, right_block, k_blocks):
    """tmm0-3 <- the 2 x 2 tiles of C whose rows are a's row blocks row_block and
    row_block + 1 and whose columns are `right`'s column blocks right_block and
    right_block + 1, as the six part products over the whole k range (tmm0 and tmm1 the first
    row block, tmm0 and tmm2 the first column block)."""
    _zero(0)
    _zero(1)
    _zero(2)
    _zero(3)
    # Tiles are not renamed: a load into a tile waits for the products reading it. Each load
    # is issued right after the last product that reads the tile's old contents, with other
    # products left to run while it arrives (measured no faster than loading both operands
    # before each group of four products, and no slower).
    _load(4, _tile_address(left, 0, row_block, 0), 64)
    _load(5, _tile_address(left, 0, row_block + 1, 0), 64)
    _load(6, _tile_address(right, 0, right_block, 0), 64)
    _load(7, _tile_address(right, 0, right_block + 1, 0), 64)
    for kb in range(k_blocks):
        for part in range(1, 3):  # a0 b0, then a0 b1 (b's next part loaded behind each)
            _multiply(0, 4, 6)
            _multiply(2, 5, 6)
            _load(6, _tile_address(right, part, right_block, kb), 64)
            _multiply(1, 4, 7)
            _multiply(3, 5, 7)
            _load(7, _tile_address(right, part, right_block + 1, kb), 64)
        _multiply(0, 4, 6)  # a0 b2
        _multiply(1, 4, 7)
        _load(4, _tile_address(left, 1, row_block, kb), 64)
        _multiply(2, 5, 6)
        _load(6, _tile_address(right, 1, right_block, kb), 64)
        _multiply(3, 5, 7)
        _load(7, _tile_address(right, 1, right_block + 1, kb), 64)
        _load(5, _tile_address(left, 1, row_block + 1, kb), 64)
        _multiply(0, 4, 6)  # a1 b1
        _multiply(1, 4, 7)
        _multiply(2, 5, 6)
        _load(6, _tile_address(right, 0, right_block, kb), 64)
        _multiply(3, 5, 7)
        _load(7, _tile_address(right, 0, right_block + 1, kb), 64)
        _multiply(0, 4, 6)  # a1 b0
        _multiply(1, 4, 7)
        _load(4, _tile_address(left, 2, row_block, kb), 64)
        _multiply(2, 5, 6)
        _multiply(3, 5, 7)
        _load(5, _tile_address(left, 2, row_block + 1, kb), 64)
        _multiply(0, 4, 6)  # a2 b0, and the next k block's a0 and b0 behind it
        _multiply(1, 4, 7)
        following = min(kb + 1, k_blocks - 1)  # the last block reloads its own tiles: unused
        _load(4, _tile_address(left, 0, row_block, following), 64)
        _multiply(2, 5, 6)
        _load(6, _tile_address(right, 0, right_block, following), 64)
        _multiply(3, 5, 7)
        _load(5, _tile_address(left, 0, row_block + 1, following), 64)
        _load(7, _tile_address(right, 0, right_block + 1, following), 64)


@numba.njit(inline="always")
def _store_block(out, scratch, row_block, column_block):
    """tmm0-3 to `out` at (row_block, column_block) (tile units): straight into it where all
    32 x 32 lie inside, else through `scratch` (32 x 32) for the part that does."""
    m, n = out.shape
    row, column = row_block * ROWS, column_block * ROWS
    if row + 2 * ROWS <= m and column + 2 * ROWS <= n:
        stride = out.strides[0]
        c = out.ctypes.data + row * stride + column * 4
    else:
        stride = 2 * ROWS * 4
        c = scratch.ctypes.data
    _store(0, c, stride)
    _store(1, c + ROWS * 4, stride)
    _store(2, c + ROWS * stride, stride)
    _store(3, c + ROWS * stride + ROWS * 4, stride)
    if c == scratch.ctypes.data:
        for i in range(min(2 * ROWS, m - row)):
            for j in range(min(2 * ROWS, n - column)):
                out[row + i, column + j] = scratch[i, j]


@numba.njit(inline="always")
def _configure_tiles():
    """ldtilecfg of palette 1, tiles 0-7 of 16 rows x 64 bytes. The 64 bytes are built here:
    the address of a global array would be a constant of the machine code, which Numba then
    does not cache."""
    configuration = np.zeros(64, np.uint8)
    configuration[0] = 1
    for tile in range(8):
        configuration[16 + 2 * tile] = 64  # bytes per row, little-endian uint16
        configuration[48 + tile] = ROWS
    _configure(configuration.ctypes.data)


# b's parts for some column pairs, cut at once: with a's parts and the lines of C being written,
# within L2 (2 MB). Against 768 KB, W3L's weight gradients (k = 128: all of b in one panel)
# 1.72-1.76 -> 1.37-1.44 ms, its forward products unchanged; 192 KB cut a 1024-row b in
# panels of one column pair (rows read 128 bytes at a time) and slowed the forward products.
PANEL_BYTES = 384 * 1024
# a's parts for a chunk of rows; each chunk cuts b's panels again. 1.5 MB holds a batch of 256
# rows of 784 (1.2 MB of parts) in one chunk: W3's batch-256 products on one core 0.60 -> 0.51
# ms (forward) and 0.54 -> 0.47 (weight gradient), those of batch 128 unchanged (session 23,
# perf/amx_vs_blas.py); with b's panel (PANEL_BYTES) still within L2. W3L's: one chunk either way.
LEFT_BYTES = 3 << 19


@numba.njit(nogil=True)
def _columns(left, largest_a, b, out, first, last):
    """C's column pairs first .. last - 1 (32 columns each) of a @ b into `out` (a's rows),
    a already cut into `left` (pack_left, whose result is largest_a). b is cut a panel of
    column pairs at a time (all of k), just before the products that read it, so that its
    parts stay in L2 (a 1024 x 1024 b has 6 MB of parts, which, cut all first, went to memory
    and back: 0.55-0.65 ms). Each 2 x 2 block of C's tiles runs the whole k range: its start
    and end (zeroing and storing the tiles) cost as much as ~100 products, which ranges of k
    would repeat. Within a panel, a row pair's blocks go left to right: consecutive blocks
    then write neighbouring lines of C, and a's tiles for the row pair stay in L1 (down the
    columns instead, W3L's weight gradients took 1.47-1.50 against 1.13-1.16 ms, whole W3L
    5-7% longer on one thread). Runs in the calling thread's tile state, configured here.
    False as `matmul`."""
    row_pairs, k_blocks = (out.shape[0] + 2 * ROWS - 1) // (2 * ROWS), left.shape[2]
    group = max(1, min(last - first, PANEL_BYTES // (PARTS * 2 * k_blocks * 1024)))
    panel = _aligned_words(PARTS, 2 * group, k_blocks)
    scratch = np.empty((2 * ROWS, 2 * ROWS), np.float32)
    _configure_tiles()
    for first_pair in range(first, last, group):
        pairs = min(group, last - first_pair)
        largest_b = pack_right(b, panel, 2 * first_pair, 2 * pairs)
        # No term of these columns can reach 2^-80 (see the module's notes), or inf, or NaN.
        if largest_b == _SPECIAL or largest_a + largest_b < _SMALLEST_LARGEST:
            _release()
            return False
        for row_pair in range(row_pairs):
            for pair in range(pairs):
                _multiply_block(left, panel, 2 * row_pair, 2 * pair, k_blocks)
                _store_block(out, scratch, 2 * row_pair, 2 * (first_pair + pair))
    _release()
    return True


@numba.njit(nogil=True)
def _on_one_thread(a, b, out, first, last):
    """C's column pairs first .. last - 1 of a @ b into `out`, on the calling thread's tiles.
    a is cut into parts by chunks of rows of at most LEFT_BYTES of parts (all of a for a
    batch's activations), each chunk's products run before the next is cut: the parts take
    a bounded buffer however many rows a has, and stay in L2 with b's panels. False as
    `matmul`."""
    m, k = a.shape
    k_blocks = (k + K_TILE - 1) // K_TILE
    row_pairs = (m + 2 * ROWS - 1) // (2 * ROWS)
    chunk = max(1, min(row_pairs, LEFT_BYTES // (PARTS * 2 * k_blocks * 1024)))  # row pairs
    left = _aligned_words(PARTS, 2 * chunk, k_blocks)
    for first_pair in range(0, row_pairs, chunk):
        rows = slice(2 * ROWS * first_pair, min(2 * ROWS * (first_pair + chunk), m))
        largest_a = pack_left(a[rows], left)
        if largest_a == _SPECIAL or not _columns(left, largest_a, b, out[rows], first, last):
            return False
    return True


@numba.njit(parallel=True, nogil=True)
def _in_ranges(a, b, out, ranges, by_rows):
    """a @ b into `out` in `ranges` ranges at once, one per thread (each core has its own
    tiles): ranges of C's row pairs (`by_rows`: each thread cuts its rows of a, and all of b)
    or of its column pairs (each thread cuts all of a, and its columns of b). Each thread
    reads only parts it cut itself: with a's parts cut once and shared, the other core read
    them from this one's cache, 0.6 MB at 0.04-0.05 ms per product of W3's (session 23), and
    the parts were cut by one thread while the other waited. False if any range is."""
    m = a.shape[0]
    row_pairs = (m + 2 * ROWS - 1) // (2 * ROWS)
    column_pairs = (b.shape[1] + 2 * ROWS - 1) // (2 * ROWS)
    done = np.ones(ranges, np.bool_)
    for r in numba.prange(ranges):
        if by_rows:
            share = 2 * ROWS * ((row_pairs + ranges - 1) // ranges)
            low = min(r * share, m)
            high = min(low + share, m)
            if low < high:
                done[r] = _on_one_thread(a[low:high], b, out[low:high], 0, column_pairs)
        else:
            share = (column_pairs + ranges - 1) // ranges
            first = min(r * share, column_pairs)
            last = min(first + share, column_pairs)
            if first < last:
                done[r] = _on_one_thread(a, b, out, first, last)
    return done.all()


@numba.njit(nogil=True)
def matmul(a, b, out, threads):
    """out = a @ b (float32; a and b of any strides, out row-major with unit column stride) on
    AMX tiles, in up to `threads` ranges at once (the emitter's count of the kernel's
    threads: Numba's get_num_threads in compiled code is an address that Numba does not
    cache). False where a or b holds an infinity or a NaN, or where no term of some block of
    C (a chunk or range of its rows by a panel of its columns) can reach 2^-80 (see the
    module's notes): `out` is then partly written, and the caller multiplies by BLAS
    instead. Call only where `available()`.

    On several threads, the operand with fewer parts is the one every thread cuts whole: a
    (M x K) where M <= N, C's columns then split over the threads; else b, C's rows split.
    W3's forward product (128 x 784 x 256) splits the columns, its weight gradient (784 x
    128 x 256) the rows."""
    m = a.shape[0]
    n = b.shape[1]
    row_pairs = (m + 2 * ROWS - 1) // (2 * ROWS)
    column_pairs = (n + 2 * ROWS - 1) // (2 * ROWS)
    by_rows = m > n
    ranges = min(threads, row_pairs if by_rows else column_pairs)
    if ranges > 1:
        return _in_ranges(a, b, out, ranges, by_rows)
    return _on_one_thread(a, b, out, 0, column_pairs)


# Products of fewer multiply-adds go to BLAS. Measured one product over and over, tiles /
# OpenBLAS (session 23, perf/amx_vs_blas.py): on one thread the tiles win from 2^22 (64 x 256 x
# 256 0.84-0.86, 128 x 256 x 128 0.75, W3's 128 x 784 x 256 and its weight gradient 0.61-0.66,
# batch 256 0.61-0.68; at 2^21 0.65-0.99). On two threads (each process running one system,
# OpenBLAS's spinning workers would slow the tiles' second thread): from ~2^23.6 (W3's 25.7 M
# 0.69-0.85, batch 64's 12.8 M 0.87-0.96, 8.4 M 0.76-1.10, 4.2 M 1.03-1.20).
MIN_WORK = 1 << 24
MIN_WORK_ONE_THREAD = 1 << 22


def wins(dtype, work: int, threads: int) -> bool:
    """Whether a kernel's product of `work` multiply-adds, of `dtype`, on `threads` threads,
    goes to AMX, where the CPU has it (the emitter also waits for KERNEL_HELPERS to be
    compiled: symbols.all_compiled)."""
    from jitgrad.core.config import config

    return (
        config.amx
        and np.dtype(dtype) == np.float32
        and work >= (MIN_WORK_ONE_THREAD if threads <= 1 else MIN_WORK)
        and available()
    )


# The helpers a kernel whose products run on the tiles calls (emit.py: product_call).
KERNEL_HELPERS = ("amx_matmul_into", "matmul_into_one_thread")


@numba.njit(cache=True, nogil=True)
def amx_matmul_into(a, b, out, threads):
    """runtime.matmul_into's product (out = a @ b, operands of any layout, out C-contiguous)
    on AMX tiles, in up to `threads` ranges at once; on BLAS where `matmul` declines (an
    infinity, a NaN, only tiny terms), where this process has no AMX permission, or where the
    product is too small to repay its parts on `threads` threads (MIN_WORK and
    MIN_WORK_ONE_THREAD: the emitter chose this helper for the shapes it traced, a kernel with
    sizes read from the arrays may run others)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("amx_matmul_into: the operands' and the output's shapes do not agree")
    smallest = MIN_WORK_ONE_THREAD if threads <= 1 else MIN_WORK
    if m * k * n < smallest or not _permitted() or not matmul(a, b, out, threads):
        matmul_into(a, b, out)


@numba.njit(cache=True, nogil=True)
def matmul_into_one_thread(a, b, out):
    """runtime.matmul_into with BLAS on one thread, for the BLAS products of a kernel whose
    large products run on AMX over several threads: a BLAS call on two threads leaves
    OpenBLAS's worker spinning, for a while after it returns, on the core that the next AMX
    range needs (W3L on two threads: 8.4-8.9 ms, against 3.9-4.6 with BLAS on one)."""
    previous = set_blas_threads(np.int32(1))
    matmul_into(a, b, out)
    set_blas_threads(previous)


bind_blas_threads()  # the symbol set_blas_threads calls, before cached machine code loads
