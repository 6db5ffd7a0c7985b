"""Tiered execution (compiler/background.py): the numpy fallback serves a new signature while
its kernel compiles in a worker process, then the kernel takes over.

No test depends on timing: a gate holds the switch-over (`hold_kernels`) where a test needs
the fallback to be serving, and waits are bounded by generous timeouts only.
"""

import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.compiler import background, tape_backward
from jitgrad.compiler.function import Compiled

WAIT = 300  # seconds: a bound for a loaded CI machine, never a timing assumption


@pytest.fixture
def background_mode():
    jg.config.compile = "background"
    try:
        yield
    finally:
        assert jg.wait_for_compiles(WAIT)
        jg.config.compile = "blocking"


@pytest.fixture
def hold_kernels(monkeypatch):
    """Versions stay on the fallback until the test sets the returned event."""
    gate = threading.Event()
    load_and_compile = Compiled.load_and_compile

    def gated(self, *args, **kwargs):
        assert gate.wait(WAIT)
        return load_and_compile(self, *args, **kwargs)

    monkeypatch.setattr(Compiled, "load_and_compile", gated)
    yield gate
    gate.set()


def mlp_loss(params, x, y):
    h = jg.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(y, logits))


def mlp_data(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(5, 7)).astype(np.float32),
        "b1": rng.normal(size=7).astype(np.float32),
        "w2": rng.normal(size=(7, 3)).astype(np.float32),
    }
    return params, rng.normal(size=(4, 5)).astype(np.float32), np.array([0, 2, 1, 2])


def assert_close_trees(a, b):
    leaves_a, _ = jg.core.pytree.flatten(a)
    leaves_b, _ = jg.core.pytree.flatten(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x._value), np.asarray(y._value)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-6)


def test_fallback_serves_until_the_kernel_takes_over(background_mode, hold_kernels):
    params, x, y = mlp_data()
    expected = jg.jit_grad(mlp_loss).__wrapped__  # the traced function, run eagerly below
    eager_value, eager_grads = expected(params, x, y)
    f = jg.jit_grad(mlp_loss)
    value, grads = f(params, x, y)
    assert f.cache_info().states[0] in ("fallback", "compiling")
    assert type(value).__name__ == "CompiledScalar_float32"  # the kernel's wrapper types
    assert_close_trees((value, grads), (eager_value, eager_grads))
    f(params, x, y)  # still the fallback
    assert f.cache_info().states[0] in ("fallback", "compiling")
    hold_kernels.set()
    assert f.wait(WAIT)
    assert f.cache_info().states == ("compiled",)
    compiled = next(iter(f._versions.values()))
    assert compiled.kernel is not None and compiled.run.__name__ == "call"
    assert not compiled.courteous  # calls run on the fallback meanwhile: no giving way
    assert_close_trees(f(params, x, y), (eager_value, eager_grads))
    assert_close_trees(f(params, x, y), (value, grads))  # the fast entry now


def test_blocking_mode_compiles_at_the_first_call():
    assert jg.config.compile == "blocking"  # the test suite's default (conftest.py)
    f = jg.jit_grad(mlp_loss)
    f(*mlp_data())
    assert f.cache_info().states == ("compiled",)
    assert f.wait(0)


def test_config_refuses_unknown_modes():
    with pytest.raises(ValueError, match="compile must be one of"):
        jg.config.compile = "later"
    with pytest.raises(ValueError, match="compile_worker must be one of"):
        jg.config.compile_worker = "gpu"


def test_threads_calling_during_the_switch_over(background_mode, hold_kernels):
    params, x, y = mlp_data(1)
    f = jg.jit_grad(mlp_loss)
    reference = f(params, x, y)
    errors, results = [], []

    def call_many():
        try:
            for _ in range(200):
                results.append(f(params, x, y))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call_many) for _ in range(3)]
    for t in threads:
        t.start()
    hold_kernels.set()
    assert f.wait(WAIT)
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 600
    for r in results[::37] + results[-3:]:
        assert_close_trees(r, reference)


def test_a_failed_worker_compile_falls_back_to_this_process(background_mode, monkeypatch):
    """The worker refuses the request (here: a signature it cannot read): one warning, then
    the kernel compiles in this process."""
    from jitgrad.backend.numba.worker import CompileWorker

    submit = CompileWorker.submit

    def bogus_request(self, name, source, signature, cache_dir, on_start=None):
        return submit(self, name, source, [["bogus"]], cache_dir, on_start)

    monkeypatch.setattr(CompileWorker, "submit", bogus_request)
    f = jg.jit(lambda x: jg.sin(x) * 3.0 + 1.0)
    x = np.linspace(0, 1, 5, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="background compile of .* failed"):
        r = f(x)
        assert f.wait(WAIT)
    assert f.cache_info().states == ("compiled",)
    np.testing.assert_allclose(f(x).numpy(), r.numpy(), rtol=1e-6)


def test_a_killed_worker_falls_back_to_this_process(background_mode):
    from jitgrad.backend.numba import cache

    def g(x):
        return jg.reduce_sum(jg.exp(x) * x - 2.0)

    x = np.arange(6, dtype=np.float64)
    f = jg.jit(g)
    path = os.path.join(cache.cache_root(), f"k_{cache.source_key(f.lower(x).source)}.py")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cache.entry_lock(path):  # the worker blocks on this entry, mid-compile
            r = f(x)
            for _ in range(WAIT * 10):
                if f.cache_info().states[0] == "compiling":
                    break
                threading.Event().wait(0.1)
            assert f.cache_info().states[0] == "compiling"
            # The worker the job went to: read once it is compiling (an earlier test may have
            # left `_worker` naming a worker that has since died and been replaced).
            worker = background._compile_worker()
            worker.process.kill()
            worker.process.wait()
        # The in-process compile takes the same lock: it proceeds once the block has ended.
        assert f.wait(WAIT)
    messages = [str(w.message) for w in caught]
    assert any("background compile" in m and "compiling it in this process" in m for m in messages)
    assert f.cache_info().states == ("compiled",)
    assert float(f(x)) == pytest.approx(float(r))


def test_a_compile_that_fails_everywhere_stays_on_the_fallback(background_mode, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(Compiled, "load_and_compile", broken)
    f = jg.jit(lambda x: jg.sqrt(x) * 2.0 + 1.0)
    x = np.ones(3, np.float32)
    with pytest.warns(RuntimeWarning, match="keep running on the numpy fallback"):
        f(x)
        assert f.wait(WAIT)
    assert f.cache_info().states == ("failed",)
    np.testing.assert_array_equal(f(x).numpy(), np.full(3, 3.0, np.float32))


def test_train_step_on_the_fallback_updates_in_place_like_the_kernel(background_mode, hold_kernels):
    opt = jg.optim.Adam(0.05)
    step = jg.jit_train_step(mlp_loss, opt)
    params_a, x, y = mlp_data(2)
    params_b = {k: v.copy() for k, v in params_a.items()}
    state_a, state_b = opt.init(params_a), opt.init(params_b)
    arrays_a = dict(params_a)
    losses_fallback = [float(step(params_a, state_a, x, y)) for _ in range(3)]
    assert step.cache_info().states[0] in ("fallback", "compiling")
    assert all(params_a[k] is arrays_a[k] for k in params_a)  # updated in place
    hold_kernels.set()
    assert step.wait(WAIT)
    losses_kernel = [float(step(params_b, state_b, x, y)) for _ in range(3)]
    np.testing.assert_allclose(losses_fallback, losses_kernel, rtol=1e-5)
    for k in params_a:
        np.testing.assert_allclose(params_a[k], params_b[k], rtol=1e-5, atol=1e-6)
    assert losses_fallback[2] < losses_fallback[0]


def test_a_failing_step_on_the_fallback_leaves_parameters_as_they_were(
    background_mode, hold_kernels
):
    def loss(params, idx):
        return jg.reduce_sum(jg.gather(params["table"], idx) ** 2)

    opt = jg.optim.SGD(0.1)
    step = jg.jit_train_step(loss, opt)
    params = {"table": np.arange(6, dtype=np.float32).reshape(3, 2)}
    state = opt.init(params)
    before = params["table"].copy()
    with pytest.raises(IndexError):
        step(params, state, np.array([0, 7]))
    np.testing.assert_array_equal(params["table"], before)


def test_tape_backward_never_waits_for_its_kernel(background_mode, hold_kernels):
    w = jg.Variable(np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float64))
    x = np.linspace(0, 1, 8).reshape(4, 2)

    def grad_once():
        with jg.GradientTape() as tape:
            loss = jg.reduce_sum(jg.tanh(x @ w) ** 2 + jg.exp(w[0, 0]) * 0.5)
        return tape.gradient(loss, w).numpy()

    first = grad_once()
    eager_before = tape_backward.stats["eager"]
    for _ in range(3):  # the structure is compiling: every step runs op by op
        np.testing.assert_allclose(grad_once(), first, rtol=1e-12)
    assert tape_backward.stats["eager"] == eager_before + 3
    hold_kernels.set()
    assert jg.wait_for_compiles(WAIT)
    compiled_before = tape_backward.stats["compiled"]
    np.testing.assert_allclose(grad_once(), first, rtol=1e-10)
    assert tape_backward.stats["compiled"] == compiled_before + 1
    # Its background work gave the GIL away to the steps (compiler/courtesy.py).
    entry = next(reversed(tape_backward._cache.values()))
    assert entry.compiled.courteous


_SCRIPT = """
import sys
import numpy as np
import jitgrad as jg
from jitgrad.compiler import background

f = jg.jit_grad(lambda w, x: jg.reduce_sum(jg.tanh(x @ w) * 1.5 - w[0, 0]))
value, grad = f(np.ones((3, 2)), np.full((4, 3), 0.25))
print(f.cache_info().states[0], f.cache_info().disk_loads, float(value))
if sys.argv[1] == "until-compiling":  # exit once the worker has begun (else: at once)
    while f.cache_info().states[0] == "fallback":
        f.wait(0.01)
    print("worker", background._worker.process.pid)
"""


def _python(source: str, env: dict, *argv: str) -> str:
    """The stdout of `source` run by a new Python process; its failure fails the test."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _run_script(cache_dir, mode, when="at-once", **env_vars):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(cache_dir), JITGRAD_COMPILE=mode, **env_vars)
    return _python(_SCRIPT, env, when).split("\n")


def test_a_compile_under_way_at_exit_finishes_its_cache_entry(tmp_path):
    """The script exits right after its first call (served by the fallback); its worker
    finishes the cache entry and ends; the next run loads the kernel from disk. (Without
    the helpers' warm-up, which a cold installation's worker would also finish first.)"""
    first = _run_script(tmp_path, "background", "until-compiling", JITGRAD_WARM_HELPERS="0")
    state, disk_loads, value = first[0].split()
    assert state in ("fallback", "compiling")
    pid = int(first[1].split()[1])
    for _ in range(WAIT * 10):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        threading.Event().wait(0.1)
    else:
        pytest.fail("the compile worker is still running")
    second = _run_script(tmp_path, "blocking")
    state2, disk_loads2, value2 = second[0].split()
    assert (state2, disk_loads2) == ("compiled", "1")
    assert float(value2) == pytest.approx(float(value), rel=1e-12)


def test_two_processes_compiling_one_kernel_share_the_work(tmp_path):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path), JITGRAD_COMPILE="blocking")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_SCRIPT)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    lines = [p.communicate(timeout=WAIT)[0].split("\n")[0].split() for p in processes]
    assert sorted(line[1] for line in lines) == ["0", "1"]  # one compiled, one loaded it


def test_a_kernel_not_yet_handed_to_the_worker_at_exit_still_reaches_the_cache(tmp_path):
    """Exiting right after the first call: the exit waits for the kernel to be lowered and
    handed to the worker, which then finishes it."""
    from jitgrad.backend.numba import cache

    first = _run_script(tmp_path, "background", "at-once")
    assert first[0].split()[0] in ("fallback", "compiling")
    pycache = cache.pycache_dir(os.path.join(tmp_path, "kernels"))
    for _ in range(WAIT * 10):
        if os.path.isdir(pycache) and any(f.endswith(".nbi") for f in os.listdir(pycache)):
            break
        threading.Event().wait(0.1)
    second = _run_script(tmp_path, "blocking")
    assert second[0].split()[:2] == ["compiled", "1"]


def test_the_worker_loads_blas_bindings_without_scipy_linalg():
    """The worker imports scipy's BLAS/LAPACK bindings for Numba without running scipy.linalg's
    __init__ (0.2-0.3 s of a cold first kernel); a later `import scipy.linalg` still gets the
    real package, and a kernel's matrix product runs through the bindings."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from jitgrad.backend.numba.worker import _import_blas_bindings
        _import_blas_bindings()
        assert "scipy.linalg" not in sys.modules
        assert "scipy.linalg.cython_blas" in sys.modules
        assert "scipy.linalg.cython_lapack" in sys.modules
        import scipy
        assert "linalg" not in vars(scipy)
        from numba import njit
        from jitgrad.backend.numba.runtime import matmul_into, strided

        @njit
        def product(a, b, out):
            matmul_into(strided(a), strided(b), out)

        a, b, out = np.ones((2, 3)), np.ones((3, 4)), np.empty((2, 4))
        product(a, b, out)
        assert (out == 3).all()
        assert "scipy.linalg" not in sys.modules
        import scipy.linalg
        assert scipy.linalg.solve(np.eye(2), np.ones(2)).tolist() == [1.0, 1.0]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip() == "ok", done.stderr


_ONE_CPU_SCRIPT = """
import os
import sys
import threading

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
if sys.argv[1] == "launch-on-a-thread":
    from jitgrad.backend.numba.threads import launch_numba_threads

    starter = threading.Thread(target=launch_numba_threads)
    starter.start()
    starter.join()
else:  # a training step whose kernel the compile thread lowers and loads
    import numpy as np
    import jitgrad as jg

    rng = np.random.default_rng(0)
    params = {
        "W": rng.standard_normal((196, 64)).astype(np.float32),
        "b": np.zeros(64, np.float32),
    }

    def loss(p, x):
        return jg.reduce_mean(jg.tanh(x @ p["W"] + p["b"]) ** 2)

    opt = jg.optim.Adam(1e-3)
    state = opt.init(params)
    step = jg.jit_train_step(loss, opt)
    x = rng.standard_normal((128, 196)).astype(np.float32)
    step(params, state, x)
    assert jg.wait_for_compiles(300)
    step(params, state, x)
print("done", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's affinity")
@pytest.mark.parametrize("what", ["launch-on-a-thread", "a-training-step"])
def test_a_process_on_one_cpu_exits(what):
    """Numba's TBB pool started on a thread other than the main one, in a process that may
    use one CPU (taskset, a cpuset, mpiexec's binding), used to hang the interpreter's exit
    forever (backend/numba/threads.launch_numba_threads). The compile thread starts it."""
    # The session's kernel cache (conftest), shared with the other tests and their reruns.
    env = dict(os.environ, JITGRAD_COMPILE="background", JITGRAD_CACHE_DIR=jg.config.cache_dir)
    assert _python(_ONE_CPU_SCRIPT, env, what).split() == ["done"]


_TAPE_SCRIPT = """
import warnings

import numpy as np
import jitgrad as jg
from jitgrad.compiler import tape_backward

warnings.simplefilter("always")
x = np.linspace(0, 1, 21).reshape(7, 3).astype(np.float32)
w = jg.Variable(np.ones(3, np.float32))
with warnings.catch_warnings(record=True) as caught:
    for _ in range(4):
        with jg.GradientTape() as tape:
            loss = jg.reduce_sum(jg.sinh(jg.tensordot(x, w, 1)) * 0.25)
        tape.gradient(loss, w)
    assert jg.wait_for_compiles(300)
compiled = next(reversed(tape_backward._cache.values())).compiled
print(compiled.loaded_from_disk(), len(caught))
"""


def test_the_tapes_blocking_and_background_compiles_share_the_disk_cache():
    """A tape's backward compiled in blocking mode (tests, JITGRAD_COMPILE=blocking) serves a
    process in the default background mode from the disk cache, without a warning."""
    env = dict(os.environ, JITGRAD_CACHE_DIR=jg.config.cache_dir)
    _python(_TAPE_SCRIPT, dict(env, JITGRAD_COMPILE="blocking"))
    served = _python(_TAPE_SCRIPT, dict(env, JITGRAD_COMPILE="background")).split()
    assert served == ["True", "0"], served
