"""Benchmark: vmath functions vs libm calls inside parallel Numba kernels.

Shows that vtanh/vexp vectorise (full-width vector arithmetic in the IR, loops ~memory bound)
where math.tanh/math.exp do not, and times the hand-fused W2 kernel
(loss = mean(tanh(x*w + b)**2) with its gradients dw, db) both ways.

Run: PYTHONPATH=. python perf/vmath_bench.py
"""

import math
import re
import time

import numba
import numpy as np
from numba import prange

from jitgrad.backend.numba.vmath import vexp_f32, vtanh_f32

N = 2**22
REPEATS = 20
JIT = {"parallel": True, "fastmath": {"reassoc", "contract"}, "error_model": "numpy"}


def _unary_kernel(f):
    @numba.njit(**JIT)
    def kernel(x, out):
        for i in prange(x.size):
            out[i] = f(x[i])

    return kernel


def _w2_kernel(tanh):
    """loss = mean(t**2), t = tanh(x*w + b); dloss/db = 2/N t (1 - t**2), dloss/dw = x dloss/db."""

    @numba.njit(**JIT)
    def kernel(x, w, b, dw, db):
        n = x.size
        scale = np.float32(2.0) / np.float32(n)
        loss = np.float32(0.0)
        for i in prange(n):
            t = tanh(x[i] * w[i] + b[i])
            loss += t * t
            g = scale * t * (np.float32(1.0) - t * t)
            db[i] = g
            dw[i] = g * x[i]
        return loss / np.float32(n)

    return kernel


def _median_ms(fn, *args):
    fn(*args)  # compile + warm up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _vectorisation(kernel):
    """Widths of vector float arithmetic in the kernel's LLVM IR, and whether a transcendental
    call remains (LLVM scalarises those, e.g. llvm.tanh.v16f32 becomes 16 tanhf calls)."""
    ir = "".join(kernel.inspect_llvm().values())
    widths = {int(w) for w in re.findall(r"= (?:fadd|fsub|fmul|fdiv)\b[^\n]*<(\d+) x float>", ir)}
    libm = bool(re.search(r"call [^\n]*@(llvm\.)?(exp|tanh)f?[.(]", ir))
    return f"vector widths {sorted(widths)}, libm calls: {libm}"


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N, dtype=np.float32)
    w = rng.standard_normal(N, dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    out, dw, db = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    print(f"N = 2**22 float32, {numba.config.NUMBA_NUM_THREADS} threads, median of {REPEATS}")

    for name, f in [
        ("vtanh_f32", vtanh_f32),
        ("math.tanh", math.tanh),
        ("vexp_f32", vexp_f32),
        ("math.exp", math.exp),
    ]:
        kernel = _unary_kernel(f)
        ms = _median_ms(kernel, x, out)
        print(f"  out[i] = {name}(x[i]): {ms:7.2f} ms   {_vectorisation(kernel)}")

    for name, f in [("vtanh_f32", vtanh_f32), ("math.tanh", math.tanh)]:
        kernel = _w2_kernel(f)
        ms = _median_ms(kernel, x, w, b, dw, db)
        print(f"  W2 fused with {name}: {ms:7.2f} ms   {_vectorisation(kernel)}")

    t = np.tanh(x * w + b)
    loss_ref = np.mean(t.astype(np.float64) ** 2)
    loss = _w2_kernel(vtanh_f32)(x, w, b, dw, db)
    db_ref = 2.0 / N * t * (1 - t * t)
    print(
        f"  W2 check: loss {loss:.7g} vs numpy {loss_ref:.7g}, "
        f"max |db - ref| {np.max(np.abs(db - db_ref)):.2g}"
    )


if __name__ == "__main__":
    main()
