"""Numba's threads, for the compiler front end (the backend is the only importer of numba)."""

from __future__ import annotations

from numba import set_num_threads  # noqa: F401 - the generated call path applies config's count


def threading_layer_is_safe() -> bool:
    """Whether parallel kernels may run from several Python threads at once: true with the
    TBB or OpenMP layers, false with Numba's workqueue (which aborts on concurrent use)."""
    from numba.np.ufunc import parallel

    try:
        parallel._launch_threads()
        return parallel._threading_layer in ("tbb", "omp")
    except Exception:
        return False
