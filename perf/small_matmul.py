"""Benchmark: small matrix products inside a loop body, as a BLAS call (`matmul_into`, what
kernels emit) and as fused element loops, at the shapes of recurrent models (W8b: 16x32 @ 32x32)
and around them. Issue 13 asks for the faster to be chosen by shape: the table decides it.

Run: PYTHONPATH=. python perf/small_matmul.py
"""

import time

import numba
import numpy as np

from jitgrad.backend.numba.runtime import matmul_into

SHAPES = [(4, 4, 4), (8, 8, 8), (16, 8, 32), (16, 16, 16), (16, 32, 32), (32, 16, 32)]
SHAPES += [(32, 32, 16), (64, 64, 64), (128, 128, 128)]


@numba.njit(nogil=True)
def loops_into(a, b, out):
    """The product as a fused kernel would loop it: i, p, j with a[i, p] in a register."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]


@numba.njit(nogil=True)
def repeat_blas(a, b, out, times):
    for _ in range(times):
        matmul_into(a, b, out)


@numba.njit(nogil=True)
def repeat_loops(a, b, out, times):
    for _ in range(times):
        loops_into(a, b, out)


def seconds(fn, *args) -> float:
    fn(*args[:-1], 1)
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        fn(*args)
        best = min(best, (time.perf_counter() - start) / args[-1])
    return best


def main() -> None:
    print("| m x k x n | dtype | BLAS call | element loops | loops / BLAS |")
    print("|---|---|---|---|---|")
    for m, k, n in SHAPES:
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(0)
            a, b = rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
            out = np.empty((m, n), dtype)
            times = max(10, int(2e6 / (m * n * k)))
            blas = seconds(repeat_blas, a, b, out, times)
            loops = seconds(repeat_loops, a, b, out, times)
            print(
                f"| {m}x{k}x{n} | {np.dtype(dtype).name} | {blas * 1e6:.2f} us | "
                f"{loops * 1e6:.2f} us | {loops / blas:.1f} |"
            )


if __name__ == "__main__":
    main()
