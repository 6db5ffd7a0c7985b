"""Small Numba helpers that generated kernels import (kept out of the kernels' source so they
are compiled once and cached)."""

import numba
import numpy as np

from jitgrad.backend.numba.helper_names import RUNTIME_MODULE

SOURCE_MODULE = RUNTIME_MODULE


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def sum_step(partial, x):
    """partial + x, the one addition of a kernel that may be reassociated: kernels are compiled
    without fast-math flags (IEEE results, the same as eager: (x * 1e38) * 1e-38 must
    overflow), and LLVM vectorises a sum only if it may reorder it. LLVM keeps the flag when
    it inlines this into the kernel's loop; Numba's own inlining would not."""
    return partial + x


@numba.njit(cache=True, nogil=True)
def matmul(a, b):
    """np.dot behind a cached dispatcher: Numba compiles its BLAS wrapper once per layout
    combination and caches it with jitgrad's package, not once per kernel and process."""
    return np.dot(a, b)


@numba.njit(cache=True, nogil=True)
def matmul_into(a, b, out):
    """np.dot(a, b) written into `out` (C-contiguous, the right shape and dtype)."""
    np.dot(a, b, out)


@numba.njit(cache=True, nogil=True)
def int_matmul(a, b):
    """Integer matrix product (BLAS has none); batch dimensions are flattened by the caller."""
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), a.dtype)
    for i in range(m):
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]
    return out


# Copies of a loop's carry and ys after each iteration (backend/numba/control.py), one helper
# per rank: element loops that take any layout, compiled once per installation. Inline in a
# kernel, `a[i] = b` costs Numba seconds (its shape check and error message), and even
# element loops cost ~50 ms of compile each.


@numba.njit(cache=True, nogil=True)
def copy1(dst, src):
    """dst[:] = src for 1-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        dst[i0] = src[i0]


@numba.njit(cache=True, nogil=True)
def copy2(dst, src):
    """dst[:, :] = src for 2-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            dst[i0, i1] = src[i0, i1]


@numba.njit(cache=True, nogil=True)
def copy3(dst, src):
    """dst[:, :, :] = src for 3-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            for i2 in range(src.shape[2]):
                dst[i0, i1, i2] = src[i0, i1, i2]


@numba.njit(cache=True, nogil=True)
def copy4(dst, src):
    """dst[:, :, :, :] = src for 4-D arrays of one shape."""
    for i0 in range(src.shape[0]):
        for i1 in range(src.shape[1]):
            for i2 in range(src.shape[2]):
                for i3 in range(src.shape[3]):
                    dst[i0, i1, i2, i3] = src[i0, i1, i2, i3]
