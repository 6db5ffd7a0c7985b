"""Where a compiled kernel's time goes, statement by statement: a copy of its generated source
with the CPU's cycle counter read between its top-level statements (each op's comment starts
one; a sharded step's exchange points and copies get one each), run on the very arguments the
kernel received from a real call.

Why: `perf` cannot name the frames of Numba's machine code, and a kernel's products, fused
loops, exchange points and copies all run in one function. Session 22 found this way that a
2-rank sharded step's five exchange points took 45-68 us of its 1.1 ms (perf/gaps.md).

The counter adds ~20 cycles per statement, and the copy is compiled without the disk cache;
compare sections within one run, not with other tools' totals.

Run: python perf/kernel_sections.py W3        (jit_grad of W3's MLP, batch 128)
     python perf/kernel_sections.py W7        (W3 with Adam, one train step)
     python -m jitgrad.distributed.run -n 2 perf/kernel_sections.py W11
                                              (W11's sharded step, batch 256 over the ranks)
Set NUMBA_NUM_THREADS / OPENBLAS_NUM_THREADS to choose the threads (W11 uses 1 per rank).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# A top-level statement of a generated kernel that starts a section of its own.
_SECTION_CALLS = ("    exchange_point(", "    copy_flat(")


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (rdtsc on x86)."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=fnty)
        return builder.call(fn, [])

    return types.uint64(), codegen


def instrument(source: str) -> tuple[str, list[str]]:
    """`source` with `kernel(...)` taking a first argument `_T` (int64, one slot per section)
    that each section adds its cycles to; and the sections' labels."""
    head, body = source.split("\ndef kernel(", 1)
    signature, rest = body.split("\n", 1)
    lines, labels, label = [], [], None
    for line in rest.split("\n"):
        is_comment = line.startswith("    # ") and not line.startswith(("    # legend", "    #   "))
        if is_comment or line.startswith(_SECTION_CALLS):
            if label is not None:
                lines.append(f"    _T[{len(labels)}] += cycles() - _t")
                lines.append("    _t = cycles()")
                labels.append(label)
            label = line.strip().lstrip("# ")[:70]
        if line.startswith("    return"):
            lines.append(f"    _T[{len(labels)}] += cycles() - _t")
            labels.append(label or "(start)")
        lines.append(line)
    head = head.replace("import math\n", f"import math\nfrom {__name__} import cycles\n", 1)
    head = head.replace("cache=True, ", "")
    new = f"{head}\ndef kernel(_T, {signature}\n    _t = cycles()\n" + "\n".join(lines)
    return new.replace("no_cpython_wrapper=True, ", ""), labels


def received_arguments(fn, args) -> tuple[object, tuple]:
    """(the compiled version that `fn` runs for `args`, the arguments its kernel receives):
    one call of `fn`, every version's kernel wrapped to note them. The caller must not call
    `fn` again while it holds them: its buffer pool would allocate new buffers for a call
    whose old ones are still held."""
    sharded = getattr(fn, "_sharded", None)  # a sharded train step runs a kernel of its own
    versions = list((sharded.kernel if sharded else fn)._versions.values())
    seen = {}
    patched = []
    for compiled in versions:
        for entry in compiled.entries.values():
            real = entry.__globals__["kernel"]

            def noting(*a, compiled=compiled, real=real):
                seen["version"], seen["args"] = compiled, a
                return real(*a)

            entry.__globals__["kernel"] = noting
            patched.append((entry.__globals__, real))
    try:
        fn(*args)
    finally:
        for namespace, real in patched:
            namespace["kernel"] = real
    if "args" not in seen:
        raise RuntimeError(f"{fn.name}: the call did not go through a compiled fast entry")
    return seen["version"], seen["args"]


def sections(fn, args, calls: int = 2000, barrier=None) -> tuple[float, list]:
    """(ms per call, [(label, ms)]) of the instrumented kernel of `fn` for `args`, over `calls`
    calls; `barrier()` (several ranks) lines them up before timing."""
    fn(*args)  # compiled, loaded
    compiled, received = received_arguments(fn, args)
    source, labels = instrument(compiled.kernel_source.source)
    directory = tempfile.mkdtemp(prefix="jitgrad-sections-")
    path = os.path.join(directory, "kernel_sections_copy.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("kernel_sections_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    totals = np.zeros(len(labels), np.int64)
    module.kernel(totals, *received)  # compiles
    totals[:] = 0
    if barrier is not None:
        barrier()
    start = time.perf_counter()
    for _ in range(calls):
        module.kernel(totals, *received)
    seconds = time.perf_counter() - start
    # The sections cover the kernel's body: their cycles, against the wall time, give the
    # cycles' length (the call's own overhead is spread over them).
    per_cycle_ms = seconds / int(totals.sum()) * 1e3
    return seconds / calls * 1e3, [(lb, c * per_cycle_ms / calls) for lb, c in zip(labels, totals)]


def _workload(name: str):
    """(fn, args, barrier) for workload `name`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jitgrad as jg
    import w3_mlp

    jg.config.compile = "blocking"
    data = w3_mlp.data()
    if name == "W3":
        return jg.jit_grad(w3_mlp.loss_jitgrad, wrt=0), (data.params, data.X, data.y), None
    params = {k: v.copy() for k, v in data.params.items()}
    optimizer = jg.optim.Adam(1e-3)
    state = optimizer.init(params)
    if name == "W7":
        step = jg.jit_train_step(w3_mlp.loss_jitgrad, optimizer)
        return step, (params, state, data.X, data.y), None
    import jitgrad.distributed as dist

    dist.init()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256).astype(np.int32)
    step = jg.jit_train_step(w3_mlp.loss_jitgrad, optimizer, distributed=True)
    return step, (params, state, *dist.shard(x, y)), dist.barrier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=("W3", "W7", "W11"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--min-ms", type=float, default=0.002, help="hide shorter sections")
    args = parser.parse_args()
    fn, fn_args, barrier = _workload(args.workload)
    total, parts = sections(fn, fn_args, args.calls, barrier)
    rank = ""
    if barrier is not None:
        import jitgrad.distributed as dist

        rank = f"rank {dist.rank()}: "
    lines = [f"{rank}{total:.4f} ms per call of the instrumented kernel"]
    lines += [f"{rank}{ms:9.4f} ms  {label}" for label, ms in parts if ms >= args.min_ms]
    if barrier is None:
        print("\n".join(lines))
        return
    import jitgrad.distributed as dist

    for r in range(dist.size()):  # one rank at a time
        barrier()
        if r == dist.rank():
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
