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

Beside it, a helper warmer (warmer.py) compiles jitgrad's own helpers into Numba's cache, once
per installation: first those the worker's kernel calls, else while the worker is idle. When
the parent exits (its end of stdin closes), the worker still compiles what it has been asked
for, so that the next run of a short script finds its kernels in the cache; it exits when
done, and in any case `exit_budget` seconds after the parent left (the warmer too).
Two processes that compile the same kernel share the work through `cache.entry_lock`.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from concurrent.futures import Future

from jitgrad.backend.numba import subprocesses
from jitgrad.core.config import config

# Seconds without a request after which the worker counts as idle: the helper warmer may then
# use a core for the installation's warm-up. A program's first kernel usually follows its
# first jitted function within a second; a warm-up compile begun meanwhile would compete with
# it for the core (W4, cold: 0.27 s later).
IDLE_GRACE = 2.0


class WorkerDiedError(RuntimeError):
    """The worker process ended (killed, crashed) before answering a request."""


class CompileWorker:
    """The parent's handle on one worker process: `submit` returns a Future of the reply."""

    def __init__(self, exit_budget: float):
        self.process = subprocesses.start(
            f"{__name__}:main", float(exit_budget), new_session=True, replies=True
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
    from jitgrad.backend.numba.warmer import HelperWarmer

    subprocesses.take_only_idle_time()
    warmer = HelperWarmer(exit_budget) if config.warm_helpers else None
    subprocesses.import_blas_bindings()
    requests: queue.Queue = queue.Queue()

    def read_requests() -> None:
        for line in sys.stdin.buffer:
            requests.put(json.loads(line))
        requests.put(None)  # the parent has exited: finish the queue, then stop
        # ... within the budget, whatever happens.
        if warmer is not None:
            warmer.tell(deadline=time.monotonic() + exit_budget)
        deadline = threading.Timer(exit_budget, os._exit, (3,))
        deadline.daemon = True
        deadline.start()

    threading.Thread(target=read_requests, daemon=True).start()
    out = sys.stdout
    while True:
        try:
            request = requests.get(timeout=IDLE_GRACE)
        except queue.Empty:
            if warmer is not None:
                warmer.tell(idle=True)
            request = requests.get()
        if request is None:
            return
        if warmer is not None:
            _tell_warmer(warmer, request)
        _reply(out, {"id": request["id"], "started": True})
        _reply(out, _compile(request))


def _tell_warmer(warmer, request: dict) -> None:
    """Tell the helper warmer which helpers the kernel of `request` calls."""
    from jitgrad.backend.numba.warmer import kernel_helpers

    try:
        helpers = kernel_helpers(request["source"])
        dtypes = [entry[1] for entry in request["signature"]]
    except (KeyError, IndexError, TypeError):
        return  # a malformed request, which _compile answers with its error
    warmer.tell(idle=False, helpers=helpers, dtypes=dtypes)


def _reply(out, message: dict) -> None:
    try:
        out.write(json.dumps(message) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass  # the parent is gone; the cache entry is what matters
