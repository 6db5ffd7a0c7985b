"""Runtime settings (`jitgrad.config`), initialised from environment variables.

* `log_compiles` (JITGRAD_LOG=compile): log every trace and compile with its timings.
* `debug_nans` (JITGRAD_DEBUG_NANS=1): raise at the first op that produces a NaN.
* `cache_dir` (JITGRAD_CACHE_DIR, default ~/.cache/jitgrad, also when empty), `disable_cache`
  (JITGRAD_DISABLE_CACHE=1): the on-disk kernel cache. jitgrad uses the directory only if it
  belongs to the current user and nobody else can write to it (it imports code from there).
* `num_threads` (NUMBA_NUM_THREADS by default): threads for parallel loops.
* `shard_batch` (JITGRAD_SHARD_BATCH=0 turns it off): a kernel whose work is per-example
  convolutions and pooling runs its batch as one shard per thread, at once (passes/shard.py);
  the shard count is fixed when the kernel compiles (`num_threads`, else the usable cores).
* `max_versions_per_function`: compiled versions a jitted function keeps (LRU).
* `compile` (JITGRAD_COMPILE): "background" (the default: a new signature runs at once on a
  numpy fallback while its kernel compiles elsewhere, then the kernel takes over) or
  "blocking" (the first call compiles; results are then bitwise the kernel's from the start).
  `compile_worker` (JITGRAD_COMPILE_WORKER): where background compiles run, "process" (a
  compile worker process writing into the disk cache) or "thread"; `compile_exit_budget`:
  seconds a worker may go on after the program exits, to finish its cache entries;
  `warm_helpers` (JITGRAD_WARM_HELPERS=0 turns it off): on a new installation the worker
  starts a process that compiles jitgrad's own helpers into Numba's cache, once per
  installation, at idle priority, going on after the program exits (within the budget); off
  where an image was prepared with `python -m jitgrad.backend.numba.precompile`, or for
  short-lived jobs that should leave no process behind.
* `amx` (JITGRAD_AMX=0 turns it off): kernels' large float32 matrix products run on Intel's
  AMX tiles where the CPU has them (backend/numba/amx.py: each float32 as three exact
  bfloat16 parts; errors of float32's order, not BLAS's bits); off, they all go to BLAS.
  Read when a kernel is emitted.
* `sharded_update` (JITGRAD_SHARDED_UPDATE=0 turns it off): a distributed train step whose
  ranks all run on one machine has each rank update a share of every parameter's rows, with
  the optimizer state in memory the ranks share (compiler/sharded_step.py); off, every rank
  updates everything after an MPI_Allreduce. Read at a distributed step's first call.
* `compile_tape_backward` (JITGRAD_TAPE_COMPILE=0 turns it off) and `tape_compile_after`:
  the eager tape compiles the backward pass of a graph structure it has recorded this many
  times (2: the first backward runs eagerly, the second compiles).
"""

from __future__ import annotations

import os

_CHOICES = {"compile": ("background", "blocking"), "compile_worker": ("process", "thread")}


class Config:
    def __setattr__(self, name, value):
        choices = _CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"jitgrad.config.{name} must be one of {choices}, got {value!r}")
        super().__setattr__(name, value)

    def __init__(self):
        self.log_compiles = "compile" in os.environ.get("JITGRAD_LOG", "").split(",")
        self.debug_nans = os.environ.get("JITGRAD_DEBUG_NANS", "") not in ("", "0")
        # An empty JITGRAD_CACHE_DIR means unset: as a path it would be the working directory.
        self.cache_dir = os.environ.get("JITGRAD_CACHE_DIR") or os.path.join(
            os.path.expanduser("~"), ".cache", "jitgrad"
        )
        self.disable_cache = os.environ.get("JITGRAD_DISABLE_CACHE", "") not in ("", "0")
        self.num_threads = (
            int(os.environ["NUMBA_NUM_THREADS"]) if os.environ.get("NUMBA_NUM_THREADS") else None
        )
        self.shard_batch = os.environ.get("JITGRAD_SHARD_BATCH", "1") != "0"
        self.max_versions_per_function = 64
        self.compile = os.environ.get("JITGRAD_COMPILE") or "background"
        self.compile_worker = os.environ.get("JITGRAD_COMPILE_WORKER") or "process"
        self.compile_exit_budget = 300.0
        self.warm_helpers = os.environ.get("JITGRAD_WARM_HELPERS", "1") != "0"
        self.amx = os.environ.get("JITGRAD_AMX", "1") != "0"
        self.sharded_update = os.environ.get("JITGRAD_SHARDED_UPDATE", "1") != "0"
        self.compile_tape_backward = os.environ.get("JITGRAD_TAPE_COMPILE", "1") != "0"
        self.tape_compile_after = 2
        self.retrace_warning_after = 8

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"jitgrad.config({items})"


config = Config()


def usable_threads() -> int:
    """The threads a kernel's parallel loops get: `config.num_threads`, else the cores this
    process may run on (Numba's default), found without importing Numba."""
    if config.num_threads:
        return config.num_threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
