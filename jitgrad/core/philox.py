"""The constants of Philox4x32-10 and of the float64 series that turn its words into normal
draws: one definition read by both implementations of the `philox` primitive (the numpy one in
jitgrad/ops/philox.py, the Numba one in jitgrad/backend/numba/philox.py), which must agree bit
for bit."""

import math

# Philox4x32's multipliers and Weyl key increments (Random123's PHILOX_M4x32_0/1, W32_0/1).
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK = 0xFFFFFFFF

# ln 2 split so that e * LN2_HI is exact for every exponent of a float64 (fdlibm's split).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
SQRT_HALF = 0.70710678118654752440
HALF_PI = 1.57079632679489661923
# 2 atanh(s) = 2s + s z G(z), z = s**2, G(z) = sum_k 2 z**k / (2k + 3): the Taylor series,
# summed to k = 10 (the first term left out is below 2**-60 for z <= 0.0295, where
# s = f / (2 + f) and f = m - 1 for m in [sqrt(1/2), sqrt(2))).
LOG_G = tuple(2.0 / (2 * k + 3) for k in range(11))
# sin and cos on [-pi/4, pi/4] by their Taylor series to the theta**19 / theta**18 terms (the
# next term is below 2**-60 there): coefficients of theta**(2k+1) and theta**(2k).
SIN_C = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(10))
COS_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))
TWO_M24 = 2.0**-24
TWO_M53 = 2.0**-53
