"""A new installation's helpers (precompile.py) are compiled by a warmer process that the compile
worker starts (worker._start_warmer), while the worker compiles the first kernels without
waiting for them: a helper called through a symbol is bound to a placeholder in the worker
(symbols.defer_uncompiled_helpers) and compiled, or loaded from the warmer's cache entry,
before the worker reports the kernel. One warmer per installation at a time.

Each subprocess here has a Numba cache of its own (NUMBA_CACHE_DIR): a new installation."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from numba import types

from jitgrad.backend.numba import precompile, runtime, symbols, vmath, worker

WAIT = 300  # seconds: a bound for a loaded CI machine, never a timing assumption


def test_one_process_at_a_time_holds_a_lock(tmp_path):
    """The locks of warming_lock and compile_shared (the installation's own are exercised in
    subprocesses below: this process's may be held by a warmer that another test started)."""
    path = str(tmp_path / "helper.lock")
    with precompile._file_lock(path, wait=False) as first:
        with precompile._file_lock(path, wait=False) as second:  # another open file
            assert (first, second) == (True, False)
    with precompile._file_lock(path, wait=False) as again:  # released with its file
        assert again


def test_a_helper_another_process_is_compiling_is_taken_last_and_waited_for():
    """precompile.compile_shared: the warmer and the worker never compile one helper
    signature both; each takes the free ones first, then waits for the others' lock."""
    entries = [(runtime.matmul_into, (types.float32,)), (runtime.sum_step, (types.float64,))]
    done, first_done = [], threading.Event()

    def compile_one(dispatcher, argtypes):
        done.append(dispatcher)
        first_done.set()

    busy = precompile._helper_lock_path(*entries[0])
    with precompile._file_lock(busy, wait=False) as held:  # "another process" compiles it
        assert held
        worker_thread = threading.Thread(
            target=precompile.compile_shared, args=(entries, compile_one)
        )
        worker_thread.start()
        assert first_done.wait(WAIT)
        assert done == [runtime.sum_step]  # the free one; matmul_into's lock is held here
    worker_thread.join(WAIT)
    assert done == [runtime.sum_step, runtime.matmul_into]


def test_the_warmer_compiles_the_first_kernels_helpers_first():
    source = textwrap.dedent(
        """
        import numba
        from jitgrad.backend.numba.vmath import vexp_f32, vlog_f32
        from jitgrad.backend.numba.runtime import strided, sum_step, view
        from jitgrad.backend.numba.symbols import through_symbol

        matmul_into = through_symbol('matmul_into', ('float32',))
        permute = through_symbol('permute', ('float64',), ranks=(4,))
        """
    )
    order = worker._warm_order(source)
    everything = list(precompile.helper_signatures())
    assert len(order) == len(everything)
    assert all(entry in order for entry in everything)
    f32 = types.Array(types.float32, 2, "A", readonly=True)
    x4 = types.Array(types.float64, 4, "C", readonly=True)
    first = [(d.__name__, sig) for d, sig in order[:8]]
    sum_steps = [(d, sig) for d, sig in everything if d is runtime.sum_step]
    assert order[:2] == [(vmath.vexp_f32, (types.float32,)), (vmath.vlog_f32, (types.float32,))]
    assert order[2 : 2 + len(sum_steps)] == sum_steps  # inlined: the kernel's typing waits
    called = first[2 + len(sum_steps) :]
    assert called[0] == ("matmul_into", (f32, f32, types.Array(types.float32, 2, "C")))
    assert called[1] == (
        "permute",
        (x4, types.Array(types.float64, 4, "C"), types.UniTuple(types.int64, 4)),
    )
    assert worker._warm_order("") == everything  # no request yet: precompile's order


def test_declared_return_types_are_the_compiled_ones():
    """A deferred helper is typed in the worker without compiling it."""
    for name, argtypes in (
        ("matmul_into", precompile.signatures_of("matmul_into", ("float64",))[0]),
        ("contiguous_copy", (types.Array(types.float32, 2, "A", readonly=True),)),
        ("copy1", precompile.signatures_of("copy1", ("float64",))[0]),
    ):
        helper = precompile.helper(name)
        compiled = symbols._compiled(helper, argtypes)
        assert symbols.declared_return_type(name, argtypes) == compiled.signature.return_type


_KERNEL_MODULE = """
import numba
from jitgrad.backend.numba.runtime import strided
from jitgrad.backend.numba.symbols import through_symbol

matmul_into = through_symbol("matmul_into", ("float64",))


@numba.njit(cache=True)
def kernel(a, b, out):
    matmul_into(strided(a), strided(b), out)
    return out[0, 0]
"""

_COMPILE_DEFERRED = """
import pytest
from numba import types
from jitgrad.backend.numba import runtime, symbols

symbols.defer_uncompiled_helpers()  # as a new installation's worker
import deferred_kernel

matrix = types.Array(types.float64, 2, "C")
deferred_kernel.kernel.compile((matrix, matrix, matrix))
print(len(runtime.matmul_into.overloads))
symbols.compile_deferred_helpers()
print(len(runtime.matmul_into.overloads))
"""

_RUN_FROM_CACHE = """
import numpy as np
import deferred_kernel

a = np.arange(12.0).reshape(3, 4)
b = np.linspace(-1.0, 1.0, 20).reshape(4, 5)
out = np.empty((3, 5))
first = deferred_kernel.kernel(a, b, out)
np.testing.assert_allclose(out, a @ b, rtol=1e-12)
assert first == out[0, 0]
print(deferred_kernel.kernel.stats.cache_hits.get(deferred_kernel.kernel.signatures[0], 0))
"""


def _python(script: str, tmp_path, **env_vars) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(tmp_path), **env_vars)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_kernel_compiles_before_its_symbol_helpers_and_runs_once_they_are_cached(tmp_path):
    (tmp_path / "deferred_kernel.py").write_text(_KERNEL_MODULE)
    numba_cache = str(tmp_path / "numba")
    compiled = _python(_COMPILE_DEFERRED, tmp_path, NUMBA_CACHE_DIR=numba_cache)
    assert compiled == ["0", "1"]  # not compiled for the kernel; compiled before its report
    # Another process loads the kernel from the cache and binds the helper's real entry point.
    assert _python(_RUN_FROM_CACHE, tmp_path, NUMBA_CACHE_DIR=numba_cache) == ["1"]


_NEW_INSTALLATION = """
import numpy as np
import jitgrad as jg
from jitgrad.backend.numba import precompile
from jitgrad.compiler import background

f = jg.jit_grad(lambda w, x: jg.reduce_sum(jg.exp(jg.tanh(x @ w))), wrt=0)
w = np.linspace(-1.0, 1.0, 6).reshape(3, 2).astype(np.float32)
x = np.linspace(0.0, 1.0, 12).reshape(4, 3).astype(np.float32)
value, grad = f(w, x)
# The compile thread may not have started the worker yet (a loaded machine): start or get it.
print("worker", background._compile_worker().process.pid, flush=True)
assert f.wait(300), "the kernel never served"
kernel_value, kernel_grad = f(w, x)
print(f.cache_info().states[0])
h = np.tanh(x.astype(np.float64) @ w)
expected = x.T.astype(np.float64) @ (np.exp(h) * (1.0 - h**2))
np.testing.assert_allclose(kernel_value, np.exp(h).sum(), rtol=1e-5)
np.testing.assert_allclose(kernel_grad, expected, rtol=1e-5)
with precompile.warming_lock() as held:  # the warmer holds it until every helper is done
    print("warming" if not held else "ready" if precompile.helpers_ready() else "not-started")
from jitgrad.backend.numba import worker
print(worker._warmed_here == [None])  # the worker's warmer only: none started by this process
"""


def test_a_new_installations_first_kernel_serves_while_the_warmer_compiles(tmp_path):
    numba_cache = str(tmp_path / "numba")
    env = {
        "NUMBA_CACHE_DIR": numba_cache,
        "JITGRAD_CACHE_DIR": str(tmp_path / "kernels"),
        "JITGRAD_COMPILE": "background",
        "JITGRAD_WARM_HELPERS": "1",
    }
    out = None
    try:
        out = _python(_NEW_INSTALLATION, tmp_path, **env)
        assert out[2] == "compiled"
        assert out[3] in ("warming", "ready")
        assert out[4] == "True"
    finally:
        if out:  # the worker's session holds the warmer too: end both
            try:
                os.killpg(int(out[1]), signal.SIGKILL)
            except ProcessLookupError:
                pass


_START_WARMER = """
import os, sys
from jitgrad.backend.numba import precompile, worker

with precompile.warming_lock() as held:  # as another process warming this installation
    assert held
    worker._prepare_compiling()
    sys.platform = sys.argv[1]  # "linux": forked; anything else: a new interpreter
    warmer = worker._start_warmer({"source": "import numba"}, 120.0)
    print(warmer.wait(120))
cache = precompile.helper("sum_step")._cache._cache_path
entries = os.listdir(cache) if os.path.isdir(cache) else []
print(sorted(f for f in entries if f.endswith(".nbi")))
"""


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_warmer_stops_when_another_process_warms_the_installation(tmp_path, platform):
    """Both ways of starting the warmer (forked on Linux, a new interpreter elsewhere) start a
    process that finds the installation's lock held, compiles nothing and exits cleanly."""
    script = _START_WARMER.replace("sys.argv[1]", repr(platform))
    out = _python(script, tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    assert out == ["0", "[]"]


_BLOCKING_NEW_INSTALLATION = """
import os, signal, sys
import numpy as np
import jitgrad as jg
from jitgrad.backend.numba import precompile, worker

jg.config.compile_exit_budget = 1500.0  # at idle priority on a busy machine: minutes
f = jg.jit(lambda w, x: jg.reduce_sum(jg.tanh(x @ w)))
f(np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))  # compiled here: blocking mode
f(np.ones((3, 3), np.float32), np.ones((4, 3), np.float32))  # another kernel: no second warmer
(warmer,) = worker._warmed_here
print(len(worker._warmed_here), flush=True)
if sys.argv[1] == "wait":
    warmer.wait(1500)  # it ends once every helper is in the cache
    print("ready" if precompile.helpers_ready() else "not-ready")
else:
    os.kill(warmer.pid, signal.SIGKILL)
    print("killed")
"""


@pytest.mark.parametrize("until", ["started", pytest.param("wait", marks=pytest.mark.slow)])
def test_a_process_compiling_its_own_kernels_starts_one_warmer(tmp_path, until):
    """JITGRAD_COMPILE=blocking (and distributed steps) never start the compile worker, which
    starts the warmer otherwise: the process starts one itself, once, so that the helpers
    AMX's products wait for get compiled (W7 stayed on BLAS: 0.80 ms against 0.58). With -m
    slow, the warmer compiles every helper (minutes on a loaded 2-core machine)."""
    env = {
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "JITGRAD_CACHE_DIR": str(tmp_path / "kernels"),
        "JITGRAD_COMPILE": "blocking",
        "JITGRAD_WARM_HELPERS": "1",
    }
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_BLOCKING_NEW_INSTALLATION))
    out = subprocess.run(
        [sys.executable, str(script), until],
        cwd=tmp_path,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "ready" if until == "wait" else "killed"], out.stdout


_BLOCKING_WARM_OFF = """
import numpy as np
import jitgrad as jg
from jitgrad.backend.numba import worker

jg.jit(lambda x: x * 2.0)(np.ones(3))
print(worker._warmed_here)
"""


def test_no_warmer_when_warming_is_off(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "JITGRAD_WARM_HELPERS": "0"}
    assert _python(_BLOCKING_WARM_OFF, tmp_path, **env) == ["[]"]
