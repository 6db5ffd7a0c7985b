"""Branch-free, vectorisable transcendental functions for generated Numba kernels.

Numba lowers ``math.tanh``/``np.exp`` & co. to scalar libm calls, which stop LLVM's loop
vectoriser (a prange loop over 2**22 float32 ``math.tanh`` calls is ~70x slower than the
vectorised loop).  The functions here are straight-line float/int arithmetic plus selects, so
once LLVM inlines them into a kernel's loop they vectorise to full-width SIMD.

Techniques (as in Cephes, fdlibm, Eigen and XLA): Cody-Waite range reduction with a
round-to-nearest "magic number" add, 2**n built directly in the exponent bits, exponent/mantissa
split of the input's bit pattern for log, and minimax polynomials fitted (Remez, 60-digit
arithmetic) for this module.  Special values (inf, nan, 0, -0.0, denormals) follow numpy.

Every function exists as ``<name>_f32`` and ``<name>_f64``; float32 variants use float32
constants only, so nothing widens to float64.  Call the variant matching the argument dtype;
``VMATH`` maps ``(op, dtype name)`` to the function name for code generators, which import
the names from ``SOURCE_MODULE``.

The functions are compiled with ``fastmath={'contract'}`` (FMA fusion) only and are plain
``njit`` functions, not ``inline='always'``: LLVM inlines them into the calling kernel anyway and
the inlined instructions keep these flags, so results are the same whatever the caller's
fastmath flags (even ``fastmath=True``).  Numba-IR inlining would instead recompile the bodies
under the caller's flags (with ``nnan``/``ninf`` the special-value selects fold away; ``reassoc``
licenses folding ``(t + magic) - magic`` and the Cody-Waite split) and compiles slower.
The private building blocks are the exception. ``_poly`` (Horner) and ``_pow2`` (2**n in the
exponent bits) are intrinsics that emit their few LLVM instructions directly, with the same
flags; ``_expm1_reduced`` and ``_log_reduced``, which only the functions here call, under the
same flags, are inlined in Numba's IR. As functions of their own each cost a compile pipeline
and a cache entry (a cold ``vexp_f32`` took 0.27 s with functions, 0.16-0.2 s with inlining);
the intrinsics took it to 0.1-0.12 s. Inlining ``_expm1_reduced`` by hand measured no faster
than Numba's inlining (~0.01 s), so it stays a function.
Similarly ``error_model='numpy'``: division by zero gives inf/nan rather than a raising branch.
"""

import hashlib
import math
import pickle

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import caching, cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

from jitgrad.backend.numba.helper_names import VMATH, VMATH_MODULE, VMATH_OPS  # noqa: F401 - re-exported

SOURCE_MODULE = VMATH_MODULE
OPS = VMATH_OPS  # the names of VMATH: helper_names.py, which emitting reads without numba

_JIT = {"fastmath": {"contract"}, "error_model": "numpy", "cache": True}
_INNER = {**_JIT, "cache": False, "inline": "always"}  # the building blocks (see above)

# Polynomial coefficients, lowest degree first.  Fitted by Remez exchange in 60-digit arithmetic
# to the relative error of the final result.
#
# exp/expm1 on r in [-ln2/2, ln2/2]: expm1(r) ~= r + r**2 * Q(r), Q ~= (e**r - 1 - r) / r**2.
# Degree 4 for float32: relative error of expm1(r) 1.3e-8 (0.22 ulp).
_EXPM1_Q_F32 = (
    0.49999998154040348809,
    0.16666543620998371786,
    0.041667199861522902559,
    0.0083665205793181688224,
    0.0013882521367374837794,
)
# Degree 9 for float64: relative error 1.8e-17 (0.16 ulp).
_EXPM1_Q_F64 = (
    0.50000000000000051794,
    0.16666666666666589282,
    0.041666666666576754426,
    0.0083333333333895504936,
    0.0013888888931564980971,
    0.00019841269719010065278,
    0.000024801505273657476335,
    2.7557407539942735225e-6,
    2.7626037943569713334e-7,
    2.5053775807456637458e-8,
)
# log1p(f) for f = m - 1, m in [sqrt(1/2), sqrt(2)): with s = f / (2 + f), z = s**2,
# log1p(f) = 2 atanh(s) = 2s + s R(z), R(z) = z G(z), G ~= (2 atanh(sqrt z)/sqrt z - 2) / z
# on z in [0, 0.02944].  Degree 2 for float32: relative error 8.1e-10; degree 6 for float64:
# 1.2e-18.
_LOG_G_F32 = (0.66666776415141588101, 0.39977536978062906872, 0.29871862303528945881)
_LOG_G_F64 = (
    0.66666666666667344602,
    0.39999999999414321237,
    0.28571428742474889507,
    0.22222198563481916961,
    0.18183564866934704225,
    0.15314035827257319014,
    0.14796105530267934531,
)


@intrinsic
def _poly(typingctx, x, c):
    """Horner evaluation of c[0] + c[1] x + c[2] x**2 + ... (c a tuple of x's type),
    unrolled, each step a multiply-add that LLVM may fuse (the 'contract' flag, as the
    functions here are compiled with). An intrinsic: as a Numba function inlined into its
    caller's IR it cost that caller a few hundredths of a second of compile."""
    if not (isinstance(x, types.Float) and isinstance(c, types.UniTuple) and c.dtype == x):
        return None

    def codegen(context, builder, signature, args):
        value, coefficients = args
        terms = cgutils.unpack_tuple(builder, coefficients, signature.args[1].count)
        acc = terms[-1]
        for term in reversed(terms[:-1]):
            acc = builder.fadd(
                builder.fmul(acc, value, flags=("contract",)), term, flags=("contract",)
            )
        return acc

    return x(x, c), codegen


@intrinsic
def _pow2(typingctx, n, to):
    """2**n as the float type `to` (a class: np.float32, np.float64) for an integer n in its
    normal exponent range, written into the exponent bits: (n + bias) << mantissa bits. An
    intrinsic, for the compile time (see `_poly`)."""
    if not (isinstance(n, types.Integer) and isinstance(to, types.NumberClass)):
        return None
    target = to.instance_type
    if not isinstance(target, types.Float):
        return None
    info = np.finfo(np.dtype(str(target)))

    def codegen(context, builder, signature, args):
        bits = ir.IntType(target.bitwidth)
        exponent = context.cast(builder, args[0], n, types.Integer(f"int{target.bitwidth}"))
        exponent = builder.add(exponent, bits(info.maxexp - 1))
        return builder.bitcast(
            builder.shl(exponent, bits(info.nmant)), context.get_value_type(target)
        )

    return target(n, to), codegen


@intrinsic
def _reinterpret(typingctx, x, to):
    """The bits of the scalar `x` read as the number type `to` (a class: np.int32, np.float64,
    of the same width): `x.view(to)`, without the compile pipeline Numba runs for each of its
    scalar `view`s (~30 ms each, twice per function)."""
    if not (isinstance(x, types.Number) and isinstance(to, types.NumberClass)):
        return None
    target = to.instance_type
    if target.bitwidth != x.bitwidth:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(target))

    return target(x, to), codegen


class _ClosureCache(caching.FunctionCache):
    """Numba's cache, keyed so that a closure's entries are found again by the next process.

    Numba keys a closure's entries by pickling its cells, and a captured dispatcher (`vexp`
    calls `_expm1_reduced`) pickles with a uuid drawn per process: every process compiled
    `vexp` again and added a file to the cache. Here a captured dispatcher counts by its
    function's name, bytecode and (recursively) cells; the constants as they are."""

    def _index_key(self, sig, codegen):
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        cells = hashlib.sha256(pickle.dumps(_stable_cells(self._py_func))).hexdigest()
        return sig, codegen.magic_tuple(), (code, cells)


def _stable_cells(py_func) -> tuple:
    cells = []
    for cell in py_func.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, Dispatcher):
            function = value.py_func
            value = (function.__qualname__, function.__code__.co_code, _stable_cells(function))
        cells.append(value)
    return tuple(cells)


def _cached(dispatcher):
    """`dispatcher` with its disk cache keyed by _ClosureCache."""
    dispatcher._cache = _ClosureCache(dispatcher.py_func)
    return dispatcher


def _build(ft, it, exp_lo, exp_hi, expm1_lo, tanh_hi, ln2_hi, ln2_lo, expm1_q, log_g):
    """Compile-time constants and kernels for float type ``ft`` with same-width int ``it``.

    exp_lo/exp_hi clamp exp's argument just beyond its underflow-to-zero / overflow points,
    expm1_lo is where expm1 rounds to -1, tanh_hi where tanh rounds to 1.  ln2_hi has enough
    trailing zero bits that k * ln2_hi is exact for every exponent k; ln2_lo = ln2 - ln2_hi.
    """
    info = np.finfo(ft)
    mant = it(info.nmant)  # 23 / 52 explicit mantissa bits
    bias = it(info.maxexp - 1)  # 127 / 1023
    one_i, mant_mask = it(1), it((1 << info.nmant) - 1)
    zero, half, one, two = ft(0.0), ft(0.5), ft(1.0), ft(2.0)
    inf, nan = ft(np.inf), ft(np.nan)
    tiny = ft(info.smallest_normal)
    # |x| < 2**-(nmant+2): x**2/2 is below half an ulp of x, so expm1(x) rounds to x.
    expm1_tiny = ft(2.0 ** -(info.nmant + 2))
    # Denormal log inputs are scaled by 2**sub_shift into the normal range first.
    sub_shift = info.nmant + 1
    sub_scale, sub_shift_f = ft(2.0**sub_shift), ft(sub_shift)
    log2e = ft(1.0 / math.log(2.0))
    # Adding 1.5 * 2**nmant rounds to an integer (ties-to-even) whose value sits in the low
    # mantissa bits: n = bits(t + magic) - bits(magic), valid for |t| < 2**(nmant - 1).
    magic = ft(1.5 * 2.0**info.nmant)
    magic_bits = magic.view(it)
    # Adding bits(1) - bits(sqrt(1/2)) to bits(x) carries into the exponent field exactly when
    # x's mantissa is >= sqrt 2; then k = exponent field - bias, and the low bits plus
    # bits(sqrt(1/2)) are the bit pattern of x / 2**k, which lies in [sqrt(1/2), sqrt 2).
    sqrt_half_bits = ft(math.sqrt(0.5)).view(it)
    log_offset = it(one.view(it) - sqrt_half_bits)
    exp_lo, exp_hi, expm1_lo, tanh_hi = ft(exp_lo), ft(exp_hi), ft(expm1_lo), ft(tanh_hi)
    ln2_hi, ln2_lo = ft(ln2_hi), ft(ln2_lo)
    expm1_q = tuple(ft(c) for c in expm1_q)
    log_g = tuple(ft(c) for c in log_g)

    @njit(**_INNER)
    def _expm1_reduced(x):
        """(expm1(r), n) with x = n ln2 + r, |r| <= ln2/2; x finite or nan, |x| < 2**(nmant-2)."""
        t = x * log2e + magic
        nf = t - magic
        n = it(_reinterpret(ft(t), it) - magic_bits)
        r = x - nf * ln2_hi  # exact: nf * ln2_hi has few enough bits
        r = r - nf * ln2_lo
        return r + r * r * _poly(r, expm1_q), n

    @_cached
    @njit(**_JIT)
    def vexp(x):
        """exp(x); overflow to inf, gradual underflow through denormals to 0, nan propagates."""
        xc = exp_lo if x < exp_lo else x
        xc = exp_hi if xc > exp_hi else xc
        em, n = _expm1_reduced(xc)
        # 2**n may be outside the normal range (denormal result / overflow): apply it as two
        # normal factors 2**(n//2) * 2**(n - n//2), so only the last product rounds.
        n1 = it(n >> one_i)
        return (one + em) * _pow2(n1, ft) * _pow2(it(n - n1), ft)

    @_cached
    @njit(**_JIT)
    def vexpm1(x):
        """expm1(x), accurate near 0: 2**n (expm1(r) + 1) - 1 = 2 (s expm1(r) + (s - 1/2)).

        s = 2**(n-1) keeps the scale finite up to the overflow threshold; s - 1/2 is exact while
        it matters.  Below expm1_tiny expm1(x) rounds to x: returning x keeps -0.0 and the
        denormals that the halving by s = 1/2 would round away.
        """
        xc = expm1_lo if x < expm1_lo else x
        xc = exp_hi if xc > exp_hi else xc
        em, n = _expm1_reduced(xc)
        s = _pow2(it(n - one_i), ft)
        y = (s * em + (s - half)) * two
        return x if abs(x) < expm1_tiny else y

    @njit(**_INNER)
    def _log_reduced(x):
        """(k, log1p(f)) with x = 2**k (1 + f), 1 + f in [sqrt(1/2), sqrt 2); x positive normal.

        log1p(f) = f - f**2/2 + s (f**2/2 + R(z)) (fdlibm's arrangement of 2s + s R(z), which
        keeps the large terms exact), s = f / (2 + f), z = s**2.
        """
        ix = it(_reinterpret(ft(x), it) + log_offset)
        k = ft(it((ix >> mant) - bias))
        f = _reinterpret(it((ix & mant_mask) + sqrt_half_bits), ft) - one
        s = f / (two + f)
        z = s * s
        hfsq = half * f * f
        return k, f - (hfsq - s * (hfsq + z * _poly(z, log_g)))

    @_cached
    @njit(**_JIT)
    def vlog(x):
        """log(x): log(+-0) = -inf, log(x < 0) = nan, log(inf) = inf.

        Denormal x is first scaled by 2**sub_shift (exactly) into the normal range.
        """
        sub = x < tiny
        k, lp = _log_reduced(x * sub_scale if sub else x)
        k = k - sub_shift_f if sub else k
        y = k * ln2_hi + (lp + k * ln2_lo)
        y = y if x < inf else x  # +inf, nan
        y = -inf if x == zero else y
        return nan if x < zero else y

    @_cached
    @njit(**_JIT)
    def vlog1p(x):
        """log1p(x) = log(u) + (x - (u - 1)) / u with u = fl(1 + x).

        The second term is the first-order correction for the rounding error of 1 + x, which
        u - 1 recovers exactly whenever it matters (Sterbenz); u >= 2**-(nmant+1) is normal.
        """
        u = one + x
        k, lp = _log_reduced(u)
        c = (x - (u - one)) / u
        y = k * ln2_hi + (lp + (k * ln2_lo + c))
        y = y if x < inf else x  # +inf, nan
        y = x if x == zero else y  # sign of zero
        y = -inf if x == -one else y
        return nan if x < -one else y

    @_cached
    @njit(**_JIT)
    def vtanh(x):
        """tanh(x) = sign(x) e / (e + 2), e = expm1(2|x|); |x| clamped where tanh rounds to 1."""
        a = abs(x)
        a = tanh_hi if a > tanh_hi else a
        e = vexpm1(two * a)
        return math.copysign(e / (e + two), x)

    @_cached
    @njit(**_JIT)
    def vsigmoid(x):
        """1 / (1 + exp(-x)); for x < 0 as e / (1 + e), e = exp(x): no overflow, exact tail."""
        e = vexp(-abs(x))
        return (one if x >= zero else e) / (one + e)

    @_cached
    @njit(**_JIT)
    def vsoftplus(x):
        """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), exact-tailed for large |x|."""
        return (x if x > zero else zero) + vlog1p(vexp(-abs(x)))

    return vexp, vlog, vtanh, vsigmoid, vsoftplus, vlog1p, vexpm1


# float32: exp overflows above 88.72 and rounds to 0 below -103.97; expm1 is -1 below -17.3;
# tanh is 1 above 9.01.  ln2_hi = 0.693359375 has 9 significant bits.
vexp_f32, vlog_f32, vtanh_f32, vsigmoid_f32, vsoftplus_f32, vlog1p_f32, vexpm1_f32 = _build(
    np.float32,
    np.int32,
    exp_lo=-104.0,
    exp_hi=89.0,
    expm1_lo=-20.0,
    tanh_hi=10.0,
    ln2_hi=0.693359375,
    ln2_lo=-2.1219444170128554e-4,
    expm1_q=_EXPM1_Q_F32,
    log_g=_LOG_G_F32,
)
# float64: exp overflows above 709.78 and rounds to 0 below -745.13; expm1 is -1 below -37.4;
# tanh is 1 above 19.06.  ln2_hi has 21 significant bits.
vexp_f64, vlog_f64, vtanh_f64, vsigmoid_f64, vsoftplus_f64, vlog1p_f64, vexpm1_f64 = _build(
    np.float64,
    np.int64,
    exp_lo=-746.0,
    exp_hi=710.0,
    expm1_lo=-40.0,
    tanh_hi=20.0,
    ln2_hi=0.6931467056274414,
    ln2_lo=4.7493250390316726e-07,
    expm1_q=_EXPM1_Q_F64,
    log_g=_LOG_G_F64,
)


@njit(cache=True, nogil=True, error_model="numpy")
def floordiv_i64(x, y):
    """numpy's int64 floor division: the minimum // -1 wraps to the minimum (Numba gives 0);
    narrower integers are computed in int64 and cast back, which wraps by itself."""
    if y == -1:
        return -x
    return x // y
