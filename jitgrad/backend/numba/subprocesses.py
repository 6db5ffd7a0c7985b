"""Starting jitgrad's own processes (the compile worker, worker.py, and its helper warmer,
warmer.py), and what each does first."""

from __future__ import annotations

import os
import subprocess
import sys
import types


def start(function: str, *arguments, new_session: bool, replies: bool) -> subprocess.Popen:
    """A Python process that runs `function(*arguments)` ("module:name", arguments as Python
    literals), talking through pipes on stdin and stdout.

    The process must import this very jitgrad (and nothing from the working directory, which
    `python -c` puts first on sys.path): the first path entry is replaced by the directory
    this jitgrad was imported from. And only the backend it needs: the package `jitgrad` is
    registered without running its __init__ (the whole library, 0.25 s of the process's
    start, while the caller waits for its first kernel). The backend imports only itself,
    core, ir and passes (tests/test_layering.py).

    `new_session`: its own session, so that a Ctrl-C meant for the program does not reach
    it (a worker finishing a cache entry exits by itself; see worker.py)."""
    package = os.path.abspath(__file__)
    for _ in range(3):  # .../jitgrad/backend/numba/subprocesses.py -> .../jitgrad
        package = os.path.dirname(package)
    module, name = function.split(":")
    code = (
        f"import sys, types; sys.path[0] = {os.path.dirname(package)!r}; "
        f"jitgrad = sys.modules['jitgrad'] = types.ModuleType('jitgrad'); "
        f"jitgrad.__path__ = [{package!r}]; "
        f"from {module} import {name}; {name}({', '.join(repr(a) for a in arguments)})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if replies else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=new_session,
    )


def take_only_idle_time() -> None:
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


def import_blas_bindings() -> None:
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
