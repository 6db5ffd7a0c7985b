"""The helper warmer (backend/numba/warmer.py): which helpers it takes from a kernel, in which
order, and the process itself (compiles what the worker's kernel calls; ends by its deadline)."""

import os
import time

from jitgrad.backend.numba import precompile, runtime, vmath
from jitgrad.backend.numba.warmer import HelperWarmer, kernel_helpers, wanted

KERNEL = """
import numba
from jitgrad.backend.numba.vmath import vexp_f32, vlog_f32
from jitgrad.backend.numba.runtime import matmul_into, strided, sum_step, view


@numba.njit(cache=True)
def kernel(v0, v1, v2):
    matmul_into(strided(v0), strided(v1), v2)
    rows = view(v2, (4, 1))
    for i0 in range(4):
        acc = vlog_f32(rows[i0, 0])
        acc = sum_step(acc, vexp_f32(acc))
"""


def test_kernel_helpers_in_the_order_the_kernel_first_calls_them():
    assert kernel_helpers(KERNEL) == [
        ["jitgrad.backend.numba.runtime", "matmul_into"],
        ["jitgrad.backend.numba.runtime", "strided"],
        ["jitgrad.backend.numba.runtime", "view"],
        ["jitgrad.backend.numba.vmath", "vlog_f32"],
        ["jitgrad.backend.numba.runtime", "sum_step"],
        ["jitgrad.backend.numba.vmath", "vexp_f32"],
    ]
    assert kernel_helpers("def kernel(v0):\n    return v0\n") == []


def test_wanted_takes_the_kernels_dtypes_last_call_first_and_leaves_the_first_to_the_worker():
    signatures = list(precompile.helper_signatures())
    order = wanted(signatures, kernel_helpers(KERNEL), ["float32", "int32", "bool"])
    picked = [(signatures[i][0], tuple(str(t) for t in signatures[i][1])) for i in order]
    assert picked == [
        (vmath.vexp_f32, ("float32",)),
        (runtime.sum_step, ("float32", "float32")),
        (vmath.vlog_f32, ("float32",)),
    ]
    # float64 kernels take the float64 signatures (sum_step's float64 accumulator of float32
    # items is not among them: the kernel has no float32).
    order = wanted(signatures, kernel_helpers(KERNEL), ["float64"])
    picked = [(signatures[i][0], tuple(str(t) for t in signatures[i][1])) for i in order]
    assert (runtime.sum_step, ("float64", "float64")) in picked
    assert (runtime.sum_step, ("float64", "float32")) not in picked
    assert all(d is not runtime.matmul_into for d, _ in picked)


def _cache_files(directory, part):
    found = []
    for _root, _dirs, files in os.walk(directory):
        found += [f for f in files if part in f and f.endswith(".nbi")]
    return found


def test_the_warmer_compiles_what_the_kernel_calls_and_ends_by_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    warmer = HelperWarmer(exit_budget=600.0)
    try:
        warmer.tell(helpers=kernel_helpers(KERNEL), dtypes=["float32"], idle=False)
        for _ in range(1200):  # its own start and Numba's, then three small compiles
            if _cache_files(tmp_path, "vexp") and _cache_files(tmp_path, "vlog"):
                break
            assert warmer.process.poll() is None, "the warmer ended early"
            time.sleep(0.1)
        assert _cache_files(tmp_path, "vexp") and _cache_files(tmp_path, "vlog")
        # The worker's program has exited: the warmer stops by the deadline it was given,
        # whatever it is compiling.
        warmer.tell(deadline=time.monotonic())
        assert warmer.process.wait(timeout=120) == 3
    finally:
        if warmer.process.poll() is None:
            warmer.process.kill()
            warmer.process.wait()
