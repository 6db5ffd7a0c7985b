"""Run the perf/ suite: every workload (W1-W11, W3L) on jitgrad, the hand-written references
and the installed peers, one fresh process per (workload, system); write a markdown report and
a bar chart of the ratios.

    python perf/run.py                      # everything (+ W2, W3, W7 again with 1 thread)
    python perf/run.py --only W2,W3         # some workloads
    python perf/run.py --threads 1          # every library limited to one thread
    python perf/run.py --quick              # fewer repetitions: a smoke test
    python perf/run.py --only W9 --w9-big   # compile cost, with the minutes-long programs
    python perf/run.py --only W8            # loops: W8a (ODE fit) and W8b (RNN)
    python perf/run.py --only W10,W3L       # issue 14: the CNN (+ first calls) and the big MLP
    python perf/run.py --only W11           # issue 16: data-parallel W3 step on 1 and 2 MPI ranks

A complete run writes perf/results/latest.md, latest.png and latest.json (and refreshes the
table in perf/README.md); a partial one (--only, --quick, --threads, --systems) writes
perf/results/partial.* unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import types

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
GAPS = os.path.join(PERF_DIR, "gaps.md")  # by hand: the profiles of the targets not met
ROOT = os.path.dirname(PERF_DIR)
sys.path.insert(0, PERF_DIR)

from _harness import (  # noqa: E402
    LABELS,
    REQUIRES,
    RESULT_TAG,
    SCRIPTS,
    UNIT_SECONDS,
    thread_env,
)

# W8a/W8b (loops, w8_loops.py) follow _harness's protocol; their children start from their
# script, which resolves the other workloads through _harness.SCRIPTS. `--only W8` is both.
W8_SCRIPTS = {"W8a": "w8_loops", "W8b": "w8_loops"}
# Issue 14's workloads, in scripts of their own as well (W10 with its first-call samples).
ISSUE14_SCRIPTS = {"W10": "w10_cnn", "W3L": "w3l_mlp"}
OWN_SCRIPTS = {**W8_SCRIPTS, **ISSUE14_SCRIPTS}  # workloads whose child starts from their script
ALL_SCRIPTS = {**SCRIPTS, **OWN_SCRIPTS}
ALIASES = {"W8": list(W8_SCRIPTS)}
# Workload-specific variants of a system, run when the system is chosen with --systems.
VARIANT_OF = {"numba_dot": "numba", "tf_function": "tf"}
LABELS = {**LABELS, "tf_function": "TensorFlow tf.function"}
REQUIRES = {**REQUIRES, "tf_function": "tensorflow"}
# W9 (compile cost) is run by run_w9 from its own script, not through _harness's protocol, and
# W11 (data parallelism) by its script's `measure`, which starts the MPI jobs.
ORDER = ["W1", "W2", "W3", "W3L", "W4", "W5", "W6", "W6c", "W7", "W8a", "W8b", "W9", "W10", "W11"]
assert sorted(ORDER) == sorted([*ALL_SCRIPTS, "W9", "W11"])
SPECIAL = ("W4", "W9", "W11")  # fresh-process workloads with their own runner and table
# Row order of the tables (workload-specific systems go after jitgrad).
SYSTEM_ORDER = [
    "jitgrad",
    "jitgrad_split",
    "jitgrad_w3",
    "jitgrad_kernel",
    "numba",
    "numba_dot",
    "numpy",
    "jax",
    "torch",
    "torch_compile",
    "autograd",
    "pytensor",
    "tf",
    "tf_function",
]
PYTENSOR_VENV = os.path.join(PERF_DIR, ".venv-pytensor", "bin", "python")
CHILD_TIMEOUT = 900


# -- environment ---------------------------------------------------------------------------------
def base_env(threads: int | None, keep_openblas: bool) -> dict:
    env = dict(os.environ)
    if not keep_openblas:
        # This workplace sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE for old OpenBLAS
        # builds; with the current OpenBLAS they make W3's sgemm shapes ~300x slower (56 ms
        # instead of 0.17 ms for 128x784 @ 784x256). Benchmarks unset both (see README).
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    for name in (
        "NUMBA_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "XLA_FLAGS",
    ):
        if threads:
            env.pop(name, None)
    env.update(thread_env(threads))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PERF_DIR, env.get("PYTHONPATH")) if p)
    return env


def pytensor_python() -> tuple[str | None, str]:
    """The interpreter for PyTensor: this one if its numba satisfies PyTensor's requirement,
    else perf/.venv-pytensor (see README), else None."""
    try:
        from packaging.requirements import Requirement

        installed = importlib.metadata.version("numba")
        for req in importlib.metadata.requires("pytensor") or []:
            r = Requirement(req)
            if r.name == "numba" and not r.marker and installed not in r.specifier:
                raise LookupError(
                    f"pytensor needs numba{r.specifier}, this environment has numba {installed}"
                )
        return sys.executable, "this environment"
    except importlib.metadata.PackageNotFoundError:
        reason = "pytensor not installed here"
    except LookupError as exc:
        reason = str(exc)
    except ImportError:  # no `packaging` to read the requirement: assume it is met
        return sys.executable, "this environment"
    if os.path.exists(PYTENSOR_VENV):
        return PYTENSOR_VENV, f"perf/.venv-pytensor ({reason})"
    return None, reason


def interpreter(system: str, pytensor: tuple) -> tuple[str | None, str]:
    if system == "pytensor":
        python, why = pytensor
        return python, "" if python else f"not usable: {why}; see perf/README.md"
    module = REQUIRES.get(system)
    if module and importlib.util.find_spec(module) is None:
        return None, f"not installed (no module {module})"
    return sys.executable, ""


def command(threads: int | None, python: str, *args) -> list:
    prefix = ["taskset", "-c", "0"] if threads == 1 and shutil.which("taskset") else []
    return [*prefix, python, *args]


# -- facts about the machine and the libraries ---------------------------------------------------
def machine_facts() -> dict:
    facts = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        facts["cpu"] = " ".join(
            x
            for x in (
                fields.get("Model name"),
                f"(family {fields.get('CPU family')} model {fields.get('Model')})",
            )
            if x
        )
        facts["cores"] = (
            f"{fields.get('CPU(s)')} CPUs, {fields.get('Thread(s) per core')} "
            f"thread(s) per core, {fields.get('Hypervisor vendor', 'bare metal')}"
        )
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        facts["memory"] = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return facts


def versions(pytensor: tuple) -> dict:
    out = {"python": platform.python_version()}
    for name in (
        "jitgrad",
        "numpy",
        "numba",
        "llvmlite",
        "scipy",
        "jax",
        "jaxlib",
        "torch",
        "autograd",
        "pytensor",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "matplotlib",
    ):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        rev = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "jitgrad"], capture_output=True, text=True
        ).stdout.strip()
        out["jitgrad"] += f" (git {rev}{', jitgrad/ has uncommitted changes' if dirty else ''})"
    except (OSError, KeyError):
        pass
    python = pytensor[0]
    if python and python != sys.executable:
        probe = subprocess.run(
            [
                python,
                "-c",
                "import importlib.metadata as m; print(m.version('pytensor'), m.version('numba'))",
            ],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            pt, nb = probe.stdout.split()
            out["pytensor"] = f"{pt} (run from perf/.venv-pytensor, with numba {nb})"
    return out


def measure_machine(env: dict, threads: int | None, quick: bool) -> dict:
    args = [os.path.join(PERF_DIR, "machine.py")] + (["--quick"] if quick else [])
    proc = subprocess.run(
        command(threads, sys.executable, *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        print(f"machine.py failed: {proc.stderr[-500:]}", file=sys.stderr)
        return {}


# -- running systems -----------------------------------------------------------------------------
def child_groups(keys: list) -> list[tuple[str, list]]:
    """The workloads `keys` as (script, keys) per child process: one process per script of
    OWN_SCRIPTS among them (the others resolve _harness's workloads, which join the first such
    process, as with W8 alone), else one _harness process."""
    scripts = list(dict.fromkeys(OWN_SCRIPTS[k] for k in keys if k in OWN_SCRIPTS))
    if not scripts:
        return [("_harness", list(keys))]
    return [
        (
            script,
            [k for k in keys if OWN_SCRIPTS.get(k) == script or (i == 0 and k not in OWN_SCRIPTS)],
        )
        for i, script in enumerate(scripts)
    ]


def run_child(system: str, keys: list, python: str, env: dict, threads, quick) -> list:
    """`system` on the workloads `keys`: one process per script (child_groups) running its
    workloads in turn; their records, streamed."""
    records = []
    for script, group in child_groups(keys):
        records += run_script_child(script, system, group, python, env, threads, quick)
    return records


def run_script_child(
    script: str, system: str, keys: list, python: str, env: dict, threads, quick
) -> list:
    """One process of `script` running `system` on the workloads `keys` in turn."""
    args = [
        os.path.join(PERF_DIR, script + ".py"),
        "--workload",
        ",".join(keys),
        "--system",
        system,
    ] + (["--quick"] if quick else [])
    proc = subprocess.Popen(
        command(threads, python, *args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = []
    start = time.monotonic()
    for line in proc.stdout:
        if line.startswith(RESULT_TAG):
            record = json.loads(line[len(RESULT_TAG) :])
            record["wall"] = time.monotonic() - start
            start = time.monotonic()
            records.append(record)
            show(record)
    stderr = proc.stderr.read()
    proc.wait()
    if any(r["status"] in ("MISMATCH", "error") for r in records):
        print(stderr[-3000:], file=sys.stderr)
    done = {r["workload"] for r in records}
    missing = [k for k in keys if k not in done]
    if missing:  # the process died: report the first workload it did not finish as failed
        tail = [x for x in stderr.strip().splitlines() if x.strip()][-3:]
        record = {
            "workload": missing[0],
            "system": system,
            "status": "error",
            "label": LABELS.get(system, system),
            "note": f"process exited {proc.returncode}: {' | '.join(tail)[-300:]}",
        }
        print(stderr[-3000:], file=sys.stderr)
        show(record)
        records.append(record)
        if missing[1:]:
            records += run_script_child(script, system, missing[1:], python, env, threads, quick)
    return records


def fmt(seconds: float, unit: str) -> str:
    v = seconds / UNIT_SECONDS[unit]
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def show(record: dict) -> None:
    unit = record.get("unit", "s")
    if record["status"] == "ok":
        text = (
            f"{fmt(record['median'], unit)} {unit} (p10 {fmt(record['p10'], unit)}, "
            f"p90 {fmt(record['p90'], unit)})"
        )
    else:
        text = f"{record['status']}: {record.get('note', '')[:150]}"
    wall = f"  [{record['wall']:.1f} s]" if "wall" in record else ""
    print(f"  {record['workload']:4} {record['label'][:38]:38} {text}{wall}", flush=True)


def run_systems(
    workloads: dict, env, threads, quick, pytensor, systems_filter, rounds: int = 1
) -> list[dict]:
    """Every system on every selected workload, one process per system, `rounds` times (the
    second round in the reverse order, each with 1/rounds of the timing budget); per
    (workload, system) the round with the lowest median is kept, so that a burst of load
    from other processes during one system's turn does not decide its ratio. A failed check
    in any round is kept."""
    systems = sorted(
        {s for w in workloads.values() for s in w.systems},
        key=lambda s: SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else 99,
    )
    systems = [
        s
        for s in systems
        if not systems_filter or s in systems_filter or VARIANT_OF.get(s) in systems_filter
    ]
    env = {**env, "PERF_BUDGET": f"{2.0 / rounds:g}"} if rounds > 1 else env
    runs: dict = {}
    for r in range(rounds):
        if rounds > 1:
            print(f"  -- round {r + 1} of {rounds}", flush=True)
        for system in systems if r % 2 == 0 else systems[::-1]:
            keys = [k for k, w in workloads.items() if system in w.systems]
            python, why = interpreter(system, pytensor)
            if python is None:
                if r == 0:
                    for k in keys:
                        record = {
                            "workload": k,
                            "system": system,
                            "unit": workloads[k].unit,
                            "label": LABELS.get(system, system),
                            "status": "absent",
                            "note": why,
                        }
                        show(record)
                        runs[k, system] = [record]
                continue
            for record in run_child(system, keys, python, env, threads, quick):
                runs.setdefault((record["workload"], system), []).append(record)
    results = []
    for records in runs.values():
        failed = [x for x in records if x["status"] != "ok"]
        if failed:
            results.append(failed[0])
            continue
        best = min(records, key=lambda x: x["median"])
        if len(records) > 1:
            unit = best["unit"]
            best = {**best, "rounds": [x["median"] for x in records]}
            medians = " / ".join(fmt(x["median"], unit) for x in records)
            best["note"] = f"{best.get('note', '')}; round medians {medians}".lstrip("; ")
        results.append(best)
    return results


def run_w4(env, threads, quick, pytensor, systems_filter, reps) -> list[dict]:
    import w4_first_grad as w4

    results = []
    for system in w4.SYSTEMS:
        if systems_filter and system not in systems_filter:
            continue
        base = {
            "workload": "W4",
            "system": system,
            "unit": "s",
            "label": w4.LABELS.get(system, LABELS.get(system, system)),
        }
        python, why = interpreter(system, pytensor)
        if python is None:
            results.append({**base, "status": "absent", "note": why})
            print(f"  W4   {base['label'][:38]:38} absent: {why}", flush=True)
            continue
        start = time.monotonic()
        try:
            runs = w4.measure(
                python, system, env, reps or (1 if quick else 3), 0 if reps else w4.W4_BUDGET
            )
        except Exception as exc:  # a failing peer must not stop the suite
            results.append({**base, "status": "error", "note": str(exc)[:300]})
            print(f"  W4   {base['label'][:38]:38} error: {str(exc)[:200]}", flush=True)
            continue
        record = {
            **base,
            "status": "ok",
            "cold": runs["cold"],
            "warm": runs["warm"],
            "median": statistics.median(runs["cold"]),
            "warm_median": statistics.median(runs["warm"]),
            "note": "" if system in w4.HAS_CACHE else "no on-disk compile cache",
            "mode": runs.get("mode", ""),
            "wall": time.monotonic() - start,
        }
        serves = ""
        if system not in w4.EAGER:
            record["cold_serving"] = runs["cold_serving"]
            record["warm_serving"] = runs["warm_serving"]
            record["serving_median"] = statistics.median(runs["cold_serving"])
            record["warm_serving_median"] = statistics.median(runs["warm_serving"])
            serves = (
                f"; kernel serving cold {record['serving_median']:.2f} s, warm "
                f"{record['warm_serving_median']:.2f} s"
            )
        if record["mode"]:
            record["note"] = f"compile mode {record['mode']}; {record['note']}".rstrip("; ")
        results.append(record)
        print(
            f"  W4   {base['label'][:38]:38} cold {record['median']:.2f} s, warm "
            f"{record['warm_median']:.2f} s{serves} ({len(runs['cold'])} reps)  "
            f"[{record['wall']:.1f} s]",
            flush=True,
        )
    return results


def run_w9(env, threads, quick, systems_filter, args) -> list[dict]:
    """W9 compile cost: per program and system, samples in fresh processes (w9_compile.py)."""
    import w9_compile as w9

    names = w9.programs(args.w9_big, args.w9_programs, quick)
    limit = args.w9_timeout or w9.TIMEOUT
    reps = args.w9_reps or (1 if quick else w9.REPS)
    results = []
    for program in names:
        results.append(
            {
                "workload": "W9",
                "system": "-",
                "program": program,
                "status": "program",
                "label": w9.title(program),
            }
        )
    for program in w9.skipped_programs(args.w9_big, args.w9_programs, quick):
        results.append(
            {
                "workload": "W9",
                "system": "-",
                "program": program,
                "status": "not run",
                "label": w9.title(program),
                "note": "not in this run: `--w9-big` runs it (minutes per system today)"
                if program in w9.BIG_PROGRAMS
                else "not in this run (--quick or --w9-programs)",
            }
        )
    systems = []
    for system in w9.SYSTEMS:
        wanted = {system, "jitgrad"} if system == "jitgrad_blocking" else {system}
        if not systems_filter or wanted & systems_filter:
            python, why = interpreter(w9.REQUIRES[system], None)
            systems.append((system, python, why))
    if any(s.startswith("jitgrad") and python for s, python, _ in systems):
        # One untimed process compiles jitgrad's own helpers (BLAS wrappers, vmath) into
        # Numba's cache as installed, if they are not there yet: every sample then measures a
        # new program on an installation that has been used before.
        python = next(python for s, python, _ in systems if s.startswith("jitgrad") and python)
        seconds = w9.warm_helpers(python, env)
        print(f"  W9   jitgrad's helpers warmed up (untimed process, {seconds:.1f} s)", flush=True)
    tiered = None  # learnt from the first jitgrad sample
    ran_out: dict = {}  # (system, program kind) -> the size that ran out of time
    # Programs in the outer loop: the systems take turns, so that load from other processes
    # during one stretch of the run does not fall on one system only.
    for program in names:
        kind, n = w9.parse(program)
        for system, python, why in systems:
            label = w9.LABELS.get(system, system)
            base = {
                "workload": "W9",
                "system": system,
                "program": program,
                "unit": "s",
                "label": label,
                "limit": limit,
            }
            if python is None:
                results.append({**base, "status": "absent", "note": why})
                continue
            if system == "jitgrad_blocking" and tiered is False:
                continue  # the jitgrad row is the blocking compile (its note says so)
            if n > ran_out.get((system, kind), n):
                smaller = w9.title(f"{kind}{ran_out[system, kind]}")
                results.append(
                    {
                        **base,
                        "status": "not run",
                        "note": f"{smaller} already took > {limit:.0f} s",
                    }
                )
                print(f"  W9   {program:10} {label[:28]:28} not run (smaller ran out)", flush=True)
                continue
            start = time.monotonic()
            try:
                summary = w9.measure(python, system, program, env, reps, w9.BUDGET, limit)
            except Exception as exc:  # a failing system must not stop the suite
                summary = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]}
            record = {**base, **summary, "wall": time.monotonic() - start}
            if system == "jitgrad" and record.get("tiered") is not None:
                tiered = bool(record["tiered"])
            if record["status"] == "timeout":
                ran_out[system, kind] = min(n, ran_out.get((system, kind), n))
            results.append(record)
            print("  W9   " + w9_line(record), flush=True)
    return results


def run_w11(env, quick) -> list[dict]:
    """W11: w11_distributed.py starts the MPI jobs (1 rank, then 2) and returns rank 0's
    records; each is shown as it is in the table."""
    import w11_distributed

    records = w11_distributed.measure(quick, env)
    for record in records:
        if record["status"] == "ok":
            print(
                f"  W11  {record['ranks']} rank(s) {record['system']:12} "
                f"{record['median'] * 1e3:.3f} ms",
                flush=True,
            )
        else:
            print(f"  W11  {record['ranks']} rank(s) error: {record['note']}", flush=True)
    return records


def run_w8_first(
    results, keys, env, threads, quick, pytensor, systems_filter, workloads
) -> list[dict]:
    """W8: each system's first call in a fresh process with empty caches (w8_loops.first_call),
    after the steady-state runs: the median of up to 3 samples within 30 s per (workload,
    system), 1 with --quick; attached to the steady-state record as record["first_call"]."""
    import w8_loops as w8

    prefix = command(threads, "")[:-1]  # taskset with --threads 1
    results = list(results)
    for key in keys:
        workload = workloads[key]
        systems = sorted(
            workload.systems, key=lambda s: SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else 99
        )
        for system in systems:
            if systems_filter and not ({system, VARIANT_OF.get(system)} & systems_filter):
                continue
            python, _ = interpreter(system, pytensor)
            if python is None:
                continue  # its steady-state row says why
            record = next(
                (r for r in results if r["workload"] == key and r["system"] == system), None
            )
            if record is None:
                record = {
                    "workload": key,
                    "system": system,
                    "unit": workload.unit,
                    "label": LABELS.get(system, system),
                    "status": "not run",
                    "note": "steady state not measured",
                }
                results.append(record)
            start = time.monotonic()
            try:
                sample = w8.first_calls(python, system, key, env, prefix, 1 if quick else 3)
            except Exception as exc:  # a failing system must not stop the suite
                sample = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]}
            record["first_call"] = sample
            print(
                f"  {key:4} {record['label'][:38]:38} first call: {w8_first_text(sample)}"
                f"  [{time.monotonic() - start:.1f} s]",
                flush=True,
            )
    return results


def run_w8_trip(results, env, threads, quick, systems_filter) -> list[dict]:
    """W8a's compile time against the trip count (w8_loops.trip_counts, jitgrad only): the
    first call for T = 10 and T = 10,000 in blocking mode, 3 samples each (1 with --quick),
    and T = 10,000 in the default mode; attached to the W8a jitgrad record as
    record["trip_count"]."""
    import w8_loops as w8

    if systems_filter and "jitgrad" not in systems_filter:
        return results
    python, why = interpreter("jitgrad", None)
    results = list(results)
    record = next((r for r in results if r["workload"] == "W8a" and r["system"] == "jitgrad"), None)
    if record is None:
        record = {
            "workload": "W8a",
            "system": "jitgrad",
            "unit": "us",
            "label": LABELS.get("jitgrad", "jitgrad"),
            "status": "not run",
            "note": "steady state not measured",
        }
        results.append(record)
    if python is None:
        record["trip_count"] = {"status": "not run", "note": why}
        return results
    prefix = command(threads, "")[:-1]  # taskset with --threads 1
    start = time.monotonic()
    try:
        trip = w8.trip_counts(python, env, prefix, 1 if quick else 3)
    except Exception as exc:  # a failing measurement must not stop the suite
        trip = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]}
    record["trip_count"] = trip
    for line in w8_trip_lines(trip):
        print(f"  W8a  trip count: {line}", flush=True)
    print(f"  W8a  trip count: [{time.monotonic() - start:.1f} s]", flush=True)
    return results


def w8_trip_lines(trip) -> list[str]:
    """The trip-count measurement as a few lines of text (the console's and the targets')."""
    if trip.get("status") != "ok":
        where = f" at {trip['run']}" if trip.get("run") else ""
        return [f"{trip.get('status')}{where}: {trip.get('note', '')[:150]}"]
    runs = trip["runs"]
    short, long, default = runs["short"], runs["long"], runs["long_default"]
    return [
        f"first call (compile, blocking) T = {short['steps']:,} {short['first']:.2f} s, "
        f"T = {long['steps']:,} {long['first']:.2f} s: ratio {trip['ratio']:.3f}",
        f"T = {long['steps']:,} in mode {default.get('mode') or 'default'}: first gradient "
        f"{default['first']:.2f} s, kernel serving {default['serving']:.2f} s",
    ]


def w8_trip_table(results) -> list[str]:
    """W8a's compile time against the trip count: one row per run of w8_loops.TRIP_RUNS."""
    record = by_system(results, "W8a").get("jitgrad") or {}
    trip = record.get("trip_count")
    if not trip:
        return []
    if trip.get("status") != "ok":
        return [f"jitgrad: {w8_trip_lines(trip)[0]}"]
    lines = [
        "| T (Euler steps) | JITGRAD_COMPILE | first call s | kernel serving s | import s "
        "| samples (first call s) | max rel. error |",
        "|---:|---|---:|---:|---:|---|---:|",
    ]
    for name in ("short", "long", "long_default"):
        run = trip["runs"][name]
        runs = ", ".join(f"{x:.2f}" for x in run["samples"])
        lines.append(
            f"| {run['steps']:,} | {run.get('mode') or 'default'} | {run['first']:.2f} | "
            f"{run['serving']:.2f} | {run['import']:.2f} | {runs} | {run['err']:.1e} |"
        )
    return lines + [
        "",
        f"Ratio of the blocking first calls (the compile), T = "
        f"{trip['runs']['long']['steps']:,} / T = {trip['runs']['short']['steps']:,}: "
        f"{trip['ratio']:.3f}.",
    ]


def w8_first_text(sample) -> str:
    if sample.get("status") != "ok":
        return f"{sample.get('status')}: {sample.get('note', '')[:150]}"
    text = f"{sample['first']:.2f} s"
    if sample["serving"] - sample["first"] > 1e-3:
        text += f", kernel serving {sample['serving']:.2f} s"
    runs = ", ".join(f"{x:.2f}" for x in sample.get("samples", []))
    return text + f" (import {sample['import']:.2f} s; samples {runs})"


def w8_table(workload, results) -> list[str]:
    """The steady-state table with each system's first call (fresh process) beside it."""
    rows = by_system(results, workload.key)
    if not rows:
        return []
    unit = workload.unit
    jg = rows.get("jitgrad")
    lines = [
        f"| system | median {unit} | p10–p90 | system / jitgrad | max rel. error "
        "| first call s | import s | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = sorted(rows, key=lambda s: SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else 99)
    for system in order:
        r = rows[system]
        label = f"**{r['label']}**" if system.startswith("jitgrad") else r["label"]
        first, imported, notes = "", "", [r.get("note", "")]
        sample = r.get("first_call")
        if sample and sample.get("status") == "ok":
            first = f"{sample['first']:.2f}"
            if sample["serving"] - sample["first"] > 1e-3:
                first += f" (kernel serving {sample['serving']:.2f})"
            imported = f"{sample['import']:.2f}"
            runs = ", ".join(f"{x:.2f}" for x in sample.get("samples", []))
            notes.append(f"first-call samples {runs}")
            if sample.get("mode"):
                notes.append(f"first call in compile mode {sample['mode']}")
        elif sample:
            first = sample.get("status", "")
            notes.append(f"first call: {sample.get('note', '')}")
        note = "; ".join(x for x in notes if x)
        if r["status"] != "ok":
            lines.append(f"| {label} | {r['status']} | | | | {first} | {imported} | {note} |")
            continue
        q = ratio(r, jg)
        lines.append(
            f"| {label} | {fmt(r['median'], unit)} | {spread(r)} | "
            f"{'' if q is None else f'{q:.2f}'} | {r.get('err', 0):.1e} | {first} | "
            f"{imported} | {note} |"
        )
    return lines


def targets8(results) -> list[str]:
    """The W8 targets (loops), judged on this run's numbers: W8a jitgrad <= 1.5x the
    hand-written Numba and >= 8x faster than JAX; W8a's compile time (blocking first call) for
    T = 10,000 Euler steps <= 1.10x that for T = 10; W8b >= 1.7x faster than JAX."""

    def get(key, system):
        r = by_system(results, key).get(system)
        return r["median"] if r and r.get("status") == "ok" else None

    def first(key, system, field="first"):
        r = by_system(results, key).get(system) or {}
        sample = r.get("first_call") or {}
        return sample.get(field) if sample.get("status") == "ok" else None

    def show(x, scale, unit):
        return "n/a" if x is None else f"{x / scale:.3g} {unit}"

    def q(a, b):
        return None if a is None or b is None else a / b

    def rx(x):
        return "n/a" if x is None else f"{x:.2f}x"

    def jitgrad_state(key):
        r = by_system(results, key).get("jitgrad")
        if r is None or r.get("status") == "ok":
            return ""
        return f" (jitgrad {r['status']}: {r.get('note', '')[:120]})"

    def firsts(key):
        parts = [
            f"{name} {first(key, s):.2f} s"
            + (
                f" (kernel serving {first(key, s, 'serving'):.2f} s)"
                if first(key, s, "serving") - first(key, s) > 1e-3
                else ""
            )
            for s, name in (("jitgrad", "jitgrad"), ("numba", "Numba"), ("jax", "JAX"))
            if first(key, s) is not None
        ]
        return f"; first call {', '.join(parts)}" if parts else ""

    rows = []
    if by_system(results, "W8a"):
        jg, nb, jax = get("W8a", "jitgrad"), get("W8a", "numba"), get("W8a", "jax")
        ok = None if jg is None or nb is None or jax is None else jg <= 1.5 * nb and jax >= 8 * jg
        rows.append(
            (
                "W8a ODE fit, 1,000 Euler steps",
                "<= 1.5x hand-written Numba; >= 8x faster than JAX",
                f"{show(jg, 1e-6, 'us')} = {rx(q(jg, nb))} Numba ({show(nb, 1e-6, 'us')}); "
                f"JAX {rx(q(jax, jg))} ({show(jax, 1e-6, 'us')}){firsts('W8a')}"
                f"{jitgrad_state('W8a')}",
                "n/a" if ok is None else ("**yes**" if ok else "**no**"),
            )
        )
    trip = (by_system(results, "W8a").get("jitgrad") or {}).get("trip_count")
    if trip:
        ok = trip["ratio"] <= 1.10 if trip.get("status") == "ok" else None
        rows.append(
            (
                "W8a compile time vs trip count (first call, blocking, T = 10 and 10,000)",
                "T = 10,000 / T = 10 <= 1.10",
                "; ".join(w8_trip_lines(trip)),
                "n/a" if ok is None else ("**yes**" if ok else "**no**"),
            )
        )
    if by_system(results, "W8b"):
        jg, jax = get("W8b", "jitgrad"), get("W8b", "jax")
        nb, nbd = get("W8b", "numba"), get("W8b", "numba_dot")
        ok = None if jg is None or jax is None else jax >= 1.7 * jg
        rows.append(
            (
                "W8b tanh RNN, T = 100",
                ">= 1.7x faster than JAX",
                f"{show(jg, 1e-3, 'ms')}; JAX {rx(q(jax, jg))} ({show(jax, 1e-3, 'ms')}); "
                f"Numba loops {show(nb, 1e-3, 'ms')}, np.dot {show(nbd, 1e-3, 'ms')}"
                f"{firsts('W8b')}{jitgrad_state('W8b')}",
                "n/a" if ok is None else ("**yes**" if ok else "**no**"),
            )
        )
    if not rows:
        return []
    out = ["| workload | target | measured (jitgrad) | met? |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def run_w10_first(results, env, threads, quick, systems_filter) -> list[dict]:
    """W10's first calls in fresh processes (w10_cnn.first_calls): jitgrad in blocking mode and
    in its default mode with an empty JITGRAD_CACHE_DIR, and JAX; 3 samples each, interleaved
    (1 with --quick). After one untimed process has put jitgrad's own helpers (the conv and
    BLAS wrappers) into Numba's cache as installed, as W9 does: a new program on an
    installation that has been used before. One record, workload "W10-first"."""
    import w9_compile as w9
    import w10_cnn as w10

    runs, names = {}, []
    for name, system, _ in w10.FIRST_RUNS:
        if systems_filter and system not in systems_filter:
            continue
        python, why = interpreter(system, None)
        if python is None:
            runs[name] = {"status": "absent", "note": why}
        else:
            names.append(name)
    system_of = {name: system for name, system, _ in w10.FIRST_RUNS}
    if any(system_of[name] == "jitgrad" for name in names):
        seconds = w9.warm_helpers(sys.executable, env)
        print(f"  W10  jitgrad's helpers warmed up (untimed process, {seconds:.1f} s)", flush=True)
    prefix = command(threads, "")[:-1]  # taskset with --threads 1
    start = time.monotonic()
    try:
        runs.update(w10.first_calls(sys.executable, env, names, prefix, 1 if quick else 3))
    except Exception as exc:  # a failing measurement must not stop the suite
        runs.update(
            {n: {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]} for n in names}
        )
    for name, _, _ in w10.FIRST_RUNS:
        if name in runs:
            print(
                f"  W10  {w10.FIRST_LABELS[name][:38]:38} first call: {w8_first_text(runs[name])}"
            )
    print(f"  W10  first calls: [{time.monotonic() - start:.1f} s]", flush=True)
    bad = any(r.get("status") in ("error", "timeout") for r in runs.values())
    record = {
        "workload": "W10-first",
        "system": "-",
        "label": "first calls",
        "status": "error" if bad else "ok",
        "runs": runs,
        "note": "; ".join(
            f"{n}: {r.get('note', '')}" for n, r in runs.items() if r.get("status") != "ok"
        ),
    }
    return [*results, record]


def w10_first_table(results) -> list[str]:
    """W10's first calls (run_w10_first): one row per run of w10_cnn.FIRST_RUNS."""
    import w10_cnn as w10

    record = by_system(results, "W10-first").get("-")
    if not record:
        return []
    lines = [
        "| run | JITGRAD_COMPILE | first call s | kernel serving s | import s "
        "| samples: first (; serving) | max rel. error |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, system, mode in w10.FIRST_RUNS:
        run = record["runs"].get(name)
        if run is None:
            continue
        label = w10.FIRST_LABELS[name]
        label = f"**{label}**" if system == "jitgrad" else label
        if system != "jitgrad":
            mode_text = "—"
        else:
            mode_text = run.get("mode") or mode or "default"
        if run.get("status") != "ok":
            lines.append(
                f"| {label} | {mode_text} | {run.get('status')} | | | {run.get('note', '')} | |"
            )
            continue
        samples = ", ".join(f"{x:.2f}" for x in run["samples"])
        servings = ", ".join(f"{x:.2f}" for x in run.get("servings", []))
        if servings and servings != samples:
            samples += "; " + servings
        lines.append(
            f"| {label} | {mode_text} | {run['first']:.2f} | {run['serving']:.2f} | "
            f"{run['import']:.2f} | {samples} | {run['err']:.1e} |"
        )
    return lines


def targets14(results, machine, thread_short) -> list[str]:
    """Issue 14's targets, judged on this run's numbers: W10 jitgrad <= 0.5x JAX jit and
    within 2x the FLOP floor; W10's kernel serving <= 5 s from an empty cache (default mode);
    W3L jitgrad <= 0.9x JAX jit (at 1 thread and at the machine's 2)."""
    import w3l_mlp
    import w10_cnn

    def get(key, system):
        r = by_system(results, key).get(system)
        return r["median"] if r and r.get("status") == "ok" else None

    def ms(x):
        return "n/a" if x is None else f"{x * 1e3:.3g} ms"

    def q(a, b):
        return None if a is None or b is None else a / b

    def rx(x):
        return "n/a" if x is None else f"{x:.2f}x"

    def yes(cond):
        return "n/a" if cond is None else ("**yes**" if cond else "**no**")

    def state(key):
        r = by_system(results, key).get("jitgrad")
        if r is None or r.get("status") == "ok":
            return ""
        return f" (jitgrad {r['status']}: {r.get('note', '')[:120]})"

    if thread_short.startswith("default"):
        thread_short += f": {os.cpu_count()}"
    rows = []
    if by_system(results, "W10"):
        jg, jax = get("W10", "jitgrad"), get("W10", "jax")
        floor = w10_cnn.floor(machine)
        fl = floor[0] if floor else None
        ok = None if jg is None or jax is None or fl is None else jg <= 0.5 * jax and jg <= 2 * fl
        rows.append(
            (
                f"W10 CNN value+grad ({thread_short})",
                "<= 0.5x JAX jit; <= 2x the FLOP floor",
                f"{ms(jg)} = {rx(q(jg, jax))} JAX ({ms(jax)}); {rx(q(jg, fl))} the FLOP floor "
                f"({ms(fl)}: {floor[1] if floor else 'no sgemm peak'}){state('W10')}",
                yes(ok),
            )
        )
    first = by_system(results, "W10-first").get("-")
    if first:
        runs = first["runs"]
        blocking, default, jax = (runs.get(n, {}) for n in ("jitgrad_blocking", "jitgrad", "jax"))

        def secs(run, field):
            return f"{run[field]:.2f} s" if run.get("status") == "ok" else run.get("status", "n/a")

        ok = default["serving"] <= 5.0 if default.get("status") == "ok" else None
        rows.append(
            (
                "W10 first call, empty cache (fresh process)",
                "<= 5 s until the kernel serves",
                f"default mode ({default.get('mode') or '?'}): first result "
                f"{secs(default, 'first')}, kernel serving {secs(default, 'serving')}; "
                f"blocking: first call (the compile) {secs(blocking, 'first')}; "
                f"JAX first call {secs(jax, 'first')}",
                yes(ok),
            )
        )
    if by_system(results, "W3L"):
        jg, jax = get("W3L", "jitgrad"), get("W3L", "jax")
        floor = w3l_mlp.floor(machine)
        fl = floor[0] if floor else None
        rows.append(
            (
                f"W3L MLP 784-1024-1024-10 value+grad ({thread_short})",
                "<= 0.9x JAX jit",
                f"{ms(jg)} = {rx(q(jg, jax))} JAX ({ms(jax)}); numpy by hand "
                f"{ms(get('W3L', 'numpy'))}; FLOP floor {ms(fl)}{state('W3L')}",
                yes(None if jg is None or jax is None else jg <= 0.9 * jax),
            )
        )
    if not rows:
        return []
    out = ["| workload | target | measured (jitgrad) | met? |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def w9_seconds(x, limit) -> str:
    return f"> {limit:.0f}" if x is None else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def w9_line(r) -> str:
    head = f"{r['program']:10} {r['label'][:28]:28}"
    if r["status"] not in ("ok", "timeout"):
        return f"{head} {r['status']}: {r.get('note', '')[:150]}"
    limit = r["limit"]
    n = len(r["samples"])
    return (
        f"{head} first result {w9_seconds(r['first'], limit)} s, kernel serving "
        f"{w9_seconds(r['serving'], limit)} s, import {r['import'] or 0:.2f} s "
        f"({n} sample{'s' if n > 1 else ''}, mode {r.get('mode')})  [{r['wall']:.1f} s]"
    )


# -- the report ----------------------------------------------------------------------------------
def by_system(results, key):
    return {r["system"]: r for r in results if r["workload"] == key}


def ratio(r, base, field="median"):
    if not r or not base or r.get("status") != "ok" or base.get("status") != "ok":
        return None
    return r[field] / base[field]


def spread(r):
    return f"{fmt(r['p10'], r['unit'])}–{fmt(r['p90'], r['unit'])}"


def workload_table(workload, results, machine) -> list[str]:
    rows = by_system(results, workload.key)
    if not rows:
        return []
    unit = workload.unit
    jg = rows.get("jitgrad")
    lines = [
        f"| system | median {unit} | p10–p90 | system / jitgrad | max rel. error | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    floor = workload.floor(machine) if workload.floor else None
    if floor:
        seconds, how = floor
        rel = f"{seconds / jg['median']:.2f}" if jg and jg.get("status") == "ok" else ""
        lines.append(f"| *physical floor* | {fmt(seconds, unit)} | | {rel} | | {how} |")
    order = sorted(rows, key=lambda s: SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else 99)
    for system in order:
        r = rows[system]
        label = f"**{r['label']}**" if system.startswith("jitgrad") else r["label"]
        if r["status"] != "ok":
            lines.append(f"| {label} | {r['status']} | | | | {r.get('note', '')} |")
            continue
        q = ratio(r, jg)
        lines.append(
            f"| {label} | {fmt(r['median'], unit)} | {spread(r)} | "
            f"{'' if q is None else f'{q:.2f}'} | {r.get('err', 0):.1e} | "
            f"{r.get('note', '')} |"
        )
    return lines


def w4_table(results) -> list[str]:
    rows = by_system(results, "W4")
    if not rows:
        return []
    jg = rows.get("jitgrad")
    lines = [
        "| system | cold cache s (median) | cold runs | warm cache s (median) | warm runs "
        "| kernel serves, cold s (runs) | kernel serves, warm s (runs) "
        "| cold / jitgrad | warm / jitgrad | notes |",
        "|---|---:|---|---:|---|---|---|---:|---:|---|",
    ]
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    for system in sorted(rows, key=lambda s: SYSTEM_ORDER.index(s)):
        r = rows[system]
        label = f"**{r['label']}**" if system.startswith("jitgrad") else r["label"]
        if r["status"] != "ok":
            lines.append(f"| {label} | {r['status']} | | | | | | | | {r.get('note', '')} |")
            continue
        qc, qw = ratio(r, jg), ratio(r, jg, "warm_median")
        serves = ["—", "—"]  # eager systems: no kernel
        if "cold_serving" in r:
            serves = [
                f"{r['serving_median']:.2f} ({runs(r['cold_serving'])})",
                f"{r['warm_serving_median']:.2f} ({runs(r['warm_serving'])})",
            ]
        lines.append(
            f"| {label} | {r['median']:.2f} | {runs(r['cold'])} | "
            f"{r['warm_median']:.2f} | {runs(r['warm'])} | {serves[0]} | {serves[1]} | "
            f"{'' if qc is None else f'{qc:.2f}'} | "
            f"{'' if qw is None else f'{qw:.2f}'} | {r.get('note', '')} |"
        )
    return lines


def w9_table(results) -> list[str]:
    import w9_compile as w9

    rows = [r for r in results if r["workload"] == "W9"]
    if not rows:
        return []
    lines = [
        "| program | system | first result s | kernel serving s | serving / jitgrad serving "
        "| import s | samples: first (; serving, where it differs) | max rel. error | notes |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    programs = w9.table_order({r["program"] for r in rows})
    for program in programs:
        here = [r for r in rows if r["program"] == program]
        head = next((r for r in here if r["system"] == "-"), None)
        name = w9.title(program)
        if head and head["status"] == "not run":
            lines.append(f"| {name} | all | not run | | | | | | {head['note']} |")
            continue
        systems = [r for r in here if r["system"] != "-"]
        systems.sort(key=lambda r: w9.SYSTEMS.index(r["system"]))
        jg = next((r for r in systems if r["system"] == "jitgrad"), None)
        for r in systems:
            label = f"**{r['label']}**" if r["system"].startswith("jitgrad") else r["label"]
            if r["status"] not in ("ok", "timeout"):
                lines.append(
                    f"| {name} | {label} | {r['status']} | | | | | | {r.get('note', '')} |"
                )
                continue
            limit = r["limit"]
            first, serving = w9_seconds(r["first"], limit), w9_seconds(r["serving"], limit)
            q = ""
            if jg and jg.get("serving") and r.get("serving") and r is not jg:
                q = f"{r['serving'] / jg['serving']:.2f}"
            elif jg and jg.get("serving") and r.get("serving") is None and r is not jg:
                q = f"> {limit / jg['serving']:.1f}"
            elif r is jg and r.get("serving"):
                q = "1.00"
            samples = r["samples"]
            runs = ", ".join(w9_seconds(s["first"], limit) for s in samples)
            servings = ", ".join(w9_seconds(s["serving"], limit) for s in samples)
            if servings != runs:
                runs += "; " + servings
            err = "" if r.get("err") is None else f"{r['err']:.1e}"
            lines.append(
                f"| {name} | {label} | {first} | {serving} | {q} | "
                f"{r['import'] or 0:.2f} | {runs} | {err} | {w9_note(r)} |"
            )
    return lines


def w9_note(r) -> str:
    if r["system"] == "jax":
        parts = ["jit(value_and_grad), no persistent cache; first result = serving"]
    elif not r.get("tiered"):
        parts = ["blocking: this jitgrad has no background compile (first result = serving)"]
    elif r.get("mode") == "blocking":
        parts = ["compile mode blocking (JITGRAD_COMPILE=blocking)"]
    else:
        states = ", ".join(r.get("first_states") or ()) or "?"
        parts = [f"compile mode {r.get('mode')}; after the first call: {states}"]
    if r["status"] == "timeout":
        parts.append(f"killed at {r['limit']:.0f} s from the first call's start")
    if r.get("note"):
        parts.append(r["note"])
    return "; ".join(parts)


def targets12(results) -> list[str]:
    """Issue 12's compile-cost targets, judged on this run's W4 and W9 numbers."""
    rows = []

    def w9(program, system):
        return next(
            (
                r
                for r in results
                if r["workload"] == "W9"
                and r.get("program") == program
                and r["system"] == system
                and r["status"] in ("ok", "timeout")
            ),
            None,
        )

    def s(r, field):
        if r is None:
            return "n/a"
        return w9_seconds(r.get(field), r["limit"]) + " s"

    def yes(cond):
        return "n/a" if cond is None else ("**yes**" if cond else "**no**")

    w4 = by_system(results, "W4")
    jg4, jax4 = w4.get("jitgrad"), w4.get("jax")
    if jg4 and jg4.get("status") == "ok":
        jaxs = (
            f"; JAX {jax4['median']:.2f} / {jax4['warm_median']:.2f} s"
            if jax4 and jax4.get("status") == "ok"
            else ""
        )
        ahead = (
            jg4["median"] < jax4["median"] and jg4["warm_median"] < jax4["warm_median"]
            if jax4 and jax4.get("status") == "ok"
            else None
        )
        rows.append(
            (
                "W4 time to first gradient, cold / warm cache",
                "<= 0.5 / 0.4 s, ahead of JAX in the same run",
                f"{jg4['median']:.2f} / {jg4['warm_median']:.2f} s{jaxs}",
                yes(jg4["median"] <= 0.5 and jg4["warm_median"] <= 0.4 and ahead is not False),
            )
        )
        if "serving_median" in jg4:
            rows.append(
                (
                    "W4 time until the compiled kernel serves, cold",
                    "<= 2.0 s",
                    f"{jg4['serving_median']:.2f} s (compile mode {jg4.get('mode') or '?'})",
                    yes(jg4["serving_median"] <= 2.0),
                )
            )
    r100, j100 = w9("ode100", "jitgrad"), w9("ode100", "jax")
    if r100:
        jax = f"; JAX {s(j100, 'first')}" if j100 else ""
        ok = None
        if r100["status"] == "ok":
            ok = r100["first"] <= 1.0 and r100["serving"] <= 5.0
        elif r100.get("first") is not None and r100["first"] > 1.0:
            ok = False
        rows.append(
            (
                "W9 unrolled ODE, T = 100: first gradient / kernel serving",
                "<= 1 s / <= 5 s",
                f"{s(r100, 'first')} / {s(r100, 'serving')}{jax}",
                yes(False if r100["status"] == "timeout" else ok),
            )
        )
    r1000, j1000 = w9("ode1000", "jitgrad"), w9("ode1000", "jax")
    if r1000:
        growth = (
            r1000["serving"] / r100["serving"]
            if r100 and r100.get("serving") and r1000.get("serving")
            else None
        )
        jax = f"; JAX {s(j1000, 'first')}" if j1000 else ""
        ok = (
            False
            if r1000["status"] == "timeout"
            else growth is not None and r1000["serving"] <= 30 and growth <= 12
        )
        rows.append(
            (
                "W9 unrolled ODE, T = 1,000: kernel serving",
                "<= 30 s, growth from T = 100 to 1,000 <= 12x",
                f"{s(r1000, 'serving')}"
                + ("" if growth is None else f", {growth:.1f}x T = 100")
                + jax,
                yes(ok),
            )
        )
    if not rows:
        return []
    out = ["| measure | target | measured (jitgrad) | met? |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def targets(results, machine) -> list[str]:
    """The issue's targets, judged on this run's numbers."""

    def get(key, system, field="median"):
        r = by_system(results, key).get(system)
        return r[field] if r and r.get("status") == "ok" else None

    def p10(key, system):
        return get(key, system, "p10")

    def ms(x):
        return "n/a" if x is None else f"{x * 1e3:.3g} ms"

    def us(x):
        return "n/a" if x is None else f"{x * 1e6:.3g} us"

    def q(a, b):
        return None if a is None or b is None else a / b

    def rx(x):
        return "n/a" if x is None else f"{x:.2f}x"

    def yes(cond):
        return "n/a" if cond is None else ("**yes**" if cond else "**no**")

    rows = []
    jg1, jax1, pt1 = get("W1", "jitgrad"), get("W1", "jax"), get("W1", "pytensor")
    if jg1 is not None:
        ok = jg1 <= 1e-6 and (q(jax1, jg1) or 0) >= 9 and (q(pt1, jg1) or 99) >= 3
        rows.append(
            (
                "W1 value+grad call",
                "<= 1.0 us; >= 9x faster than JAX jit; >= 3x faster than PyTensor (trust_input)",
                f"{us(jg1)}; JAX {rx(q(jax1, jg1))}; PyTensor {rx(q(pt1, jg1))}",
                yes(ok),
            )
        )
    jg2, nb2, jax2 = get("W2", "jitgrad"), get("W2", "numba"), get("W2", "jax")
    if jg2 is not None:
        ok = nb2 is not None and jg2 <= 1.2 * nb2 and (q(jax2, jg2) or 0) >= 2.5
        rows.append(
            (
                "W2 elementwise 2^22",
                "<= 1.2x hand-fused Numba; >= 2.5x faster than JAX",
                f"{ms(jg2)} = {rx(q(jg2, nb2))} Numba; JAX {rx(q(jax2, jg2))} "
                f"(p10s: {ms(p10('W2', 'jitgrad'))} = "
                f"{rx(q(p10('W2', 'jitgrad'), p10('W2', 'numba')))} Numba)",
                yes(ok),
            )
        )
    jg3, jax3 = get("W3", "jitgrad"), get("W3", "jax")
    hand3 = min(
        [x for x in (get("W3", "numba"), get("W3", "numpy")) if x is not None], default=None
    )
    if jg3 is not None:
        ok = hand3 is not None and jg3 <= hand3 and (q(jax3, jg3) or 0) >= 1.3
        rows.append(
            (
                "W3 MLP value+grad",
                "<= 1.0x the hand-written reference; >= 1.3x faster than JAX",
                f"{ms(jg3)} = {rx(q(jg3, hand3))} hand-written "
                f"({ms(hand3)}); JAX {rx(q(jax3, jg3))} (p10s: "
                f"{ms(p10('W3', 'jitgrad'))} = "
                f"{rx(q(p10('W3', 'jitgrad'), p10('W3', 'numba')))} Numba, JAX "
                f"{rx(q(p10('W3', 'jax'), p10('W3', 'jitgrad')))})",
                yes(ok),
            )
        )
    cold, warm = get("W4", "jitgrad"), get("W4", "jitgrad", "warm_median")
    if cold is not None:
        kernel_cold = get("W4", "jitgrad_kernel")
        extra = (
            ""
            if kernel_cold is None
            else f" (new kernel with jitgrad's helpers already cached: {kernel_cold:.2f} s)"
        )
        rows.append(
            (
                "W4 time to first gradient",
                "cold <= 2.0 s; warm <= 0.6 s",
                f"cold {cold:.2f} s, warm {warm:.2f} s{extra}; JAX "
                f"{get('W4', 'jax') or 0:.2f} / {get('W4', 'jax', 'warm_median') or 0:.2f} s",
                yes(cold <= 2.0 and warm <= 0.6),
            )
        )
    r5 = by_system(results, "W5").get("jitgrad")
    if r5 and r5.get("status") == "ok":
        m = re.search(r"max error ([\d.]+) ulp", r5.get("note", ""))
        ulp = float(m.group(1)) if m else None
        rows.append(
            (
                "W5 third derivative",
                "<= 1.5 us; exact to float32 rounding (<= 2 ulp of the derivative's scale)",
                f"{us(r5['median'])}, {ulp} ulp",
                yes(r5["median"] <= 1.5e-6 and ulp is not None and ulp <= 2),
            )
        )
    jg6 = get("W6", "jitgrad")
    if jg6 is not None:
        rows.append(("W6 eager tape step", "<= 40 us per step", us(jg6), yes(jg6 <= 40e-6)))
    jg6c = get("W6c", "jitgrad")
    if jg6c is not None:
        rows.append(("W6c compiled train step", "<= 4 us per step", us(jg6c), yes(jg6c <= 4e-6)))
    # The W3 value+grad base: the faster of the two measurements of it in this run (W7's own
    # jit_grad row and W3's jitgrad row), so that one stalled measurement cannot pass the target.
    jg7, jax7 = get("W7", "jitgrad"), get("W7", "jax")
    w3 = min(
        [x for x in (get("W7", "jitgrad_w3"), get("W3", "jitgrad")) if x is not None], default=None
    )
    if jg7 is not None:
        ok = w3 is not None and jax7 is not None and jg7 <= 1.1 * w3 and jg7 < jax7
        rows.append(
            (
                "W7 Adam train step",
                "jit_train_step <= 1.1x W3 value+grad; faster than JAX jit of the full step",
                f"{ms(jg7)} = {rx(q(jg7, w3))} jit_grad "
                f"({ms(w3)}); JAX {ms(jax7)} (p10s: {ms(p10('W7', 'jitgrad'))} = "
                f"{rx(q(p10('W7', 'jitgrad'), p10('W7', 'jitgrad_w3')))}; JAX "
                f"{ms(p10('W7', 'jax'))})",
                yes(ok),
            )
        )
    if not rows:
        return []
    out = ["| workload | target | measured (jitgrad) | met? |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def report(meta, sections) -> str:
    lines = [
        "# jitgrad perf suite: results",
        "",
        f"- Date: {meta['date']}; command: `{meta['command']}`; suite wall time "
        f"{meta['wall'] / 60:.1f} min",
        f"- Machine: {meta['machine'].get('cpu')}, {meta['machine'].get('cores')}, "
        f"{meta['machine'].get('memory', '?')} RAM; load average (1 min) {meta['load']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- PyTensor runs in: {meta['pytensor']}",
        f"- jitgrad's bytecode: {meta.get('bytecode', 'as found')} (as an installed package)",
        f"- BLAS: {meta['openblas']}",
        "- Timing: one fresh process per (workload, system); steady state after warm-up; "
        "median and p10–p90 over timed batches (each >= 200 us of calls); every system's "
        "value and gradients are checked against a float64 numpy reference first. "
        "Ratios are system / jitgrad (> 1: jitgrad is faster).",
        "",
    ]
    for section in sections:
        machine, results = section["machine"], section["results"]
        lines.append(f"## Threads: {section['thread_label']}")
        lines.append("")
        if section["load"]:
            loads = "; ".join(f"{k} {v}" for k, v in section["load"].items())
            lines += [
                f"Load average (1 min) before -> after: {loads} (other processes on "
                "this machine compete for its 2 cores).",
                "",
            ]
        if machine:
            lines.append(
                f"Measured limits: memory bandwidth {machine.get('bandwidth_gbs', 0):.1f}"
                f" GB/s (best of a Numba prange STREAM triad on 2^23 floats, "
                f"{machine.get('triad_gbs', 0):.1f} GB/s, and W2's 20 B/element "
                f"streaming pattern without arithmetic, "
                f"{machine.get('stream5_gbs', 0):.1f} GB/s; numpy copy "
                f"{machine.get('copy_gbs', 0):.1f} GB/s), sgemm "
                f"{machine.get('sgemm_gflops', 0):.0f} GFLOP/s (np.dot float32 "
                f"{machine.get('sgemm_n')}^2); {machine.get('blas', '')}."
            )
            lines.append("")
        if section.get("targets"):
            summary = targets(results, machine)
            if summary:
                lines += [f"### Targets (issue 6), {section['thread_short']}", ""] + summary + [""]
            summary = targets12(results)
            if summary:
                lines += ["### Targets (issue 12, compile cost)", ""] + summary + [""]
            summary = targets8(results)
            if summary:
                lines += ["### Targets (W8 loops)", ""] + summary + [""]
            summary = targets14(results, machine, section["thread_short"])
            if summary:
                lines += [f"### Targets (issue 14), {section['thread_short']}", ""]
                lines += summary + [""]
        for workload in section["workloads"]:
            if workload.key == "W9":
                table = w9_table(results)
                title = (
                    "W9 compile cost (fresh process per sample, empty JITGRAD_CACHE_DIR, Numba's "
                    "cache of jitgrad's own helpers as installed; seconds from the first call's "
                    "start, the import on its own), seconds"
                )
            elif workload.key in W8_SCRIPTS:
                table = w8_table(workload, results)
                title = (
                    f"{workload.key} {workload.title}, {workload.unit} per call; first call in a "
                    "fresh process, s"
                )
                trip = w8_trip_table(results) if workload.key == "W8a" else []
                if table and trip:
                    table += [
                        "",
                        "W8a compile time against the trip count (jitgrad, the same loss with "
                        "T = 10 and 10,000 Euler steps; a fresh process per sample with an empty "
                        "JITGRAD_CACHE_DIR, samples interleaved; in blocking mode the first call "
                        "is the compile, in the default mode it is the fallback's):",
                        "",
                        *trip,
                    ]
            elif workload.key == "W10":
                table = workload_table(workload, results, machine)
                first = w10_first_table(results)
                title = f"{workload.key} {workload.title}, {workload.unit}"
                if first:
                    table += [
                        "",
                        "W10 first call (a fresh process per sample, empty JITGRAD_CACHE_DIR, "
                        "Numba's cache of jitgrad's own helpers as installed; samples "
                        "interleaved; seconds from building the value+grad function, after the "
                        "imports, until the first call returns, and until the compiled kernel "
                        "serves; JAX without a persistent cache):",
                        "",
                        *first,
                    ]
            elif workload.key == "W11":
                import w11_distributed

                table = w11_distributed.table(results)
                title = (
                    "W11 data parallel: the W3 step + Adam, global batch 256, on 1 and 2 MPI "
                    "ranks of 1 thread each (median block of 20 steps, range), ms per step"
                )
            elif workload.key == "W4":
                table = w4_table(results)
                title = (
                    "W4 time to first gradient (fresh process: import + trace/compile + "
                    "first W3 value+grad), seconds"
                )
            else:
                table = workload_table(workload, results, machine)
                title = f"{workload.key} {workload.title}, {workload.unit}"
            if table:
                lines += [f"### {title}", ""] + table + [""]
    return "\n".join(lines) + "\n"


def chart(sections, path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    groups = []  # (label, {system label: ratio})
    for section in sections:
        suffix = "" if section["threads"] is None else f" ({section['threads']} thr)"
        results = section["results"]
        for workload in section["workloads"]:
            if workload.key == "W9":  # its own table; JAX mostly runs out of time
                continue
            rows = by_system(results, workload.key)
            jg = rows.get("jitgrad")
            if not jg or jg.get("status") != "ok":
                continue
            fields = (
                [("median", "")]
                if workload.key != "W4"
                else [("median", " cold"), ("warm_median", " warm")]
            )
            for field, tag in fields:
                ratios = {
                    r["label"]: r[field] / jg[field]
                    for s, r in rows.items()
                    if r.get("status") == "ok" and s != "jitgrad" and field in r
                }
                if ratios:
                    groups.append((f"{workload.key}{tag}{suffix}", ratios))
    if not groups:
        return "no results to plot"
    order = [LABELS.get(k, k) for k in SYSTEM_ORDER]
    labels = sorted(
        {lab for _, g in groups for lab in g},
        key=lambda lab: (order.index(lab) if lab in order else len(order), lab),
    )
    colors = {lab: plt.get_cmap("tab20")(i % 20) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(max(10, 1.3 * len(groups)), 6))
    width = 0.8 / max(len(g) for _, g in groups)
    seen = set()
    for x, (_, g) in enumerate(groups):
        present = [lab for lab in labels if lab in g]
        for i, lab in enumerate(present):
            ax.bar(
                x - width * len(present) / 2 + (i + 0.5) * width,
                g[lab],
                width,
                color=colors[lab],
                label=None if lab in seen else lab,
            )
            seen.add(lab)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g for g, _ in groups], rotation=30, ha="right")
    ax.set_ylabel("time / jitgrad time  (> 1: jitgrad is faster)")
    ax.set_title("jitgrad perf suite: every system relative to jitgrad (log scale)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def update_readme(markdown: str) -> None:
    path = os.path.join(PERF_DIR, "README.md")
    begin, end = "<!-- latest results: begin -->", "<!-- latest results: end -->"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return
    if begin not in text or end not in text:
        return
    body = markdown.split("\n", 2)[2]  # without the title
    body = body.replace("\n## ", "\n#### ").replace("\n### ", "\n##### ")
    text = text[: text.index(begin) + len(begin)] + "\n" + body + text[text.index(end) :]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


# -- main ----------------------------------------------------------------------------------------
def byte_compile_jitgrad() -> str:
    """Compile the measured jitgrad's bytecode, as `pip install` does for an installed package
    (JAX's and the other peers' is in site-packages). A checkout or an editable install run
    with PYTHONDONTWRITEBYTECODE=1 (the development machine's environment) has none: every
    fresh process of W4 and W9 would compile jitgrad's modules from source, 0.1 s in the
    caller and 0.1 s in the compile worker, which no installed jitgrad pays."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("jitgrad")
    if spec is None or not spec.submodule_search_locations:
        return "jitgrad not found"
    where = list(spec.submodule_search_locations)[0]
    ok = compileall.compile_dir(where, quiet=1)
    return f"{where} byte-compiled" + ("" if ok else " (some modules failed)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated workloads, e.g. W2,W3 (default: all)")
    parser.add_argument("--systems", help="comma-separated systems, e.g. jitgrad,jax,numba")
    parser.add_argument("--threads", type=int, help="limit every library to N threads")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--out", help="markdown output path (PNG and JSON beside it)")
    parser.add_argument(
        "--no-single-thread",
        action="store_true",
        help="skip the second, 1-thread pass over W2, W3 and W7",
    )
    parser.add_argument(
        "--w4-reps", type=int, help="W4 repetitions (default: 3 within a time budget, quick 1)"
    )
    parser.add_argument(
        "--w9-big",
        action="store_true",
        help="W9 also runs the unrolled ODE with T = 1,000 and the 5,000-op chain (minutes each)",
    )
    parser.add_argument(
        "--w9-programs",
        help="W9 programs instead of the standard ones, e.g. ode10,ode40,chain500,mlp",
    )
    parser.add_argument(
        "--w9-timeout",
        type=float,
        help="W9 time limit per program from the first call's start (default 180 s)",
    )
    parser.add_argument(
        "--w9-reps", type=int, help="W9 samples per program (default: 3 within 60 s, quick 1)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds over the steady-state systems (default 2, in the "
        "1-thread pass and with --quick 1); the best round's median is kept",
    )
    parser.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the benchmarks",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    only = (
        [k for w in args.only.split(",") for k in ALIASES.get(w.strip(), [w.strip()])]
        if args.only
        else ORDER
    )
    unknown = [w for w in only if w not in ORDER]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {ORDER}")
    systems_filter = set(args.systems.split(",")) if args.systems else None
    complete = not (args.only or args.quick or args.threads or args.systems)
    out = args.out or os.path.join(PERF_DIR, "results", "latest.md" if complete else "partial.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    modules = {key: importlib.import_module(ALL_SCRIPTS[key]) for key in only if key not in SPECIAL}
    workloads = {key: next(w for w in modules[key].WORKLOADS if w.key == key) for key in modules}
    special = {
        "W4": types.SimpleNamespace(key="W4", title="time to first gradient", unit="s", floor=None),
        "W9": types.SimpleNamespace(key="W9", title="compile cost", unit="s", floor=None),
        "W11": types.SimpleNamespace(key="W11", title="data parallel", unit="ms", floor=None),
    }

    pytensor = pytensor_python()
    passes = [(args.threads, only, True, args.rounds or (1 if args.quick else 2))]
    if not args.threads and not args.no_single_thread and not args.quick:
        # W2 and W3 with one thread, as the issue asks; and W7, whose target is relative to
        # W3 (two-thread BLAS timings collapse when other processes keep the cores busy); W3L,
        # whose target (issue 14) is at 1 thread and at 2.
        again = [k for k in ("W2", "W3", "W3L", "W7") if k in only]
        if again:
            passes.append((1, again, True, args.rounds or 1))
    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python perf/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_facts(),
        "versions": versions(pytensor),
        "pytensor": pytensor[1] if pytensor[0] else f"not available ({pytensor[1]})",
        "load": f"{os.getloadavg()[0]:.1f} at start",
        "bytecode": byte_compile_jitgrad(),
    }
    print(
        f"jitgrad perf suite: {', '.join(only)}{' (quick)' if args.quick else ''}; "
        f"PyTensor: {meta['pytensor']}",
        flush=True,
    )
    sections = []
    failed = False
    for threads, keys, with_targets, rounds in passes:
        env = base_env(threads, args.keep_openblas_env)
        label = (
            (
                f"{threads} (NUMBA_NUM_THREADS, OMP/MKL/OPENBLAS_NUM_THREADS, TF intra-op = "
                f"{threads}"
                + (
                    ", XLA single-threaded Eigen, pinned to one core with taskset"
                    if threads == 1
                    else ""
                )
                + ")"
            )
            if threads
            else f"default (all {os.cpu_count()} cores; no thread variables set)"
        )
        print(f"\n== threads: {label}", flush=True)
        machine = measure_machine(env, threads, args.quick)
        if machine:
            print(
                f"  machine: bandwidth {machine.get('bandwidth_gbs', 0):.1f} GB/s, sgemm "
                f"{machine.get('sgemm_gflops', 0):.0f} GFLOP/s",
                flush=True,
            )
        meta.setdefault("openblas", machine.get("blas", "?"))
        results, load = [], {}
        before = os.getloadavg()[0]
        compiled_keys = {k: workloads[k] for k in keys if k not in SPECIAL}
        if compiled_keys:
            results += run_systems(
                compiled_keys, env, threads, args.quick, pytensor, systems_filter, rounds
            )
            load["steady-state workloads"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        w8_keys = [k for k in keys if k in W8_SCRIPTS]
        if w8_keys:
            before = os.getloadavg()[0]
            print("  W8: first call, a fresh process per system and workload", flush=True)
            results = run_w8_first(
                results, w8_keys, env, threads, args.quick, pytensor, systems_filter, workloads
            )
            load["W8 first calls"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        if "W8a" in w8_keys:
            before = os.getloadavg()[0]
            print("  W8a: compile time against the trip count (jitgrad)", flush=True)
            results = run_w8_trip(results, env, threads, args.quick, systems_filter)
            load["W8a trip count"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        if "W10" in keys:
            before = os.getloadavg()[0]
            print("  W10: first calls, fresh processes with an empty cache", flush=True)
            results = run_w10_first(results, env, threads, args.quick, systems_filter)
            load["W10 first calls"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        if "W4" in keys:
            before = os.getloadavg()[0]
            print("  W4: fresh processes, cold then warm cache", flush=True)
            results += run_w4(env, threads, args.quick, pytensor, systems_filter, args.w4_reps)
            load["W4"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        if "W9" in keys:
            before = os.getloadavg()[0]
            print("  W9: compile cost, a fresh process per sample with an empty cache", flush=True)
            results += run_w9(env, threads, args.quick, systems_filter, args)
            load["W9"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        if "W11" in keys:
            before = os.getloadavg()[0]
            print("  W11: MPI jobs of 1 and 2 ranks, 1 thread each", flush=True)
            results += run_w11(env, args.quick)
            load["W11"] = f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        failed |= any(r["status"] in ("MISMATCH", "error") for r in results)
        sections.append(
            {
                "threads": threads,
                "thread_label": label,
                "machine": machine,
                "thread_short": f"{threads} thread(s)" if threads else "default threads",
                "results": results,
                "load": load,
                "targets": with_targets,
                "workloads": [workloads.get(k) or special[k] for k in keys],
            }
        )
    meta["wall"] = time.monotonic() - started
    meta["load"] += f", {os.getloadavg()[0]:.1f} at end"
    markdown = report(meta, sections)
    if complete and os.path.exists(GAPS):
        with open(GAPS, encoding="utf-8") as fh:
            markdown += "\n" + fh.read()
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(markdown)
    stem = os.path.splitext(out)[0]
    with open(stem + ".json", "w", encoding="utf-8") as fh:
        json.dump(
            {
                "meta": meta,
                "sections": [{k: v for k, v in s.items() if k != "workloads"} for s in sections],
            },
            fh,
            indent=1,
        )
    problem = chart(sections, stem + ".png")
    if complete:
        update_readme(markdown)
    print(
        f"\nwrote {out}, {stem}.json"
        + (f" ({problem})" if problem else f", {stem}.png")
        + f" in {meta['wall'] / 60:.1f} min",
        flush=True,
    )
    for section in sections:
        if section["targets"]:
            summary = targets(section["results"], section["machine"])
            if summary:
                print(f"\nTargets, {section['thread_short']}:\n" + "\n".join(summary))
            summary = targets12(section["results"])
            if summary:
                print("\nTargets (issue 12, compile cost):\n" + "\n".join(summary))
            summary = targets8(section["results"])
            if summary:
                print("\nTargets (W8 loops):\n" + "\n".join(summary))
            summary = targets14(section["results"], section["machine"], section["thread_short"])
            if summary:
                print(f"\nTargets (issue 14), {section['thread_short']}:\n" + "\n".join(summary))
    if failed:
        print(
            "\n*** some systems FAILED their value/gradient check or crashed: see the table",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
