"""Special functions for generated Numba kernels: digamma, polygamma, erfinv and betainc.

Numba's nopython mode has ``math.lgamma``, ``math.erf`` and ``math.erfc`` (their ops emit those
directly); these four have no libm counterpart. Each exists as ``v<name>_f64`` and
``v<name>_f32`` (helper_names.SPECIAL maps ``(op, dtype name)`` to the name, as VMATH does).

The float32 variants widen to float64, run the float64 algorithm and round once: float32's
range lies inside float64's, so the result is the float64 one (a few float64 ulps) correctly
rounded to within 1 float32 ulp, at the price of half the SIMD width. The functions are
branchy scalar code (data-dependent recurrence counts, continued fractions, libm's tan/erf
calls), so a loop calling them is not vectorised: they are exact, not fast.

Algorithms (the bounds each meets against scipy are in jitgrad/ops/special.py and tested in
tests/test_special.py):

* digamma: on [1, 2] as (x - x0) Q(x - x0) around its positive zero x0 (split into two
  doubles), Q a degree-22 polynomial fitted (Chebyshev, 50 digits) to psi(x0 + t)/t, so the
  relative error stays small through the zero; (0, 1) by psi(x) = psi(x + 1) - 1/x; (2, 10) by
  the upward recurrence psi(y + m) = psi(y) + sum 1/(y + k), all terms positive; [10, inf) by
  the asymptotic series log x - 1/(2x) - sum B_2k / (2k x^2k); negative x by the reflection
  psi(x) = psi(1 - x) - pi / tan(pi x), with tan taken of the exact remainder x - round(x).
* polygamma(n, x), n >= 1: (-1)^(n+1) n! zeta(n + 1, x), the Hurwitz zeta summed directly up
  to x + k >= max(10, n + 2) and completed by 12 Euler-Maclaurin terms (the technique of
  Cephes' zeta).
* erfinv: an initial guess good to ~1e-7 (M. Giles' single-precision approximation,
  "Approximating the erfinv function", GPU Computing Gems, 2011) refined by two Halley steps on
  erf(x) - y, written as (1 - y) - erfc(x) for |y| > 1/2 so that nothing cancels near +-1;
  beyond Giles' range (1 - |y| < 1e-7) Newton on log erfc(x) = log(1 - |y|) from the
  asymptotic guess.
* betainc(a, b, x): the regularized incomplete beta by its continued fraction (modified Lentz)
  on the side x < (a + 1) / (a + b + 2) where it converges fast, I_x(a, b) = 1 - I_(1-x)(b, a)
  on the other; the prefactor x^a (1-x)^b / (a B(a, b)) in log space with math.lgamma.
"""

import math

import numpy as np
from numba import njit

from jitgrad.backend.numba.helper_names import SPECIAL, SPECIAL_MODULE  # noqa: F401 - re-exported

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}

_INF = math.inf
_NAN = math.nan

# The positive zero of digamma, x0 = X0_HI + X0_LO (50-digit root, split into doubles).
_X0_HI = 1.4616321449683622
_X0_LO = 9.549995429965697e-17
# psi(x0 + t) / t on t in [1 - x0, 2 - x0], lowest degree first (mpmath.chebyfit, degree 22:
# relative error 2e-17).
_DIGAMMA_Q = (
    0.96767224544762117269,
    -0.4427631689835920869,
    0.2584997609556485841,
    -0.16394270544241183975,
    0.10782405069169219095,
    -0.072199561256111472819,
    0.04880428813443657545,
    -0.033161126478145458925,
    0.022597649284372790431,
    -0.015424766261277919073,
    0.010538769938576956161,
    -0.0072045196665110448185,
    0.0049270580267742019974,
    -0.0033700680515484166702,
    0.002302889542055789379,
    -0.0015742021681366499541,
    0.0010901225234458577927,
    -0.0007549229618596273742,
    0.00047179397016913177273,
    -0.00028431322925261330984,
    0.00028053436867468670655,
    -0.00027850748768837870096,
    0.00011881232908510335,
)
# B_2k / (2k), k = 1..8: psi(x) ~ log x - 1/(2x) - sum_k B_2k / (2k x^2k), for x >= 10 the
# ninth term is below 1e-17 of the result.
_DIGAMMA_ASYMPTOTIC = (
    0.08333333333333333,
    -0.008333333333333333,
    0.003968253968253968,
    -0.004166666666666667,
    0.007575757575757576,
    -0.021092796092796094,
    0.08333333333333333,
    -0.4432598039215686,
)
# (2j)! / B_2j, j = 1..12: the Euler-Maclaurin terms of the Hurwitz zeta.
_ZETA_EM = (
    12.0,
    -720.0,
    30240.0,
    -1209600.0,
    47900160.0,
    -1892437580.3183792,
    74724249600.0,
    -2950130727918.1646,
    116467828143500.67,
    -4597978722407473.0,
    1.8152105401943546e17,
    -7.166165256175666e18,
)
# Giles' erfinv approximation: w = -log(1 - y^2), p(w - 2.5) for w < 5, else p(sqrt(w) - 3);
# erfinv(y) ~= p y. Highest degree first.
_ERFINV_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_ERFINV_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)
_SQRT_PI = math.sqrt(math.pi)
_TWO_OVER_SQRT_PI = 2.0 / _SQRT_PI
# Continued fraction of betainc: at most this many steps (it needs O(sqrt(max(a, b)))), and
# Lentz's guard against a zero denominator.
_BETAINC_STEPS = 1000
_LENTZ_TINY = 1e-300
_EPS = float(np.finfo(np.float64).eps)


@njit(**_JIT)
def _horner_low_first(x, c):
    acc = c[-1]
    for i in range(len(c) - 2, -1, -1):
        acc = acc * x + c[i]
    return acc


@njit(**_JIT)
def _horner_high_first(x, c):
    acc = c[0]
    for i in range(1, len(c)):
        acc = acc * x + c[i]
    return acc


@njit(**_JIT)
def _digamma_near_zero(t):
    """psi(x0 + t) for t in [1 - x0, 2 - x0]."""
    return t * _horner_low_first(t, _DIGAMMA_Q)


@njit(**_JIT)
def _digamma_positive(x):
    """psi(x) for finite x > 0."""
    if x < 1.0:
        # psi(x) = psi(x + 1) - 1/x; x + 1 - x0 as x + (1 - X0_HI) rounds once (1 - X0_HI is
        # exact).
        return _digamma_near_zero((x + (1.0 - _X0_HI)) - _X0_LO) - 1.0 / x
    if x <= 2.0:
        return _digamma_near_zero((x - _X0_HI) - _X0_LO)  # x - X0_HI is exact (Sterbenz)
    if x < 10.0:
        m = int(x) - 1
        y = x - m  # in [1, 2), exact
        acc = 0.0
        for k in range(m - 1, -1, -1):  # the smallest terms first
            acc += 1.0 / (y + k)
        return _digamma_near_zero((y - _X0_HI) - _X0_LO) + acc
    z = 1.0 / (x * x)
    return math.log(x) - 0.5 / x - z * _horner_low_first(z, _DIGAMMA_ASYMPTOTIC)


@njit(**_JIT)
def vdigamma_f64(x):
    """digamma(x) = d/dx log|Gamma(x)|; as scipy: -inf at +0, +inf at -0, nan at negative
    integers and -inf, log-like growth to inf at inf."""
    if x != x or x == _INF:
        return x
    if x > 0.0:
        return _digamma_positive(x)
    if x == 0.0:
        return -math.copysign(_INF, x)
    r = x - np.round(x)  # exact; pi / tan(pi x) = pi / tan(pi r)
    if r == 0.0:  # a negative integer (or -inf): a pole
        return _NAN
    return _digamma_positive(1.0 - x) - math.pi / math.tan(math.pi * r)


@njit(**_JIT)
def vdigamma_f32(x):
    return np.float32(vdigamma_f64(np.float64(x)))


@njit(**_JIT)
def vpolygamma_f64(x, n):
    """polygamma(n, x) = (-1)^(n+1) n! zeta(n + 1, x) for integer n >= 1 (nan for n < 1: the
    op layer sends n = 0 to digamma and refuses negative n)."""
    if n < 1 or x != x or x == -_INF:
        return _NAN
    sign = 1.0 if n % 2 == 1 else -1.0
    if x == _INF:
        return sign * 0.0
    s = n + 1
    factorial = 1.0
    for k in range(2, n + 1):
        factorial *= k
    if x <= 0.0 and x == math.floor(x):
        return sign * _INF  # a pole
    # sum_{k < K} (x + k)^-s with x + K >= max(10, n + 2): then the Euler-Maclaurin terms
    # below decrease fast (their ratio is about ((s + 2j) / (2 pi w))^2).
    limit = max(10.0, n + 2.0)
    total = 0.0
    k = 0
    w = x
    while w < limit:
        total += 1.0 / w**s
        k += 1
        w = x + k  # one rounding per term, none accumulated
    # sum_{k >= 0} (w + k)^-s = w^(1-s)/(s-1) + w^-s/2 + sum_j B_2j/(2j)! s(s+1)..(s+2j-2)
    # w^(-s-2j+1)
    b = 1.0 / w**s
    tail = b * w / (s - 1) + 0.5 * b
    rising = float(s)  # s (s+1) ... (s + 2j - 2)
    term = b / w
    for j in range(len(_ZETA_EM)):
        tail += term * rising / _ZETA_EM[j]
        rising *= (s + 2 * j + 1) * (s + 2 * j + 2)
        term /= w * w
    return sign * factorial * (total + tail)


@njit(**_JIT)
def vpolygamma_f32(x, n):
    return np.float32(vpolygamma_f64(np.float64(x), n))


@njit(**_JIT)
def _erfc_inverse_tail(q):
    """x with erfc(x) = q for q < 1e-7 (beyond Giles' range): from erfc(x) ~ exp(-x^2) /
    (x sqrt(pi)), x^2 ~ -log(q sqrt(pi) x), good to ~1e-3; then Newton on log erfc(x) - log q,
    nearly linear in x there (slope ~ -2x), so three steps reach full precision."""
    log_q = math.log(q)
    x = math.sqrt(-log_q)
    for _ in range(2):
        x = math.sqrt(-log_q - math.log(_SQRT_PI * x))
    for _ in range(3):
        e = math.erfc(x)
        x -= (math.log(e) - log_q) * e / (-_TWO_OVER_SQRT_PI * math.exp(-x * x))
    return x


@njit(**_JIT)
def verfinv_f64(y):
    """erfinv(y): +-inf at +-1, nan outside [-1, 1], the sign of zero kept."""
    a = abs(y)
    if not a <= 1.0:  # nan too
        return _NAN
    if a == 1.0:
        return math.copysign(_INF, y)
    if a == 0.0:
        return y
    w = -math.log((1.0 - a) * (1.0 + a))
    if w > 16.0:
        return math.copysign(_erfc_inverse_tail(1.0 - a), y)
    if w < 5.0:
        x = _horner_high_first(w - 2.5, _ERFINV_CENTRAL) * a
    else:
        x = _horner_high_first(math.sqrt(w) - 3.0, _ERFINV_TAIL) * a
    for _ in range(2):
        # Halley on f(x) = erf(x) - a: f'' / f' = -2x, so x -= d / (1 + x d), d = f / f'.
        f = math.erf(x) - a if a <= 0.5 else (1.0 - a) - math.erfc(x)
        d = f / (_TWO_OVER_SQRT_PI * math.exp(-x * x))
        x -= d / (1.0 + x * d)
    return math.copysign(x, y)


@njit(**_JIT)
def verfinv_f32(y):
    return np.float32(verfinv_f64(np.float64(y)))


@njit(**_JIT)
def _lentz_guard(v):
    return _LENTZ_TINY if abs(v) < _LENTZ_TINY else v


@njit(**_JIT)
def _betainc_fraction(a, b, x):
    """The continued fraction of I_x(a, b) a B(a, b) / (x^a (1-x)^b), by modified Lentz."""
    c = 1.0
    d = 1.0 / _lentz_guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, _BETAINC_STEPS + 1):
        m2 = 2.0 * m
        even = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2))
        d = 1.0 / _lentz_guard(1.0 + even * d)
        c = _lentz_guard(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))
        d = 1.0 / _lentz_guard(1.0 + odd * d)
        c = _lentz_guard(1.0 + odd / c)
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            break
    return h


@njit(**_JIT)
def vbetainc_f64(a, b, x):
    """The regularized incomplete beta function I_x(a, b); nan outside a, b > 0, 0 <= x <= 1."""
    if not (a > 0.0 and b > 0.0 and 0.0 <= x <= 1.0):  # nan too
        return _NAN
    if x == 0.0 or x == 1.0:
        return x
    swap = x > (a + 1.0) / (a + b + 2.0)
    if swap:
        a, b, x = b, a, 1.0 - x
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - log_beta) / a
    out = front * _betainc_fraction(a, b, x)
    return 1.0 - out if swap else out


@njit(**_JIT)
def vbetainc_f32(a, b, x):
    return np.float32(vbetainc_f64(np.float64(a), np.float64(b), np.float64(x)))
