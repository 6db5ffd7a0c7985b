"""numpy's elementwise functions and the array comparisons, searches and 1-d signal functions
that compose from jitgrad's ops (inverse hyperbolics, copysign, fmax, float_power, gcd, isin,
searchsorted, digitize, interp, convolve, bincount, ...) and the bitwise ones over ops/bitwise.py.
Imported into `jitgrad.numpy`.

Dtypes are numpy's own type resolution (`ufunc.resolve_dtypes`, Python scalars weak), except
that integers computed in a float compute in float64, as jitgrad.numpy's other float functions
(numpy takes float16 for int8, which compiled code has no arithmetic for).

What jitgrad cannot match: its ops read no sign bits, so -0.0 counts as +0.0 and every NaN as
positive in signbit, copysign and angle (numpy: signbit(-0.0) is True). It has no complex
dtypes: real, imag, conj and angle take real inputs.

searchsorted (and isin, digitize, interp over it) compares every value with every entry of
the sorted array up to 2**20 pairs, and beyond sorts the values and the array together, in
O((n + m) log(n + m)): the comparisons would be 10^9 for interp of 10^6 points on a grid of
1000, and the sort compiles ten times slower than them.
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from jitgrad import ops
from jitgrad.core import dtypes as _dtypes
from jitgrad.core.errors import TracerError, op_error, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.weak import WEAK_TYPES
from jitgrad.numpy.conversion import (
    _PY_SCALARS,
    INDEX,
    _binary,
    _float,
    _truth,
    _ufunc_args,
    _unary,
    _unsupported,
    asarray,
)
from jitgrad.ops.base import broadcast_all
from jitgrad.ops.composites import is_nan
from jitgrad.ops.conv import conv_general
from jitgrad.ops.sort import sorting_positions

__all__ = [
    "acosh",
    "angle",
    "arccosh",
    "arcsinh",
    "arctanh",
    "array_equal",
    "array_equiv",
    "asinh",
    "atanh",
    "bincount",
    "bitwise_and",
    "bitwise_invert",
    "bitwise_left_shift",
    "bitwise_not",
    "bitwise_or",
    "bitwise_right_shift",
    "bitwise_xor",
    "cbrt",
    "conj",
    "conjugate",
    "convolve",
    "copysign",
    "correlate",
    "deg2rad",
    "degrees",
    "digitize",
    "divmod",
    "ediff1d",
    "euler_gamma",
    "fix",
    "float_power",
    "fmax",
    "fmin",
    "fmod",
    "gcd",
    "imag",
    "interp",
    "invert",
    "isin",
    "isneginf",
    "isposinf",
    "lcm",
    "left_shift",
    "logaddexp2",
    "logical_xor",
    "rad2deg",
    "radians",
    "real",
    "right_shift",
    "searchsorted",
    "signbit",
    "trunc",
    "vander",
]

euler_gamma = np.euler_gamma
_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Dtypes


def _key(x):
    """What numpy's type resolution takes for `x`: Python scalars and weak values are weak."""
    if type(x) is bool:
        return _dtypes.bool_
    if type(x) in _PY_SCALARS:
        return type(x)
    return float if type(x) in WEAK_TYPES else x.dtype


def _loop(name: str, *xs):
    """`xs` (tensors, or Python scalars) cast to the dtypes numpy's ufunc `name` computes in and
    broadcast to one shape; integers that numpy computes in a float compute in float64."""
    ufunc = getattr(np, name)
    keys = tuple(_key(x) for x in xs)
    try:
        loop = ufunc.resolve_dtypes(keys + (None,) * ufunc.nout)
    except TypeError:
        shown = ", ".join(f"Python {k.__name__}" if isinstance(k, type) else str(k) for k in keys)
        raise op_error(name, f"numpy has no {name} for {shown}", TypeError) from None
    floats = builtins.any(k is float or (k is not int and k.kind == "f") for k in keys)
    values = []
    for x, dtype in zip(xs, loop):
        if dtype.kind == "f" and not floats:
            dtype = _dtypes.float64
        values.append(ops.cast(asarray(x), dtype))
    return broadcast_all(name, *values)


def _common(*xs):
    """`xs` as tensors of their numpy result_type, as the functions that convert their
    arguments to arrays first (a Python float is float64 there, not weak)."""
    values = [asarray(x) for x in xs]
    dtype = np.result_type(*[v.dtype for v in values])
    return [ops.cast(v, dtype) for v in values]


def _ufunc(name: str, fn, arity: int = 1):
    """numpy's ufunc `name` (its out=/where= at their defaults) over its loop's operands."""
    if arity == 1:
        return _unary(name, lambda x: fn(*_loop(name, x)))
    return _binary(name, lambda x1, x2: fn(*_loop(name, x1, x2)))


# ---------------------------------------------------------------------------------------------
# Elementwise: floats


def _odd(f, x):
    """f(|x|) with x's sign, for an odd f. |x| is a where, not abs, whose gradient at 0 is 0:
    f's slope at 0 survives."""
    negative = ops.less(x, 0)
    y = f(ops.where(negative, -x, x))
    return ops.where(negative, -y, y)


# Beyond 2**28, x**2 + 1 rounds to x**2 (so asinh(x) = acosh(x) = log(2x)) and may overflow.
_LARGE = 2.0**28


def _far_and_near(x, near):
    """log(2x) where x > 2**28, else near(x); each branch sees a safe argument (1) where it is
    not taken, so that neither overflows nor gives a NaN gradient there."""
    large = ops.greater(x, _LARGE)
    far = ops.log(ops.where(large, x, 1.0)) + _LN2
    return ops.where(large, far, near(ops.where(large, 1.0, x)))


def _asinh(x):
    """log1p(a + a^2 / (1 + sqrt(1 + a^2))) for a = |x|: no cancellation near 0."""
    return _odd(
        lambda a: _far_and_near(a, lambda s: ops.log1p(s + s * s / (1.0 + ops.sqrt(s * s + 1.0)))),
        x,
    )


def _acosh(x):
    """log1p(t + sqrt(t (t + 2))) for t = x - 1 (NaN below 1); the root as sqrt(t) sqrt(t + 2),
    whose gradient at x = 1 is +inf, not the NaN of 0 * inf."""
    return _far_and_near(x, lambda s: ops.log1p((s - 1.0) + ops.sqrt(s - 1.0) * ops.sqrt(s + 1.0)))


def _atanh(x):
    """log1p(2a / (1 - a)) / 2 for a = |x|: infinite at 1, NaN beyond."""
    return _odd(lambda a: 0.5 * ops.log1p(2.0 * a / (1.0 - a)), x)


arcsinh = _ufunc("arcsinh", _asinh)
arccosh = _ufunc("arccosh", _acosh)
arctanh = _ufunc("arctanh", _atanh)
asinh, acosh, atanh = arcsinh, arccosh, arctanh  # numpy 2's names
rad2deg = _ufunc("rad2deg", lambda x: x * (180.0 / math.pi))
deg2rad = _ufunc("deg2rad", lambda x: x * (math.pi / 180.0))
degrees = _ufunc("degrees", lambda x: x * (180.0 / math.pi))
radians = _ufunc("radians", lambda x: x * (math.pi / 180.0))


def _cube_root(a):
    """a^(1/3) for a >= 0, then one Newton step where it is finite and nonzero: the power alone
    is off by a^(-1e-17) (1/3 is not a float), 1e-14 relatively for 1e300. The step keeps the
    gradient; a safe 1 stands in for the values it skips."""
    y = ops.pow(a, 1.0 / 3.0)
    ok = ops.logical_and(ops.greater(y, 0), ops.less(y, np.inf))
    s, t = ops.where(ok, y, 1.0), ops.where(ok, a, 1.0)
    return ops.where(ok, s - (s - t / (s * s)) / 3.0, y)


cbrt = _ufunc("cbrt", lambda x: _odd(_cube_root, x))
float_power = _ufunc("float_power", ops.pow, 2)


def _logaddexp2(x, y):
    """log2(2^x + 2^y) = logaddexp(x ln 2, y ln 2) / ln 2: logaddexp's primitive keeps the
    infinities, the tiny results and the half gradients on ties."""
    return ops.logaddexp(x * _LN2, y * _LN2) / _LN2


logaddexp2 = _ufunc("logaddexp2", _logaddexp2, 2)


def _copysign(x, y):
    """|x| with y's sign; d/dx is sign(x) sign(y) (abs's gradient, 0 at x = 0)."""
    magnitude = ops.abs(x)
    return ops.where(ops.less(y, 0), -magnitude, magnitude)


copysign = _ufunc("copysign", _copysign, 2)


def _nan_ignoring(keep_first):
    """numpy's fmax/fmin: x where `keep_first(x, y)` or y is NaN, else y (NaN only if both
    are); the gradient goes to the operand chosen."""

    def choose(x, y):
        return ops.where(ops.logical_or(keep_first(x, y), is_nan(y)), x, y)

    return choose


fmax = _ufunc("fmax", _nan_ignoring(ops.greater_equal), 2)
fmin = _ufunc("fmin", _nan_ignoring(ops.less_equal), 2)


def _fmod(x, y):
    """C's fmod, the remainder with the dividend's sign: mod(|x|, |y|) (exact, no rounding)
    given x's sign. The magnitudes are wheres, so d/dx is 1 and d/dy -trunc(x / y)."""
    negative = ops.less(x, 0)
    r = ops.mod(ops.where(negative, -x, x), ops.where(ops.less(y, 0), -y, y))
    return ops.where(negative, -r, r)


fmod = _ufunc("fmod", _fmod, 2)


def divmod(x1, x2, /, out=None, *, where=True, dtype=None, **kwargs):  # noqa: A001 - numpy's
    """(floor_divide(x1, x2), remainder(x1, x2)); the remainder is differentiable."""
    if isinstance(out, tuple) and builtins.all(o is None for o in out):
        out = None
    _ufunc_args("divmod", out, where, kwargs)
    x, y = _loop("divmod", x1, x2)
    quotient, remainder = ops.floordiv(x, y), ops.mod(x, y)
    if dtype is None:
        return quotient, remainder
    return ops.cast(quotient, dtype), ops.cast(remainder, dtype)


def _trunc(x):
    """Toward zero: ceil below 0, floor above (a zero gradient, as theirs); integers as they
    are."""
    if x.dtype.kind != "f":
        return x
    return ops.where(ops.less(x, 0), ops.ceil(x), ops.floor(x))


trunc = _ufunc("trunc", _trunc)


def fix(x, out=None):
    """numpy's fix: trunc (toward zero)."""
    _unsupported("fix", out=(out, None))
    return trunc(x)


# ---------------------------------------------------------------------------------------------
# Elementwise: signs, infinities, the complex plane of real numbers


def _signbit(x):
    """x < 0: -0.0 and NaNs count as positive (jitgrad's ops read no sign bits)."""
    if x.dtype == _dtypes.bool_:
        return ops.zeros_like(x, _dtypes.bool_)
    return ops.less(x, 0)


signbit = _unary("signbit", _signbit)


bitwise_and = _ufunc("bitwise_and", ops.bitwise_and, 2)
bitwise_or = _ufunc("bitwise_or", ops.bitwise_or, 2)
bitwise_xor = _ufunc("bitwise_xor", ops.bitwise_xor, 2)
left_shift = _ufunc("left_shift", ops.left_shift, 2)
right_shift = _ufunc("right_shift", ops.right_shift, 2)
invert = _ufunc("invert", ops.invert)
# numpy's other names for them (numpy 2 adds the Array API's)
bitwise_not = bitwise_invert = invert
bitwise_left_shift, bitwise_right_shift = left_shift, right_shift

logical_xor = _binary(
    "logical_xor", lambda x1, x2: ops.not_equal(_truth(asarray(x1)), _truth(asarray(x2)))
)


def _infinity(name: str, x, out, value: float):
    _unsupported(name, out=(out, None))
    x = asarray(x)
    if x.dtype.kind != "f":
        return ops.zeros_like(x, _dtypes.bool_)
    return ops.equal(x, np.asarray(value, x.dtype))


def isposinf(x, out=None):
    """x == +inf (False for integers)."""
    return _infinity("isposinf", x, out, np.inf)


def isneginf(x, out=None):
    """x == -inf (False for integers)."""
    return _infinity("isneginf", x, out, -np.inf)


def real(val):
    """`val` itself: jitgrad's dtypes are real."""
    return asarray(val)


def imag(val):
    """Zeros of val's shape and dtype: jitgrad's dtypes are real."""
    return ops.zeros_like(asarray(val))


conjugate = _ufunc("conjugate", lambda x: x)  # real numbers are their own conjugates
conj = conjugate


def angle(z, deg=False):
    """The argument of the real `z`: 0 at and above 0, pi (180 with `deg`) below, NaN at NaN
    (numpy gives pi at -0.0, whose sign jitgrad's ops do not read)."""
    x = _float(asarray(z))
    half_turn = np.asarray(180.0 if deg else np.pi, x.dtype)
    zero = np.zeros((), x.dtype)
    return ops.where(ops.less(x, 0), half_turn, ops.where(is_nan(x), x, zero))


# ---------------------------------------------------------------------------------------------
# Elementwise: integers


def _euclid_steps(dtype: np.dtype) -> int:
    """Steps after which Euclid's algorithm has ended for every pair of the dtype (there is no
    loop whose trip count depends on values): by Lame's theorem N divisions need a divisor of
    at least Fibonacci F(N + 1), so N stays below the index of the first Fibonacci number past
    the largest magnitude, plus one step that swaps a pair whose first entry is smaller."""
    bits = 8 * dtype.itemsize - (dtype.kind == "i")
    previous, current, index = 1, 1, 2
    while current <= 2**bits:
        previous, current, index = current, previous + current, index + 1
    return index


def _magnitude(x):
    return ops.where(ops.less(x, 0), -x, x)


def _gcd(x, y):
    """Euclid's algorithm for |x| and |y|, a fixed number of steps; a pair whose divisor
    reached 0 stays."""
    a, b = _magnitude(x), _magnitude(y)
    one = np.ones((), a.dtype)
    for _ in range(_euclid_steps(a.dtype)):
        done = ops.equal(b, 0)
        a, b = ops.where(done, a, b), ops.where(done, b, ops.mod(a, ops.where(done, one, b)))
    return a


def _lcm(x, y):
    """|x| / gcd * |y| (0 where gcd is 0, that is where x = y = 0)."""
    divisor = _gcd(x, y)
    safe = ops.where(ops.equal(divisor, 0), np.ones((), divisor.dtype), divisor)
    return ops.floordiv(_magnitude(x), safe) * _magnitude(y)


gcd = _ufunc("gcd", _gcd, 2)
lcm = _ufunc("lcm", _lcm, 2)


# ---------------------------------------------------------------------------------------------
# Comparisons of whole arrays


def array_equal(a1, a2, equal_nan=False):
    """Whether a1 and a2 have one shape and equal elements (NaNs equal with `equal_nan`), as a
    0-d bool tensor (JAX's answer, which jit can trace; `bool()` or `if` reads it eagerly)."""
    x, y = _common(a1, a2)
    if x.shape != y.shape:
        return Tensor(np.asarray(False))
    same = ops.equal(x, y)
    if equal_nan and x.dtype.kind == "f":
        same = ops.logical_or(same, ops.logical_and(is_nan(x), is_nan(y)))
    return ops.reduce_all(same)


def array_equiv(a1, a2):
    """Whether a1 and a2 broadcast to one shape and are equal there (a 0-d bool tensor)."""
    x, y = _common(a1, a2)
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        return Tensor(np.asarray(False))
    return ops.reduce_all(ops.equal(x, y))


# ---------------------------------------------------------------------------------------------
# Searches


# Up to this many pairs, searches compare every value with every entry: one fused loop that
# compiles in a fraction of the sort's time (a sort, a running count and a scatter: 1-3 s).
_COMPARISONS = 2**20


def _insertion_points(a, v, side: str):
    """How many entries of the sorted 1-d `a` precede each value of `v` (a < v for "left",
    a <= v for "right"; NaNs last, as numpy's sort), as int64 of v's shape."""
    n = a.shape[0]
    flat = ops.reshape(v, (-1,))
    m = flat.shape[0]
    if n == 0 or m == 0:
        return ops.zeros(v.shape, INDEX)
    if n * m <= _COMPARISONS:
        counts = _counted(a, flat, side)
    else:
        counts = _merged(a, flat, side)
    return ops.reshape(counts, v.shape)


def _counted(a, v, side: str):
    """The entries of `a` before each value, counted by comparing every pair (NaN-last order:
    every number precedes a NaN, and with side "right" a NaN precedes a NaN too)."""
    entries, values = ops.expand_dims(a, 0), ops.expand_dims(v, 1)
    before = (ops.less if side == "left" else ops.less_equal)(entries, values)
    if a.dtype.kind == "f":
        last = is_nan(values)
        if side == "left":
            last = ops.logical_and(last, ops.logical_not(is_nan(entries)))
        before = ops.logical_or(before, last)
    return ops.reduce_sum(ops.cast(before, INDEX), axis=1)


def _merged(a, v, side: str):
    """The entries of `a` before each value by one stable sort of the values and `a` together
    (values first for "left", so that they precede equal entries), a running count of a's
    entries, and a scatter back to the values' positions."""
    n, m = a.shape[0], v.shape[0]
    left = side == "left"
    order = sorting_positions(ops.concat([v, a] if left else [a, v], 0))
    from_a = ops.greater_equal(order, m) if left else ops.less(order, n)
    before = ops.cumsum(ops.cast(from_a, INDEX), exclusive=True)
    counts = ops.unsorted_segment_sum(before, order, n + m)  # order is a permutation
    start = 0 if left else n
    return counts[start : start + m]


def _one_dimensional(name: str, what: str, x):
    if x.ndim != 1:
        raise op_error(name, f"{what} must be 1-d, got shape {x.shape}")
    return x


def searchsorted(a, v, side="left", sorter=None):
    """Where each of `v` would go in the sorted 1-d `a` (`sorter`: the positions that sort
    it) to keep it sorted: before equal entries for side "left", after them for "right".
    int64 of v's shape."""
    if side not in ("left", "right"):
        raise ValueError(
            with_location(
                f"jitgrad.numpy.searchsorted: side must be 'left' or 'right', got {side!r}"
            )
        )
    entries, values = _common(a, v)
    entries = _one_dimensional("searchsorted", "a", entries)
    if sorter is not None:
        entries = ops.gather(entries, asarray(sorter))
    return _insertion_points(entries, values, side)


def isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """Whether each of `element` is among `test_elements` (bool of element's shape; `invert`:
    is not): every pair compared, or beyond _COMPARISONS pairs a search of the sorted test
    elements, whatever `kind` ("sort", "table") and `assume_unique` say (they choose numpy's
    algorithm, not the result)."""
    if kind not in (None, "sort", "table"):
        raise ValueError(
            with_location(f"jitgrad.numpy.isin: invalid kind {kind!r}; use None, 'sort' or 'table'")
        )
    values, tests = _common(element, test_elements)
    tests = ops.reshape(tests, (-1,))
    n = tests.shape[0]
    if n == 0:
        found = ops.zeros_like(values, _dtypes.bool_)
    elif n * values.size <= _COMPARISONS:
        found = ops.reduce_any(ops.equal(ops.expand_dims(values, -1), tests), axis=-1)
    else:
        tests = ops.sort(tests)
        at = ops.minimum(_insertion_points(tests, values, "left"), n - 1)
        found = ops.equal(ops.gather(tests, at), values)
    return ops.logical_not(found) if invert else found


def digitize(x, bins, right=False):
    """The index of the bin of each of `x` (int64): i with bins[i-1] <= x < bins[i] for
    increasing bins (bins[i-1] < x <= bins[i] with `right`), mirrored for decreasing ones.
    Known bins are checked to be monotonic (ValueError otherwise); traced ones cannot be, and
    their direction is read from their ends."""
    values, edges = _common(x, bins)
    edges = _one_dimensional("digitize", "bins", edges)
    side = "left" if right else "right"
    n = edges.shape[0]
    if isinstance(edges, Tracer):
        increasing = _insertion_points(edges, values, side)
        if n < 2:
            return increasing
        decreasing = n - _insertion_points(ops.reverse(edges, [0]), values, side)
        return ops.where(ops.less(edges[-1], edges[0]), decreasing, increasing)
    steps = np.diff(edges.numpy())
    if (steps >= 0).all():
        return _insertion_points(edges, values, side)
    if (steps <= 0).all():
        return n - _insertion_points(ops.reverse(edges, [0]), values, side)
    raise op_error("digitize", "bins must be monotonically increasing or decreasing")


def interp(x, xp, fp, left=None, right=None, period=None):
    """The piecewise linear interpolant through (xp, fp) at `x` (xp increasing), `left` /
    `right` (default fp's ends) outside; with `period`, xp and x are angles modulo it. float64,
    as numpy; differentiable in x, xp, fp, left and right. numpy's arithmetic: slope (x - xp[j])
    + fp[j], from the other end of the interval if that is NaN (infinite fp)."""
    x, xp, fp = (ops.cast(asarray(v), _dtypes.float64) for v in (x, xp, fp))
    if xp.ndim != 1 or fp.ndim != 1:
        raise op_error("interp", f"xp and fp must be 1-d, got shapes {xp.shape} and {fp.shape}")
    if xp.shape[0] != fp.shape[0]:
        raise op_error(
            "interp", f"fp and xp are not of the same length ({fp.shape[0]} and {xp.shape[0]})"
        )
    if xp.shape[0] == 0:
        raise op_error("interp", "the array of sample points xp is empty")
    if period is not None:
        if not isinstance(period, Tracer) and float(np.asarray(period)) == 0:
            raise op_error("interp", "period must be a non-zero value")
        period = ops.abs(ops.cast(asarray(period), _dtypes.float64))
        left = right = None
        x, xp = ops.mod(x, period), ops.mod(xp, period)
        order = sorting_positions(xp)
        xp, fp = ops.gather(xp, order), ops.gather(fp, order)
        xp = ops.concat([xp[-1:] - period, xp, xp[:1] + period], 0)
        fp = ops.concat([fp[-1:], fp, fp[:1]], 0)
    n = xp.shape[0]
    low = fp[0] if left is None else ops.cast(asarray(left), _dtypes.float64)
    high = fp[n - 1] if right is None else ops.cast(asarray(right), _dtypes.float64)
    if n == 1:  # numpy: fp[0] at xp[0], and at NaN
        return ops.where(ops.less(x, xp[0]), low, ops.where(ops.greater(x, xp[0]), high, fp[0]))
    k = _insertion_points(xp, x, "right") - 1  # the last knot at or before x: -1 .. n - 1
    j = ops.minimum(ops.maximum(k, 0), n - 2)
    x0, x1 = ops.gather(xp, j), ops.gather(xp, j + 1)
    y0, y1 = ops.gather(fp, j), ops.gather(fp, j + 1)
    width = x1 - x0
    slope = (y1 - y0) / ops.where(ops.equal(width, 0.0), 1.0, width)
    inner = ops.minimum(ops.maximum(x, x0), x1)  # x, kept finite where another branch is taken
    y = slope * (inner - x0) + y0
    y = ops.where(is_nan(y), slope * (inner - x1) + y1, y)
    y = ops.where(ops.logical_and(is_nan(y), ops.equal(y0, y1)), y0, y)
    y = ops.where(ops.equal(x, x0), y0, y)
    last = ops.where(ops.greater(x, xp[n - 1]), high, fp[n - 1])
    y = ops.where(ops.greater_equal(k, n - 1), last, ops.where(ops.less(k, 0), low, y))
    return ops.where(is_nan(x), x, y)


# ---------------------------------------------------------------------------------------------
# 1-d signals


def _signal(name: str, a, v):
    """a and v as 1-d tensors of their numpy result dtype, neither empty."""
    x, w = _common(a, v)
    x, w = (ops.reshape(t, (1,)) if t.ndim == 0 else t for t in (x, w))
    for what, t in (("a", x), ("v", w)):
        _one_dimensional(name, what, t)
        if t.shape[0] == 0:
            raise op_error(name, f"{what} cannot be empty")
    return x, w


def _padding(name: str, mode: str, m: int) -> tuple[int, int]:
    """numpy's zeros around the longer input for a shorter one of length m."""
    if mode == "valid":
        return 0, 0
    if mode == "same":
        return m // 2, m - 1 - m // 2
    if mode == "full":
        return m - 1, m - 1
    raise op_error(name, f"mode must be one of 'valid', 'same', or 'full' (got {mode!r})")


def _sliding_products(x, w, padding: tuple[int, int]):
    """out[k] = sum_j x_padded[k + j] w[j] for the longer x. Floats: jitgrad's conv (one
    primitive, its gradients convolutions; no window matrix). Integers and bools, which conv
    does not take: a gather of the windows, exactly (numpy's bools are any(x & w))."""
    n, m = x.shape[0], w.shape[0]
    if x.dtype.kind == "f":
        y = conv_general(ops.reshape(x, (1, n, 1)), ops.reshape(w, (m, 1, 1)), (1,), [padding])
        return ops.reshape(y, (-1,))
    boolean = x.dtype == _dtypes.bool_
    if boolean:
        x, w = ops.cast(x, INDEX), ops.cast(w, INDEX)
    padded = ops.pad(x, [padding])
    size = n + padding[0] + padding[1] - m + 1
    windows = ops.gather(padded, np.arange(size)[:, None] + np.arange(m)[None, :])
    y = ops.reduce_sum(windows * w, axis=1)
    return ops.not_equal(y, 0) if boolean else y


def correlate(a, v, mode="valid"):
    """numpy's cross-correlation of 1-d arrays: out[k] = sum_n a[n + k] v[n] over the overlap
    `mode` keeps ("valid", "same": len(a), "full"); for a longer v, numpy's reversed
    correlate(v, a). Differentiable."""
    x, w = _signal("correlate", a, v)
    if w.shape[0] > x.shape[0]:
        y = _sliding_products(w, x, _padding("correlate", mode, x.shape[0]))
        return ops.reverse(y, [0])
    return _sliding_products(x, w, _padding("correlate", mode, w.shape[0]))


def convolve(a, v, mode="full"):
    """numpy's discrete convolution of 1-d arrays, out[k] = sum_n a[n] v[k - n], over the
    overlap `mode` keeps ("full", "same": the longer's length, "valid"); the longer input is
    the one that slides. Differentiable."""
    x, w = _signal("convolve", a, v)
    if w.shape[0] > x.shape[0]:
        x, w = w, x
    return _sliding_products(x, ops.reverse(w, [0]), _padding("convolve", mode, w.shape[0]))


# ---------------------------------------------------------------------------------------------
# Arrays from arrays


def vander(x, N=None, increasing=False):  # noqa: N803 - numpy's name
    """The Vandermonde matrix: columns x^(N-1), ..., x, 1 (the other way with `increasing`),
    the powers as numpy's running products, in numpy's dtype (x's promoted with int64)."""
    v = asarray(x)
    if v.ndim != 1:
        raise op_error("vander", f"x must be a one-dimensional array or sequence, got {v.shape}")
    columns = v.shape[0] if N is None else operator.index(N)
    if columns < 0:
        raise op_error("vander", f"N must be >= 0, got {columns}")
    dtype = np.promote_types(v.dtype, INDEX)
    v = ops.cast(v, dtype)
    if columns == 0:
        return ops.zeros((v.shape[0], 0), dtype)
    powers = [ops.ones_like(v)]
    for _ in range(columns - 1):
        powers.append(v if len(powers) == 1 else powers[-1] * v)
    return ops.stack(powers if increasing else powers[::-1], axis=1)


def ediff1d(ary, to_end=None, to_begin=None):
    """The differences of consecutive elements of the flattened `ary`, with `to_begin` before
    and `to_end` after them (flattened; of a dtype that casts to ary's by numpy's same_kind
    rule)."""
    flat = ops.reshape(asarray(ary), (-1,))
    parts = [flat[1:] - flat[:-1]]
    for name, extra in (("to_begin", to_begin), ("to_end", to_end)):
        if extra is None:
            continue
        extra = asarray(extra)
        if not np.can_cast(extra.dtype, flat.dtype, casting="same_kind"):
            raise op_error(
                "ediff1d",
                f"{name} of dtype {extra.dtype} does not cast to ary's {flat.dtype} under the "
                "same_kind rule",
                TypeError,
            )
        extra = ops.cast(ops.reshape(extra, (-1,)), flat.dtype)
        parts.insert(0 if name == "to_begin" else len(parts), extra)
    return parts[0] if len(parts) == 1 else ops.concat(parts, 0)


def bincount(x, /, weights=None, minlength=0, *, length=None):
    """How often each of 0, 1, ... occurs in the 1-d non-negative integers `x` (int64), or the
    sums of their `weights` (float64, as numpy; differentiable). numpy's length is
    max(max(x) + 1, minlength), which exists only for known x: under jit pass JAX's `length=`,
    the result's length, for which values >= length are dropped (and negative ones, which
    raise a ValueError where x is known)."""
    ids = _one_dimensional("bincount", "x", asarray(x))
    if ids.dtype.kind not in "biu":
        if ids.shape[0]:
            raise op_error("bincount", f"x must be integers, got {ids.dtype}", TypeError)
        ids = ops.cast(ids, INDEX)  # numpy takes [], a float64 array, as no integers
    minlength = operator.index(minlength)
    if minlength < 0:
        raise op_error("bincount", f"minlength must not be negative, got {minlength}")
    known = None if isinstance(ids, Tracer) else ids.numpy()
    if known is not None and (known < 0).any():
        raise op_error("bincount", f"x must have no negative elements, got {known.min()}")
    if length is None:
        if known is None:
            raise TracerError(
                with_location(
                    "jitgrad.numpy.bincount: the result's length, max(x) + 1, depends on the "
                    "values, which do not exist while jit traces the function: pass length= "
                    "(the number of bins; larger values are dropped), as in JAX"
                )
            )
        length = builtins.max(minlength, int(known.max()) + 1 if known.size else 0)
    length = operator.index(length)
    if length < 0:
        raise op_error("bincount", f"length must not be negative, got {length}")
    ids = ops.cast(ids, INDEX)
    ids = ops.where(ops.less(ids, length), ids, np.asarray(-1, INDEX))  # -1: dropped
    if weights is None:
        return ops.unsorted_segment_sum(ops.ones_like(ids), ids, length)
    w = asarray(weights)
    if w.shape != ids.shape:
        raise op_error("bincount", f"weights of shape {w.shape} and x of shape {ids.shape} differ")
    return ops.unsorted_segment_sum(ops.cast(w, _dtypes.float64), ids, length)
