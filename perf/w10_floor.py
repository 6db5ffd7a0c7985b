"""W10 against its FLOP floor with both measured in the same minute.

The suite measures sgemm once, at its start, and W10 minutes later; this host's two vCPUs
swing between phases (sgemm 137 to 311 GFLOP/s within a minute), so that ratio can mix a slow
phase's peak with a fast phase's W10. Here each round measures the peak (machine.sgemm, numpy's
float32 2048^2 product on every core) and then W10's steady state, and prints their ratio.

    python perf/w10_floor.py [rounds]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jitgrad  # noqa: E402
import machine  # noqa: E402
import w10_cnn  # noqa: E402


def steady_ms(step, calls: int = 100, batches: int = 5) -> float:
    """The median over `batches` of the mean time of `calls` calls, in ms."""
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        times.append((time.perf_counter() - start) / calls)
    return sorted(times)[batches // 2] * 1e3


def main(rounds: int) -> None:
    data = w10_cnn.data()
    jitgrad.config.compile = "blocking"
    value_and_grad = jitgrad.jit_grad(w10_cnn.loss_jitgrad, wrt=0)

    def step():
        value_and_grad(data.params, data.X, data.y)

    step()
    for _ in range(rounds):
        peak = machine.sgemm(quick=False)["sgemm_gflops"]
        w10 = steady_ms(step)
        floor = w10_cnn.FLOPS / (peak * 1e9) * 1e3
        print(
            f"sgemm {peak:.0f} GFLOP/s, floor {floor:.3f} ms; W10 {w10:.3f} ms = {w10 / floor:.2f}x"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
