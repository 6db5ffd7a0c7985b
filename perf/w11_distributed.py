"""W11 data-parallel: the W3 step (MLP 784-256-10, value + grads + Adam update) with a global
batch of 256 on 1 MPI rank and on 2 ranks (1 thread each: NUMBA_NUM_THREADS, OMP and OPENBLAS
threads 1; same machine, loopback), milliseconds per step.

Systems (each rank reads its half of the global batch; rank 0 reports):
- `kernel`: jit_train_step(distributed=True): forward, backward, the gradient exchange and the
  Adam update in one kernel; on one machine each rank updates its share of the rows through
  shared memory (compiler/sharded_step.py). On 1 rank there is nothing to exchange, so it is
  the plain step: the baseline of the 2-rank ratio.
- `kernel_blas`: the same with its products on OpenBLAS (jitgrad.config.amx off; on a CPU
  without AMX the same as `kernel`). Since session 23 a kernel of one thread multiplies W3's
  128 x 784 x 256 products on AMX tiles (~0.65x OpenBLAS's time): the step's compute is then
  faster, and the part of it that does not shrink with the batch weighs more in the ratio.
- `kernel_allreduce`: the same with jitgrad.config.sharded_update off: MPI_Allreduce of the
  gradients in place, then every rank's whole update, in one kernel.
- `handwritten`: what users write today: jit_grad, then mpi4py's Allreduce of each gradient
  (in place) and the mean, then a separately jitted `optimizer.update`.
- `compute`: the kernel step without any exchange (jit_train_step, every rank's whole update)
  on this rank's batch: the step's compute; `kernel - compute` is what the exchange costs
  (waiting for the slower rank included), less the update work the sharding saves.
- `allreduce`: mpi4py's Allreduce of the four gradient buffers alone (0.81 MB), per step.
- `one_rank`: in the 2-rank job, rank 0 alone runs the 1-rank step (the same kernel: a step of
  one process) on the whole global batch while rank 1 sleeps, between the other systems'
  blocks: the baseline of the 2-rank ratio measured in the same minutes as the 2-rank step.
  The 1-rank job measures the same step in a job of its own, before the 2-rank job; the host's
  speed can change between the two jobs (perf/results/session21_w11.md saw the 1-rank step at
  1.70-1.96 ms from run to run), and within one job it moves both sides of the ratio alike.

The systems take turns block by block, so that load from other processes falls on all of them;
each block is `STEPS` steps between barriers; the table gives the median block and the range,
and rank 0's CPU time per step (time.process_time: the work, without the time the rank waited
for a core or spun in MPI, which other processes on the machine inflate).
Correctness first: after the timed steps the parameters must be bitwise identical on every
rank, and the first step of each system must match the single-process float64 reference.

Run: python perf/w11_distributed.py            (both jobs; prints the table)
     python perf/w11_distributed.py --per-step (and each step's time by its place in the
                                                block, rank 0's median over the blocks)
     python perf/run.py --only W11             (the same, in the suite's report)

Why --per-step: the first steps of a block run after six other systems did (other data in the
caches, the AMX unit idle for ~20 ms) and take longer: in session 25 the 2-rank step's first
steps took 1.3-1.5, 1.0-1.1, 0.76-0.82 ms against 0.64-0.69 from the ninth on, the 1-rank
step's 1.7, 1.35, 1.26 against 1.14-1.16, which puts 0.07 ms (2 ranks) and 0.04 ms (1 rank)
on each step's mean of a block of 20.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
GLOBAL_BATCH = 256
STEPS, BLOCKS = 20, 15
QUICK_BLOCKS = 4
TAG = "W11-RESULT "
SYSTEMS = (
    "kernel",
    "kernel_blas",
    "kernel_allreduce",
    "handwritten",
    "compute",
    "allreduce",
    "one_rank",
)
LABELS = {
    "kernel": "jit_train_step(distributed=True): sharded update in the kernel",
    "kernel_blas": "the same with its products on OpenBLAS (no AMX tiles)",
    "kernel_allreduce": "the same with MPI_Allreduce in the kernel (sharded_update off)",
    "handwritten": "jit_grad + mpi4py Allreduce + jit(update)",
    "compute": "the step without the allreduce (this rank's batch)",
    "allreduce": "mpi4py Allreduce of the gradients alone (0.81 MB)",
    "one_rank": "the 1-rank step, run by rank 0 alone while rank 1 sleeps",
}
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def global_batch():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((GLOBAL_BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32)
    return X, y


def worker(blocks: int, per_step: bool = False) -> None:
    """One rank of the job: build the systems, check them, time them, print rank 0's records
    (and, `per_step`, the kernel's and the 1-rank step's time by step in the block)."""
    from mpi4py import MPI

    import jitgrad as jg
    import jitgrad.distributed as dist
    import w3_mlp

    dist.init()
    comm = MPI.COMM_WORLD
    X, y = global_batch()
    Xs, ys = dist.shard(X, y)
    lr = 1e-3

    def fresh():
        params = {k: v.copy() for k, v in w3_mlp.data().params.items()}
        return params, jg.optim.Adam(lr)

    params_k, opt_k = fresh()
    state_k = opt_k.init(params_k)
    kernel = jg.jit_train_step(w3_mlp.loss_jitgrad, opt_k, distributed=True)

    params_b, opt_b = fresh()
    state_b = opt_b.init(params_b)
    kernel_blas = jg.jit_train_step(w3_mlp.loss_jitgrad, opt_b, distributed=True)

    params_a, opt_a = fresh()
    state_a = opt_a.init(params_a)
    kernel_allreduce = jg.jit_train_step(w3_mlp.loss_jitgrad, opt_a, distributed=True)

    params_c, opt_c = fresh()
    state_c = opt_c.init(params_c)
    compute = jg.jit_train_step(w3_mlp.loss_jitgrad, opt_c)

    params_h, opt_h = fresh()
    box = {"params": params_h, "state": opt_h.init(params_h)}
    value_and_grad = jg.jit_grad(w3_mlp.loss_jitgrad, wrt=0)
    update = jg.jit(opt_h.update)
    scale = np.float32(1.0 / dist.size())

    def handwritten():
        loss, grads = value_and_grad(box["params"], Xs, ys)
        arrays = {k: np.asarray(g) for k, g in grads.items()}
        for g in arrays.values():
            comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
            g *= scale
        new_params, new_state = update(box["params"], arrays, box["state"])
        box["params"] = {k: np.asarray(v) for k, v in new_params.items()}
        box["state"] = new_state
        return loss

    buffers = [np.ones_like(v) for v in w3_mlp.data().params.values()]

    params_o, opt_o = fresh()
    state_o = opt_o.init(params_o)
    single = jg.jit_train_step(w3_mlp.loss_jitgrad, opt_o)

    def allreduce_alone():
        for g in buffers:
            comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)

    steps = {
        "kernel": lambda: kernel(params_k, state_k, Xs, ys),
        "kernel_blas": lambda: kernel_blas(params_b, state_b, Xs, ys),
        "kernel_allreduce": lambda: kernel_allreduce(params_a, state_a, Xs, ys),
        "handwritten": handwritten,
        "compute": lambda: compute(params_c, state_c, Xs, ys),
        "allreduce": allreduce_alone,
        "one_rank": lambda: single(params_o, state_o, X, y),
    }
    # The first step compiles (every rank at once) and is checked: the mean gradient over ranks
    # is the global batch's gradient, so Adam's first update is the single-process one.
    steps["kernel"]()
    jg.config.amx = False  # read when a kernel is emitted
    steps["kernel_blas"]()
    jg.config.amx = True
    jg.config.sharded_update = False  # read at a distributed step's first call
    steps["kernel_allreduce"]()
    jg.config.sharded_update = True
    handwritten()
    reference = {k: v.copy() for k, v in w3_mlp.data().params.items()}
    one = jg.optim.Adam(lr)
    one_state = one.init(reference)
    jg.jit_train_step(w3_mlp.loss_jitgrad, one)(reference, one_state, X, y)
    for name, got in (
        ("kernel", params_k),
        ("kernel_blas", params_b),
        ("kernel_allreduce", params_a),
        ("handwritten", box["params"]),
    ):
        for k in reference:
            np.testing.assert_allclose(got[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=name)
    steps["compute"]()
    if dist.is_main():
        steps["one_rank"]()
    times = {name: [] for name in SYSTEMS}
    cpu = {name: [] for name in SYSTEMS}
    steps_ms = {name: [] for name in SYSTEMS}  # per block, each step's ms (per_step)
    for _ in range(blocks):
        for name in SYSTEMS:
            step = steps[name]
            comm.Barrier()
            if per_step:
                step = _stamping(step, steps_ms[name])
            if name == "one_rank":
                seconds, cpu_seconds = _alone_on_rank_0(comm, step)
                times[name].append(seconds / STEPS)
                cpu[name].append(cpu_seconds / STEPS)
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(STEPS):
                step()
            cpu[name].append((time.process_time() - start_cpu) / STEPS)
            comm.Barrier()
            times[name].append((time.perf_counter() - start) / STEPS)
    for name, params in (
        ("kernel", params_k),
        ("kernel_blas", params_b),
        ("kernel_allreduce", params_a),
        ("handwritten", box["params"]),
    ):
        digest = b"".join(np.ascontiguousarray(params[k]).tobytes() for k in sorted(params))
        if len(set(comm.allgather(digest))) != 1:
            raise AssertionError(f"W11 {name}: parameters differ between ranks")
    if dist.is_main():
        for name in SYSTEMS:
            samples = times[name]
            record = {
                **_record(name, dist.size(), "ok"),
                "median": statistics.median(samples),
                "min": min(samples),
                "max": max(samples),
                "samples": len(samples),
                "cpu_median": statistics.median(cpu[name]),
                "blocks": samples,
            }
            print(TAG + json.dumps(record), flush=True)
        for name in ("kernel", "one_rank") if per_step else ():
            blocks_ms = [np.diff(block) for block in steps_ms[name] if len(block) > STEPS]
            medians = np.median(np.array(blocks_ms) * 1e3, axis=0)
            places = " ".join(f"{ms:.3f}" for ms in medians)
            print(f"{dist.size()} rank(s), {name}, ms by step in the block: {places}", flush=True)


def _stamping(step, blocks: list):
    """`step`, noting the time after each call in a new list appended to `blocks` at the
    first call of each block (a block is STEPS calls; the list starts with the first call's
    start)."""

    def stamped():
        if not blocks or len(blocks[-1]) > STEPS:
            blocks.append([time.perf_counter()])
        result = step()
        blocks[-1].append(time.perf_counter())
        return result

    return stamped


def _alone_on_rank_0(comm, step) -> tuple[float, float]:
    """(wall, CPU) seconds of STEPS calls of `step` on rank 0, while the other ranks sleep
    (polling for rank 0's message every 0.2 ms): a job of one rank, as far as the machine can
    tell, inside the 2-rank job. Other ranks get (0, 0)."""
    if comm.Get_rank() != 0:
        done = comm.irecv(source=0, tag=11)
        while not done.test()[0]:
            time.sleep(0.0002)
        return 0.0, 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(STEPS):
        step()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    for other in range(1, comm.Get_size()):
        comm.send(None, dest=other, tag=11)
    return seconds, cpu_seconds


def measure(quick: bool = False, env: dict | None = None, per_step: bool = False) -> list[dict]:
    """Run the job on 1 rank, then on 2; the records of rank 0 (status "error" with the
    reason when a job fails). `per_step`: print each job's steps by their place in a block."""
    if importlib.util.find_spec("mpi4py") is None:
        note = 'mpi4py is not installed (pip install -e ".[distributed]")'
        return [{**_record("kernel", ranks, "absent"), "note": note} for ranks in (1, 2)]
    env = dict(os.environ if env is None else env, **ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PERF_DIR, env.get("PYTHONPATH")) if p)
    env.setdefault("JITGRAD_COMPILE", "blocking")
    blocks = QUICK_BLOCKS if quick else BLOCKS
    records = []
    for ranks in (1, 2):
        command = [sys.executable, "-m", "jitgrad.distributed.run", "-n", str(ranks)]
        command += [os.path.abspath(__file__), "--worker", "--blocks", str(blocks)]
        command += ["--per-step"] if per_step else []
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        for line in proc.stdout.splitlines() if per_step else ():
            if "ms by step in the block" in line:
                print(line)
        found = [
            json.loads(line[len(TAG) :])
            for line in proc.stdout.splitlines()
            if line.startswith(TAG)
        ]
        if proc.returncode != 0 or not found:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
            found = [
                {**_record("kernel", ranks, "error"), "note": f"exit {proc.returncode}: {tail}"}
            ]
        records += found
    return records


def _record(system: str, ranks: int, status: str) -> dict:
    return {
        "workload": "W11",
        "system": system,
        "ranks": ranks,
        "status": status,
        "unit": "ms",
        "label": LABELS[system],
    }


def table(records: list[dict]) -> list[str]:
    """The markdown table of W11 and its two targets."""
    by = {(r["system"], r["ranks"]): r for r in records if r.get("workload") == "W11"}
    errors = [r for r in by.values() if r["status"] != "ok"]
    if errors:
        return [f"- {r['ranks']} rank(s), {r['status']}: {r.get('note', '')}" for r in errors]
    lines = [
        "| system | 1 rank, ms (range) | 2 ranks, ms (range) | 2 ranks / 1 rank "
        "| rank 0 CPU ms, 1 / 2 ranks |",
        "|---|---|---|---|---|",
    ]

    def cell(r):
        ms = 1e3
        return f"{r['median'] * ms:.3f} ({r['min'] * ms:.3f}-{r['max'] * ms:.3f})"

    for name in SYSTEMS:
        one, two = by.get((name, 1)), by.get((name, 2))
        if one is None or two is None:
            continue
        lines.append(
            f"| {LABELS[name]} | {cell(one)} | {cell(two)} | {two['median'] / one['median']:.2f} "
            f"| {one['cpu_median'] * 1e3:.3f} / {two['cpu_median'] * 1e3:.3f} |"
        )
    kernel1, kernel2 = by[("kernel", 1)]["median"], by[("kernel", 2)]["median"]
    hand2, compute2 = by[("handwritten", 2)]["median"], by[("compute", 2)]["median"]
    mpi2 = by[("kernel_allreduce", 2)]["median"]
    share = max(kernel2 - compute2, 0.0) / kernel2
    alone = by[("allreduce", 2)]["median"]
    paired = [
        two / one for two, one in zip(by[("kernel", 2)]["blocks"], by[("one_rank", 2)]["blocks"])
    ]
    in_job = statistics.median(paired)
    lines += [
        "",
        f"- 2-rank step / 1-rank step (same global batch), the 1-rank step in its own job: "
        f"{kernel2 / kernel1:.2f} (target <= 0.6: "
        f"{'met' if kernel2 <= 0.6 * kernel1 else 'NOT met'})",
        f"- the same, the 1-rank step in the 2-rank job (rank 1 asleep), block by block: median "
        f"{in_job:.2f} ({min(paired):.2f}-{max(paired):.2f} over {len(paired)} blocks; target "
        f"<= 0.6: {'met' if in_job <= 0.6 else 'NOT met'})",
        f"- the same with the products on OpenBLAS (no AMX tiles), each in its own job: "
        f"{by[('kernel_blas', 2)]['median'] / by[('kernel_blas', 1)]['median']:.2f}",
        f"- in-kernel allreduce step / hand-written mpi4py step, 2 ranks: {kernel2 / hand2:.2f} "
        f"(target <= 1: {'met' if kernel2 <= hand2 else 'NOT met'})",
        f"- the exchange's net share of the 2-rank step ((kernel - compute) / kernel): {share:.0%}",
        f"- sharded update / MPI_Allreduce in the kernel, 2 ranks: {kernel2 / mpi2:.2f}",
        f"- the step without any exchange, 2 ranks / 1 rank: {compute2 / kernel1:.2f} (the "
        "best any exchange could give)",
        f"- mpi4py's allreduce alone in the 2-rank job: {alone * 1e3:.3f} ms per step: how fast "
        "the two cores exchanged cache lines during this run (on the 2-vCPU VM of "
        "perf/results/issue16.md, 0.12-0.13 ms in some periods and 0.45-0.50 ms in others, "
        "whatever runs: perf/mpi_allreduce_series.py)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help="(one rank of the MPI job)")
    parser.add_argument("--blocks", type=int, default=BLOCKS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--per-step", action="store_true", help="each step's time in a block")
    args = parser.parse_args()
    if args.worker:
        worker(args.blocks, args.per_step)
        return
    records = measure(args.quick, per_step=args.per_step)
    print("\n".join(table(records)))


if __name__ == "__main__":
    main()
