"""Memory stays bounded: long loops, deleted tapes and per-shape compiled versions."""

import gc
import weakref

import numpy as np

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
