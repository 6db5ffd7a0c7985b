"""The `philox` primitive's draws in compiled kernels (see jitgrad/ops/philox.py for the
algorithm and the layout of blocks, words and draws).

The same arithmetic as the op's numpy implementation, one element at a time, in the same
order, so that a kernel's draws equal eager ones bit for bit: uint64 words holding 32 bits
(every literal a typed uint64, since Numba types uint64 mixed with a Python int as float64),
and the log and cosine series over +, -, *, / and sqrt in float64. Compiled without fast-math
flags: contracting a multiply and an add into an FMA, or reassociating a sum, would change
the last bits.
"""

import math

import numba
import numpy as np

from jitgrad.core.philox import (
    COS_C,
    HALF_PI,
    LN2_HI,
    LN2_LO,
    LOG_G,
    M0,
    M1,
    MASK,
    ROUNDS,
    SIN_C,
    SQRT_HALF,
    TWO_M24,
    TWO_M53,
    W0,
    W1,
)

_M0, _M1, _W0, _W1 = np.uint64(M0), np.uint64(M1), np.uint64(W0), np.uint64(W1)
_MASK, _32, _11, _8, _1 = np.uint64(MASK), np.uint64(32), np.uint64(11), np.uint64(8), np.uint64(1)
_LOG_G = np.array(LOG_G)
_SIN_C, _COS_C = np.array(SIN_C), np.array(COS_C)


@numba.njit(cache=True, nogil=True)
def _block(k0, k1, b, lo, hi):
    """The four words of block b (uint64) at offset words (lo, hi) under key (k0, k1)."""
    c0, c1, c2, c3 = b & _MASK, b >> _32, lo, hi
    for r in range(ROUNDS):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _32) ^ c3 ^ k1, p0 & _MASK
    return c0, c1, c2, c3


@numba.njit(cache=True, nogil=True)
def _log_unit(u):
    m, e = math.frexp(u)
    if m < SQRT_HALF:
        m = m + m
        e -= 1
    ef = np.float64(e)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    g = _LOG_G[-1]
    for k in range(len(_LOG_G) - 2, -1, -1):
        g = _LOG_G[k] + z * g
    return ef * LN2_HI + (ef * LN2_LO + (s + s + s * (z * g)))


@numba.njit(cache=True, nogil=True)
def _cos_turns(u):
    t = u * 4.0
    q = np.floor(t + 0.5)
    theta = (t - q) * HALF_PI
    s = theta * theta
    sin = _SIN_C[-1]
    cos = _COS_C[-1]
    for k in range(len(_SIN_C) - 2, -1, -1):
        sin = _SIN_C[k] + s * sin
        cos = _COS_C[k] + s * cos
    sin = theta * sin
    quadrant = np.int64(q) % 4
    if quadrant == 0:
        return cos
    if quadrant == 1:
        return -sin
    if quadrant == 2:
        return -cos
    return sin


@numba.njit(cache=True, nogil=True)
def _box_muller(w0, w1, w2, w3):
    a = ((w0 << _32) | w1) >> _11
    b = ((w2 << _32) | w3) >> _11
    u1 = np.float64(a + _1) * TWO_M53
    u2 = np.float64(b) * TWO_M53
    return math.sqrt(-2.0 * _log_unit(u1)) * _cos_turns(u2)


@numba.njit(cache=True, nogil=True)
def _key_and_offset(key, offset):
    off = np.uint64(offset)  # two's complement: the offset's 64 bits
    return np.uint64(key[0]), np.uint64(key[1]), off & _MASK, off >> _32


@numba.njit(cache=True, nogil=True)
def philox_bits(key, offset, out):
    """out (1-D uint32) = the first out.size words of the draw at (key, offset)."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for b in range((n + 3) // 4):
        w = _block(k0, k1, np.uint64(b), lo, hi)
        for j in range(min(4, n - 4 * b)):
            out[4 * b + j] = np.uint32(w[j])


@numba.njit(cache=True, nogil=True)
def philox_uniform32(key, offset, out):
    """out (1-D float32) = uniform draws in [0, 1): 24 bits of one word each."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for b in range((n + 3) // 4):
        w = _block(k0, k1, np.uint64(b), lo, hi)
        for j in range(min(4, n - 4 * b)):
            out[4 * b + j] = np.float32(w[j] >> _8) * np.float32(TWO_M24)


@numba.njit(cache=True, nogil=True)
def philox_uniform64(key, offset, out):
    """out (1-D float64) = uniform draws in [0, 1): 53 bits of two words each."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for b in range((n + 1) // 2):
        w = _block(k0, k1, np.uint64(b), lo, hi)
        out[2 * b] = np.float64(((w[0] << _32) | w[1]) >> _11) * TWO_M53
        if 2 * b + 1 < n:
            out[2 * b + 1] = np.float64(((w[2] << _32) | w[3]) >> _11) * TWO_M53


@numba.njit(cache=True, nogil=True)
def philox_normal(key, offset, out):
    """out (1-D float32 or float64) = standard normal draws (rounded once from float64)."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    for i in range(out.size):
        w0, w1, w2, w3 = _block(k0, k1, np.uint64(i), lo, hi)
        out[i] = _box_muller(w0, w1, w2, w3)


@numba.njit(cache=True, nogil=True)
def philox_truncated_normal(key, offset, out):
    """out = the first normal of blocks i, n + i, 2n + i, ... within two (ops/philox.py)."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for i in range(n):
        b = np.uint64(i)
        while True:
            w0, w1, w2, w3 = _block(k0, k1, b, lo, hi)
            z = _box_muller(w0, w1, w2, w3)
            if abs(z) <= 2.0:
                out[i] = z
                break
            b += np.uint64(n)
