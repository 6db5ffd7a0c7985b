"""Small Numba helpers that generated kernels import (kept out of the kernels' source so they
are compiled once and cached)."""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from jitgrad.backend.numba.helper_names import RUNTIME_MODULE
from jitgrad.backend.numba.philox import (  # noqa: F401 - kernels import them from here
    philox_bits,
    philox_normal,
    philox_truncated_normal,
    philox_uniform32,
    philox_uniform64,
)
from jitgrad.backend.numba.simd import (
    load,
    vadd,
    vaddto,
    vbetter,
    vequal,
    vfma,
    vjoin,
    vload,
    vlower,
    vlowmask,
    vrelu,
    vselect,
    vsplat,
    vstore,
    vstraddle,
    vtranspose8,
    vupper,
    vzeros,
)

SOURCE_MODULE = RUNTIME_MODULE


def _retyped(array, **changes):
    """(signature, codegen) of an intrinsic that returns `array` itself (the same data, no
    copy) under the array type with `changes` (types.Array.copy's arguments)."""
    if not isinstance(array, types.Array):
        return None
    result = array.copy(**changes)

    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, result, args[0])

    return result(array), codegen


@intrinsic
def readonly(typingctx, array):
    """`array`, typed read-only. Kernels pass the operands a helper only reads this way, so
    that one compiled signature of the helper serves a kernel's inputs (read-only) and its
    buffers alike: kernels call only the signatures the installation precompiles through a
    symbol (symbols.py; any other is linked in and code-generated again inside the kernel),
    and the warm-up compiles fewer signatures."""
    return _retyped(array, readonly=True)


@intrinsic
def strided(typingctx, array):
    """`array`, typed read-only and of any layout ('A'): a matrix product's operand, which
    BLAS reads row- or column-major (a transpose is a view), so that matmul_into has one
    compiled signature per dtype whatever its operands' layouts."""
    return _retyped(array, layout="A", readonly=True)


def _shard_layout(text: str) -> list:
    """shard_arrays' layout: (dtype, shape, table entry, offset, stride) per array, from
    `dtype:d0,d1,...:entry:offset:stride` items separated by `;`."""
    items = []
    for item in text.split(";"):
        dtype, shape, entry, offset, stride = item.strip().split(":")
        sizes = tuple(int(d) for d in shape.split(","))
        items.append(
            (numba.from_dtype(np.dtype(dtype)), sizes, int(entry), int(offset), int(stride))
        )
    return items


@intrinsic
def shard_arrays(typingctx, table, shard, layout):
    """The arrays one shard of a batch works on (shards.py), as a tuple: item k of the
    literal `layout` (see _shard_layout) is the C-contiguous array of its dtype and shape at
    `table[entry] + offset + shard * stride`, owned by the kernel that wrote the table of
    addresses at integer address `table`. One call, typed once: the parallel function that runs
    the shards takes one table instead of every array (Numba's parfor pass costs seconds for a
    loop over 60 array arguments), and an intrinsic call per array cost ~20 ms of compile."""
    if not (
        isinstance(table, types.Integer)
        and isinstance(shard, types.Integer)
        and isinstance(layout, types.StringLiteral)
    ):
        return None
    items = _shard_layout(layout.literal_value)
    result = types.Tuple([types.Array(dtype, len(shape), "C") for dtype, shape, *_ in items])

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        entries = builder.inttoptr(args[0], intp.as_pointer())
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        arrays = []
        for (dtype, shape, entry, offset, stride), array_type in zip(items, result):
            base = builder.load(builder.gep(entries, [intp(entry)]))
            address = builder.add(builder.add(base, intp(offset)), builder.mul(index, intp(stride)))
            itemsize = context.get_abi_sizeof(context.get_data_type(dtype))
            strides, step = [], itemsize
            for size in reversed(shape):
                strides.insert(0, intp(step))
                step *= size
            array = context.make_array(array_type)(context, builder)
            context.populate_array(
                array,
                data=builder.inttoptr(address, context.get_value_type(types.CPointer(dtype))),
                shape=cgutils.pack_array(builder, [intp(size) for size in shape]),
                strides=cgutils.pack_array(builder, strides),
                itemsize=intp(itemsize),
                meminfo=None,
            )
            arrays.append(array._getvalue())
        return context.make_tuple(builder, result, arrays)

    return result(table, shard, layout), codegen


@intrinsic
def write_addresses(typingctx, table, arrays):
    """table[k] = the data address of arrays[k] (a tuple of arrays): the table shard_arrays
    reads, written by one call (`.ctypes.data` costs each call site ~10 ms of compile)."""
    if not (
        isinstance(table, types.Array)
        and isinstance(table.dtype, types.Integer)
        and isinstance(arrays, types.BaseTuple)
        and all(isinstance(t, types.Array) for t in arrays)
    ):
        return None

    def codegen(context, builder, signature, args):
        table_type, arrays_type = signature.args
        target = context.make_array(table_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        for k, array_type in enumerate(arrays_type):
            array = context.make_array(array_type)(
                context, builder, builder.extract_value(args[1], k)
            )
            slot = builder.gep(target.data, [intp(k)])
            builder.store(builder.ptrtoint(array.data, slot.type.pointee), slot)
        return context.get_dummy_value()

    return types.none(table, arrays), codegen


@intrinsic
def view(typingctx, array, shape):
    """The C-contiguous `array` seen with `shape` (a tuple of sizes, as many elements): what
    `array.reshape(shape)` gives, for a fraction of its compile time. Numba's reshape costs
    ~40 ms of compile per call site (its -1 inference, its checks and their error paths), and
    kernels reshape often (row loops, batched products, gathers): W3's kernel did six times."""
    if not (isinstance(array, types.Array) and array.layout == "C"):
        return None
    if not (
        isinstance(shape, types.BaseTuple) and all(isinstance(t, types.Integer) for t in shape)
    ):
        return None
    result = array.copy(ndim=len(shape), layout="C")

    def codegen(context, builder, signature, args):
        array_type, shape_type = signature.args
        source = context.make_array(array_type)(context, builder, args[0])
        sizes = [
            context.cast(builder, size, t, types.intp)
            for size, t in zip(cgutils.unpack_tuple(builder, args[1], len(shape_type)), shape_type)
        ]
        strides, stride, negative = [], source.itemsize, cgutils.false_bit
        for size in reversed(sizes):
            strides.insert(0, stride)
            stride = builder.mul(stride, size)
            negative = builder.or_(negative, builder.icmp_signed("<", size, size.type(0)))
        count = builder.sdiv(stride, source.itemsize)
        wrong = builder.or_(negative, builder.icmp_signed("!=", count, source.nitems))
        with builder.if_then(wrong, likely=False):
            context.call_conv.return_user_exc(
                builder, ValueError, ("view: the new shape has a different number of elements",)
            )
        out = context.make_array(signature.return_type)(context, builder)
        context.populate_array(
            out,
            data=source.data,
            shape=cgutils.pack_array(builder, sizes),
            strides=cgutils.pack_array(builder, strides),
            itemsize=source.itemsize,
            meminfo=source.meminfo,
            parent=source.parent,
        )
        return impl_ret_borrowed(context, builder, signature.return_type, out._getvalue())

    return result(array, shape), codegen


@intrinsic
def span(typingctx, array, start, length):
    """array[start : start + length] of a 1-D C-contiguous `array`, as a view that holds no
    reference to the array's memory (the caller's `array` keeps it alive while it is used):
    for helpers' inner loops. A Numba slice takes a reference to its parent's memory info and
    drops it when done, atomic operations that Numba's reference-count pruning removes only
    in simple control flow: conv2_gemm copying W10's windows as slices ran 4x slower (0.9
    against 0.22 ms) once a branch around the copy defeated the pruning. Raises ValueError
    when the span is not inside the array: helpers index the views without checks."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"):
        return None
    if not (isinstance(start, types.Integer) and isinstance(length, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        source = context.make_array(array_type)(context, builder, args[0])
        first = context.cast(builder, args[1], signature.args[1], types.intp)
        count = context.cast(builder, args[2], signature.args[2], types.intp)
        zero = first.type(0)
        (size,) = cgutils.unpack_tuple(builder, source.shape, 1)
        outside = builder.or_(
            builder.or_(
                builder.icmp_signed("<", first, zero), builder.icmp_signed("<", count, zero)
            ),
            builder.icmp_signed(">", builder.add(first, count), size),
        )
        with builder.if_then(outside, likely=False):
            context.call_conv.return_user_exc(
                builder, ValueError, ("span: the span is not inside the array",)
            )
        out = context.make_array(signature.return_type)(context, builder)
        context.populate_array(
            out,
            data=builder.gep(source.data, [first]),
            shape=cgutils.pack_array(builder, [count]),
            strides=source.strides,
            itemsize=source.itemsize,
            meminfo=None,
            parent=None,
        )
        return out._getvalue()

    return array(array, start, length), codegen


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def sum_step(partial, x):
    """partial + x, the one addition of a kernel that may be reassociated: kernels are compiled
    without fast-math flags (IEEE results, the same as eager: (x * 1e38) * 1e-38 must
    overflow), and LLVM vectorises a sum only if it may reorder it. LLVM keeps the flag when
    it inlines this into the kernel's loop; Numba's own inlining would not."""
    return partial + x


@numba.njit(cache=True, nogil=True)
def matmul(a, b):
    """np.dot behind a cached dispatcher: Numba compiles its BLAS wrapper once per layout
    combination and caches it with jitgrad's package, not once per kernel and process."""
    return np.dot(a, b)


# Numba's C wrapper of BLAS ?gemm (scipy's cython_blas; the one np.dot uses), called directly:
# np.dot's implementation costs 0.1-0.2 s of compile per operand layout and is code-generated
# again in every kernel that links it. Pointer arguments are `_data(array)`; `kind` is "s" or
# "d"; `trans*` is "N" or "T"; column-major, as BLAS.
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind
        types.char,  # transa
        types.char,  # transb
        types.intp,  # m
        types.intp,  # n
        types.intp,  # k
        types.voidptr,  # alpha
        types.voidptr,  # a
        types.intp,  # lda
        types.voidptr,  # b
        types.intp,  # ldb
        types.voidptr,  # beta
        types.voidptr,  # c
        types.intp,  # ldc
    ),
)
_N, _T = ord("N"), ord("T")
_SINGLE, _DOUBLE = ord("s"), ord("d")


@intrinsic
def _blas_layout(typingctx, matrix):
    """(trans, ld): how column-major BLAS reads the 2-D `matrix`: as its transpose ("N")
    when its rows are contiguous, as itself ("T") when its columns are; and the leading
    dimension, the stride in items between those rows / columns. (0, 0): neither. A
    dimension of one element may have any stride. An intrinsic (a few selects on the shape
    and strides): as a Numba function, inlined twice into matmul_into, it was half of that
    helper's compile time (0.15 s)."""
    if not (isinstance(matrix, types.Array) and matrix.ndim == 2):
        return None
    result = types.UniTuple(types.intp, 2)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        rows, cols = cgutils.unpack_tuple(builder, array.shape, 2)
        row_stride, col_stride = cgutils.unpack_tuple(builder, array.strides, 2)
        intp, size = rows.type, array.itemsize
        one = intp(1)

        def single(count):  # a dimension of one element: its stride does not matter
            return builder.icmp_signed("==", count, one)

        def contiguous(stride):
            return builder.icmp_signed("==", stride, size)

        def apart(stride, count):  # rows (columns) do not overlap
            return builder.icmp_signed(">=", stride, builder.mul(count, size))

        by_rows = builder.and_(
            builder.or_(single(cols), contiguous(col_stride)),
            builder.or_(single(rows), apart(row_stride, cols)),
        )
        by_cols = builder.and_(
            builder.or_(single(rows), contiguous(row_stride)),
            builder.or_(single(cols), apart(col_stride, rows)),
        )
        row_ld = builder.select(
            builder.icmp_signed(">", rows, one), builder.sdiv(row_stride, size), cols
        )
        col_ld = builder.select(
            builder.icmp_signed(">", cols, one), builder.sdiv(col_stride, size), rows
        )
        zero = intp(0)
        trans = builder.select(by_rows, intp(_N), builder.select(by_cols, intp(_T), zero))
        ld = builder.select(by_rows, row_ld, builder.select(by_cols, col_ld, zero))
        return context.make_tuple(builder, result, [trans, ld])

    return result(matrix), codegen


@intrinsic
def _data(typingctx, array):
    """The address of `array`'s first element, for BLAS: `array.ctypes` would build (and
    compile) numpy's ctypes object model."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(data, cgutils.voidptr_t)

    return types.voidptr(array), codegen


@intrinsic
def _one_and_zero(typingctx, array):
    """Addresses of a 1 and a 0 of `array`'s dtype on the stack: gemm's alpha and beta, which
    BLAS takes by reference (a small np.empty costs its own compile: 0.1 s)."""
    if not isinstance(array, types.Array):
        return None
    pointers = types.UniTuple(types.voidptr, 2)

    def codegen(context, builder, signature, args):
        dtype = signature.args[0].dtype
        slots = [
            cgutils.alloca_once_value(builder, context.get_constant(dtype, value))
            for value in (1, 0)
        ]
        return context.make_tuple(
            builder, pointers, [builder.bitcast(slot, cgutils.voidptr_t) for slot in slots]
        )

    return pointers(array), codegen


@numba.njit(cache=True, nogil=True)
def matmul_into(a, b, out):
    """a @ b written into `out` (C-contiguous) by one BLAS gemm. The operands are read-only
    and of any layout (kernels pass them through `strided`: one compiled signature per
    dtype); BLAS reads each row-major or column-major (a transposed view), which the emitter
    guarantees (emit.py, `matrix_operand`). A dimension of one element may have any stride
    (numpy's relaxed strides)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul_into: the operands' and the output's shapes do not agree")
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                out[i, j] = 0
        return
    trans_a, ld_a = _blas_layout(a)
    trans_b, ld_b = _blas_layout(b)
    if trans_a == 0 or trans_b == 0:
        raise ValueError("matmul_into: an operand is neither row- nor column-major")
    one, zero = _one_and_zero(out)
    # Row-major out = a @ b is column-major out.T = b.T @ a.T.
    _xxgemm(
        _SINGLE if out.itemsize == 4 else _DOUBLE,
        trans_b,
        trans_a,
        n,
        m,
        k,
        one,
        _data(b),
        ld_b,
        _data(a),
        ld_a,
        zero,
        _data(out),
        n,
    )


@numba.njit(cache=True, nogil=True)
def int_matmul(a, b):
    """Integer matrix product (BLAS has none); batch dimensions are flattened by the caller."""
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), a.dtype)
    for i in range(m):
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]
    return out


# Copies of a loop's carry and ys after each iteration (backend/numba/control.py), one helper
# per rank: element loops that take any layout, compiled once per installation. Inline in a
# kernel, `a[i] = b` costs Numba seconds (its shape check and error message), and even
# element loops cost ~50 ms of compile each.


@numba.njit(cache=True, nogil=True)
def copy1(dst, src):
    """dst[:] = src for 1-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        dst[i0] = src[i0]


@numba.njit(cache=True, nogil=True)
def copy2(dst, src):
    """dst[:, :] = src for 2-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            dst[i0, i1] = src[i0, i1]


@numba.njit(cache=True, nogil=True)
def copy3(dst, src):
    """dst[:, :, :] = src for 3-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            for i2 in range(src.shape[2]):
                dst[i0, i1, i2] = src[i0, i1, i2]


@numba.njit(cache=True, nogil=True)
def copy4(dst, src):
    """dst[:, :, :, :] = src for 4-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            for i2 in range(src.shape[2]):
                for i3 in range(src.shape[3]):
                    dst[i0, i1, i2, i3] = src[i0, i1, i2, i3]


@numba.njit(cache=True, nogil=True)
def contiguous_copy(x):
    """A C-contiguous copy of `x` (any layout: kernels pass strided views through
    `strided`), compiled once per rank and dtype instead of in each kernel that copies."""
    return x.copy()


@numba.njit(cache=True, nogil=True)
def permute(x, out, perm):
    """out = np.transpose(x, perm) for C-contiguous x and out of one rank (3 and up), perm a
    tuple of int64. Kernels once emitted each transpose as its own loop nest: W10's seven
    cost 1.1-1.4 s of its compile, where this helper is compiled once per rank and dtype.

    Output axes that are also neighbours, in order, in x are merged first (W10's (N, H, W, C)
    -> (H, W, N, C) is (N, HW, C) -> (HW, N, C)). The output is then written in order, a
    block of its last two axes at a time, read from x with those axes' strides; an odometer
    over the other axes moves the block's start."""
    rank = x.ndim
    seen = 0
    for d in range(rank):
        if perm[d] < 0 or perm[d] >= rank or out.shape[d] != x.shape[perm[d]]:
            raise ValueError("permute: the output's shape is not the input's permuted")
        seen |= 1 << perm[d]
    if seen != (1 << rank) - 1:
        raise ValueError("permute: perm is not a permutation of the axes")
    if out.size == 0:
        return
    axis_stride = np.empty(rank, np.int64)  # x's C-order strides, in elements
    step = 1
    for d in range(rank - 1, -1, -1):
        axis_stride[d] = step
        step *= x.shape[d]
    # The merged output axes: their sizes and their strides in x, at least two (a size 1).
    sizes = np.ones(rank + 1, np.int64)
    strides = np.zeros(rank + 1, np.int64)
    count = 1
    sizes[0], strides[0] = out.shape[0], axis_stride[perm[0]]
    for d in range(1, rank):
        size, stride = out.shape[d], axis_stride[perm[d]]
        if strides[count - 1] == stride * size:
            sizes[count - 1] *= size
            strides[count - 1] = stride
        else:
            sizes[count], strides[count] = size, stride
            count += 1
    if count == 1:
        sizes[1], strides[1] = sizes[0], strides[0]
        sizes[0], strides[0] = 1, 0
        count = 2
    rows, row = sizes[count - 2], sizes[count - 1]
    row_stride, step = strides[count - 2], strides[count - 1]
    source, target = view(x, (x.size,)), view(out, (out.size,))
    index = np.zeros(count, np.int64)
    start = 0
    for first in range(0, out.size, rows * row):
        block = span(target, first, rows * row)
        if step == 1:
            for a in range(rows):
                values = span(source, start + a * row_stride, row)
                for k in range(row):
                    block[a * row + k] = values[k]
        else:  # a gather (unsigned indices: no test for a negative one on each read)
            for a in range(rows):
                at = np.uint64(start + a * row_stride)
                for k in range(row):
                    block[a * row + k] = source[at + np.uint64(k) * np.uint64(step)]
        d = count - 3
        while d >= 0:
            index[d] += 1
            start += strides[d]
            if index[d] < sizes[d]:
                break
            start -= strides[d] * sizes[d]
            index[d] = 0
            d -= 1


# Convolutions (ops/conv.py's `conv`), channels last, by direct loops: for each output
# position and window tap, the tap's index q in the lhs-dilated, padded input reads
# x[q // lhs_dilation] when q is a multiple of the dilation inside the input, zero otherwise.


@numba.njit(cache=True, nogil=True)
def conv1(x, w, out, stride, pad, lhs_dilation, rhs_dilation, groups):
    """out = conv(x, w) for x (N, W, C_in), w (K, C_in / groups, C_out), out (N, OW, C_out)."""
    n_images, width, _ = x.shape
    taps, cg, c_out = w.shape
    og = c_out // groups
    out_width = out.shape[1]
    for n in range(n_images):
        for j in range(out_width):
            for o in range(c_out):
                out[n, j, o] = 0
            for b in range(taps):
                q = j * stride + b * rhs_dilation - pad
                if q < 0 or q % lhs_dilation != 0 or q // lhs_dilation >= width:
                    continue
                col = q // lhs_dilation
                for g in range(groups):
                    for c in range(cg):
                        xv = x[n, col, g * cg + c]
                        for o in range(og):
                            out[n, j, g * og + o] += xv * w[b, c, g * og + o]


@numba.njit(cache=True, nogil=True)
def conv2(x, w, out, strides, pads, lhs_dilation, rhs_dilation, groups):
    """out = conv(x, w) for x (N, H, W, C_in), w (KH, KW, C_in / groups, C_out), out
    (N, OH, OW, C_out); strides, pads (the low pads), dilations: pairs."""
    n_images, height, width, _ = x.shape
    kh, kw, cg, c_out = w.shape
    og = c_out // groups
    out_height, out_width = out.shape[1], out.shape[2]
    for n in range(n_images):
        for i in range(out_height):
            for j in range(out_width):
                for o in range(c_out):
                    out[n, i, j, o] = 0
                for a in range(kh):
                    qr = i * strides[0] + a * rhs_dilation[0] - pads[0]
                    if qr < 0 or qr % lhs_dilation[0] != 0 or qr // lhs_dilation[0] >= height:
                        continue
                    row = qr // lhs_dilation[0]
                    for b in range(kw):
                        qc = j * strides[1] + b * rhs_dilation[1] - pads[1]
                        if qc < 0 or qc % lhs_dilation[1] != 0 or qc // lhs_dilation[1] >= width:
                            continue
                        col = qc // lhs_dilation[1]
                        for g in range(groups):
                            for c in range(cg):
                                xv = x[n, row, col, g * cg + c]
                                for o in range(og):
                                    out[n, i, j, g * og + o] += xv * w[a, b, c, g * og + o]


# Max pooling (ops/pool.py), channels last, 2-D (a 1-D pool is a 2-D one of height 1): each
# window's first maximum in row-major order among its taps inside the input (padding is
# -inf: never the maximum), NaN winning as in numpy's max. The first in row-major order is
# the one of smallest flat index, so a maximum is found in two passes of long, contiguous,
# vectorisable loops per output row, down the window's rows then along its columns (see
# `_pooled_row`), instead of per window over taps and its few channels: W10's first pool
# (64 x 24 x 24 x 8) took 0.7-1.2 ms by windows.


@numba.njit(nogil=True)
def _pooled_row(source, n, i, shape, window, strides, pads, scratch, indices):
    """For output row i of image n: scratch[1, t] = the maximum of window (j, c) and
    indices[1, t] its index in the flat `source` (N, H, W, C), -1 when no tap is inside the
    image, at t = j * strides[1] * C + c. First, down the window's rows: for each column p
    of the padded row (input column p - pads[1]) and channel, the first maximum over the rows
    inside the image (scratch[0], indices[0]); then along each window's columns, the first
    of the column maxima that is largest (ties: the smaller index, which comes first)."""
    _, height, width, channels = shape
    padded_width = scratch.shape[1] // channels
    columns = padded_width * channels
    down, down_at = scratch[0], indices[0]
    for t in range(columns):
        down[t] = -np.inf
        down_at[t] = -1
    first = pads[1] * channels
    inside = (min(padded_width, pads[1] + width) - pads[1]) * channels
    for a in range(window[0]):
        row = i * strides[0] + a - pads[0]
        if row < 0 or row >= height or inside <= 0:
            continue
        start = ((n * height + row) * width) * channels
        values = span(source, start, inside)
        best, at = span(down, first, inside), span(down_at, first, inside)
        for t in range(inside):
            v, b = values[t], best[t]
            if at[t] < 0 or v > b or (v != v and b == b):
                best[t] = v
                at[t] = start + t
    across, across_at = scratch[1], indices[1]
    length = columns - (window[1] - 1) * channels
    if length <= 0:  # no output column
        return
    for t in range(length):
        across[t] = down[t]
        across_at[t] = down_at[t]
    for b in range(1, window[1]):
        shifted = span(down, b * channels, length)
        shifted_at = span(down_at, b * channels, length)
        for t in range(length):
            v, k = shifted[t], shifted_at[t]
            best, at = across[t], across_at[t]
            if k >= 0 and (
                at < 0
                or v > best
                or (v == best and k < at)
                or (v != v and (best == best or k < at))
            ):
                across[t] = v
                across_at[t] = k


@numba.njit(nogil=True)
def _row_maxima(source, n, i, shape, window, strides, pads, scratch):
    """`_pooled_row` without the indices, for the forward pool: scratch[1, t] = the maximum of
    window (j, c) at t = j * strides[1] * C + c, -inf when no tap is inside the image.
    Without the positions the forward pool is 2.6x faster (W10's first: 0.29 -> 0.11 ms)."""
    _, height, width, channels = shape
    columns = scratch.shape[1]
    down, across = scratch[0], scratch[1]
    for t in range(columns):
        down[t] = -np.inf
    first = pads[1] * channels
    inside = (min(columns // channels, pads[1] + width) - pads[1]) * channels
    for a in range(window[0]):
        row = i * strides[0] + a - pads[0]
        if row < 0 or row >= height or inside <= 0:
            continue
        values = span(source, ((n * height + row) * width) * channels, inside)
        best = span(down, first, inside)
        for t in range(inside):
            v, b = values[t], best[t]
            if v > b or (v != v and b == b):
                best[t] = v
    length = columns - (window[1] - 1) * channels
    if length <= 0:  # no output column
        return
    for t in range(length):
        across[t] = down[t]
    for b in range(1, window[1]):
        shifted = span(down, b * channels, length)
        for t in range(length):
            v, best = shifted[t], across[t]
            if v > best or (v != v and best == best):
                across[t] = v


@numba.njit(nogil=True)
def _pool_scratch(x, pooled, window, strides, helper):
    """The two rows of values and of indices `_pooled_row` works in."""
    if x.shape[0] != pooled.shape[0] or x.shape[3] != pooled.shape[3]:
        raise ValueError(helper + ": the input's and the pooled shapes do not agree")
    padded_width = (pooled.shape[2] - 1) * strides[1] + window[1]
    columns = max(padded_width, 1) * x.shape[3]
    return np.empty((2, columns), x.dtype), np.empty((2, columns), np.int64)


@numba.njit(cache=True, nogil=True)
def max_pool2(x, out, window, strides, pads):
    """out[n, i, j, c] = the maximum of window (i, j)."""
    scratch, _ = _pool_scratch(x, out, window, strides, "max_pool2")
    channels, step = x.shape[3], strides[1] * x.shape[3]
    source = view(x, (x.size,))
    if _windows_tile(x.shape, out.shape, window, strides, pads):
        _window_tiles(source, source, view(out, (out.size,)), x.shape, out.shape, window, False)
        return
    for n in range(out.shape[0]):
        for i in range(out.shape[1]):
            _row_maxima(source, n, i, x.shape, window, strides, pads, scratch)
            maxima = scratch[1]
            for j in range(out.shape[2]):
                for c in range(channels):
                    out[n, i, j, c] = maxima[j * step + c]


@numba.njit(cache=True, nogil=True)
def max_pool_scatter2(x, g, out, window, strides, pads):
    """out (x's shape) = zeros plus g[n, i, j, c] at each window's maximum."""
    scratch, indices = _pool_scratch(x, g, window, strides, "max_pool_scatter2")
    if out.shape != x.shape:
        raise ValueError("max_pool_scatter2: the output's shape is not the input's")
    channels, step = x.shape[3], strides[1] * x.shape[3]
    source = view(x, (x.size,))
    target = view(out, (out.size,))
    if _windows_tile(x.shape, g.shape, window, strides, pads):
        _window_tiles(source, view(g, (g.size,)), target, x.shape, g.shape, window, True)
        return
    for k in range(target.shape[0]):
        target[k] = 0
    for n in range(g.shape[0]):
        for i in range(g.shape[1]):
            _pooled_row(source, n, i, x.shape, window, strides, pads, scratch, indices)
            at = indices[1]
            for j in range(g.shape[2]):
                for c in range(channels):
                    k = at[j * step + c]
                    if k >= 0:
                        target[k] += g[n, i, j, c]


# Channels per vector on max pooling's fast path (_window_tiles): one block loop, compiled once
# (a loop per vector width, 16, 8 and 1 lanes as the convolutions have them, took max_pool2's
# first compile from 0.3-0.5 to 9.7 s: each `numba.literally` width is a compile of its own).
WINDOW_LANES = 8


@numba.njit(nogil=True)
def _windows_tile(shape, pooled, window, strides, pads):
    """Whether the pooling windows lie side by side inside the image, none overlapping (the
    usual 2x2 pool with stride 2, 'VALID' or an even size), over whole vectors of channels."""
    return (
        window[0] == strides[0]
        and window[1] == strides[1]
        and pads[0] == 0
        and pads[1] == 0
        and pooled[1] * window[0] <= shape[1]
        and pooled[2] * window[1] <= shape[2]
        and shape[3] % WINDOW_LANES == 0
    )


@numba.njit(nogil=True)
def _window_tiles(source, cotangents, target, shape, pooled, window, route):
    """max_pool2 (`route` False: the maxima into `target`, pooled's shape) or
    max_pool_scatter2 (`route` True: `target`, the input's shape, = g where an element is its
    window's first maximum, else 0, every element written once) where the windows tile the
    image (_windows_tile), WINDOW_LANES channels at a time (simd.py). The taps of a window
    are compared in row-major order (the first of equal maxima wins, as in `_pooled_row`),
    the winning tap's number kept as a float vector beside the maxima when routing. The
    general helpers find each row's maxima (and positions) in scratch rows, and the scatter
    zeroes the whole input first, then adds g one element at a time through those positions:
    W10's kernel took 2.3-2.6 ms with them, 2.0-2.1 ms with this (its first pool alone,
    (64, 24, 24, 8): 118-183 -> 70-75 us forward, 374-519 -> 145-147 us backward)."""
    n_images, height, width, channels = shape
    out_h, out_w = pooled[1], pooled[2]
    kh, kw = window
    pitch = width * channels
    zeros = vzeros(target, WINDOW_LANES)
    by_loops = kh != 2 or kw != 2
    if not by_loops:
        _two_by_two(source, cotangents, target, shape, pooled, route)
    for n in range(n_images if by_loops else 0):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(0, channels, WINDOW_LANES):
                    corner = (n * height + i * kh) * pitch + j * kw * channels + c
                    at = ((n * out_h + i) * out_w + j) * channels + c
                    best, winner = vload(source, corner, WINDOW_LANES), zeros
                    for a in range(kh):
                        for b in range(kw):
                            if a + b > 0:
                                at_tap = corner + a * pitch + b * channels
                                v = vload(source, at_tap, WINDOW_LANES)
                                better = vbetter(v, best)
                                best = vselect(better, v, best)
                                if route:
                                    tap = vsplat(target, a * kw + b, WINDOW_LANES)
                                    winner = vselect(better, tap, winner)
                    if not route:
                        vstore(target, at, best)
                        continue
                    gradient = vload(cotangents, at, WINDOW_LANES)
                    for a in range(kh):
                        for b in range(kw):
                            tap = vsplat(target, a * kw + b, WINDOW_LANES)
                            routed = vselect(vequal(winner, tap), gradient, zeros)
                            vstore(target, corner + a * pitch + b * channels, routed)
    if not route:
        return
    covered_rows, covered = pooled[1] * window[0], pooled[2] * window[1] * channels
    for n in range(n_images):  # rows and columns past the last window: no gradient
        for row in range(height):
            start = (n * height + row) * width * channels
            begin = 0 if row >= covered_rows else covered
            for k in range(start + begin, start + width * channels):
                target[k] = 0


@numba.njit(nogil=True, _nrt=False)
def _two_by_two(source, cotangents, target, shape, pooled, route):
    """_window_tiles for 2 x 2 windows, their four taps in straight-line code: the general
    loops over a window's rows and columns cost more than the comparisons (W10's first pool
    gradient alone, (32, 24, 24, 8) after a relu: 85 -> 50 us; the pool itself 43 -> 16 us).
    A tap wins where it is better (vbetter) than the best of the taps before it in row-major
    order; g goes to the last tap that won, through a chain of selects."""
    n_images, height, width, channels = shape
    out_h, out_w = pooled[1], pooled[2]
    pitch = width * channels
    zeros = vzeros(target, WINDOW_LANES)
    for n in range(n_images):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(0, channels, WINDOW_LANES):
                    corner = (n * height + i * 2) * pitch + j * 2 * channels + c
                    v00 = vload(source, corner, WINDOW_LANES)
                    v01 = vload(source, corner + channels, WINDOW_LANES)
                    v10 = vload(source, corner + pitch, WINDOW_LANES)
                    v11 = vload(source, corner + pitch + channels, WINDOW_LANES)
                    won01 = vbetter(v01, v00)
                    best = vselect(won01, v01, v00)
                    won10 = vbetter(v10, best)
                    best = vselect(won10, v10, best)
                    won11 = vbetter(v11, best)
                    at = ((n * out_h + i) * out_w + j) * channels + c
                    if not route:
                        vstore(target, at, vselect(won11, v11, best))
                        continue
                    rest = vload(cotangents, at, WINDOW_LANES)
                    vstore(target, corner + pitch + channels, vselect(won11, rest, zeros))
                    rest = vselect(won11, zeros, rest)
                    vstore(target, corner + pitch, vselect(won10, rest, zeros))
                    rest = vselect(won10, zeros, rest)
                    vstore(target, corner + channels, vselect(won01, rest, zeros))
                    vstore(target, corner, vselect(won01, zeros, rest))


@numba.njit(cache=True, nogil=True)
def max_pool_gather2(x, h, out, window, strides, pads):
    """out[n, i, j, c] = h at window (i, j)'s maximum of x."""
    scratch, indices = _pool_scratch(x, out, window, strides, "max_pool_gather2")
    if h.shape != x.shape:
        raise ValueError("max_pool_gather2: the tangent's shape is not the input's")
    channels, step = x.shape[3], strides[1] * x.shape[3]
    source = view(x, (x.size,))
    tangents = view(h, (h.size,))
    for n in range(out.shape[0]):
        for i in range(out.shape[1]):
            _pooled_row(source, n, i, x.shape, window, strides, pads, scratch, indices)
            at = indices[1]
            for j in range(out.shape[2]):
                for c in range(channels):
                    k = at[j * step + c]
                    out[n, i, j, c] = tangents[k] if k >= 0 else 0


@numba.njit(cache=True, nogil=True)
def conv2_gemm(x, w, out, patches, strides, pads, rhs_dilation):
    """conv2 without groups or input dilation as matrix products: the windows of a block of
    output positions are copied into `patches` (caller-allocated scratch of KH * KW * C_in
    columns and up to a block's rows, `gemm_conv_block` gives them; zeros for the padding)
    and multiplied by the filters as a (KH * KW * C_in, C_out) matrix by BLAS, block after
    block, so that the patches BLAS reads are still in the cache (W10's second layer: 3.3 MB
    of patches in one block went through memory). A window row inside the image (without
    dilation) is KW * C_in contiguous elements, copied by one loop, not element by element
    with a bounds test on each."""
    n_images, height, width, c_in = x.shape
    kh, kw = w.shape[0], w.shape[1]
    out_height, out_width, c_out = out.shape[1], out.shape[2], out.shape[3]
    if out.shape[0] != n_images or w.shape[2] != c_in or w.shape[3] != c_out:
        raise ValueError("conv2_gemm: the images', filters', output's shapes do not agree")
    window_row = kw * c_in
    if patches.shape[0] < 1 or patches.shape[1] != kh * window_row:
        raise ValueError("conv2_gemm: the patches scratch has the wrong shape")
    filters = strided(view(w, (kh * window_row, c_out)))
    products = view(out, (n_images * out_height * out_width, c_out))
    block, filled, done = patches.shape[0], 0, 0
    columns = view(patches, (block * kh * window_row,))
    for n in range(n_images):
        image = view(x[n], (height * width * c_in,))
        for i in range(out_height):
            for j in range(out_width):
                first = j * strides[1] - pads[1]
                for a in range(kh):
                    r = i * strides[0] + a * rhs_dilation[0] - pads[0]
                    target = span(columns, (filled * kh + a) * window_row, window_row)
                    row_inside = 0 <= r < height
                    if row_inside and rhs_dilation[1] == 1 and first >= 0 and first + kw <= width:
                        source = span(image, (r * width + first) * c_in, window_row)
                        for k in range(window_row):
                            target[k] = source[k]
                    else:
                        for b in range(kw):
                            q = first + b * rhs_dilation[1]
                            inside = row_inside and 0 <= q < width
                            for c in range(c_in):
                                target[b * c_in + c] = x[n, r, q, c] if inside else 0
                filled += 1
                if filled == block:
                    matmul_into(strided(patches), filters, products[done : done + block])
                    done += block
                    filled = 0
    if filled:
        matmul_into(strided(patches[:filled]), filters, products[done : done + filled])


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


# Linear algebra (ops/decompositions.py): one matrix per call, the kernel loops over the batch
# (backend/numba/linalg.py). Results go into the caller's output, packed results (slogdet, qr,
# eigh, svd) flat in the order of their parts. A failure (not positive definite, singular,
# non-finite input, no convergence) fills the output with NaN, as the eager impls do: Numba's
# np.linalg raises, and an exception from inside a kernel would lose the caller's context.
# Each np.linalg call is in a function of its own (`lapack_*`) that only ever sees fresh,
# writable C arrays: Numba compiles np.linalg for seconds, and the `*_into` helpers, typed once
# per combination of read-only and writable operands, then only link to it.


@numba.njit(cache=True, nogil=True)
def lapack_cholesky(s):
    return np.linalg.cholesky(s)


@numba.njit(cache=True, nogil=True)
def lapack_solve(a, b):
    return np.linalg.solve(a, b)


@numba.njit(cache=True, nogil=True)
def lapack_slogdet(a):
    return np.linalg.slogdet(a)


@numba.njit(cache=True, nogil=True)
def lapack_qr(a):
    return np.linalg.qr(a)


@numba.njit(cache=True, nogil=True)
def lapack_eigh(s):
    return np.linalg.eigh(s)


@numba.njit(cache=True, nogil=True)
def lapack_svd(a):
    return np.linalg.svd(a, full_matrices=False)


@numba.njit(cache=True, nogil=True)
def lapack_lstsq(a, b, rcond):
    return np.linalg.lstsq(a, b, rcond)[0]


@numba.njit(cache=True, nogil=True)
def symmetric_part(a):
    """(a + a^T) / 2, which cholesky and eigh factor (their eager impls do the same)."""
    n = a.shape[0]
    s = np.empty((n, n), a.dtype)
    for i in range(n):
        for j in range(n):
            s[i, j] = (a[i, j] + a[j, i]) * 0.5
    return s


@numba.njit(cache=True, nogil=True)
def cholesky_into(a, out):
    """out = the lower Cholesky factor of a's symmetric part; NaN if not positive definite."""
    if a.shape[0] == 0:
        return
    try:
        factor = lapack_cholesky(symmetric_part(a))
    except Exception:  # noqa: BLE001 - Numba catches only bare or Exception
        out[:, :] = np.nan
        return
    copy2(out, factor)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def triangular_solve_into(a, b, out, lower, adjoint):
    """out = op(a)^-1 b for triangular a (op(a) = a^T if `adjoint`), reading one triangle: by
    forward substitution if op(a) is lower triangular, back substitution if upper, a whole row
    of the right-hand sides at a time (the inner loop vectorises). IEEE division by the
    diagonal (error_model numpy): a zero there gives inf/NaN, as the eager impl."""
    n, k = b.shape
    forward = (lower != 0) != (adjoint != 0)
    for step in range(n):
        i = step if forward else n - 1 - step
        for c in range(k):
            out[i, c] = b[i, c]
        lo, hi = (0, i) if forward else (i + 1, n)
        for j in range(lo, hi):
            t = a[j, i] if adjoint != 0 else a[i, j]
            for c in range(k):
                out[i, c] -= t * out[j, c]
        d = a[i, i]
        for c in range(k):
            out[i, c] = out[i, c] / d


@numba.njit(cache=True, nogil=True)
def solve_into(a, b, out, adjoint):
    """out = op(a)^-1 b by LU (np.linalg.solve); NaN if a is singular."""
    n, k = b.shape
    if n == 0 or k == 0:
        return
    m = np.empty((n, n), a.dtype)
    for i in range(n):
        for j in range(n):
            m[i, j] = a[j, i] if adjoint != 0 else a[i, j]
    try:
        x = lapack_solve(m, b.copy())
    except Exception:  # noqa: BLE001
        out[:, :] = np.nan
        return
    copy2(out, x)


@numba.njit(cache=True, nogil=True)
def slogdet_into(a, out):
    """out = (sign, log|det a|); (0, -inf) if a is singular."""
    if a.shape[0] == 0:
        out[0], out[1] = 1, 0
        return
    try:
        sign, logdet = lapack_slogdet(a.copy())
    except Exception:  # noqa: BLE001
        out[0], out[1] = np.nan, np.nan
        return
    out[0], out[1] = sign, logdet


@numba.njit(cache=True, nogil=True)
def qr_into(a, out, full):
    """out = (Q, R) flat; a complete QR of a tall `a` is the reduced QR of [a | I], of which R's
    first n columns are kept (decompositions.qr_input: the eager impl does the same)."""
    m, n = a.shape
    cols = n + m if full != 0 and m > n else n
    x = np.zeros((m, cols), a.dtype)
    for i in range(m):
        for j in range(n):
            x[i, j] = a[i, j]
        if cols > n:
            x[i, n + i] = 1
    if m == 0 or cols == 0:
        return
    try:
        q, r = lapack_qr(x)
    except Exception:  # noqa: BLE001
        out[:] = np.nan
        return
    kq = q.shape[1]
    for i in range(m):
        for j in range(kq):
            out[i * kq + j] = q[i, j]
    start = m * kq
    for i in range(kq):
        for j in range(n):
            out[start + i * n + j] = r[i, j]


@numba.njit(cache=True, nogil=True)
def eigh_into(a, out):
    """out = (w, V) flat: the eigendecomposition of a's symmetric part."""
    n = a.shape[0]
    if n == 0:
        return
    try:
        w, v = lapack_eigh(symmetric_part(a))
    except Exception:  # noqa: BLE001
        out[:] = np.nan
        return
    for i in range(n):
        out[i] = w[i]
        for j in range(n):
            out[n + i * n + j] = v[i, j]


@numba.njit(cache=True, nogil=True)
def svd_into(a, out):
    """out = (U, s, V) flat: the reduced SVD, V = vh^T."""
    m, n = a.shape
    k = min(m, n)
    if k == 0:
        return
    try:
        u, s, vh = lapack_svd(a.copy())
    except Exception:  # noqa: BLE001
        out[:] = np.nan
        return
    for i in range(m):
        for j in range(k):
            out[i * k + j] = u[i, j]
    for j in range(k):
        out[m * k + j] = s[j]
    start = m * k + k
    for i in range(n):
        for j in range(k):
            out[start + i * k + j] = vh[j, i]


@numba.njit(cache=True, nogil=True)
def lstsq_into(a, b, out, rcond):
    """out = the minimum-norm least-squares solution a^+ b (np.linalg.lstsq, cutoff rcond)."""
    m, n = a.shape
    if m == 0 or n == 0 or b.shape[1] == 0:
        out[:, :] = 0
        return
    try:
        x = lapack_lstsq(a.copy(), b.copy(), rcond)
    except Exception:  # noqa: BLE001
        out[:, :] = np.nan
        return
    copy2(out, x)
