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
* "normal": element i from block i, Box-Muller in float64 (then rounded once to the dtype):
  u1 in (0, 1] from words 0-1, u2 in [0, 1) from words 2-3, z = sqrt(-2 log u1) cos(2 pi u2);
* "truncated_normal": normals within two standard deviations (TensorFlow's rule): element i
  takes the first of the normals of blocks i, n + i, 2n + i, ... (n elements) that is.

The logarithm and cosine are written here with +, -, *, / and sqrt only (IEEE correctly
rounded operations) instead of numpy's and libm's, whose last bits differ between
implementations and SIMD paths: the numpy code and the Numba code then compute the same
bits. They are accurate to a few ulps, far below a sample's own noise.
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


def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter words (c0..c3) under key (k0, k1): four words. Every value is
    a uint64 array (or scalar) holding 32 bits, so a product of two words is exact."""
    m0, m1, mask = np.uint64(M0), np.uint64(M1), np.uint64(MASK)
    w0, w1, shift = np.uint64(W0), np.uint64(W1), np.uint64(32)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> shift) ^ c1 ^ k0, p1 & mask, (p0 >> shift) ^ c3 ^ k1, p0 & mask
    return c0, c1, c2, c3


def blocks(key, offset, index):
    """The four words of blocks `index` (a uint64 array) of a draw at (key, offset)."""
    off = np.uint64(np.int64(offset).view(np.uint64))
    shift, mask = np.uint64(32), np.uint64(MASK)
    lo, hi = off & mask, off >> shift
    c0, c1 = index & mask, index >> shift
    c2, c3 = np.full_like(index, lo), np.full_like(index, hi)
    return philox4x32(c0, c1, c2, c3, int(key[0]), int(key[1]))


def words(key, offset, n: int):
    """The first n words of a draw, in order."""
    index = np.arange((n + 3) // 4, dtype=np.uint64)
    return np.stack(blocks(key, offset, index), axis=1).reshape(-1)[:n]


def log_unit(u):
    """log(u) for u in (0, 1] (arrays), by exponent split and the atanh series."""
    m, e = np.frexp(u)
    small = m < SQRT_HALF
    m = np.where(small, m + m, m)
    e = (e - small).astype(np.float64)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    g = LOG_G[-1]
    for c in LOG_G[-2::-1]:
        g = c + z * g
    return e * LN2_HI + (e * LN2_LO + (s + s + s * (z * g)))


def cos_turns(u):
    """cos(2 pi u) for u in [0, 1) (arrays): the quadrant from 4u, then a series in
    theta = (4u - q) pi / 2 in [-pi/4, pi/4]."""
    t = u * 4.0
    q = np.floor(t + 0.5)
    theta = (t - q) * HALF_PI
    s = theta * theta
    sin, cos = SIN_C[-1], COS_C[-1]
    for a, b in zip(SIN_C[-2::-1], COS_C[-2::-1]):
        sin, cos = a + s * sin, b + s * cos
    sin = theta * sin
    quadrant = q.astype(np.int64) % 4
    return np.where(
        quadrant == 0, cos, np.where(quadrant == 1, -sin, np.where(quadrant == 2, -cos, sin))
    )


def box_muller(w0, w1, w2, w3):
    """A standard normal (float64) per block from its four words (uint64 arrays)."""
    shift, drop = np.uint64(32), np.uint64(11)
    a = ((w0 << shift) | w1) >> drop
    b = ((w2 << shift) | w3) >> drop
    u1 = (a + np.uint64(1)).astype(np.float64) * TWO_M53  # (0, 1]: log(u1) is finite
    u2 = b.astype(np.float64) * TWO_M53
    return np.sqrt(-2.0 * log_unit(u1)) * cos_turns(u2)


def _truncated(key, offset, n: int):
    """TensorFlow's truncated normal: the first normal of blocks i, n + i, ... within 2."""
    out = np.empty(n, np.float64)
    todo = np.arange(n, dtype=np.uint64)
    base = np.uint64(0)
    while todo.size:
        z = box_muller(*blocks(key, offset, base + todo))
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
        flat = box_muller(*blocks(key, offset, np.arange(n, dtype=np.uint64)))
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
