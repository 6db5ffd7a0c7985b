"""Concurrency: compiled functions called from many threads at once."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import jitgrad as jg


@jg.jit_grad(wrt=(1, 2))
def w2_loss(x, w, b):
    return jg.reduce_mean(jg.tanh(x * w + b) ** 2)


def reference(x, w, b):
    t = np.tanh(x.astype(np.float64) * w + b)
    n = x.size
    return (t**2).mean(), 2 * t * (1 - t**2) * x / n, 2 * t * (1 - t**2) / n


def _check_threads(n_elements, n_threads=8):
    rng = np.random.default_rng(n_elements)
    inputs = [
        [rng.standard_normal(n_elements).astype(np.float32) for _ in range(3)]
        for _ in range(n_threads)
    ]
    barrier = threading.Barrier(n_threads)

    def work(args):
        barrier.wait()
        results = [w2_loss(*args) for _ in range(5)]
        return args, results

    with ThreadPoolExecutor(n_threads) as pool:
        for args, results in pool.map(work, inputs):
            value, dw, db = reference(*args)
            for v, (gw, gb) in results:
                np.testing.assert_allclose(float(v), value, rtol=1e-5)
                np.testing.assert_allclose(np.asarray(gw), dw, rtol=1e-4, atol=1e-9)
                np.testing.assert_allclose(np.asarray(gb), db, rtol=1e-4, atol=1e-9)


def test_eight_threads_get_their_own_results():
    _check_threads(1000)


def test_eight_threads_running_a_parallel_kernel():
    n = 1 << 18  # above the parallel threshold: a prange kernel
    assert w2_loss.lower(*[np.ones(n, np.float32)] * 3).compile().kernel_source.parallel
    _check_threads(n)


def test_concurrent_first_calls_compile_once():
    f = jg.jit(lambda x: jg.sin(x) * 2.0)
    x = np.linspace(0, 1, 33)
    barrier = threading.Barrier(8)

    def work(_):
        barrier.wait()
        return np.asarray(f(x))

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(work, range(8)))
    for out in outs:
        np.testing.assert_allclose(out, np.sin(x) * 2.0)
    info = f.cache_info()
    assert info.misses == 1 and info.hits == 7


def test_num_threads_setting_is_applied(monkeypatch):
    import numba

    x = np.ones(1 << 18, np.float32)
    monkeypatch.setattr(jg.config, "num_threads", 1)
    value, _ = w2_loss(x, x, x)
    assert numba.get_num_threads() == 1
    monkeypatch.setattr(jg.config, "num_threads", numba.config.NUMBA_NUM_THREADS)
    value2, _ = w2_loss(x, x, x)
    # Another thread count sums 2**18 float32 terms in another order: ~sqrt(n) eps apart.
    assert float(value) == pytest.approx(float(value2), rel=1e-4)


def _triple_sin_plus(x, y):
    return jg.sin(x) * 3.0 + y  # used by this test only: its kernel is compiled here, first


def test_first_calls_of_functions_that_share_a_kernel():
    """Eight jit objects of one function generate the same source, so they share one Numba
    dispatcher; their first calls, released together, compile it once and all use it."""
    functions = [jg.jit(_triple_sin_plus) for _ in range(8)]
    x = np.linspace(0, 1, 33, dtype=np.float32)
    barrier = threading.Barrier(8)

    def work(f):
        barrier.wait()
        return np.asarray(f(x, 0.5))  # a Python float: typed float32 by the one signature

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(work, functions))
    for out in outs:
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, np.sin(x) * 3 + 0.5, rtol=1e-6)
    kernels = {f.lower(x, 0.5).compile().kernel for f in functions}
    assert len(kernels) == 1 and len(kernels.pop().signatures) == 1
