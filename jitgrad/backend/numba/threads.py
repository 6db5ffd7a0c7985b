"""Numba's threads, for the compiler front end (the backend is the only importer of numba)."""

from __future__ import annotations

import ctypes

from numba import set_num_threads  # noqa: F401 - the generated call path applies config's count


def threading_layer_is_safe() -> bool:
    """Whether parallel kernels may run from several Python threads at once: true with the
    TBB or OpenMP layers, false with Numba's workqueue (which aborts on concurrent use)."""
    from numba.np.ufunc import parallel

    try:
        launch_numba_threads()
        return parallel._threading_layer in ("tbb", "omp")
    except Exception:
        return False


def launch_numba_threads() -> None:
    """Start Numba's thread pool from this thread, if nothing has yet.

    Why not leave it to Numba: the TBB layer's start queues an empty task on the starting
    thread's arena, and Numba's exit hook waits for that task. When the process may use one CPU
    (taskset, a container's cpuset, mpiexec binding a rank to a core), TBB starts no worker
    thread. A start on jitgrad's compile thread then left the task queued where no thread would
    run it, and the interpreter hung at exit, forever. The starting thread runs it here.
    """
    from numba.np.ufunc import parallel

    if not parallel._backend_init_process_lock:
        parallel._set_init_process_lock()
    # Numba's own order of its two locks (both reentrant): no thread can start the pool between
    # the check and the start.
    with parallel._backend_init_process_lock, parallel._backend_init_thread_lock:
        starting = not parallel._is_initialized
        parallel._launch_threads()
        if starting and parallel._threading_layer == "tbb":
            from numba.np.ufunc import tbbpool

            ctypes.CFUNCTYPE(None)(tbbpool.synchronize)()
