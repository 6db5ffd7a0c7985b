"""The `philox` primitive's draws in compiled kernels (see jitgrad/ops/philox.py for the
algorithm and the layout of blocks, words and draws).

The same arithmetic as the op's numpy implementation, one element at a time, in the same
order, so that a kernel's draws equal eager ones bit for bit: uint64 words holding 32 bits
(every literal typed, since Numba types uint64 mixed with a Python int as float64), and the
log, sine and cosine series over +, -, *, / and sqrt in float64. Compiled without fast-math
flags: contracting a multiply and an add into an FMA, or reassociating a sum, would change
the last bits.
"""

import math

import numba
import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from jitgrad.core import philox as constants

# Typed constants: Numba types a uint64 mixed with a Python int as float64.
_M0, _M1 = np.uint64(constants.M0), np.uint64(constants.M1)
_W0, _W1 = np.uint32(constants.W0), np.uint32(constants.W1)
_MASK, _1 = np.uint64(constants.MASK), np.uint64(1)
_32, _11, _8 = np.uint64(32), np.uint64(11), np.uint64(8)  # shifts
_LOG_G = np.array(constants.LOG_G)
_SIN_C, _COS_C = np.array(constants.SIN_C), np.array(constants.COS_C)


@numba.njit(cache=True, nogil=True)
def _block(k0, k1, b, lo, hi):
    """The four words (as uint64) of block b (uint64) at offset words (lo, hi) under key
    (k0, k1). The rounds work on uint32 values, widened for each product, so that LLVM sees
    32 x 32 -> 64-bit multiplies, which vectorise."""
    c0, c1, c2, c3 = np.uint32(b & _MASK), np.uint32(b >> _32), np.uint32(lo), np.uint32(hi)
    key0, key1 = np.uint32(k0), np.uint32(k1)
    for r in range(constants.ROUNDS):
        if r:
            key0 = np.uint32(key0 + _W0)
            key1 = np.uint32(key1 + _W1)
        p0 = np.uint64(c0) * _M0
        p1 = np.uint64(c2) * _M1
        c0, c1, c2, c3 = (
            np.uint32((p1 >> _32) ^ c1 ^ key0),
            np.uint32(p1),
            np.uint32((p0 >> _32) ^ c3 ^ key1),
            np.uint32(p0),
        )
    return np.uint64(c0), np.uint64(c1), np.uint64(c2), np.uint64(c3)


@numba.njit(cache=True, nogil=True)
def _log_of_count(x):
    """log(x 2**-53) for an integer x in [1, 2**53] (ops/philox.py's log_of_count)."""
    e = 64 - leading_zeros(x)  # the bit length of x
    m = np.float64(x) / np.float64(_1 << np.uint64(e))
    if m < constants.SQRT_HALF:
        m = m + m
        e -= 1
    k = np.float64(e - 53)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    g = _LOG_G[-1]
    for j in range(len(_LOG_G) - 2, -1, -1):
        g = _LOG_G[j] + z * g
    return k * constants.LN2_HI + (k * constants.LN2_LO + (s + s + s * (z * g)))


@numba.njit(cache=True, nogil=True)
def _sincos_turns(u):
    """(cos(2 pi u), sin(2 pi u)) for u in [0, 1) (ops/philox.py's sincos_turns)."""
    t = u * 4.0
    q = np.floor(t + 0.5)
    theta = (t - q) * constants.HALF_PI
    s = theta * theta
    sin = _SIN_C[-1]
    cos = _COS_C[-1]
    for j in range(len(_SIN_C) - 2, -1, -1):
        sin = _SIN_C[j] + s * sin
        cos = _COS_C[j] + s * cos
    sin = theta * sin
    quadrant = np.int64(q) % 4
    if quadrant == 0:
        return cos, sin
    if quadrant == 1:
        return -sin, cos
    if quadrant == 2:
        return -cos, -sin
    return sin, -cos


@numba.njit(cache=True, nogil=True)
def _box_muller(k0, k1, b, lo, hi):
    """The two normals (cosine, sine) of block b."""
    w0, w1, w2, w3 = _block(k0, k1, b, lo, hi)
    x = (((w0 << _32) | w1) >> _11) + _1
    u2 = np.float64(((w2 << _32) | w3) >> _11) * constants.TWO_M53
    r = math.sqrt(-2.0 * _log_of_count(x))
    cos, sin = _sincos_turns(u2)
    return r * cos, r * sin


@numba.njit(cache=True, nogil=True)
def _key_and_offset(key, offset):
    off = np.uint64(offset)  # two's complement: the offset's 64 bits
    return np.uint64(key[0]), np.uint64(key[1]), off & _MASK, off >> _32


@numba.njit(cache=True, nogil=True)
def philox_bits(key, offset, out):
    """out (1-D uint32) = the first out.size words of the draw at (key, offset)."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    full = n // 4
    for b in range(full):
        w0, w1, w2, w3 = _block(k0, k1, np.uint64(b), lo, hi)
        out[4 * b] = np.uint32(w0)
        out[4 * b + 1] = np.uint32(w1)
        out[4 * b + 2] = np.uint32(w2)
        out[4 * b + 3] = np.uint32(w3)
    if n > 4 * full:
        w = _block(k0, k1, np.uint64(full), lo, hi)
        for j in range(n - 4 * full):
            out[4 * full + j] = np.uint32(w[j])


@numba.njit(cache=True, nogil=True)
def philox_uniform32(key, offset, out):
    """out (1-D float32) = uniform draws in [0, 1): 24 bits of one word each."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    full = n // 4
    scale = np.float32(constants.TWO_M24)
    for b in range(full):
        w0, w1, w2, w3 = _block(k0, k1, np.uint64(b), lo, hi)
        out[4 * b] = np.float32(w0 >> _8) * scale
        out[4 * b + 1] = np.float32(w1 >> _8) * scale
        out[4 * b + 2] = np.float32(w2 >> _8) * scale
        out[4 * b + 3] = np.float32(w3 >> _8) * scale
    if n > 4 * full:
        w = _block(k0, k1, np.uint64(full), lo, hi)
        for j in range(n - 4 * full):
            out[4 * full + j] = np.float32(w[j] >> _8) * scale


@numba.njit(cache=True, nogil=True)
def philox_uniform64(key, offset, out):
    """out (1-D float64) = uniform draws in [0, 1): 53 bits of two words each."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for b in range(n // 2):
        w0, w1, w2, w3 = _block(k0, k1, np.uint64(b), lo, hi)
        out[2 * b] = np.float64(((w0 << _32) | w1) >> _11) * constants.TWO_M53
        out[2 * b + 1] = np.float64(((w2 << _32) | w3) >> _11) * constants.TWO_M53
    if n % 2:
        w0, w1, _, _ = _block(k0, k1, np.uint64(n // 2), lo, hi)
        out[n - 1] = np.float64(((w0 << _32) | w1) >> _11) * constants.TWO_M53


@numba.njit(cache=True, nogil=True)
def philox_normal(key, offset, out):
    """out (1-D float32 or float64) = standard normal draws (rounded once from float64):
    elements 2b and 2b + 1 are block b's pair."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for b in range(n // 2):
        z0, z1 = _box_muller(k0, k1, np.uint64(b), lo, hi)
        out[2 * b] = z0
        out[2 * b + 1] = z1
    if n % 2:
        out[n - 1] = _box_muller(k0, k1, np.uint64(n // 2), lo, hi)[0]


@numba.njit(cache=True, nogil=True)
def philox_truncated_normal(key, offset, out):
    """out = the first cosine normal of blocks i, n + i, 2n + i, ... within two."""
    k0, k1, lo, hi = _key_and_offset(key, offset)
    n = out.size
    for i in range(n):
        b = np.uint64(i)
        while True:
            z = _box_muller(k0, k1, b, lo, hi)[0]
            if abs(z) <= 2.0:
                out[i] = z
                break
            b += np.uint64(n)
