"""Issue 12's tape figure: an eager GradientTape training loop over W9's 1,000-op chain, seconds
per iteration in a fresh process with an empty cache. The tape compiles the backward pass of a
structure it has recorded twice (jitgrad.config.tape_compile_after), in the background, so the
2nd iteration must not wait for Numba: target <= 2x the 1st.

Run: python perf/tape_reuse.py [ops] [samples]
Each sample is a new process (JITGRAD_CACHE_DIR a new empty directory; jitgrad's default
compile mode), timing iterations 1-3 and then the first iteration on the compiled backward
(which still carries first-call costs; not a steady-state figure).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TAG = "TAPE-REUSE "


def child(ops: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np

    import jitgrad as jg
    from _harness import end_compile_worker
    from w9_compile import chain_input, chain_loss

    x = jg.Variable(chain_input())

    def iteration() -> float:
        start = time.perf_counter()
        with jg.GradientTape() as tape:
            loss = chain_loss(x, ops, jg.sin, jg.tanh, jg.reduce_sum)
        grad = tape.gradient(loss, x)
        x.assign_sub(1e-3 * grad)
        return time.perf_counter() - start

    seconds = [iteration() for _ in range(3)]
    jg.wait_for_compiles()
    seconds.append(iteration())  # the compiled backward serves
    assert np.all(np.isfinite(x.numpy()))
    print(TAG + json.dumps({"seconds": seconds}), flush=True)
    end_compile_worker()


def sample(ops: int) -> list[float]:
    directory = tempfile.mkdtemp(prefix="perf-tape-")
    env = {k: v for k, v in os.environ.items() if k != "JITGRAD_COMPILE"}
    env["JITGRAD_CACHE_DIR"] = directory
    try:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", str(ops)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for line in out.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG) :])["seconds"]
    raise RuntimeError(f"no result: {out.stderr.strip().splitlines()[-3:]}")


def main(ops: int, samples: int) -> None:
    runs = [sample(ops) for _ in range(samples)]
    ratios = [r[1] / r[0] for r in runs]
    print(f"eager tape, {ops}-op chain, {samples} fresh processes (seconds per iteration)")
    print("| sample | 1st | 2nd | 3rd | 1st on the compiled backward | 2nd / 1st |")
    print("|---|---|---|---|---|---|")
    for k, (r, ratio) in enumerate(zip(runs, ratios), 1):
        print(f"| {k} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.4f} | {ratio:.2f} |")
    print(f"median 2nd / 1st: {statistics.median(ratios):.2f} (target <= 2)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]))
    else:
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 3,
        )
