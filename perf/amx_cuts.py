"""How long W3's operands take to cut into AMX's bfloat16 parts (jitgrad/backend/numba/amx.py:
pack_left, pack_right), apart from the tile products that read them.

Why: a product on the tiles first cuts both operands into three parts each, and that is the
part of W3's products that does not shrink with the batch (W1's 784 x 256 is cut whole
whatever the batch): on two ranks each rank cuts all of W1 for its half of the batch
(perf/gaps.md, W11). Session 24: W1's cut took 0.050-0.052 ms of a 0.20-0.22 ms product at
batch 128, and 0.044-0.047 once pack_right went down each column block in one loop (the last 16
of its 784 rows, past the last whole k tile, by vectors too).

    taskset -c 1 python perf/amx_cuts.py [rounds]

Each cut runs as the product runs it: W1 by panels of column blocks (amx.PANEL_BYTES), into
buffers aligned as the product's. Prints the median of `rounds` blocks per cut, and the
whole product for scale.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from jitgrad.backend.numba import amx


@numba.njit
def aligned_parts(blocks, k_blocks):
    return amx._aligned_words(amx.PARTS, blocks, k_blocks)


def median_ms(fn, rounds: int, calls: int = 200) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return float(np.median(times))


def weight_cut(w):
    """pack_right of all of w, a panel at a time, as amx._columns cuts it."""
    k_blocks = (w.shape[0] + amx.K_TILE - 1) // amx.K_TILE
    pairs = (w.shape[1] + 2 * amx.ROWS - 1) // (2 * amx.ROWS)
    group = max(1, min(pairs, amx.PANEL_BYTES // (amx.PARTS * 2 * k_blocks * 1024)))
    panel = aligned_parts(2 * group, k_blocks)

    def cut():
        for first in range(0, pairs, group):
            amx.pack_right(w, panel, 2 * first, 2 * min(group, pairs - first))

    return cut


def left_cut(a):
    m, k = a.shape
    words = aligned_parts(2 * ((m + 2 * amx.ROWS - 1) // (2 * amx.ROWS)), (k + 31) // 32)
    return lambda: amx.pack_left(a, words)


def main(rounds: int) -> None:
    if not amx.available():
        print("this CPU (or OS) has no AMX: nothing to measure")
        return
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((784, 256)).astype(np.float32)
    rows = [("W1 (784 x 256), by panels", weight_cut(w1))]
    for batch in (128, 256):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        dz = rng.standard_normal((batch, 256)).astype(np.float32)
        out = np.empty((batch, 256), np.float32)
        rows += [
            (f"X ({batch} x 784), row-major", left_cut(x)),
            (f"X.T (784 x {batch}), column-major", left_cut(x.T)),
            (f"dZ ({batch} x 256), by panels", weight_cut(dz)),
            (f"the product X @ W1, batch {batch}", lambda x=x, out=out: amx.matmul(x, w1, out, 1)),
        ]
    print("| cut | ms |\n|---|---|")
    for label, fn in rows:
        print(f"| {label} | {median_ms(fn, rounds):.4f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", type=int, nargs="?", default=9)
    main(parser.parse_args().rounds)
