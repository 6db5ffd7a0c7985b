"""The counter-based generator behind `jitgrad.random`: Philox4x32-10 as one primitive.

    philox[shape, dtype, distribution](key, offset) -> draws of `shape`

`key` is a uint32 array of shape (2,) (the Philox key), `offset` an int64 scalar read as 64
unsigned bits. Block b of a draw (b = 0, 1, ...) is Philox4x32-10 (Salmon et al., "Parallel
random numbers: as easy as 1, 2, 3", SC 2011) of the counter (b mod 2**32, b div 2**32,
offset mod 2**32, offset div 2**32) under `key`: four uint32 words. Nothing depends on a
hidden state, so a draw is a pure function of its inputs: the same numbers eagerly, in the
graph interpreter and in a compiled kernel, where the Numba backend runs the same arithmetic
(backend/numba/philox.py; tests/test_random.py checks both against Random123's known answers
and against each other bit for bit).

How words become draws (`distribution`, with the output dtype):

* "bits" (uint32): element i is word i (word i mod 4 of block i div 4);
* "uniform" float32: word i's top 24 bits times 2**-24, in [0, 1);
  float64: words 2i and 2i+1 as one 64-bit number, its top 53 bits times 2**-53, in [0, 1);
* "normal": elements 2i and 2i+1 from block i by Box-Muller in float64 (then rounded once to
  the dtype): u1 = x 2**-53 in (0, 1] with x = 1 + the top 53 bits of words 0-1, u2 in [0, 1)
  from words 2-3, r = sqrt(-2 log u1), z = (r cos(2 pi u2), r sin(2 pi u2));
* "truncated_normal": normals within two standard deviations (TensorFlow's rule): element i
  takes the first of the cosine normals of blocks i, n + i, 2n + i, ... (n elements) that is.

The logarithm, sine and cosine are written here with +, -, *, / and sqrt only (IEEE correctly
rounded operations) instead of numpy's and libm's, whose last bits differ between
implementations and SIMD paths: the numpy code and the Numba code then compute the same
bits. They are accurate to a few ulps, far below a sample's own noise. Both are vectorisable:
numpy's array operations, and straight-line Numba loops (the exponent of log's argument is
found by counting bits, not by libm's frexp).
"""

from __future__ import annotations

import math

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.aval import AVal
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NOT_DIFFERENTIABLE, defop
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

uint32 = np.dtype("uint32")

DISTRIBUTIONS = {
    "bits": (uint32,),
    "uniform": (dtypes.float32, dtypes.float64),
    "normal": (dtypes.float32, dtypes.float64),
    "truncated_normal": (dtypes.float32, dtypes.float64),
}


def philox4x32(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 of counter words (c0..c3: arrays or scalars of 32-bit values) under the
    key (k0, k1): four uint32 words. Each round widens two words to uint64 for its products
    (exact: below 2**64) and keeps 32 bits of every result."""
    m0, m1, shift = np.uint64(M0), np.uint64(M1), np.uint64(32)
    k0, k1 = int(k0), int(k1)
    c0, c1, c2, c3 = (np.asarray(c).astype(np.uint32) for c in (c0, c1, c2, c3))
    for r in range(ROUNDS):
        if r:  # the Weyl key schedule, in Python ints (numpy scalars warn when they wrap)
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = c0 * m0, c2 * m1
        c0, c1, c2, c3 = (
            (p1 >> shift).astype(np.uint32) ^ c1 ^ np.uint32(k0),
            p1.astype(np.uint32),
            (p0 >> shift).astype(np.uint32) ^ c3 ^ np.uint32(k1),
            p0.astype(np.uint32),
        )
    return c0, c1, c2, c3


def blocks(key, offset, index):
    """The four words (uint32 arrays) of blocks `index` (a uint64 array) of a draw at
    (key, offset)."""
    off = np.uint64(np.int64(offset).view(np.uint64))
    shift, mask = np.uint64(32), np.uint64(MASK)
    lo, hi = off & mask, off >> shift
    c0, c1 = index & mask, index >> shift
    c2, c3 = np.full_like(index, lo), np.full_like(index, hi)
    return philox4x32(c0, c1, c2, c3, key[0], key[1])


def words(key, offset, n: int):
    """The first n words of a draw, in order."""
    index = np.arange((n + 3) // 4, dtype=np.uint64)
    return np.stack(blocks(key, offset, index), axis=1).reshape(-1)[:n]


def log_of_count(x):
    """log(x 2**-53) for integers x in [1, 2**53] (uint64 arrays): x = m 2**e exactly, with e
    the bit length of x and m in [1/2, 1), then m moved into [sqrt(1/2), sqrt(2)) and
    log m = 2 atanh(s), s = (m - 1) / (m + 1), by its series."""
    xf = x.astype(np.float64)  # exact: x <= 2**53
    e = np.frexp(xf)[1]  # the bit length of x
    m = xf / (np.uint64(1) << e.astype(np.uint64)).astype(np.float64)
    small = m < SQRT_HALF
    m = np.where(small, m + m, m)
    k = (e - small - 53).astype(np.float64)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    g = LOG_G[-1]
    for c in LOG_G[-2::-1]:
        g = c + z * g
    return k * LN2_HI + (k * LN2_LO + (s + s + s * (z * g)))


def sincos_turns(u):
    """(cos(2 pi u), sin(2 pi u)) for u in [0, 1) (arrays): the quadrant q from 4u, then the
    series in theta = (4u - q) pi / 2 in [-pi/4, pi/4], rotated by q quarter turns."""
    t = u * 4.0
    q = np.floor(t + 0.5)
    theta = (t - q) * HALF_PI
    s = theta * theta
    sin, cos = SIN_C[-1], COS_C[-1]
    for a, b in zip(SIN_C[-2::-1], COS_C[-2::-1]):
        sin, cos = a + s * sin, b + s * cos
    sin = theta * sin
    quadrant = q.astype(np.int64) % 4
    rotated_cos = np.where(
        quadrant == 0, cos, np.where(quadrant == 1, -sin, np.where(quadrant == 2, -cos, sin))
    )
    rotated_sin = np.where(
        quadrant == 0, sin, np.where(quadrant == 1, cos, np.where(quadrant == 2, -sin, -cos))
    )
    return rotated_cos, rotated_sin


def box_muller(w0, w1, w2, w3):
    """Two standard normals (float64 arrays: the cosine and the sine one) per block from its
    four words (uint32 arrays, widened by the shifts)."""
    shift, drop = np.uint64(32), np.uint64(11)
    x = (((w0 << shift) | w1) >> drop) + np.uint64(1)  # u1 = x 2**-53 in (0, 1]: a finite log
    u2 = (((w2 << shift) | w3) >> drop).astype(np.float64) * TWO_M53
    r = np.sqrt(-2.0 * log_of_count(x))
    cos, sin = sincos_turns(u2)
    return r * cos, r * sin


def _truncated(key, offset, n: int):
    """TensorFlow's truncated normal: the first normal of blocks i, n + i, ... within 2."""
    out = np.empty(n, np.float64)
    todo = np.arange(n, dtype=np.uint64)
    base = np.uint64(0)
    while todo.size:
        z = box_muller(*blocks(key, offset, base + todo))[0]
        ok = np.abs(z) <= 2.0
        out[todo[ok].astype(np.int64)] = z[ok]
        todo = todo[~ok]
        base += np.uint64(n)
    return out


def _impl(key, offset, *, shape, dtype, distribution):
    n = math.prod(shape)
    if distribution == "bits":
        flat = words(key, offset, n).astype(uint32)
    elif distribution == "uniform" and dtype == dtypes.float32:
        flat = (words(key, offset, n) >> np.uint64(8)).astype(np.float32) * np.float32(TWO_M24)
    elif distribution == "uniform":
        w = words(key, offset, 2 * n)
        x = ((w[0::2] << np.uint64(32)) | w[1::2]) >> np.uint64(11)
        flat = x.astype(np.float64) * TWO_M53
    elif distribution == "normal":
        pairs = box_muller(*blocks(key, offset, np.arange((n + 1) // 2, dtype=np.uint64)))
        flat = np.stack(pairs, axis=1).reshape(-1)[:n]
    else:
        flat = _truncated(key, offset, n)
    return flat.astype(dtype).reshape(shape)


def _abstract_eval(key, offset, *, shape, dtype, distribution):
    allowed = DISTRIBUTIONS.get(distribution)
    if allowed is None:
        raise op_error("philox", f"unknown distribution {distribution!r}")
    if key.dtype != uint32 or tuple(key.shape) != (2,):
        raise op_error(
            "philox",
            f"the key must be a uint32 array of shape (2,) (jitgrad.random.key(seed)), got "
            f"{key.dtype.name} of shape {tuple(key.shape)}",
            TypeError,
        )
    if offset.dtype != dtypes.int64 or offset.shape != ():
        raise op_error(
            "philox", f"the offset must be an int64 scalar, got {offset.dtype.name}{offset.shape}"
        )
    if dtype not in allowed:
        names = " or ".join(d.name for d in allowed)
        raise op_error(
            "philox", f"{distribution} draws are {names}, not {np.dtype(dtype).name}", TypeError
        )
    if any(d < 0 for d in shape):
        raise op_error("philox", f"negative dimension in shape {shape}")
    return AVal(tuple(shape), dtype)


philox_p = defop(
    "philox",
    abstract_eval=_abstract_eval,
    impl=_impl,
    vjp=NOT_DIFFERENTIABLE,
    kind="other",
    doc="Counter-based random draws (Philox4x32-10) of one key and offset.",
)
