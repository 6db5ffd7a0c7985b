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
