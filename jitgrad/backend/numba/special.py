"""Special functions for generated Numba kernels: digamma, polygamma, erfinv and betainc.

Numba's nopython mode has ``math.lgamma``, ``math.erf`` and ``math.erfc`` (their ops emit those
directly); these four have no libm counterpart. Each exists as ``v<name>_f64`` and
``v<name>_f32`` (helper_names.SPECIAL maps ``(op, dtype name)`` to the name, as VMATH does).

The float32 variants widen to float64, run the float64 algorithm and round once: float32's
range lies inside float64's, so the result is the float64 one (a few float64 ulps) correctly
rounded to within 1 float32 ulp, at the price of half the SIMD width.

digamma and erfinv are straight-line code (every branch computed, one selected, vmath's log
and no libm call), so a kernel's loop over them vectorises, as over vmath's functions. They
are `inline="always"`: Numba inlines them into the kernel (LLVM would leave a function this
size as a call, which stops the vectoriser), where they take the kernel's fast-math flags (off
unless `jit(fastmath=True)`, which licenses dropping their special-value selects), and each
kernel that uses them compiles them anew (~0.5 s of compile time, against a call's cost once
cached: the price of SIMD). polygamma (a data-dependent number of terms) and betainc (a
continued fraction run to convergence) stay scalar functions.

Algorithms (the bounds each meets against scipy are in jitgrad/ops/special.py and tested in
tests/test_special.py):

* digamma: on [1, 2] as (x - x0) Q(x - x0) around its positive zero x0 (split into two
  doubles), Q a degree-22 polynomial fitted (Chebyshev, 50 digits) to psi(x0 + t)/t, so the
  relative error stays small through the zero; (0, 1) by psi(x) = psi(x + 1) - 1/x; (2, 10) by
  the upward recurrence psi(y + m) = psi(y) + sum 1/(y + k), all terms positive; [10, inf) by
  the asymptotic series log x - 1/(2x) - sum B_2k / (2k x^2k); negative x by the reflection
  psi(x) = psi(1 - x) - pi cot(pi r), r = x - round(x) exact, pi cot(pi r) = 1/r + r C(r^2)
  with C fitted likewise.
* polygamma(n, x), n >= 1: (-1)^(n+1) n! zeta(n + 1, x), the Hurwitz zeta summed directly up
  to x + k >= max(10, n + 2) and completed by 12 Euler-Maclaurin terms (the technique of
  Cephes' zeta).
* erfinv: y times a Chebyshev series in w = -log(1 - y^2) (w < 6.25) or in sqrt(w) (two
  pieces), fitted here to 60-digit values: the layout of M. Giles' double-precision
  approximation ("Approximating the erfinv function", GPU Computing Gems, 2011); 1 - |y| is
  exact near 1, so the tail keeps full precision up to 1 - 2^-53.
* betainc(a, b, x): the regularized incomplete beta by its continued fraction (modified Lentz)
  on the side x < (a + 1) / (a + b + 2) where it converges fast, I_x(a, b) = 1 - I_(1-x)(b, a)
  on the other; the prefactor x^a (1-x)^b / (a B(a, b)) by pow and math.gamma, or in log
  space with math.lgamma where those leave the float range.
"""

import math

import numpy as np
from numba import njit

from jitgrad.backend.numba.helper_names import SPECIAL, SPECIAL_MODULE  # noqa: F401 - re-exported
from jitgrad.backend.numba.vmath import vlog_f64

_JIT = {"error_model": "numpy", "cache": True, "nogil": True}
# Pieces of a vectorisable helper: inlined by Numba (LLVM's inliner leaves them as calls, which
# stop the loop vectoriser); they compile with the flags above, those of their only callers.
_INLINE = {**_JIT, "inline": "always"}

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
# pi cot(pi r) = 1/r + r C(r^2) for |r| <= 1/2, C lowest degree first (mpmath.chebyfit on
# [0, 1/4], degree 16: error 3e-18).
_PI_COT = (
    -3.2898681336964528731,
    -2.1646464674222760522,
    -2.0346861239690250535,
    -2.008154712376695502,
    -2.001989151782039062,
    -2.0004920996200898174,
    -2.0001248231973245877,
    -1.9999795020240847267,
    -2.0008108028428335311,
    -1.9907553026387696092,
    -2.078768730422160014,
    -1.5026711150952591855,
    -4.3080141933315682867,
    5.704902981248280441,
    -19.724727875968052433,
    23.768709739065578626,
    -21.127741990815450546,
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
# erfinv(y) / y as Chebyshev series (coefficients c_0, c_1, ...; 60-digit mpmath, truncated
# below 2^-60 of c_0) in w = -log(1 - y^2) on [0, 6.25] and in s = sqrt(w) on [2.5, 4] and
# [4, 6.1] (y = 1 - 2^-53, the largest float64 below 1, has s = 6.004): the layout of M. Giles'
# double-precision erfinv ("Approximating the erfinv function", GPU Computing Gems, 2011).
_ERFINV_W = (
    1.6304220989459326,
    0.7315674456742257,
    -0.021235032142504585,
    -0.0065808875424494635,
    0.0019488711426908524,
    -0.00014158343386374536,
    -4.9292864636180004e-05,
    1.4752887929042498e-05,
    -6.111918603258194e-07,
    -5.106997335480761e-07,
    1.159027723297735e-07,
    1.4907998843194937e-09,
    -5.244776785530681e-09,
    8.51790549109762e-10,
    7.917020592973908e-11,
    -5.0994281737154326e-11,
    5.436227530231317e-12,
    1.292282189751795e-12,
    -4.656064719044143e-13,
    2.4256976317675218e-14,
    1.6403697972051414e-14,
    -3.94956069090147e-15,
    -3.9036001761416307e-17,
    1.83129083527959e-16,
    -3.03580260263594e-17,
    -2.8782301773959922e-18,
    1.8669320251663633e-18,
)
_ERFINV_S_MID = (
    3.085744844023102,
    0.7524837268921277,
    0.0019842584172056767,
    -0.000534561900101604,
    0.0001302806745904227,
    -2.943377534710642e-05,
    5.231051543788091e-06,
    -5.385189635316591e-07,
    -2.922686732135409e-08,
    2.3903569231251557e-08,
    -4.411209869554094e-09,
    2.2053622855049448e-10,
    8.095391923249493e-11,
    -2.1642011149793333e-11,
    1.9364299208504444e-12,
    1.9183918173325102e-13,
    -8.245551635697369e-14,
    1.0402388222104601e-14,
    2.9484539267546553e-17,
    -2.4669496593190295e-16,
    4.5962728850225956e-17,
    -3.0942577381166363e-18,
)
_ERFINV_S_TAIL = (
    4.90036173887868,
    1.060609945940428,
    -4.7553553480943616e-05,
    -6.575473998320701e-05,
    1.1954464593415608e-05,
    -1.621367947252388e-06,
    1.987629118165904e-07,
    -2.4375799091760192e-08,
    3.4566606298205155e-09,
    -6.531992299707701e-10,
    1.5559659251917995e-10,
    -3.8932130213237084e-11,
    9.02613213565678e-12,
    -1.810033271887814e-12,
    2.925540796397148e-13,
    -3.189723436808639e-14,
    5.716041001700554e-17,
    1.010802601869117e-15,
    -2.879487147676619e-16,
    4.830471036746528e-17,
    -4.467392565292762e-18,
)
# Continued fraction of betainc: at most this many steps (it needs O(sqrt(max(a, b)))), and
# Lentz's guard against a zero denominator.
_BETAINC_STEPS = 1000
_LENTZ_TINY = 1e-300
_EPS = float(np.finfo(np.float64).eps)


@njit(**_INLINE)
def _horner(x, c):
    """c[0] + c[1] x + c[2] x^2 + ... (c a constant tuple: LLVM unrolls the loop)."""
    acc = c[-1]
    for i in range(len(c) - 2, -1, -1):
        acc = acc * x + c[i]
    return acc


@njit(**_INLINE)
def _digamma_positive(z):
    """psi(z) for z > 0, straight-line: both regions are computed and one is selected.

    z < 10: with m = floor(z) - 1 and y = z - m in [1, 2) (exact), psi(z) = psi(y) +
    sum_{k < m} 1/(y + k) (m <= 8 terms, all positive) and psi(z) = psi(z + 1) - 1/z for m = -1,
    where z + 1 - x0 is formed as z + (1 - X0_HI) (exact constant, one rounding);
    z >= 10: the asymptotic series, at max(z, 10) so the unused side stays finite.
    """
    m = np.floor(z) - 1.0
    y = z - m
    t = (z + (1.0 - _X0_HI)) - _X0_LO if m < 0.0 else (y - _X0_HI) - _X0_LO
    near = t * _horner(t, _DIGAMMA_Q)
    acc = 0.0
    for k in range(7, -1, -1):  # the smallest terms first
        acc += 1.0 / (y + k) if k < m else 0.0
    acc = -1.0 / z if m < 0.0 else acc
    w = z if z > 10.0 else 10.0
    v = 1.0 / (w * w)
    far = vlog_f64(w) - 0.5 / w - v * _horner(v, _DIGAMMA_ASYMPTOTIC)
    return far if z >= 10.0 else near + acc  # near + acc for NaN: NaN


@njit(**_INLINE)
def vdigamma_f64(x):
    """digamma(x) = d/dx log|Gamma(x)|; as scipy: -inf at +0, +inf at -0, nan at negative
    integers and -inf, log-like growth to inf at inf. No libm call and no branch that LLVM
    cannot turn into a select: a loop of it vectorises. Negative x by the reflection
    psi(x) = psi(1 - x) - pi cot(pi r), r = x - round(x) (exact), pi cot(pi r) = 1/r +
    r C(r^2)."""
    negative = x < 0.0
    z = 1.0 - x if negative else x
    psi = _digamma_positive(z)
    # np.floor, not math.floor: that one returns an int64, which overflows beyond 2**63
    r = x - np.floor(x + 0.5)  # exact for |x| < 2**52; larger x are integers: poles
    r = r if negative and r != 0.0 else 0.5  # keep the unused side finite
    psi = psi - (1.0 / r + r * _horner(r * r, _PI_COT)) if negative else psi
    psi = _NAN if negative and x == np.floor(x) else psi  # poles, -inf
    return -math.copysign(_INF, x) if x == 0.0 else psi


@njit(**_INLINE)
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
    if x <= 0.0 and x == np.floor(x):
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


@njit(**_INLINE)
def _chebyshev(t, c):
    """sum_j c[j] T_j(t) for t in [-1, 1] by Clenshaw's recurrence (c a constant tuple)."""
    b1 = 0.0
    b2 = 0.0
    for j in range(len(c) - 1, 0, -1):
        b1, b2 = 2.0 * t * b1 - b2 + c[j], b1
    return t * b1 - b2 + c[0]


@njit(**_INLINE)
def verfinv_f64(y):
    """erfinv(y): +-inf at +-1, nan outside [-1, 1], the sign of zero kept. Straight-line
    (the three series are all evaluated, one selected; vmath's log): a loop of it vectorises."""
    a = abs(y)
    w = -vlog_f64((1.0 - a) * (1.0 + a))  # 1 - a is exact where it matters (a >= 1/2)
    s = math.sqrt(w)
    central = _chebyshev(w * (1.0 / 3.125) - 1.0, _ERFINV_W)
    mid = _chebyshev((s - 3.25) * (1.0 / 0.75), _ERFINV_S_MID)
    tail = _chebyshev((s - 5.05) * (1.0 / 1.05), _ERFINV_S_TAIL)
    x = y * (central if w < 6.25 else (mid if s < 4.0 else tail))
    x = math.copysign(_INF, y) if a == 1.0 else x
    return x if a <= 1.0 else _NAN  # nan too


@njit(**_INLINE)
def verfinv_f32(y):
    return np.float32(verfinv_f64(np.float64(y)))


@njit(**_JIT)
def _lentz_guard(v):
    """Lentz's substitute for a zero denominator (a tiny number: the fraction then goes on)."""
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
def _betainc_front(a, b, x):
    """x^a (1-x)^b / (a B(a, b)). Directly by pow and Gamma while they stay finite (each
    within an ulp or two, so the product is too); else in log space, where terms as large as
    a log x cancel (an error of ~(a + b) ulps)."""
    # (1 - x)^b: 1 - x is exact for x >= 1/2; below, exp(b log1p(-x)) keeps small x's digits
    tail = (1.0 - x) ** b if x >= 0.5 else math.exp(b * math.log1p(-x))
    if a + b < 171.0:  # Gamma(a + b) is finite
        power = x**a
        front = power * tail * (math.gamma(a + b) / (math.gamma(a) * math.gamma(b))) / a
        if 1e-290 < front < 1e290 and power > 1e-290 and tail > 1e-290:  # no denormal step
            return front
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp(a * math.log(x) + b * math.log1p(-x) - log_beta) / a


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
    out = _betainc_front(a, b, x) * _betainc_fraction(a, b, x)
    return 1.0 - out if swap else out


@njit(**_JIT)
def vbetainc_f32(a, b, x):
    return np.float32(vbetainc_f64(np.float64(a), np.float64(b), np.float64(x)))
