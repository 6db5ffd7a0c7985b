"""Tiered execution: a new signature is served at once by the numpy fallback while its kernel
compiles elsewhere; the kernel takes over when it is ready.

A version (`function.Compiled`) goes through the states

    "fallback"  -> "compiling" -> "compiled"
                               -> "failed"

Calls run on the fallback (compiler/fallback.py) until the state is "compiled": then
`compiled.run` is the kernel's caller. The switch is one attribute assignment, so a call that
started on the fallback finishes there and the next one takes the kernel; no call waits.

Where the kernel compiles (`config.compile_worker`):
- "process" (the default): a compile worker process (backend/numba/worker.py) writes the
  machine code into the on-disk cache; this process then loads it. The caller keeps its
  core and its GIL; the worker outlives a short script long enough to finish the cache entry.
- "thread": a thread of this process compiles, sharing the GIL with the caller. Also the
  fallback when the worker cannot be used (no disk cache) or when it fails or is killed (then
  with one warning).
Loading and in-process compiles run on one daemon thread ("jitgrad-compile"), in order; the
tape's jobs there give way to the user's threads (compiler/courtesy.py, `start`).
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import warnings

from jitgrad.compiler.courtesy import run_courteously
from jitgrad.core.config import config

_pending: set = set()  # versions not yet compiled or failed (for wait_for_compiles)
_pending_changed = threading.Condition()
_jobs: queue.Queue = queue.Queue()  # work for the "jitgrad-compile" thread
_thread: threading.Thread | None = None
_worker = None  # the CompileWorker, started on the first background compile
_worker_lock = threading.Lock()


def prepare() -> None:
    """Start the compile worker now, off the caller's thread (a jitted function is being
    created: its first call will want the worker, which takes a moment to import Numba)."""
    if _worker is None and config.compile_worker == "process":
        _enqueue(lambda _compiled, _unused: _compile_worker(), None, None)


def start(compiled, on_done=None, seconds=None, courteous: bool = False) -> None:
    """Lower (if it is not yet) and compile `compiled`'s kernel in the background;
    `on_done(compiled, seconds)` runs when it serves (or failed). `seconds` (a JitFunction's
    counters) gets the lowering time.

    `courteous`: this process's part of the work (lowering, loading) gives the GIL away to a
    busy user thread (compiler/courtesy.py). For the tape's backward, whose op-by-op path is
    the user's normal speed: its steps must not slow down. Not for a jitted function, whose
    calls meanwhile run on the slower numpy fallback: its kernel should arrive first."""
    compiled.state = "fallback"
    compiled.courteous = courteous
    compiled.started = time.perf_counter()
    compiled.on_done = on_done
    with _pending_changed:
        _pending.add(compiled)
    _enqueue(_lower_and_submit, compiled, seconds, before_exit=True)


def _lower_and_submit(compiled, seconds) -> None:
    """On the compile thread: optimise and emit, then hand the kernel to the worker (or
    compile or load it here)."""
    try:
        compiled.lower(seconds)
    except Exception as exc:  # a jitgrad bug in a pass or the emitter
        _failed(compiled, exc)
        return
    worker = _compile_worker()
    if worker is None or _on_disk(compiled):
        _compile_here(compiled, None)
        return
    from jitgrad.backend.numba.signature import signature_spec

    def started() -> None:
        if compiled.state == "fallback":
            compiled.state = "compiling"

    future = worker.submit(
        compiled.name,
        compiled.kernel_source.source,
        signature_spec(compiled.kernel_source, compiled.graph),
        config.cache_dir,
        on_start=started,
    )
    future.add_done_callback(lambda f: _enqueue(_load_from_worker, compiled, f))
    # This process loads the worker's machine code: prepare Numba meanwhile.
    from jitgrad.backend.numba.compile import prepare_loading

    prepare_loading()


def run(build) -> None:
    """Run `build()` on the compile thread, courteously (e.g. the tape building a graph that
    will then `start` its compile there); `wait_for_compiles` waits for it too."""
    token = _Job(build)
    with _pending_changed:
        _pending.add(token)
    _enqueue(_run_build, token, None, before_exit=True)


class _Job:
    """A `run` job, pending like a version until it is done; courteous (see `start`)."""

    def __init__(self, build):
        self.build = build
        self.state = "fallback"
        self.on_done = None
        self.courteous = True


def _run_build(job, _unused) -> None:
    try:
        job.build()
    except Exception as exc:  # a jitgrad bug: the caller keeps its slower path
        warnings.warn(
            f"jitgrad: preparing a background compile failed ({exc!r}); the computation "
            "keeps running without a kernel",
            RuntimeWarning,
            stacklevel=2,
        )
    finally:
        _finish(job)


def wait(versions, timeout: float | None = None) -> bool:
    """Block until each of `versions` is compiled or failed; False if `timeout` ran out."""
    return _wait_until(lambda: not any(v in _pending for v in versions), timeout)


def wait_for_compiles(timeout: float | None = None) -> bool:
    """Block until every background compile of this process has finished (compiled or
    failed), including those that finishing ones start; False if `timeout` (seconds) ran out
    first."""
    return _wait_until(lambda: not _pending, timeout)


def _wait_until(done, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    with _pending_changed:
        while not done():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            _pending_changed.wait(remaining)
    return True


def _compile_worker():
    """The compile worker process, started once; None when kernels must compile in this
    process (thread mode, no usable disk cache, or a worker that cannot start)."""
    global _worker
    if config.compile_worker != "process" or config.disable_cache:
        return None
    from jitgrad.backend.numba import cache

    try:
        cache.cache_root()
    except cache.CacheUnavailableError:
        return None
    with _worker_lock:
        if _worker is None or not _worker.alive():
            from jitgrad.backend.numba.worker import CompileWorker

            try:
                _worker = CompileWorker(config.compile_exit_budget)
            except OSError as exc:
                warnings.warn(
                    f"jitgrad: cannot start the compile worker ({exc}); compiling in threads",
                    RuntimeWarning,
                    stacklevel=4,
                )
                config.compile_worker = "thread"
                return None
        return _worker


def _on_disk(compiled) -> bool:
    """Whether the disk cache already holds the kernel's machine code: loading it here is
    quicker than asking the worker (which would load it too)."""
    from jitgrad.backend.numba import cache

    try:
        path = cache.write_module(
            compiled.kernel_source.source, cache.source_key(compiled.kernel_source.source)
        )
    except cache.CacheUnavailableError:
        return False
    return cache.has_disk_index(path)


def _enqueue(job, compiled, argument, before_exit: bool = False) -> None:
    """Queue `job(compiled, argument)` for the compile thread. A job `before_exit` (lowering
    and handing a kernel to the worker, compiling without one) is waited for when the
    program exits, so that its kernel still reaches the disk cache (`_exit_waits`)."""
    global _thread
    if before_exit:
        with _before_exit_changed:
            _before_exit[0] += 1
    _jobs.put((job, compiled, argument, before_exit))
    with _worker_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run_jobs, name="jitgrad-compile", daemon=True)
            _thread.start()


def _run_jobs() -> None:
    while True:
        item = _jobs.get()
        if item is None:  # the program is exiting (_exit_waits)
            return
        job, compiled, argument, before_exit = item
        try:
            if getattr(compiled, "courteous", False):
                run_courteously(job, compiled, argument)
            else:
                job(compiled, argument)
        except Exception as exc:  # e.g. a warning turned into an error: never leave it pending
            if compiled is None:
                continue
            if compiled.state != "compiled":
                compiled.state, compiled.failure = "failed", exc
            _finish(compiled)
        finally:
            if before_exit:
                with _before_exit_changed:
                    _before_exit[0] -= 1
                    _before_exit_changed.notify_all()


_before_exit = [0]  # queued or running `before_exit` jobs
_before_exit_changed = threading.Condition()


@atexit.register
def _exit_waits() -> None:
    """At exit, finish the jobs whose kernel would otherwise never reach the disk cache,
    within `config.compile_exit_budget` seconds; what the worker has been given, it finishes
    after this process is gone (worker.py)."""
    deadline = time.monotonic() + config.compile_exit_budget
    with _before_exit_changed:
        while _before_exit[0] and time.monotonic() < deadline:
            _before_exit_changed.wait(deadline - time.monotonic())
    # Then end the compile thread: it may have loaded parallel kernels, which registers it
    # with Numba's TBB thread pool, and TBB's unloading at interpreter exit waits for the
    # threads registered with it: a daemon thread still parked on the queue hangs the exit.
    _jobs.put(None)
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(max(0.0, deadline - time.monotonic()))


def _load_from_worker(compiled, future) -> None:
    """The worker answered: load its machine code from the cache. If it failed or died,
    compile here instead, with one warning."""
    try:
        reply = future.result()
        failure = None if reply.get("ok") else reply.get("error", "unknown error")
    except Exception as exc:  # WorkerDiedError
        failure = str(exc)
    if failure is not None:
        warnings.warn(
            f"jitgrad: the background compile of {compiled.name} failed "
            f"({failure.splitlines()[0]}); compiling it in this process",
            RuntimeWarning,
            stacklevel=2,
        )
    _compile_here(compiled, None)


def _compile_here(compiled, _unused) -> None:
    """Load (or compile) the kernel in this process and make it serve."""
    compiled.state = "compiling"
    try:
        compiled.load_and_compile()
        compiled.serve_kernel()
    except Exception as exc:
        _failed(compiled, exc)
        return
    _finish(compiled)


def _failed(compiled, exc: Exception) -> None:
    compiled.state = "failed"
    compiled.failure = exc
    try:
        warnings.warn(
            f"jitgrad: compiling {compiled.name} failed ({exc}); its calls keep running on "
            "the numpy fallback",
            RuntimeWarning,
            stacklevel=2,
        )
    finally:
        _finish(compiled)


def _finish(compiled) -> None:
    on_done, compiled.on_done = compiled.on_done, None  # once, even if it raises
    try:
        if on_done is not None:
            on_done(compiled, time.perf_counter() - compiled.started)
    finally:
        with _pending_changed:
            _pending.discard(compiled)
            _pending_changed.notify_all()
