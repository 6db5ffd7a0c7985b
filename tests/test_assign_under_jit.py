"""Variable.assign / assign_add / assign_sub inside jit (tf.function): the new value is an
output of the kernel, written back after every call; reads later in the function see it."""

import numpy as np
import pytest

import jitgrad as jg


def test_assignments_are_written_back_at_every_call():
    v = jg.Variable(1.0)
    count = jg.Variable(0, dtype=jg.int32)

    @jg.function
    def step(x):
        v.assign(v * x)
        count.assign_add(1)
        return v.read_value() + 1.0  # reads the value assigned above

    assert float(step(2.0)) == 3.0 and float(v.numpy()) == 2.0
    assert float(step(3.0)) == 7.0 and float(v.numpy()) == 6.0
    assert int(count.numpy()) == 2


def test_manual_sgd_as_in_tensorflows_basic_training_loop():
    w, b = jg.Variable(5.0), jg.Variable(0.0)
    xs = np.linspace(-1, 1, 20).astype(np.float32)
    ys = 3.0 * xs + 2.0

    @jg.function
    def train(x, y, learning_rate):
        with jg.GradientTape() as tape:
            loss = jg.reduce_mean((w * x + b - y) ** 2)
        dw, db = tape.gradient(loss, [w, b])
        w.assign_sub(learning_rate * dw)
        b.assign_sub(learning_rate * db)
        return loss

    losses = [float(train(xs, ys, 0.5)) for _ in range(60)]
    assert losses[-1] < 1e-3 < losses[0]
    assert float(w.numpy()) == pytest.approx(3.0, abs=0.05)
    assert float(b.numpy()) == pytest.approx(2.0, abs=0.05)


def test_reads_are_not_frozen_at_trace_time():
    v = jg.Variable(np.ones(3, np.float32))
    f = jg.jit(lambda x: v.value() * x)
    np.testing.assert_allclose(f(2.0).numpy(), 2.0)
    v.assign(np.full(3, 4.0, np.float32))
    np.testing.assert_allclose(f(2.0).numpy(), 8.0)


def test_assigning_a_wrong_shape_or_dtype_is_a_clear_error():
    v = jg.Variable(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"shape \(3,\) does not match.*shape \(2,\)"):
        jg.jit(lambda x: v.assign(x))(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float64 value for the float32 variable"):
        jg.jit(lambda x: v.assign(x))(np.ones(2, np.float64))


def test_assigning_inside_a_loop_body_says_where_to_assign_instead():
    v = jg.Variable(0.0)

    @jg.jit
    def f(x):
        return jg.fori_loop(0, 3, lambda i, c: v.assign(c) and c + x, x)

    with pytest.raises(jg.TracerError, match="Variable was assigned.*inside"):
        f(np.float32(1.0))
