"""W9 compile cost: for each program, a fresh Python process with an empty jitgrad cache
directory (JITGRAD_CACHE_DIR a new temporary directory) runs the program's first value+grad
call and reports

- "first result": seconds from the first call's start until it returns a result;
- "kernel serving": seconds from the first call's start until the compiled kernel serves the
  calls (jitgrad: `fn.wait()` returns True and every version's state in `fn.cache_info()` is
  "compiled"; without tiered execution, or in "blocking" mode, the first call returns only once
  the kernel is compiled, and both are the same);
- "import": seconds of the `import` statement of the system (numpy already imported), on its own:
  it is NOT included in the two figures above (W4 includes it). What a system imports lazily on
  its first call (jitgrad: Numba; JAX: the XLA CPU client) counts in the first call.

Programs (WORKLOADS.md W9):

- `ode<T>`: the W8a Lotka-Volterra loss written as an unrolled Python loop of T explicit Euler
  steps (z0 = (10, 5), theta = (1.1, 0.4, 0.4, 0.1), dt = 0.01, loss = sum over steps of the
  squared error of (x, y) against observations uniform in [1, 10], seed 0), float64, value +
  grad w.r.t. theta. The suite runs T = 10, 100 and (with --w9-big) 1,000.
- `chain<N>`: N elementwise ops on an f32[8] vector x, cycling h = sin(h), tanh(h), h * 1.5,
  h + x, then reduce_sum; value + grad w.r.t. x. The suite runs N = 5,000 with --w9-big.
- `mlp`: the W3 MLP value + grads (perf/w3_mlp.py's loss functions).

The same Python function is the loss for jitgrad, JAX (`jax.jit(jax.value_and_grad(f))`, float64
enabled for the ODE) and the float64 reference (complex-step derivatives in numpy complex128).
Each result is checked against the reference after the timing.

Systems: `jitgrad` (jitgrad's default compile mode, reported in the table), `jitgrad_blocking`
(JITGRAD_COMPILE=blocking; run only when this jitgrad has tiered execution, i.e.
`jitgrad.wait_for_compiles` exists) and `jax` (no fallback: first result == serving).

A per-program time limit (default 180 s from the first call's start): a process that has not
served its kernel by then is killed (its whole process group, so background compile processes go
too) and the table says "> 180 s". Several samples when they are fast, one when slow (a time
budget per program and system); a program larger than one that already ran out of time for a
system is not run for it.

Child: python perf/w9_compile.py --child jitgrad ode10
Through run.py: python perf/run.py --only W9 [--w9-big] [--w9-programs ode10,mlp] [--w9-timeout S]
"""

from __future__ import annotations

import time

_START = time.monotonic()  # noqa: E402 - as early as possible in the child

import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402

TAG = "W9-EVENT "
SYSTEMS = ("jitgrad", "jitgrad_blocking", "jax")
LABELS = {
    "jitgrad": "jitgrad",
    "jitgrad_blocking": "jitgrad (blocking)",
    "jax": "JAX jit",
}
REQUIRES = {"jitgrad": "jitgrad", "jitgrad_blocking": "jitgrad", "jax": "jax"}
DEFAULT_PROGRAMS = ("ode10", "ode100", "mlp")
BIG_PROGRAMS = ("ode1000", "chain5000")
TIMEOUT = 180.0  # seconds from the first call's start until the kernel serves
REPS = 3
BUDGET = 60.0  # seconds of samples per (program, system): more samples while they fit
DT = 0.01
THETA = (1.1, 0.4, 0.4, 0.1)


# -- the programs (one definition per program, shared by every system and the reference) --------
def parse(program: str) -> tuple[str, int]:
    m = re.fullmatch(r"(ode|chain)(\d+)|mlp", program)
    if not m:
        raise ValueError(f"unknown W9 program {program!r}: ode<T>, chain<N> or mlp")
    return (m.group(1), int(m.group(2))) if m.group(1) else ("mlp", 0)


def title(program: str) -> str:
    kind, n = parse(program)
    if kind == "ode":
        return f"ODE unrolled, T = {n:,} (float64)"
    if kind == "chain":
        return f"chain of {n:,} elementwise ops (f32[8])"
    return "W3 MLP (float32)"


def observations(T: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(1.0, 10.0, (T, 2))


def ode_loss(theta, obs):
    """W8a, T = len(obs) Euler steps unrolled in Python (any array type that indexes)."""
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]
    x, y = 10.0, 5.0
    total = 0.0
    for t in range(len(obs)):
        x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
        total = total + (x - obs[t, 0]) ** 2 + (y - obs[t, 1]) ** 2
    return total


def chain_loss(x, n, sin, tanh, total):
    h = x
    for i in range(n):
        k = i % 4
        if k == 0:
            h = sin(h)
        elif k == 1:
            h = tanh(h)
        elif k == 2:
            h = h * 1.5
        else:
            h = h + x
    return total(h)


def chain_input() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, 8).astype(np.float32)


def reference(program: str):
    """(value, [gradient]) in float64, by complex-step differentiation of the same loss."""
    kind, n = parse(program)
    h = 1e-30
    if kind == "ode":
        obs = observations(n)
        theta = np.array(THETA, dtype=np.float64)
        value = ode_loss(theta, obs)
        grad = np.empty(4)
        for k in range(4):
            tc = theta.astype(np.complex128)
            tc[k] += 1j * h
            grad[k] = np.imag(ode_loss(tc, obs)) / h
        return value, [grad]
    if kind == "chain":
        x = chain_input().astype(np.float64)
        value = chain_loss(x, n, np.sin, np.tanh, np.sum)
        # Elementwise: output k depends on x[k] only, so one complex pass gives every derivative.
        hc = chain_loss(x + 1j * h, n, np.sin, np.tanh, lambda v: v)
        return value, [np.imag(hc) / h]
    import w3_mlp

    return w3_mlp.reference(w3_mlp.data())


def rtol(program: str) -> float:
    return 1e-8 if parse(program)[0] == "ode" else 1e-4


# -- child: one program on one system, in a fresh process ----------------------------------------
def event(name: str, **fields) -> None:
    print(TAG + json.dumps({"event": name, "t": time.monotonic(), **fields}), flush=True)


def build_jitgrad(program: str):
    import jitgrad as jg

    kind, n = parse(program)
    if kind == "ode":
        obs = observations(n)
        fn = jg.jit_grad(lambda theta: ode_loss(theta, obs))
        args = (np.array(THETA, dtype=np.float64),)
        unpack = lambda out: (out[0], [out[1]])  # noqa: E731
    elif kind == "chain":
        fn = jg.jit_grad(lambda x: chain_loss(x, n, jg.sin, jg.tanh, jg.reduce_sum))
        args = (chain_input(),)
        unpack = lambda out: (out[0], [out[1]])  # noqa: E731
    else:
        import w3_mlp

        d = w3_mlp.data()
        fn = jg.jit_grad(w3_mlp.loss_jitgrad, wrt=0)
        args = (d.params, d.X, d.y)
        unpack = w3_mlp._dict_result
    return fn, args, unpack


def build_jax(program: str):
    import jax
    import jax.numpy as jnp

    kind, n = parse(program)
    if kind == "ode":
        jax.config.update("jax_enable_x64", True)
        obs = observations(n)
        fn = jax.jit(jax.value_and_grad(lambda theta: ode_loss(theta, obs)))
        args = (jnp.asarray(np.array(THETA, dtype=np.float64)),)
        unpack = lambda out: (out[0], [out[1]])  # noqa: E731
    elif kind == "chain":
        fn = jax.jit(jax.value_and_grad(lambda x: chain_loss(x, n, jnp.sin, jnp.tanh, jnp.sum)))
        args = (jnp.asarray(chain_input()),)
        unpack = lambda out: (out[0], [out[1]])  # noqa: E731
    else:
        import w3_mlp

        d = w3_mlp.data()
        params = {k: jnp.asarray(v) for k, v in d.params.items()}
        fn = jax.jit(jax.value_and_grad(w3_mlp.loss_jax))
        args = (params, jnp.asarray(d.X), jnp.asarray(d.y))
        unpack = w3_mlp._dict_result
    return fn, args, unpack


def states(fn) -> tuple:
    return tuple(getattr(fn.cache_info(), "states", ()) or ())


def child(system: str, program: str) -> None:
    compile_mode = os.environ.get("JITGRAD_COMPILE")  # as the parent set it (or not)
    from _harness import compare_all, end_compile_worker

    # _harness defaults JITGRAD_COMPILE to "blocking" for the steady-state workloads: the
    # `jitgrad` system measures jitgrad's own default mode.
    if compile_mode is None:
        os.environ.pop("JITGRAD_COMPILE", None)
    parse(program)
    t0 = time.monotonic()
    if system.startswith("jitgrad"):
        import jitgrad as jg

        module = jg
    else:
        import jax
        import jax.numpy  # noqa: F401

        module = jax
    event("import", seconds=time.monotonic() - t0, interpreter=t0 - _START)
    tiered = system.startswith("jitgrad") and hasattr(module, "wait_for_compiles")
    if system.startswith("jitgrad"):
        if tiered and system == "jitgrad_blocking":
            module.config.compile = "blocking"
        mode = getattr(module.config, "compile", None) if tiered else "blocking"
        worker = getattr(module.config, "compile_worker", None)
        if mode == "background" and worker:
            mode += f" ({worker} worker)"
    else:
        mode = "jit"
    fn, args, unpack = (build_jitgrad if system.startswith("jitgrad") else build_jax)(program)
    start = time.monotonic()
    event("start", mode=mode, tiered=tiered)
    out = fn(*args)
    if system == "jax":
        import jax

        out = jax.block_until_ready(out)
    first = time.monotonic()
    event("first", seconds=first - start, states=states(fn) if tiered else ())
    if tiered:
        ok = fn.wait()
        serving = time.monotonic()
        st = states(fn)
        if not ok or not st or any(s != "compiled" for s in st):
            event("failed", seconds=serving - start, states=st, waited=bool(ok))
            sys.exit(2)
    else:
        serving = first
    event("serving", seconds=serving - start, states=states(fn) if tiered else ())
    end_compile_worker()
    value, grads = unpack(out)
    ref_value, ref_grads = reference(program)
    err = compare_all(np.asarray(value), grads, ref_value, ref_grads, rtol(program))
    event("checked", err=err)


# Without `python -m jitgrad.backend.numba.precompile`: programs that use every helper the W9
# programs use (vmath sin/tanh/exp/log, the BLAS wrappers).
WARMUP = ("ode2", "chain4", "mlp")


def warmup_child() -> None:
    import jitgrad as jg

    try:  # jitgrad's own ahead-of-time compile of its helpers, where it has one
        from jitgrad.backend.numba import precompile
    except ImportError:
        precompile = None
    if precompile is not None and hasattr(precompile, "main"):
        precompile.main()
        return
    if hasattr(jg, "wait_for_compiles"):
        jg.config.compile = "blocking"
    for program in WARMUP:
        fn, args, _ = build_jitgrad(program)
        fn(*args)


def warm_helpers(python: str, env: dict) -> float:
    """Compile jitgrad's own helpers into Numba's cache (as installed: NUMBA_CACHE_DIR as in
    `env`) in one untimed process, with a throwaway kernel cache; its seconds."""
    directory = tempfile.mkdtemp(prefix="perf-w9-warmup-")
    start = time.monotonic()
    proc = subprocess.Popen(
        [python, os.path.abspath(__file__), "--warmup"],
        env={**env, "JITGRAD_CACHE_DIR": directory, "JITGRAD_COMPILE": "blocking"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill(proc)
        shutil.rmtree(directory, ignore_errors=True)
    return time.monotonic() - start


# -- parent: samples in fresh processes ----------------------------------------------------------
def _reader(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def _kill(proc: subprocess.Popen) -> None:
    """End the child and everything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def one_process(python: str, system: str, program: str, env: dict, limit: float) -> dict:
    """One sample: a fresh process with an empty JITGRAD_CACHE_DIR. Returns the events'
    seconds (import, first, serving; None when the limit ran out first) and notes."""
    directory = tempfile.mkdtemp(prefix=f"perf-w9-{system}-")
    env = {**env, "JITGRAD_CACHE_DIR": directory}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JITGRAD_COMPILE"):
        env.pop(name, None)  # JAX: no persistent cache; jitgrad: its default mode
    if system == "jitgrad_blocking":
        env["JITGRAD_COMPILE"] = "blocking"
    spawned = time.monotonic()
    proc = subprocess.Popen(
        [python, os.path.abspath(__file__), "--child", system, program],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    errors: list = []
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    events: dict = {}
    # Until the first call starts, allow `limit` for interpreter start and imports too.
    deadline = spawned + 2 * limit
    timed_out = False
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                timed_out = True
                break
            if line is None:
                break
            if not line.startswith(TAG):
                continue
            info = json.loads(line[len(TAG) :])
            events[info["event"]] = info
            if info["event"] == "start":
                deadline = info["t"] + limit
            elif info["event"] == "serving":
                deadline = time.monotonic() + max(120.0, limit)  # the check (reference) left
    finally:
        left_behind = False
        if proc.poll() is None:
            _kill(proc)
        else:
            proc.wait()
            try:  # a process the child started and left running (a background compile)?
                os.killpg(proc.pid, 0)
                left_behind = True
                _kill(proc)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(directory, ignore_errors=True)
    sample = {
        "import": events.get("import", {}).get("seconds"),
        "interpreter": events.get("import", {}).get("interpreter"),
        "first": events.get("first", {}).get("seconds"),
        "serving": events.get("serving", {}).get("seconds"),
        "first_states": events.get("first", {}).get("states"),
        "mode": events.get("start", {}).get("mode"),
        "tiered": events.get("start", {}).get("tiered"),
        "err": events.get("checked", {}).get("err"),
        "timed_out": timed_out and "serving" not in events,
        "wall": time.monotonic() - spawned,
        "left_behind": left_behind,
    }
    if "serving" in events and "checked" not in events and not timed_out:
        tail = [x for x in "".join(errors).strip().splitlines() if x.strip()][-3:]
        sample["error"] = f"check failed (exit {proc.returncode}): {' | '.join(tail)[-300:]}"
    elif "failed" in events:
        sample["error"] = f"compile failed: states {events['failed'].get('states')}"
    elif "serving" not in events and not timed_out:
        tail = [x for x in "".join(errors).strip().splitlines() if x.strip()][-3:]
        sample["error"] = f"no result (exit {proc.returncode}): {' | '.join(tail)[-300:]}"
    return sample


def measure(
    python: str,
    system: str,
    program: str,
    env: dict,
    reps: int = REPS,
    budget: float = BUDGET,
    limit: float = TIMEOUT,
) -> dict:
    """`reps` samples, fewer (at least one) when another would take past `budget` seconds;
    one after a sample ran out of time or failed."""
    samples = []
    start = time.monotonic()
    while len(samples) < reps:
        s = one_process(python, system, program, env, limit)
        samples.append(s)
        if s["timed_out"] or s.get("error"):
            break
        now = time.monotonic()
        if budget and now - start + s["wall"] > budget:
            break
    return summarise(samples, limit)


def summarise(samples: list, limit: float) -> dict:
    good = [s for s in samples if not s["timed_out"] and not s.get("error")]
    out = {"samples": samples, "limit": limit}
    bad = next((s for s in samples if s.get("error")), None)
    if bad:
        out["status"] = "error"
        out["note"] = bad["error"]
        return out
    out["status"] = "ok" if good else "timeout"
    firsts = [s["first"] for s in samples if s["first"] is not None]
    out["first"] = statistics.median(firsts) if firsts else None
    out["serving"] = statistics.median([s["serving"] for s in good]) if good else None
    imports = [s["import"] for s in samples if s["import"] is not None]
    out["import"] = statistics.median(imports) if imports else None
    out["mode"] = samples[0].get("mode")
    out["tiered"] = samples[0].get("tiered")
    out["first_states"] = samples[0].get("first_states")
    errs = [s["err"] for s in good if s["err"] is not None]
    out["err"] = max(errs) if errs else None
    if any(s.get("left_behind") for s in samples):
        out["note"] = "a process the child started was still running after it exited (killed)"
    return out


def programs(big: bool, chosen: str | None, quick: bool) -> list[str]:
    if chosen:
        names = [p.strip() for p in chosen.split(",") if p.strip()]
        for p in names:
            parse(p)
        return names
    if quick:
        return ["ode10", "mlp"]
    return list(DEFAULT_PROGRAMS) + (list(BIG_PROGRAMS) if big else [])


def skipped_programs(big: bool, chosen: str | None, quick: bool) -> list[str]:
    """The standard programs this run leaves out (listed in the table as not run)."""
    if chosen:
        return []
    run = set(programs(big, chosen, quick))
    return [p for p in (*DEFAULT_PROGRAMS, *BIG_PROGRAMS) if p not in run]


def table_order(names) -> list[str]:
    def key(p):
        kind, n = parse(p)
        return ({"ode": 0, "chain": 1, "mlp": 2}[kind], n)

    return sorted(names, key=key)


if __name__ == "__main__":
    if "--warmup" in sys.argv:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        warmup_child()
    elif "--child" in sys.argv:
        i = sys.argv.index("--child")
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        child(sys.argv[i + 1], sys.argv[i + 2])
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import run

        sys.exit(run.main(["--only", "W9", *sys.argv[1:]]))
