"""Vectors of a few floats as values in Numba code: loads, stores and fused multiply-adds that
LLVM keeps in SIMD registers.

Why: LLVM vectorises only innermost loops, and only when it can prove they are worth it. A
loop nest whose innermost loop is over 8 or 16 output channels (a filter gradient's register
tile) stays scalar: with a run-time trip count the loop vectoriser gives up at 8 or 16
iterations, and with a constant one the unrolled scalar accumulators, carried from one
iteration of the outer loop to the next, are not what the SLP vectoriser rewrites (it starts
from stores). Here the accumulator IS a vector (`Vec`, an LLVM `<lanes x float>`), so the
loop-carried values stay in registers and each update is one FMA instruction.

    acc = vzeros(a, 16)                  # 16 zeros of a's dtype
    acc = vfma(acc, s, vload(a, i, 16))  # acc + s * a[i:i + 16], fused
    vstore(out, j, acc)                  # out[j:j + 16] = acc
    vaddto(out, j, acc)                  # out[j:j + 16] += acc
    s = load(a, i)                       # a[i], unchecked
    acc = vrelu(vadd(acc, b))            # lane by lane: + and relu

Lane-wise arithmetic, comparisons and masks (vsub ... vnot, vload_mask, vstore_mask, at the end)
are what the emitter's vector loops call (vector_loops.py).

`lanes` must be a compile-time constant (a literal, or a `numba.literally` argument). The
loads and stores (`load` too) do NOT check bounds: their callers check the extents once, up
front, as they do for `runtime.span`. On a machine without 16-lane registers LLVM splits the
operations.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model


class Vec(types.Type):
    """`lanes` values of the float type `dtype`, one LLVM vector."""

    def __init__(self, dtype, lanes: int):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec({dtype}, {lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _lanes(lanes) -> int | None:
    return lanes.literal_value if isinstance(lanes, types.IntegerLiteral) else None


def _floats(array) -> bool:
    return isinstance(array, types.Array) and array.dtype in (types.float32, types.float64)


def _splat(builder, scalar, vector_type):
    """`scalar` in every lane of an LLVM vector of `vector_type`."""
    undefined = ir.Constant(vector_type, ir.Undefined)
    first = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(first, undefined, zeros)


def _indices(lanes) -> ir.Constant:
    """A shuffle mask: the lanes to take, numbered across the two vectors shuffled."""
    lanes = list(lanes)
    return ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes)


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic(prefer_literal=True)
def vload(typingctx, array, index, lanes):
    """array[index:index + lanes] of a 1-D contiguous float array, as a Vec."""
    count = _lanes(lanes)
    if count is None or not _floats(array) or not isinstance(index, types.Integer):
        return None
    vec = Vec(array.dtype, count)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        vector_type = context.get_value_type(vec)
        return builder.load(builder.bitcast(pointer, vector_type.as_pointer()), align=1)

    return vec(array, index, lanes), codegen


@intrinsic
def load(typingctx, array, index):
    """array[index] of a 1-D contiguous float array, without the test for a negative index
    Numba makes (its wraparound costs three instructions and a register per load)."""
    if not _floats(array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1]))

    return array.dtype(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """array[index:index + lanes] = value."""
    if not isinstance(value, Vec) or not _floats(array) or array.dtype != value.dtype:
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, args[2].type.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def vaddto(typingctx, array, index, value):
    """array[index:index + lanes] += value (lanes: value's)."""
    if not isinstance(value, Vec) or not _floats(array) or array.dtype != value.dtype:
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        pointer = builder.bitcast(pointer, args[2].type.as_pointer())
        builder.store(builder.fadd(builder.load(pointer, align=1), args[2]), pointer, align=1)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic(prefer_literal=True)
def vzeros(typingctx, like, lanes):
    """A Vec of `lanes` zeros of the array `like`'s dtype."""
    count = _lanes(lanes)
    if count is None or not _floats(like):
        return None
    vec = Vec(like.dtype, count)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vec), None)

    return vec(like, lanes), codegen


@intrinsic
def vfma(typingctx, acc, scalar, vector):
    """acc + scalar * vector, fused (one rounding), the scalar broadcast to every lane."""
    if not isinstance(acc, Vec) or acc != vector:
        return None

    def codegen(context, builder, sig, args):
        acc_value, scalar_value, vector_value = args
        vector_type = acc_value.type
        scalar_value = context.cast(builder, scalar_value, sig.args[1], sig.args[0].dtype)
        lanes = vector_type.count
        splat = _splat(builder, scalar_value, vector_type)
        bits = 32 if sig.args[0].dtype == types.float32 else 64
        fma = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector_type, [vector_type] * 3),
            f"llvm.fma.v{lanes}f{bits}",
        )
        return builder.call(fma, [splat, vector_value, acc_value])

    return acc(acc, scalar, vector), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b, lane by lane."""
    if not isinstance(a, Vec) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vstraddle(typingctx, a, b):
    """The vector that straddles a and b laid end to end: a's upper half, then b's lower half
    (one lane-crossing shuffle). conv2_scatter's paired taps add it to the vector between."""
    if not isinstance(a, Vec) or a != b or a.lanes % 2:
        return None

    def codegen(context, builder, sig, args):
        lanes = a.lanes
        mask = _indices(range(lanes // 2, lanes + lanes // 2))
        return builder.shuffle_vector(args[0], args[1], mask)

    return a(a, b), codegen


def _half(a, upper: bool):
    """The signature and code of a's lower or upper half, a Vec of half its lanes."""
    if not isinstance(a, Vec) or a.lanes % 2:
        return None
    half, first = Vec(a.dtype, a.lanes // 2), a.lanes // 2 if upper else 0

    def codegen(context, builder, sig, args):
        mask = _indices(range(first, first + a.lanes // 2))
        return builder.shuffle_vector(args[0], args[0], mask)

    return half(a), codegen


@intrinsic
def vlower(typingctx, a):
    """a's lower half, a Vec of half its lanes."""
    return _half(a, upper=False)


@intrinsic
def vupper(typingctx, a):
    """a's upper half, a Vec of half its lanes."""
    return _half(a, upper=True)


@intrinsic(prefer_literal=True)
def vlowmask(typingctx, like, lanes):
    """A Vec of `lanes` booleans, True in its lower half (for vselect)."""
    n = _lanes(lanes)
    if n is None or n % 2 or not _floats(like):
        return None
    vec = Vec(types.boolean, n)

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.VectorType(ir.IntType(1), n), [int(i < n // 2) for i in range(n)])

    return vec(like, lanes), codegen


@intrinsic
def vjoin(typingctx, a, b):
    """a then b as one vector of twice the lanes."""
    if not isinstance(a, Vec) or a != b:
        return None
    joined = Vec(a.dtype, 2 * a.lanes)

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[1], _indices(range(2 * a.lanes)))

    return joined(a, b), codegen


@intrinsic
def vtranspose8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """Eight vectors of 16 lanes, a_c[p] (16 positions p of one channel c each), as the 8
    vectors of those positions in NHWC order, two positions of 8 channels each: b_m[8 r + c]
    = a_c[2 m + r]. Three rounds of two-vector shuffles (24 in all), interleaving 1, 2, then
    4 channels at a time."""
    vectors = (a0, a1, a2, a3, a4, a5, a6, a7)
    if not all(isinstance(v, Vec) and v == a0 for v in vectors) or a0.lanes != 16:
        return None

    def interleave(builder, x, y, width, half):
        """x and y hold the same positions, `width` channels each; their first (half 0) or
        last (half 1) half of those positions with the 2 * width channels, as one vector."""
        mask = []
        for i in range(16):
            r = i % (2 * width)
            position = half * (8 // width) + i // (2 * width)
            mask.append(position * width + r % width + (16 if r >= width else 0))
        return builder.shuffle_vector(x, y, _indices(mask))

    def codegen(context, builder, sig, args):
        # (channel group, block of positions) -> a vector; each round pairs the channel
        # groups 2g and 2g + 1 of a block and halves the blocks
        layer, width = {(c, 0): v for c, v in enumerate(args)}, 1
        while width < 8:
            layer = {
                (g, 2 * block + half): interleave(
                    builder, layer[2 * g, block], layer[2 * g + 1, block], width, half
                )
                for g in range(8 // (2 * width))
                for block in range(width)
                for half in (0, 1)
            }
            width *= 2
        return context.make_tuple(builder, sig.return_type, [layer[0, m] for m in range(8)])

    return types.UniTuple(a0, 8)(*vectors), codegen


@intrinsic
def vrelu(typingctx, a):
    """Each lane x as `x if x > 0 else +0.0` (relu as ops/nn.py writes it: NaN and -0.0 give
    +0.0), one compare and one select per vector."""
    if not isinstance(a, Vec):
        return None

    def codegen(context, builder, sig, args):
        zeros = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", args[0], zeros), args[0], zeros)

    return a(a), codegen


@intrinsic(prefer_literal=True)
def vsplat(typingctx, like, value, lanes):
    """A Vec of `lanes` copies of `value`, in the array `like`'s dtype."""
    count = _lanes(lanes)
    if count is None or not _floats(like) or not isinstance(value, (types.Integer, types.Float)):
        return None
    vec = Vec(like.dtype, count)

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[1], sig.args[1], like.dtype)
        return _splat(builder, scalar, context.get_value_type(vec))

    return vec(like, value, lanes), codegen


@intrinsic
def vbetter(typingctx, v, best):
    """Lane by lane, whether v replaces best as a maximum that keeps the first of equal ones:
    v > best, or v is NaN and best is not (a NaN is the maximum, as numpy's and
    TensorFlow's max pooling have it). A Vec of booleans, for vselect."""
    if not isinstance(v, Vec) or v != best:
        return None

    def codegen(context, builder, sig, args):
        greater = builder.fcmp_ordered(">", args[0], args[1])
        nan_over_number = builder.and_(
            builder.fcmp_unordered("uno", args[0], args[0]),
            builder.fcmp_ordered("ord", args[1], args[1]),
        )
        return builder.or_(greater, nan_over_number)

    return Vec(types.boolean, v.lanes)(v, best), codegen


@intrinsic
def vequal(typingctx, a, b):
    """Lane by lane, a == b (False where either is NaN). A Vec of booleans."""
    if not isinstance(a, Vec) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fcmp_ordered("==", args[0], args[1])

    return Vec(types.boolean, a.lanes)(a, b), codegen


@intrinsic
def vselect(typingctx, mask, a, b):
    """Lane by lane, a where mask, else b."""
    if not (isinstance(mask, Vec) and mask.dtype == types.boolean and isinstance(a, Vec)):
        return None
    if a != b or mask.lanes != a.lanes:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(args[0], args[1], args[2])

    return a(mask, a, b), codegen


# -- lane-by-lane arithmetic for generated loops (vector_loops.py) ----------------------------
# Each is one LLVM instruction on whole vectors that rounds every lane exactly as the scalar
# operation Numba emits for `a - b`, `a > b`, `-a`, `abs(a)` or `math.sqrt(a)` does (there are
# no fast-math flags): a loop in vectors computes the bits of the scalar loop it replaces.


def _lanewise(name: str, arity: int, build, on_masks: bool = False, gives_mask: bool = False):
    """The intrinsic `name(a[, b])` on Vecs of one type, made by `build(builder, *values)`:
    Vecs of floats (of booleans: `on_masks`), giving a Vec of their type (of booleans:
    `gives_mask`)."""

    def signature(operands):
        first = operands[0]
        if not isinstance(first, Vec) or any(operand != first for operand in operands):
            return None
        if (first.dtype == types.boolean) != on_masks:
            return None
        result = Vec(types.boolean, first.lanes) if gives_mask else first

        def codegen(context, builder, sig, args):
            return build(builder, *args)

        return result(*operands), codegen

    # Numba lowers a call by the typer's own parameters: one per operand, no *args.
    if arity == 1:

        def typer(typingctx, a):
            return signature((a,))

    else:

        def typer(typingctx, a, b):
            return signature((a, b))

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


def _llvm_function(builder, name: str, value):
    """The LLVM intrinsic `llvm.<name>` of `value`'s vector type (fabs, sqrt), called on it."""
    vector_type = value.type
    bits = 32 if isinstance(vector_type.element, ir.FloatType) else 64
    function = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector_type, [vector_type]),
        f"llvm.{name}.v{vector_type.count}f{bits}",
    )
    return builder.call(function, [value])


vsub = _lanewise("vsub", 2, lambda b, x, y: b.fsub(x, y))
vmul = _lanewise("vmul", 2, lambda b, x, y: b.fmul(x, y))
vdiv = _lanewise("vdiv", 2, lambda b, x, y: b.fdiv(x, y))
vneg = _lanewise("vneg", 1, lambda b, x: b.fneg(x))
vabs = _lanewise("vabs", 1, lambda b, x: _llvm_function(b, "fabs", x))
vsqrt = _lanewise("vsqrt", 1, lambda b, x: _llvm_function(b, "sqrt", x))
# Python's comparisons of floats: ordered (False where a lane is NaN), except != (True there).
vless = _lanewise("vless", 2, lambda b, x, y: b.fcmp_ordered("<", x, y), gives_mask=True)
vless_equal = _lanewise(
    "vless_equal", 2, lambda b, x, y: b.fcmp_ordered("<=", x, y), gives_mask=True
)
vgreater = _lanewise("vgreater", 2, lambda b, x, y: b.fcmp_ordered(">", x, y), gives_mask=True)
vgreater_equal = _lanewise(
    "vgreater_equal", 2, lambda b, x, y: b.fcmp_ordered(">=", x, y), gives_mask=True
)
vnot_equal = _lanewise(
    "vnot_equal", 2, lambda b, x, y: b.fcmp_unordered("!=", x, y), gives_mask=True
)
vand = _lanewise("vand", 2, lambda b, x, y: b.and_(x, y), on_masks=True)
vor = _lanewise("vor", 2, lambda b, x, y: b.or_(x, y), on_masks=True)
vnot = _lanewise("vnot", 1, lambda b, x: b.not_(x), on_masks=True)


def _booleans(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.boolean


@intrinsic(prefer_literal=True)
def vload_mask(typingctx, array, index, lanes):
    """array[index:index + lanes] of a 1-D contiguous boolean array (a byte each), as a Vec of
    booleans (for vselect)."""
    count = _lanes(lanes)
    if count is None or not _booleans(array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        bytes_type = ir.VectorType(ir.IntType(8), count)
        loaded = builder.load(builder.bitcast(pointer, bytes_type.as_pointer()), align=1)
        return builder.icmp_unsigned("!=", loaded, ir.Constant(bytes_type, None))

    return Vec(types.boolean, count)(array, index, lanes), codegen


@intrinsic
def vstore_mask(typingctx, array, index, mask):
    """array[index:index + lanes] = mask, a Vec of booleans, into a boolean array (0 or 1)."""
    if not (isinstance(mask, Vec) and mask.dtype == types.boolean and _booleans(array)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        bytes_type = ir.VectorType(ir.IntType(8), mask.lanes)
        pointer = builder.bitcast(pointer, bytes_type.as_pointer())
        builder.store(builder.zext(args[2], bytes_type), pointer, align=1)
        return context.get_dummy_value()

    return types.void(array, index, mask), codegen
