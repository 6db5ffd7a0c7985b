"""Memory stays bounded: long loops, deleted tapes and per-shape compiled versions."""

import gc
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

import jitgrad as jg


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


rng = np.random.default_rng(0)
X = rng.standard_normal((64, 20)).astype(np.float32)
Y = (rng.uniform(size=64) > 0.5).astype(np.float32)


def logistic_loss(w, b, x, y):
    z = x @ w + b
    return jg.reduce_mean(jg.softplus(z) - y * z)


def _growth(step, n):
    for _ in range(200):  # warm up caches and allocator pools
        step()
    gc.collect()
    before = rss_bytes()
    for _ in range(n):
        step()
    gc.collect()
    return rss_bytes() - before


@pytest.mark.slow  # a soak test (the default run stays under 10 minutes)
def test_eager_tape_loop_memory_is_flat():
    w = jg.Variable(np.zeros(20, np.float32))
    b = jg.Variable(0.0)

    def step():
        with jg.GradientTape() as tape:
            loss = logistic_loss(w, b, X, Y)
        gw, gb = tape.gradient(loss, [w, b])
        w.assign_sub(0.1 * gw)
        b.assign_sub(0.1 * gb)

    assert _growth(step, 10_000) < 8 * 2**20


def test_compiled_loop_memory_is_flat():
    f = jg.jit_grad(logistic_loss, wrt=(0, 1))
    params = [np.zeros(20, np.float32), np.float32(0.0)]

    def step():
        value, (gw, gb) = f(params[0], params[1], X, Y)
        params[0] = params[0] - 0.1 * np.asarray(gw)
        params[1] = np.float32(params[1] - 0.1 * float(gb))

    assert _growth(step, 10_000) < 8 * 2**20


def test_deleting_a_persistent_tape_frees_what_it_held():
    x = jg.constant(np.ones(1000))
    with jg.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = jg.exp(x) * 2.0
        intermediate = weakref.ref(y)
    tape.gradient(y, x)
    tape_ref = weakref.ref(tape)
    del tape, y
    gc.collect()
    assert tape_ref() is None
    assert intermediate() is None


def test_compiled_versions_are_bounded_lru(monkeypatch):
    monkeypatch.setattr(jg.config, "max_versions_per_function", 3)
    monkeypatch.setattr(jg.config, "retrace_warning_after", 1000)
    f = jg.jit(lambda x: x * 2.0)
    for n in (1, 2, 3):
        f(np.zeros(n))
    f(np.zeros(1))  # used again: now the most recent
    f(np.zeros(4))  # evicts shape (2,), the least recently used
    assert f.cache_info().versions == 3
    f(np.zeros(1))
    assert f.cache_info().misses == 4
    f(np.zeros(2))
    assert f.cache_info().misses == 5


def test_cleared_and_evicted_versions_free_their_buffers(monkeypatch):
    """A version holds the last call's output buffers (its pool); evicting or clearing it must
    let them go. (The kernels' machine code itself is never freed by Numba: new shapes share
    one kernel instead, see the next tests.)"""
    monkeypatch.setattr(jg.config, "max_versions_per_function", 2)
    f = jg.jit(lambda x: jg.tanh(x) * 2.0)
    outputs = [weakref.ref(f(np.ones(1000 + n, np.float32))._value) for n in range(3)]
    versions = [weakref.ref(c) for c in f._versions.values()]
    gc.collect()
    assert outputs[0]() is None  # evicted with the first version
    f.clear_cache()
    gc.collect()
    assert [v() for v in versions] == [None, None]
    assert [o() for o in outputs] == [None, None, None]


def test_functions_of_one_structure_share_a_kernel():
    """Lambdas that differ only in a constant (or shape) run one shape-polymorphic kernel
    after the first: a kernel per function would cost ~1 MiB each for good."""
    kernels = set()
    for k in range(2, 14):  # (x * 1.0 simplifies to x: another structure)
        f = jg.jit(lambda x, k=k: x * float(k) + 1.0)
        x = np.arange(3 + k, dtype=np.float32)
        np.testing.assert_array_equal(f(x).numpy(), x * float(k) + 1.0)
        kernels |= {id(c.kernel) for c in f._versions.values()}
    assert len(kernels) == 2


@pytest.mark.slow  # a soak test (the default run stays under 10 minutes)
def test_a_thousand_shapes_stay_under_200_mib():
    """The issue's bound, in a fresh process: RSS after 1,000 input shapes of a jit_grad
    function, with the default settings, minus RSS after `import jitgrad`."""
    script = textwrap.dedent("""
        import numpy as np, jitgrad as jg
        def rss_mib():
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096 / 2**20
        start = rss_mib()
        @jg.jit_grad(wrt=(0, 1))
        def loss(w, b, x):
            return jg.reduce_mean(jg.softplus(x @ w + b))
        w, b = np.ones((4, 3), np.float32), np.zeros(3, np.float32)
        for n in range(2, 1002):
            value, (gw, gb) = loss(w, b, np.ones((n, 4), np.float32))
            assert abs(float(value) - float(np.log1p(np.exp(4.0)))) < 1e-5
        print(rss_mib() - start)
    """)
    env = dict(os.environ, JITGRAD_CACHE_DIR=jg.config.cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) < 200, done.stdout
