"""Small Numba helpers that generated kernels import (kept out of the kernels' source so they
are compiled once and cached)."""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from jitgrad.backend.numba.helper_names import RUNTIME_MODULE
from jitgrad.backend.numba.philox import (  # noqa: F401 - kernels import them from here
    philox_bits,
    philox_normal,
    philox_truncated_normal,
    philox_uniform32,
    philox_uniform64,
)
from jitgrad.backend.numba.simd import (
    vbetter,
    vequal,
    vload,
    vselect,
    vsplat,
    vstore,
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
def writable(typingctx, array):
    """`array`, typed writeable: the exchange array of a sharded update, a kernel input that
    its exchange ops write into (emit.py: publish_rows, exchange_rows, allgather_rows); kernels type
    every input read-only."""
    return _retyped(array, readonly=False)


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
def carve(typingctx, buffer, start, shape, dtype):
    """The C-contiguous array of `dtype` (np.float32, ...) and `shape` at byte `start` of the
    1-D uint8 `buffer`, which keeps it alive: a kernel's temporaries, parts of one buffer
    (Emitter.carve_temporaries). What `view(buffer[start:end].view(dtype), shape)` gives, for
    none of its compile time: that took ~30 ms per temporary (W7's step compiled in 2.7 s
    instead of 1.9)."""
    if not (
        isinstance(buffer, types.Array)
        and buffer.layout == "C"
        and buffer.ndim == 1
        and buffer.dtype == types.uint8
        and isinstance(start, types.Integer)
        and isinstance(dtype, types.NumberClass)
    ):
        return None
    if not (
        isinstance(shape, types.BaseTuple) and all(isinstance(t, types.Integer) for t in shape)
    ):
        return None
    result = types.Array(dtype.instance_type, len(shape), "C")

    def codegen(context, builder, signature, args):
        buffer_type, start_type, shape_type, _ = signature.args
        source = context.make_array(buffer_type)(context, builder, args[0])
        first = context.cast(builder, args[1], start_type, types.intp)
        itemsize = context.get_constant(
            types.intp, context.get_abi_sizeof(context.get_data_type(result.dtype))
        )
        sizes = [
            context.cast(builder, size, t, types.intp)
            for size, t in zip(cgutils.unpack_tuple(builder, args[2], len(shape_type)), shape_type)
        ]
        strides, stride, negative = [], itemsize, builder.icmp_signed("<", first, first.type(0))
        for size in reversed(sizes):
            strides.insert(0, stride)
            stride = builder.mul(stride, size)
            negative = builder.or_(negative, builder.icmp_signed("<", size, size.type(0)))
        outside = builder.icmp_signed(">", builder.add(first, stride), source.nitems)
        with builder.if_then(builder.or_(negative, outside), likely=False):
            context.call_conv.return_user_exc(
                builder, ValueError, ("carve: the part does not lie inside the buffer",)
            )
        out = context.make_array(result)(context, builder)
        data = builder.bitcast(builder.gep(source.data, [first]), out.data.type)
        context.populate_array(
            out,
            data=data,
            shape=cgutils.pack_array(builder, sizes),
            strides=cgutils.pack_array(builder, strides),
            itemsize=itemsize,
            meminfo=source.meminfo,
            parent=source.parent,
        )
        return impl_ret_borrowed(context, builder, result, out._getvalue())

    return result(buffer, start, shape, dtype), codegen


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
def copy_flat(dst, src):
    """dst[:] = src for contiguous 1-D float arrays of one size, 16 elements at a time: a
    sharded step's copies of whole values into and out of its exchange array (emit.py:
    publish, allgather_rows). Numba's `dst[:] = src` copies element by element: W11's 0.8 MB,
    half of it written by the other core, took 0.085 ms that way and 0.063 ms this way."""
    if dst.size != src.size:
        raise ValueError("copy_flat: the arrays' sizes differ")
    whole = src.size - src.size % 16
    for i in range(0, whole, 16):
        vstore(dst, i, vload(src, i, 16))
    for i in range(whole, src.size):
        dst[i] = src[i]


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
