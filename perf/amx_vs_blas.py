"""W3L's five matrix products (one thread) on AMX tiles (jitgrad/backend/numba/amx.py) against
OpenBLAS (runtime.matmul_into, the BLAS path), alternated product by product in one process;
or W3's products at batches 64, 128 and 256 and smaller ones (`--shapes w3`), which set
amx.MIN_WORK_ONE_THREAD (session 23).

    taskset -c 1 python perf/amx_vs_blas.py [rounds] [--shapes w3l|w3]

First checks both against float64 products on the scale of sum |a||b|. Then times each product
alone (the same operands over and over: they stay in cache) and as W3L's sequence (each
product's operands evicted by the others', as in the kernel), and prints medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from jitgrad.backend.numba import amx, runtime  # noqa: E402

# name: (M, K, N, layouts of a and b: n = row-major, t = a transposed view)
W3_PRODUCTS = {
    "X @ W1, b256": (256, 784, 256, "nn"),
    "X.T @ dZ, b256": (784, 256, 256, "tn"),
    "X @ W1, b128": (128, 784, 256, "nn"),
    "X.T @ dZ, b128": (784, 128, 256, "tn"),
    "X @ W1, b64": (64, 784, 256, "nn"),
    "X.T @ dZ, b64": (784, 64, 256, "tn"),
    "2^23": (128, 256, 256, "nn"),
    "2^22": (64, 256, 256, "nn"),
    "2^21": (32, 256, 256, "nn"),
}
PRODUCTS = {
    "X @ W1": (128, 784, 1024, "nn"),
    "H1 @ W2": (128, 1024, 1024, "nn"),
    "dZ2 @ W2.T": (128, 1024, 1024, "nt"),
    "H1.T @ dZ2": (1024, 128, 1024, "tn"),
    "X.T @ dZ1": (784, 128, 1024, "tn"),
}


@numba.njit(nogil=True)
def blas(a, b, out):
    runtime.matmul_into(a, b, out)
    return True


@numba.njit(nogil=True)
def tiles(a, b, out):
    return amx.matmul(a, b, out, 1)


def operands(rng, products):
    for name, (m, k, n, layouts) in products.items():
        a = rng.standard_normal((k, m) if layouts[0] == "t" else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if layouts[1] == "t" else (k, n), dtype=np.float32)
        a = a.T if layouts[0] == "t" else a
        b = b.T if layouts[1] == "t" else b
        yield name, a, b, np.empty((m, n), np.float32)


def check(products) -> None:
    for name, a, b, out in products:
        exact = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        errors = []
        for multiply in (tiles, blas):
            assert multiply(a, b, out)
            errors.append(float(np.max(np.abs(out - exact) / scale)))
        print(f"{name:16s} error / sum|a||b|: AMX {errors[0]:.2e}, OpenBLAS {errors[1]:.2e}")


def main(rounds: int, shapes: str) -> None:
    if not amx.available():
        sys.exit("no AMX here (CPU features amx-tile and amx-bf16, and the OS's permission)")
    chosen = W3_PRODUCTS if shapes == "w3" else PRODUCTS
    products = list(operands(np.random.default_rng(0), chosen))
    check(products)
    systems = {"AMX": tiles, "OpenBLAS": blas}
    alone = {(system, p[0]): [] for system in systems for p in products}
    in_sequence = {key: [] for key in alone}
    for _ in range(rounds):
        for system, multiply in systems.items():
            for name, a, b, out in products:
                for _ in range(3):
                    start = time.perf_counter()
                    multiply(a, b, out)
                    alone[system, name].append(time.perf_counter() - start)
            for name, a, b, out in products:
                start = time.perf_counter()
                multiply(a, b, out)
                in_sequence[system, name].append(time.perf_counter() - start)
    print(f"\nmedians over {rounds} rounds, ms (AMX / OpenBLAS)")
    for label, times in (("alone", alone), ("in sequence", in_sequence)):
        total = dict.fromkeys(systems, 0.0)
        for name, *_ in products:
            medians = {system: float(np.median(times[system, name][2:])) for system in systems}
            for system in systems:
                total[system] += medians[system]
            amx_ms, blas_ms = medians["AMX"] * 1e3, medians["OpenBLAS"] * 1e3
            print(
                f"  {label:11s} {name:16s} {amx_ms:6.3f} / {blas_ms:6.3f} = {amx_ms / blas_ms:.2f}"
            )
        amx_ms, blas_ms = total["AMX"] * 1e3, total["OpenBLAS"] * 1e3
        ratio = amx_ms / blas_ms
        print(f"  {label:11s} {'all':16s} {amx_ms:6.3f} / {blas_ms:6.3f} = {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", type=int, nargs="?", default=60)
    parser.add_argument("--shapes", choices=("w3l", "w3"), default="w3l")
    args = parser.parse_args()
    main(args.rounds, args.shapes)
