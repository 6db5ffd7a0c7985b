"""The machine's physical limits, measured in the same run as the workloads (and with the same
thread settings): memory bandwidth (Numba prange streaming kernels, and a numpy copy) and float32
GEMM peak (np.dot of large matrices). Both report the best of several repetitions, as STREAM
does: a peak is what the hardware can do, noise only slows it down.

Run: python perf/machine.py   (prints JSON; perf/run.py calls it)
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth(quick: bool) -> dict:
    """Two streaming kernels, both over arrays larger than the 32 MiB L3 and run with the
    suite's thread setting: a STREAM triad (a = b + s c: 12 B/element) on 2^23-element arrays
    (96 MiB), and W2's own traffic with no arithmetic (read 3 arrays, write 2: 20 B/element) on
    2^22 elements (80 MiB). The bandwidth is the better of the two; a numpy copy is shown too.
    (Arrays of 2^25 elements and more measured slower and far noisier on this VM.)"""
    import numba as nb

    @nb.njit(parallel=True, cache=True)
    def triad(a, b, c, s):
        for i in nb.prange(a.size):
            a[i] = b[i] + s * c[i]

    @nb.njit(parallel=True, cache=True)
    def stream5(x, w, b, o1, o2):
        for i in nb.prange(x.size):
            o1[i] = x[i] + w[i]
            o2[i] = b[i] + x[i]

    repeats = 5 if quick else 20
    n = 2**23
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.full(n, 2.0, np.float32)
    t_triad = _best(lambda: triad(a, b, c, np.float32(3.0)), repeats)
    t_copy = _best(lambda: np.copyto(a, b), repeats)
    m = 2**22
    arrays = [np.full(m, 1.0 + k, np.float32) for k in range(5)]
    t_stream5 = _best(lambda: stream5(*arrays), repeats)
    triad_gbs, stream5_gbs = 12 * n / t_triad / 1e9, 20 * m / t_stream5 / 1e9
    return {
        "bandwidth_gbs": max(triad_gbs, stream5_gbs),
        "triad_gbs": triad_gbs,
        "stream5_gbs": stream5_gbs,
        "copy_gbs": 8 * n / t_copy / 1e9,
        "numba_threads": nb.config.NUMBA_NUM_THREADS,
    }


def sgemm(quick: bool) -> dict:
    n = 2048
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    y = rng.standard_normal((n, n), dtype=np.float32)
    t = _best(lambda: np.dot(x, y), 3 if quick else 10)
    return {"sgemm_gflops": 2 * n**3 / t / 1e9, "sgemm_n": n}


def blas_info() -> str:
    try:
        import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS, the one Numba's np.dot calls
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
            f"{i.get('num_threads')} threads ({os.path.basename(i['filepath'])})"
            for i in threadpool_info()
        )
    except Exception as exc:  # threadpoolctl is optional
        return f"unknown ({exc})"


def main():
    quick = "--quick" in sys.argv
    out = {}
    out.update(bandwidth(quick))
    out.update(sgemm(quick))
    out["blas"] = blas_info()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
