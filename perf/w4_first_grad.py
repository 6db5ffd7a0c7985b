"""W4 time to first gradient: a fresh Python process imports the system, builds the W3 value+grad
(trace/compile) and computes the first W3 value and gradients; seconds from process start,
first with an empty on-disk compile cache, then with the cache that run left behind (warm).

Second metric, time until the kernel serves: seconds from process start until the compiled
kernel serves the calls. jitgrad with tiered execution (`jitgrad.wait_for_compiles` exists) may
return the first gradient from its numpy fallback while the kernel compiles in the background:
the child then calls `fn.wait()` and checks that the version's state is "compiled". Without
tiered execution, in jitgrad's "blocking" mode and for the compiled peers (no fallback), it is
the time to the first gradient; the eager systems (numpy, PyTorch eager, TensorFlow eager) have
no kernel and no such time.

Each measurement is a new process started by the parent; the child reports the clock
(`time.monotonic`, system-wide) when its first value+grad is ready, then checks it against the
float64 reference. Caches: jitgrad JITGRAD_CACHE_DIR (and NUMBA_CACHE_DIR, so that Numba's
cache of jitgrad's own helpers starts empty too), hand-written Numba NUMBA_CACHE_DIR, JAX its
persistent compilation cache (JAX_COMPILATION_CACHE_DIR, minimum compile time and entry size
0), torch.compile TORCHINDUCTOR_CACHE_DIR, PyTensor base_compiledir (and NUMBA_CACHE_DIR).
Systems without an on-disk compile cache (PyTorch eager, TensorFlow eager; numpy by hand as the
baseline of starting Python and importing numpy) are measured the same way: their "warm" run
only has the OS file cache warm. Three repetitions, fewer for a system whose repetitions would
take more than W4_BUDGET seconds (torch.compile and PyTensor compile for tens of seconds cold).

Child: python perf/w4_first_grad.py --system jitgrad
"""

from __future__ import annotations

import time

_START = time.monotonic()  # noqa: E402 - as early as possible in the child

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

# jitgrad's compile mode as the parent set it (None: jitgrad's default, tiered execution).
# Read before _harness is imported: it sets "blocking" for the steady-state workloads.
_COMPILE_ENV = os.environ.get("JITGRAD_COMPILE")

SYSTEMS = (
    "numpy",
    "jitgrad",
    "jitgrad_kernel",
    "numba",
    "jax",
    "torch",
    "torch_compile",
    "pytensor",
    "tf",
)
# jitgrad_kernel: jitgrad with only its kernel cache (JITGRAD_CACHE_DIR) empty, Numba's cache of
# jitgrad's own helpers (vmath, BLAS wrappers: compiled once per installation) left as it is:
# a new model on an installation that has been used before.
LABELS = {"jitgrad_kernel": "jitgrad (new kernel, helpers cached)"}
SETUP = {"jitgrad_kernel": "jitgrad"}
TAG = "W4-READY "
W4_BUDGET = 90.0


def cache_env(system: str, directory: str) -> dict:
    numba_dir = os.path.join(directory, "numba")
    return {
        "jitgrad": {"JITGRAD_CACHE_DIR": directory, "NUMBA_CACHE_DIR": numba_dir},
        "jitgrad_kernel": {"JITGRAD_CACHE_DIR": directory},
        "numba": {"NUMBA_CACHE_DIR": numba_dir},
        "jax": {
            "JAX_COMPILATION_CACHE_DIR": directory,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        },
        "torch_compile": {"TORCHINDUCTOR_CACHE_DIR": directory},
        "pytensor": {
            "PYTENSOR_FLAGS": f"base_compiledir={directory}",
            "NUMBA_CACHE_DIR": numba_dir,
        },
    }.get(system, {})


HAS_CACHE = ("jitgrad", "jitgrad_kernel", "numba", "jax", "torch_compile", "pytensor")


EAGER = ("numpy", "torch", "tf")  # no compiled kernel: no "kernel serves" time


def child(system: str) -> None:
    import numpy as np

    import w3_mlp
    from _harness import compare_all, end_compile_worker

    d = w3_mlp.data()
    fn, mode = None, ""
    if SETUP.get(system, system) == "jitgrad":
        # As w3_mlp.setup_jitgrad, keeping the jitted function to wait for its kernel.
        if _COMPILE_ENV is None:
            os.environ.pop("JITGRAD_COMPILE", None)  # jitgrad's default mode, not _harness's
        import jitgrad as jg

        fn = jg.jit_grad(w3_mlp.loss_jitgrad, wrt=0)
        call, result = (lambda: fn(d.params, d.X, d.y)), w3_mlp._dict_result
        tiered = hasattr(jg, "wait_for_compiles")
        mode = getattr(jg.config, "compile", "blocking") if tiered else "blocking"
        worker = getattr(jg.config, "compile_worker", None)
        if mode == "background" and worker:
            mode += f" ({worker} worker)"
    else:
        bench = getattr(w3_mlp, f"setup_{SETUP.get(system, system)}")(d)
        call, result = bench.call, bench.result
    out = call()
    ready = time.monotonic()
    serving = ready
    if fn is not None and hasattr(fn, "wait"):
        waited = fn.wait()
        serving = time.monotonic()
        states = tuple(getattr(fn.cache_info(), "states", ()) or ())
        if not waited or not states or any(s != "compiled" for s in states):
            raise RuntimeError(f"the kernel does not serve: wait() {waited}, states {states}")
    value, grads = result(out)
    ref_value, ref_grads = w3_mlp.reference(d)
    compare_all(np.asarray(value), grads, ref_value, ref_grads, 1e-4)
    info = {"ready": ready, "serving": serving, "child_start": _START, "mode": mode}
    print(TAG + json.dumps(info), flush=True)
    end_compile_worker()


def one_process(python: str, system: str, env: dict, timeout: float = 600.0) -> dict:
    """Seconds from starting the process to its first checked value+grad, and to the kernel
    serving the calls."""
    script = os.path.abspath(__file__)
    start = time.monotonic()
    proc = subprocess.run(
        [python, script, "--system", system],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            info = json.loads(line[len(TAG) :])
            return {
                "seconds": info["ready"] - start,
                "serving": info["serving"] - start,
                "interpreter": info["child_start"] - start,
                "mode": info.get("mode", ""),
            }
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"W4 {system}: no result (exit {proc.returncode}): {' | '.join(tail)}")


def measure(python: str, system: str, base_env: dict, reps: int, budget: float = 0.0) -> dict:
    """Cold and warm seconds (to the first gradient; `*_serving`: to the kernel serving), each
    repetition with a fresh cache directory: `reps` repetitions, or fewer (at least one) when
    another would take the system's time past `budget` seconds (0: no budget)."""
    runs = {"cold": [], "warm": [], "cold_serving": [], "warm_serving": [], "mode": ""}
    start = time.monotonic()
    while len(runs["cold"]) < reps:
        rep_start = time.monotonic()
        directory = tempfile.mkdtemp(prefix=f"perf-w4-{system}-")
        try:
            # Without JITGRAD_COMPILE (the parent's _harness set it): jitgrad's default mode.
            env = {k: v for k, v in base_env.items() if k != "JITGRAD_COMPILE"}
            env.update(cache_env(system, directory))
            for which in ("cold", "warm"):
                one = one_process(python, system, env)
                runs[which].append(one["seconds"])
                runs[f"{which}_serving"].append(one["serving"])
                runs["mode"] = one["mode"]
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        now = time.monotonic()
        if budget and now - start + (now - rep_start) > budget:
            break
    return runs


if __name__ == "__main__":
    if "--system" in sys.argv:
        child(sys.argv[sys.argv.index("--system") + 1])
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import run

        sys.exit(run.main(["--only", "W4", *sys.argv[1:]]))
