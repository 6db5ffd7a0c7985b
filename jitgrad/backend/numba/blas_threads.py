"""OpenBLAS's thread count as compiled code sets it: a kernel running shards (shards.py) and
a kernel whose products run on AMX over several threads (amx.py) put the BLAS on one thread
around their own BLAS calls, so that each core's work keeps its core.

The setter is reached through a named symbol (`set_blas_threads`), which Numba caches (an
address would not be), bound before any cached machine code that calls it loads."""

from __future__ import annotations

import threading

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_lock = threading.Lock()

BLAS_THREADS_SYMBOL = "jitgrad_set_blas_threads"
_blas_threads_bound = []


def bind_blas_threads() -> None:
    """Register BLAS_THREADS_SYMBOL: `int f(int n)`, setting the threads of the BLAS that
    kernels' matrix products call (scipy's OpenBLAS) and returning the previous count. Found in
    scipy's bundled OpenBLAS (`openblas_set_num_threads_local`, which in OpenBLAS 0.3.30 sets
    the process-wide count); elsewhere (another BLAS) libc's `abs`, which changes nothing."""
    with _lock:
        if not _blas_threads_bound:
            ll.add_symbol(BLAS_THREADS_SYMBOL, _blas_threads_address())
            _blas_threads_bound.append(True)


def _blas_threads_address() -> int:
    import ctypes

    library = scipy_openblas()
    if library is not None and hasattr(library, "openblas_set_num_threads_local"):
        return ctypes.cast(library.openblas_set_num_threads_local, ctypes.c_void_p).value
    return ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value


def scipy_openblas():
    """The OpenBLAS bundled with scipy (the BLAS of scipy.linalg.cython_blas, which kernels'
    products call) as a ctypes library, or None where scipy uses another BLAS."""
    import ctypes
    import glob
    import os

    try:
        import scipy
    except ImportError:
        return None
    here = os.path.dirname(scipy.__file__)
    found = [
        path
        for pattern in ("../scipy.libs/libscipy_openblas*", ".dylibs/libscipy_openblas*")
        for path in glob.glob(os.path.join(here, pattern))
        if "64_" not in os.path.basename(path)
    ]
    try:
        return ctypes.CDLL(found[0]) if len(found) == 1 else None
    except OSError:
        return None


@intrinsic
def set_blas_threads(typingctx, count):
    """Set the BLAS's threads to `count` (int32), returning the previous count (see
    bind_blas_threads). A kernel running shards sets 1 around them: each shard's products then
    run on its own core; with OpenBLAS's threads, two shards' products contend for both cores
    (a CNN with a convolution by BLAS: 19-23 ms against 9 ms)."""
    if count != types.int32:
        return None
    bind_blas_threads()

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        function = cgutils.get_or_insert_function(
            builder.module, function_type, BLAS_THREADS_SYMBOL
        )
        return builder.call(function, args)

    return types.int32(count), codegen
