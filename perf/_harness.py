"""Shared machinery of the perf/ suite: timing, correctness checks, the child-process protocol.

Every workload script (w1_scalar.py ... w7_adam.py) defines `WORKLOADS`, a list of `Workload`s;
each has a float64 numpy reference and a dict of systems (setup functions). Running

    python perf/w2_elementwise.py --system jax [--quick]

runs ONE system of that script's workload in this process: it builds it, checks its value and
gradients against the float64 reference (a disagreement raises `MismatchError` and exits non-zero),
times it in steady state and prints one `PERF-RESULT {json}` line. `perf/run.py` starts one such
process per (workload, system), so that the frameworks' thread pools never share a process,
and sets the thread-count environment before the interpreter starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

import numpy as np

# Steady-state speed is the kernels' speed: jitgrad's tiered execution would otherwise serve the
# first calls of a measurement on its numpy fallback while the kernel compiles (W4 and W9 measure
# that path, in processes of their own).
os.environ.setdefault("JITGRAD_COMPILE", "blocking")

RESULT_TAG = "PERF-RESULT "
PERF_DIR = os.path.dirname(os.path.abspath(__file__))

# workload -> the script (module) that defines it
SCRIPTS = {
    "W1": "w1_scalar",
    "W2": "w2_elementwise",
    "W3": "w3_mlp",
    "W4": "w4_first_grad",
    "W5": "w5_higher_order",
    "W6": "w6_logreg",
    "W6c": "w6_logreg",
    "W7": "w7_adam",
}

# System keys (used on the command line) and the labels the tables show.
LABELS = {
    "jitgrad": "jitgrad",
    "numpy": "numpy (by hand)",
    "numba": "Numba (hand-fused)",
    "jax": "JAX jit",
    "torch": "PyTorch eager",
    "torch_compile": "torch.compile",
    "autograd": "HIPS autograd",
    "pytensor": "PyTensor (Numba backend)",
    "tf": "TensorFlow eager",
}
# The module each system needs (None: always available).
REQUIRES = {
    "jitgrad": "jitgrad",
    "numpy": None,
    "numba": "numba",
    "jax": "jax",
    "torch": "torch",
    "torch_compile": "torch",
    "autograd": "autograd",
    "pytensor": "pytensor",
    "tf": "tensorflow",
}


class MismatchError(AssertionError):
    """A system's value or gradient disagrees with the float64 reference."""


@dataclasses.dataclass
class Bench:
    """What a system's setup returns.

    `call()` is the timed unit of work (it must finish its computation: block on asynchronous
    results); `result(out)` maps call()'s output to (value, [gradients]) as numpy arrays for the
    standard check against the reference; a workload with its own check passes `verify`
    instead, a function that raises `MismatchError` and returns the largest error. `per_call`
    divides each timing (W6: 200 steps per call). `label` overrides the system's label."""

    call: Callable
    result: Callable | None = None
    verify: Callable | None = None
    per_call: int = 1
    label: str | None = None
    note: str = ""


@dataclasses.dataclass
class Workload:
    key: str  # "W2"
    title: str
    unit: str  # "us", "ms", "s", "us/step"
    data: Callable  # () -> data object
    reference: Callable  # (data) -> (value, [gradients]) in float64
    systems: dict  # system key -> setup(data) -> Bench
    rtol: float = 1e-4
    floor: Callable | None = None  # (machine dict) -> (seconds, explanation)
    description: str = ""


def end_compile_worker() -> None:
    """In a first-call child, once its kernel serves: end jitgrad's compile worker. By design
    the worker outlives its program (up to jitgrad.config.compile_exit_budget, 300 s) to
    finish cache entries and warm jitgrad's helpers into the cache, in a session of its own,
    so killing the child's process group does not reach it; left running, the workers of
    earlier samples (each warming helpers into its own empty cache) load the machine under
    the next samples and the peers' (W4: JAX's cold first gradient 1.25 s alone, 5.1 s
    beside six of them)."""
    import signal

    background = sys.modules.get("jitgrad.compiler.background")
    worker = getattr(background, "_worker", None)  # private: the harness measures jitgrad
    if worker is None:
        return
    try:
        os.killpg(worker.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def setups(namespace: dict) -> dict:
    """The `setup_<system>` functions of a workload module, keyed by system."""
    return {
        name[len("setup_") :]: fn
        for name, fn in namespace.items()
        if name.startswith("setup_") and callable(fn)
    }


UNIT_SECONDS = {"us": 1e-6, "us/step": 1e-6, "ms": 1e-3, "s": 1.0}


# -- correctness ---------------------------------------------------------------------------------
def compare(name: str, got, ref, rtol: float) -> float:
    """max |got - ref| / (|ref| + max|ref|), raising `MismatchError` above `rtol`.

    The max|ref| term is an absolute tolerance on the scale of the array: gradients summed over a
    batch in float32 carry rounding errors of that size in their small elements."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise MismatchError(f"{name}: shape {got.shape}, the reference has {ref.shape}")
    if not np.all(np.isfinite(got)):
        bad = got.ravel()[~np.isfinite(got.ravel())]
        raise MismatchError(f"{name}: {bad.size} non-finite values, e.g. {bad[:3]}")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    denom = np.abs(ref) + (scale if scale > 0 else 1.0)
    rel = np.abs(got - ref) / denom
    worst = float(np.max(rel)) if rel.size else 0.0
    if worst > rtol:
        i = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.ndim else ()
        raise MismatchError(
            f"{name}: relative error {worst:.3g} > {rtol:g} at {i}: got "
            f"{got[i]!r}, float64 reference {ref[i]!r}"
        )
    return worst


def compare_all(got_value, got_grads, ref_value, ref_grads, rtol: float) -> float:
    got_grads = list(got_grads)
    if len(got_grads) != len(ref_grads):
        raise MismatchError(f"{len(got_grads)} gradients, the reference has {len(ref_grads)}")
    worst = compare("value", got_value, ref_value, rtol)
    for i, (g, r) in enumerate(zip(got_grads, ref_grads)):
        worst = max(worst, compare(f"gradient {i}", g, r, rtol))
    return worst


# -- timing --------------------------------------------------------------------------------------
def quick_mode() -> bool:
    return os.environ.get("PERF_QUICK", "") not in ("", "0")


def measure(call: Callable, per_call: int = 1) -> dict:
    """Steady-state timing: warm up, then time batches of calls (a batch lasts >= 200 us so the
    timer's resolution does not matter) until a time budget is spent (2 s, or PERF_BUDGET).
    Returns seconds per call (divided by `per_call`): median, p10, p90 over the batches."""
    quick = quick_mode()
    warm_calls, warm_seconds = (2, 0.05) if quick else (3, 0.3)
    budget, min_samples, max_samples = (0.3, 3, 300) if quick else (2.0, 10, 2000)
    budget = float(os.environ.get("PERF_BUDGET", budget))
    start = time.perf_counter()
    n = 0
    while n < warm_calls or time.perf_counter() - start < warm_seconds:
        call()
        n += 1
        if time.perf_counter() - start > 5 * warm_seconds and n >= 1:
            break
    one = (time.perf_counter() - start) / n
    batch = max(1, int(2e-4 / max(one, 1e-9)))
    samples = []
    gc.collect()
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - t0) / batch)
        spent = time.perf_counter() - start
        if len(samples) >= max_samples or (len(samples) >= min_samples and spent >= budget):
            break
        if spent >= 4 * budget and len(samples) >= 3:
            break
    s = np.asarray(samples) / per_call
    return {
        "median": float(np.median(s)),
        "p10": float(np.percentile(s, 10)),
        "p90": float(np.percentile(s, 90)),
        "samples": len(samples),
        "batch": batch,
    }


# -- threads -------------------------------------------------------------------------------------
def thread_env(threads: int | None) -> dict:
    """Environment variables that fix every library's thread count (set before the imports)."""
    if not threads:
        return {}
    n = str(threads)
    env = {
        name: n
        for name in (
            "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS",
        )
    }
    env["TF_NUM_INTEROP_THREADS"] = "1"
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def threads_in_use(system: str) -> str:
    """The thread counts the libraries this process loaded actually use."""
    parts = []
    if "numba" in sys.modules:
        import numba

        parts.append(f"numba {numba.config.NUMBA_NUM_THREADS}")
    if "torch" in sys.modules:
        import torch

        parts.append(f"torch {torch.get_num_threads()}")
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            parts.append(f"{info['internal_api']} {info['num_threads']}")
    except Exception:  # threadpoolctl is optional
        pass
    if system == "jax":
        import jax

        parts.append(
            f"XLA {jax.devices()[0].platform} devices {jax.device_count()}, "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        )
    if system == "tf":
        import tensorflow as tf

        parts.append(f"TF intra-op {tf.config.threading.get_intra_op_parallelism_threads()}")
    return ", ".join(dict.fromkeys(parts))


# -- one system, in this process -----------------------------------------------------------------
def emit(record: dict) -> None:
    print(RESULT_TAG + json.dumps(record), flush=True)


def run_system(workload: Workload, system: str) -> dict:
    record = {
        "workload": workload.key,
        "system": system,
        "label": LABELS.get(system, system),
        "unit": workload.unit,
    }
    setup = workload.systems.get(system)
    if setup is None:
        return {**record, "status": "n/a", "note": f"not part of {workload.key}"}
    data = workload.data()
    try:
        bench = setup(data)
    except ImportError as exc:
        return {**record, "status": "absent", "note": f"not installed ({exc})"}
    if bench.label:
        record["label"] = bench.label
    if bench.verify is not None:
        err = bench.verify()
    else:
        ref_value, ref_grads = workload.reference(data)
        value, grads = bench.result(bench.call())
        err = compare_all(value, grads, ref_value, ref_grads, workload.rtol)
    timing = measure(bench.call, bench.per_call)
    return {
        **record,
        "status": "ok",
        **timing,
        "err": err,
        "note": bench.note,
        "threads": threads_in_use(system),
    }


def workload(key: str) -> Workload:
    """The Workload object `key` ("W2") from its script."""
    import importlib

    if PERF_DIR not in sys.path:
        sys.path.insert(0, PERF_DIR)
    module = importlib.import_module(SCRIPTS[key])
    return next(w for w in module.WORKLOADS if w.key == key)


def run_and_emit(chosen: list[Workload], system: str) -> bool:
    """Run `system` on each workload in turn in this process; True if all passed."""
    ok = True
    for w in chosen:
        try:
            record = run_system(w, system)
        except MismatchError as exc:
            ok = False
            record = {
                "workload": w.key,
                "system": system,
                "status": "MISMATCH",
                "label": LABELS.get(system, system),
                "note": str(exc),
            }
            print(
                f"\n*** {w.key} {system}: VALUE/GRADIENT MISMATCH: {exc}\n",
                file=sys.stderr,
                flush=True,
            )
        except Exception as exc:
            ok = False
            traceback.print_exc()
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            record = {
                "workload": w.key,
                "system": system,
                "status": "error",
                "label": LABELS.get(system, system),
                "note": f"{type(exc).__name__}: {first}",
            }
        emit(record)
    return ok


def main(workloads: list[Workload] | None = None) -> None:
    """Command line of a workload script (and of this module, with --workload W1,W2):
    `--system NAME` runs one system here, on each workload; without it, the script's
    workloads go through perf/run.py."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", help="comma-separated workloads (default: the script's)")
    parser.add_argument("--system", help="run one system in this process: " + ", ".join(LABELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.quick:
        os.environ["PERF_QUICK"] = "1"
    keys = args.workload.split(",") if args.workload else [w.key for w in workloads or []]
    if args.system is None:
        sys.path.insert(0, PERF_DIR)
        import run

        argv = ["--only", ",".join(keys)] + (["--quick"] if args.quick else [])
        argv += ["--threads", str(args.threads)] if args.threads else []
        sys.exit(run.main(argv))
    known = {w.key: w for w in workloads or []}
    chosen = [known[k] if k in known else workload(k) for k in keys]
    sys.exit(0 if run_and_emit(chosen, args.system) else 1)


if __name__ == "__main__":
    sys.path.insert(0, PERF_DIR)
    import _harness  # the workload scripts import this module by name: use that one

    _harness.main()
