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

On a new installation the worker starts a warmer process that compiles jitgrad's own helpers
(precompile.py) into Numba's cache, once per installation, while the worker compiles the
first kernels without waiting for them (_start_warmer). When the parent exits (its end of
stdin closes), the worker still compiles what it has been asked for, so that the next run of
a short script finds its kernels in the cache; it exits when done, and in any case
`exit_budget` seconds after the parent left (the warmer, `exit_budget` after it started).
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
import warnings
from concurrent.futures import Future

from jitgrad.backend.numba.precompile import (
    compile_shared,
    helper_signatures,
    helpers_ready,
    mark_helpers_ready,
    warming_lock,
)
from jitgrad.core.config import config

# Seconds a new worker waits for its first request before it starts the warmer without it.
FIRST_REQUEST_GRACE = 2.0


def _python_running(call: str) -> list[str]:
    """The command line of a new interpreter that runs `call` (a function of this module).

    It must import this very jitgrad (and nothing from the working directory, which `python
    -m` or `-c` would put first on sys.path): the first path entry is replaced by the
    directory this jitgrad was imported from. And only the backend it needs: the package
    `jitgrad` is registered without running its __init__ (the whole library, 0.25 s of the
    worker's start, while the caller waits for its first kernel). The backend imports only
    itself, core, ir and passes (tests/test_layering.py)."""
    package = os.path.abspath(__file__)
    for _ in range(3):  # .../jitgrad/backend/numba/worker.py -> .../jitgrad
        package = os.path.dirname(package)
    start = (
        f"import sys, types; sys.path[0] = {os.path.dirname(package)!r}; "
        f"jitgrad = sys.modules['jitgrad'] = types.ModuleType('jitgrad'); "
        f"jitgrad.__path__ = [{package!r}]; "
        f"from {__name__} import {call.split('(')[0]}; {call}"
    )
    return [sys.executable, "-c", start]


class WorkerDiedError(RuntimeError):
    """The worker process ended (killed, crashed) before answering a request."""


class CompileWorker:
    """The parent's handle on one worker process: `submit` returns a Future of the reply."""

    def __init__(self, exit_budget: float):
        _warmed_here.append(None)  # the worker starts the warmer itself (main): not this process
        self.process = subprocess.Popen(
            _python_running(f"main({float(exit_budget)!r})"),
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
    from jitgrad.backend.numba import symbols
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
        symbols.compile_deferred_helpers()  # the caller binds them from the cache at load
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
    # The parent starts the worker when a function is jitted; its first kernel usually
    # follows at once. Read it here, before any thread starts, so that a warmer forked for a
    # new installation compiles that kernel's helpers first.
    first = _first_request(FIRST_REQUEST_GRACE)
    if config.warm_helpers and not helpers_ready():
        _prepare_compiling()  # once, before the fork: the warmer inherits it
        _warmers.append(_start_warmer(first if isinstance(first, dict) else None, exit_budget))
        from jitgrad.backend.numba import symbols

        symbols.defer_uncompiled_helpers()
    requests: queue.Queue = queue.Queue()
    if first is not None:
        requests.put(first)

    def read_requests() -> None:
        if first is not _PARENT_GONE:
            for line in sys.stdin.buffer:
                requests.put(json.loads(line))
        requests.put(None)  # the parent has exited: finish the queue, then stop
        # ... within the budget, whatever happens.
        deadline = threading.Timer(exit_budget, os._exit, (3,))
        deadline.daemon = True
        deadline.start()

    threading.Thread(target=read_requests, daemon=True).start()
    out = sys.stdout
    while True:
        request = requests.get()
        if request is None or request is _PARENT_GONE:
            return
        _reply(out, {"id": request["id"], "started": True})
        _reply(out, _compile(request))


# The warmer this worker started (kept: a Popen dropped while it runs warns); never waited for.
_warmers: list = []

# What _first_request returns when the parent closed the pipe before asking for anything.
_PARENT_GONE = object()


def _first_request(grace: float):
    """The parent's first request, or None if none came within `grace` seconds (then the
    reader thread takes it), or _PARENT_GONE."""
    import select

    try:
        readable, _, _ = select.select([sys.stdin.buffer], [], [], grace)
    except (OSError, ValueError):
        return None
    if not readable:
        return None
    line = sys.stdin.buffer.readline()
    return json.loads(line) if line else _PARENT_GONE


def _prepare_compiling() -> None:
    """Numba's one-time set-up of a process's first compile (its typing and lowering
    registries, 0.15-0.2 s)."""
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def _start_warmer(first: dict | None, exit_budget: float):
    """Start the process that compiles jitgrad's own helpers into Numba's cache, once per
    installation (precompile.py): first the ones `first` (the first kernel request) calls,
    then all the others.

    A process of its own, so that a new installation's first kernel does not wait for them:
    the kernel compiles here meanwhile, binding the helpers called through a symbol to a
    placeholder (symbols.defer_uncompiled_helpers; its machine code holds only their names)
    and loading the inlined ones (vmath, sum_step) from the cache when the warmer has put
    them there (else compiling them too: either process's entry serves). W4 on a new
    installation: its kernel served after 1.67-1.77 s instead of 1.92-2.46 s (alternated).

    On Linux the warmer is forked, so that it starts with Numba imported and set up (a new
    interpreter spends 0.35-0.5 s on that before its first helper), and before this process
    starts a thread; elsewhere (fork is unsafe on macOS once system frameworks are loaded) it
    is a new interpreter. It runs at the worker's idle priority, in the worker's session (so
    that ending the worker's process group ends it), for at most `exit_budget` seconds; it
    stops at once if another process is warming this installation (warming_lock). Returns
    the warmer (its `pid` and `wait()`), or None if no process could be started."""
    source = first["source"] if first else ""
    try:
        if not sys.platform.startswith("linux"):
            return _spawn_warmer(source, exit_budget)
        order = _warm_order(source)
        with warnings.catch_warnings():
            # Python 3.12+ warns that a process with threads (here only BLAS's, which
            # OpenBLAS's own fork handlers stop) may deadlock a forked child; this child
            # takes no lock another thread could hold: it compiles, and calls no BLAS.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        return None  # no process to spare: the worker compiles the helpers its kernels call
    if pid:
        return _Forked(pid)
    try:
        devnull = os.open(os.devnull, os.O_RDWR)  # never the worker's pipes
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        _warm(order, exit_budget)
    finally:
        os._exit(0)


def _spawn_warmer(source: str, exit_budget: float):
    """The warmer as a new interpreter (warmer_main), given `source` (a first kernel's) on
    stdin; raises OSError if no process can be started."""
    warmer = subprocess.Popen(
        _python_running(f"warmer_main({float(exit_budget)!r})"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    warmer.stdin.write(source.encode())
    warmer.stdin.close()
    return warmer


def start_warmer_here() -> None:
    """On a new installation, start the warmer for a process that compiles its kernels itself
    (JITGRAD_COMPILE=blocking; a distributed step, which never uses the compile worker that
    starts one otherwise), once per process, as a new interpreter (a user's process is not
    forked). Nothing when `config.warm_helpers` is off or the helpers are ready.

    Why: the emitter sends a product to AMX's tiles only once their helpers are compiled
    (symbols.all_compiled), and only the warmer compiles them ahead. Without it such a
    process, and every later one, multiplied by BLAS: W7's step 0.80 ms instead of 0.58 on
    this host. This process's kernels compiled meanwhile keep BLAS; the later ones, here and
    in the next runs, get the tiles once the warmer is done. A process with a compile worker
    has its warmer already (`CompileWorker` notes it here): no second interpreter competes
    with its first kernels."""
    if _warmed_here or not config.warm_helpers or helpers_ready():
        return
    try:
        _warmed_here.append(_spawn_warmer("", config.compile_exit_budget))
    except OSError:
        _warmed_here.append(None)  # no process to spare: the helpers compile when first called


# The warmer start_warmer_here started, or None where none will start here (none could, or a
# compile worker, which starts its own): at most one entry that matters per process.
_warmed_here: list = []


class _Forked:
    """A forked warmer, reaped when it ends (no zombie); `wait()` its exit status, as Popen's."""

    def __init__(self, pid: int):
        self.pid = pid
        self._status: Future = Future()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        self._status.set_result(os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1]))

    def wait(self, timeout: float | None = None) -> int:
        return self._status.result(timeout)


def warmer_main(exit_budget: float) -> None:
    """The warmer as a new interpreter: the first kernel's source on stdin."""
    _take_only_idle_time()
    _import_blas_bindings()
    _warm(_warm_order(sys.stdin.read()), exit_budget)


def _warm(order: list, exit_budget: float) -> None:
    """Compile the helpers of `order` (helper_signatures()) into Numba's cache, unless another
    process is doing it, within `exit_budget` seconds; stops at the first failure (a helper
    the next kernel would compile anyway)."""
    deadline = threading.Timer(exit_budget, os._exit, (3,))
    deadline.daemon = True
    deadline.start()
    with warming_lock() as held:
        if not held:
            return
        try:
            compile_shared(order, lambda dispatcher, signature: dispatcher.compile(signature))
        except Exception:
            return
        mark_helpers_ready()


def _warm_order(source: str) -> list:
    """helper_signatures() in the order the warmer compiles them: first the ones the kernel
    `source` inlines (its typing waits for them), then the ones it calls through a symbol
    (needed only when the kernel is loaded), then the rest."""
    import ast
    import importlib

    from jitgrad.backend.numba import helper_names
    from jitgrad.backend.numba.precompile import signatures_of

    inlined, called = [], []
    modules = (helper_names.VMATH_MODULE, helper_names.SPECIAL_MODULE, helper_names.RUNTIME_MODULE)
    for node in ast.parse(source).body if source else ():
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            module = importlib.import_module(node.module)
            inlined.extend(getattr(module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if getattr(call.func, "id", None) == "through_symbol":
                args = [ast.literal_eval(a) for a in call.args]
                ranks = {k.arg: ast.literal_eval(k.value) for k in call.keywords}.get("ranks")
                called.extend((args[0], sig) for sig in signatures_of(args[0], args[1], ranks))
    everything, called = list(helper_signatures()), set(called)
    first = [(d, sig) for d, sig in everything if any(d is f for f in inlined)]
    first += [(d, sig) for d, sig in everything if (d.__name__, sig) in called]
    return first + [entry for entry in everything if entry not in first]


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


def _reply(out, message: dict) -> None:
    try:
        out.write(json.dumps(message) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass  # the parent is gone; the cache entry is what matters
