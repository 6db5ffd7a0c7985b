"""The eager tape reuses a compiled backward kernel for a graph structure it has seen."""

import numpy as np

import jitgrad as jg
from jitgrad.compiler import tape_backward

rng = np.random.default_rng(0)
X = rng.standard_normal((16, 5))
Y = (rng.uniform(size=16) > 0.5).astype(np.float64)


def loss_and_grads(w, b, x=X):
    with jg.GradientTape() as tape:
        z = x @ w + b
        loss = jg.reduce_mean(jg.softplus(z) - Y[: len(x)] * z)
    return loss, tape.gradient(loss, [w, b])


def reference(w, b, x=X):
    z = x @ w + b
    s = 1 / (1 + np.exp(-z))
    n = len(x)
    return x.T @ (s - Y[:n]) / n, np.sum(s - Y[:n]) / n


def test_second_step_runs_the_compiled_backward_with_equal_results():
    w = jg.Variable(rng.standard_normal(5))
    b = jg.Variable(0.3, dtype=jg.float64)
    before = dict(tape_backward.stats)
    results = []
    for _ in range(4):
        _, (gw, gb) = loss_and_grads(w, b)
        results.append((np.asarray(gw), float(gb)))
        w.assign_sub(0.1 * gw)
    compiled = tape_backward.stats["compiled"] - before["compiled"]
    eager = tape_backward.stats["eager"] - before["eager"]
    assert (eager, compiled) == (1, 3)
    w.assign(rng.standard_normal(5))
    _, (gw, gb) = loss_and_grads(w, b)
    expected_w, expected_b = reference(w.numpy(), float(b))
    np.testing.assert_allclose(np.asarray(gw), expected_w, rtol=1e-12)
    np.testing.assert_allclose(float(gb), expected_b, rtol=1e-12)


def test_a_new_structure_runs_eagerly_first():
    w = jg.Variable(rng.standard_normal(5))
    b = jg.Variable(0.0, dtype=jg.float64)
    loss_and_grads(w, b, X[:8])
    before = dict(tape_backward.stats)
    loss_and_grads(w, b, X[:8])  # seen once: compiled now
    loss_and_grads(w, b, X[:4])  # new shapes: eager
    assert tape_backward.stats["compiled"] - before["compiled"] == 1
    assert tape_backward.stats["eager"] - before["eager"] == 1


def test_nested_tapes_keep_the_eager_path_for_higher_orders():
    x = jg.constant(1.5, dtype=jg.float64)
    for _ in range(3):
        with jg.GradientTape() as outer:
            outer.watch(x)
            with jg.GradientTape() as inner:
                inner.watch(x)
                y = x * x * x
            dy = inner.gradient(y, x)
        d2y = outer.gradient(dy, x)
        assert float(dy) == 3 * 1.5**2
        assert float(d2y) == 6 * 1.5


def test_custom_gradients_stay_eager():
    @jg.custom_gradient
    def clipped(x):
        return x * 1.0, lambda dy: jg.clip_by_value(dy, -0.5, 0.5)

    x = jg.Variable(np.array([1.0, 2.0]))
    for _ in range(3):
        with jg.GradientTape() as tape:
            y = jg.reduce_sum(clipped(x) * 3.0)
        np.testing.assert_array_equal(np.asarray(tape.gradient(y, x)), [0.5, 0.5])


def test_compiled_backward_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(jg.config, "compile_tape_backward", False)
    w = jg.Variable(rng.standard_normal(5))
    b = jg.Variable(0.0, dtype=jg.float64)
    before = dict(tape_backward.stats)
    for _ in range(3):
        loss_and_grads(w, b, X[:6])
    assert tape_backward.stats["compiled"] == before["compiled"]
    assert tape_backward.stats["eager"] - before["eager"] == 3


def test_a_blocking_compile_types_the_arrays_as_the_background_one_does():
    """Both modes compile the tape's kernel for read-only arrays (which also takes writeable
    ones), and nothing else: a disk cache written in one mode serves the other. A blocking
    compile used to leave the signature to Numba's first call (writeable arrays): a process in
    the default background mode then found no machine code for its signature, recompiled,
    and warned that the entry was stale (test_background checks the two modes end to end)."""
    w = jg.Variable(rng.standard_normal(5))
    b = jg.Variable(0.1, dtype=jg.float64)
    for _ in range(3):
        loss_and_grads(w, b, X[:11])
    from jitgrad.backend.numba.signature import numba_signature, signature_spec

    compiled = next(reversed(tape_backward._cache.values())).compiled
    spec = signature_spec(compiled.kernel_source, compiled.graph)
    assert compiled.kernel.signatures == [numba_signature(spec)]
    assert any(entry[0] == "array" and entry[3] for entry in spec)  # read-only arrays
    assert not compiled.kernel._can_compile
