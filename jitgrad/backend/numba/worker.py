"""The compile worker: a separate process that compiles kernels into the on-disk cache.

Tiered execution (compiler/background.py) serves a new signature on a numpy fallback while its
kernel compiles. Compiling in another process, not a thread, keeps the caller at full speed:
Numba's type inference and lowering are Python code that would hold the caller's GIL for
seconds, and a machine with two cores has one to spare. The parent then loads the machine
code from the cache, which takes milliseconds.

Protocol: one JSON object per line. The parent writes `{"id", "name", "source", "signature",
"cache_dir"}` (`signature`: backend/numba/signature.signature_spec); the worker answers
`{"id", "started": true}` when it begins that request and `{"id", "ok", "seconds", "error"}`
when it is done. One worker serves a parent's requests in order.

In its idle time the worker compiles jitgrad's own helpers (precompile.py), once per
installation. When the parent exits (its end of stdin closes), the worker still compiles what
it has been asked for, so that the next run of a short script finds its kernels in the
cache; it exits when done, and in any case `exit_budget` seconds after the parent left.
Two processes that compile the same kernel share the work through `cache.entry_lock`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
import types
from concurrent.futures import Future

from jitgrad.backend.numba.precompile import helper_signatures, helpers_ready, mark_helpers_ready
from jitgrad.core.config import config

# Seconds a new worker waits for its first request before it warms helpers.
FIRST_REQUEST_GRACE = 2.0


class WorkerDiedError(RuntimeError):
    """The worker process ended (killed, crashed) before answering a request."""


class CompileWorker:
    """The parent's handle on one worker process: `submit` returns a Future of the reply."""

    def __init__(self, exit_budget: float):
        # The worker must import this very jitgrad (and nothing from the working directory,
        # which `python -m` or `-c` would put first on sys.path): the first path entry is
        # replaced by the directory this jitgrad was imported from. And only the backend it
        # needs: the package `jitgrad` is registered without running its __init__ (the whole
        # library, 0.25 s of the worker's start, while the caller waits for its first
        # kernel). The backend imports only itself, core, ir and passes (tests/test_layering.py).
        package = os.path.abspath(__file__)
        for _ in range(3):  # .../jitgrad/backend/numba/worker.py -> .../jitgrad
            package = os.path.dirname(package)
        start = (
            f"import sys, types; sys.path[0] = {os.path.dirname(package)!r}; "
            f"jitgrad = sys.modules['jitgrad'] = types.ModuleType('jitgrad'); "
            f"jitgrad.__path__ = [{package!r}]; "
            f"from {__name__} import main; main({float(exit_budget)!r})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", start],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the parent must not kill a worker that is
            # finishing a cache entry (it exits by itself, see the module docstring).
            start_new_session=True,
        )
        self._pending: dict[int, tuple[Future, object]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._dead = False
        threading.Thread(
            target=self._read_replies, name="jitgrad-worker-replies", daemon=True
        ).start()

    def submit(self, name: str, source: str, signature: list, cache_dir: str, on_start=None):
        """Ask for a kernel; `on_start()` runs (on a reply thread) when the worker begins it."""
        future: Future = Future()
        with self._lock:
            if self._dead:
                future.set_exception(WorkerDiedError("the compile worker has exited"))
                return future
            request_id = self._next_id
            self._next_id += 1
            self._pending[request_id] = (future, on_start)
            line = json.dumps(
                {
                    "id": request_id,
                    "name": name,
                    "source": source,
                    "signature": signature,
                    "cache_dir": cache_dir,
                }
            )
            try:
                self.process.stdin.write(line.encode() + b"\n")
                self.process.stdin.flush()
            except (OSError, ValueError):
                self._pending.pop(request_id)
                future.set_exception(WorkerDiedError("the compile worker is gone"))
        return future

    def alive(self) -> bool:
        return not self._dead and self.process.poll() is None

    def _read_replies(self) -> None:
        for line in self.process.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            if not isinstance(reply, dict) or "id" not in reply:
                continue
            with self._lock:
                future, on_start = self._pending.get(reply["id"], (None, None))
                if future is not None and "started" not in reply:
                    del self._pending[reply["id"]]
            if future is None:
                continue
            if "started" in reply:
                if on_start is not None:
                    on_start()
            else:
                future.set_result(reply)
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, {}
        code = self.process.wait()
        for future, _ in pending.values():
            future.set_exception(WorkerDiedError(f"the compile worker exited with status {code}"))


# -- the worker process --------------------------------------------------------------------


def _compile(request: dict) -> dict:
    """Compile one kernel into the cache (or find it there, compiled by another process)."""
    from jitgrad.backend.numba.compile import KernelCache, disk_cache_lock, load_kernel
    from jitgrad.backend.numba.signature import numba_signature
    from jitgrad.core.config import config

    start = time.perf_counter()
    try:
        config.cache_dir = request["cache_dir"]
        kernel, path = load_kernel(request["source"], request["name"])
        if not isinstance(kernel._cache, KernelCache):
            raise RuntimeError(f"the kernel cache {config.cache_dir} is not usable")
        with disk_cache_lock(kernel, path):
            kernel.compile(numba_signature(request["signature"]))
        return {"id": request["id"], "ok": True, "seconds": time.perf_counter() - start}
    except Exception as exc:
        return {
            "id": request["id"],
            "ok": False,
            "seconds": time.perf_counter() - start,
            "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}",
        }


def main(exit_budget: float) -> None:
    _take_only_idle_time()
    _import_blas_bindings()
    requests: queue.Queue = queue.Queue()

    def read_requests() -> None:
        for line in sys.stdin.buffer:
            requests.put(json.loads(line))
        requests.put(None)  # the parent has exited: finish the queue, then stop
        # ... within the budget, whatever happens.
        deadline = threading.Timer(exit_budget, os._exit, (3,))
        deadline.daemon = True
        deadline.start()

    threading.Thread(target=read_requests, daemon=True).start()
    out = sys.stdout
    helpers = _warm_helpers() if config.warm_helpers and not helpers_ready() else None
    # The parent starts the worker when a function is jitted, and its first kernel usually
    # follows within a second: a helper compile begun meanwhile would delay that kernel
    # (W4, cold: 0.27 s), so the warm-up waits for it.
    warm_after = time.monotonic() + FIRST_REQUEST_GRACE
    while True:
        if helpers is None:
            request = requests.get()
        else:
            try:
                request = requests.get(timeout=max(0.0, warm_after - time.monotonic()))
            except queue.Empty:  # idle: compile one more of jitgrad's own helpers
                helpers = helpers if next(helpers, None) is not None else None
                continue
        if request is None:  # the parent has exited: finish the warm-up (within the budget)
            for _ in helpers or ():
                pass
            return
        _reply(out, {"id": request["id"], "started": True})
        _reply(out, _compile(request))


def _take_only_idle_time() -> None:
    """Run only when a core would otherwise idle (Linux's SCHED_IDLE; elsewhere, the lowest
    priority). On a machine with few cores the program being served comes first: numpy's
    BLAS threads wait for each other, and one of them preempted by the worker makes a
    matrix product 30x slower (measured: W3's fallback call 1 ms alone, ~30 ms beside a
    worker at normal priority, ~1.5 ms beside an idle-class one)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _import_blas_bindings() -> None:
    """Import scipy's BLAS and LAPACK bindings (scipy.linalg.cython_blas and cython_lapack,
    whose function pointers Numba's BLAS and LAPACK wrappers call) without running
    scipy.linalg's `__init__`. Numba's first compile imports them through `scipy.linalg`,
    which imports half of scipy (0.2-0.3 s of a cold worker's first kernel, which the caller
    waits for); the bindings themselves are self-contained extension modules. The package
    stands in only while they load: a later `import scipy.linalg` runs the real one."""
    try:
        import scipy
    except ImportError:
        return  # Numba reports it, if a kernel needs BLAS
    if "scipy.linalg" in sys.modules:
        return
    package = types.ModuleType("scipy.linalg")
    package.__path__ = [os.path.join(os.path.dirname(scipy.__file__), "linalg")]
    sys.modules["scipy.linalg"] = package
    try:
        import scipy.linalg.cython_blas  # noqa: F401
        import scipy.linalg.cython_lapack  # noqa: F401
    except ImportError:
        pass  # Numba imports them its own way and reports what fails
    finally:
        del sys.modules["scipy.linalg"]
        if vars(scipy).get("linalg") is package:  # not getattr: scipy imports it lazily
            del scipy.linalg


def _warm_helpers():
    """Compile jitgrad's own helpers into Numba's cache (precompile.py), one signature per
    step, so that later kernels of this installation do not wait for them; stops at the
    first failure (a helper the next kernel would compile anyway)."""
    try:
        for dispatcher, signature in helper_signatures():
            dispatcher.compile(signature)
            yield dispatcher
    except Exception:
        return
    mark_helpers_ready()


def _reply(out, message: dict) -> None:
    try:
        out.write(json.dumps(message) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass  # the parent is gone; the cache entry is what matters
