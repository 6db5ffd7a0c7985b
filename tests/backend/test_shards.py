"""Kernels whose batch runs as shards at once (passes/shard.py, backend/numba/shards.py):
the same values as the kernel without shards and as the eager tape, errors raised before the
shards, a train step's update after them."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from shard_models import cnn_data, cnn_loss, dropout_loss

import jitgrad as jg
from jitgrad.compiler import function
from jitgrad.passes import shard


@pytest.fixture(autouse=True)
def _two_shards(monkeypatch):
    """Two shards whatever the machine (a one-core machine runs them one after the other) and
    whatever the model's size."""
    monkeypatch.setattr(function, "usable_threads", lambda: 2)
    monkeypatch.setattr(shard, "MIN_SHARDED_FLOPS", 0)
    monkeypatch.setattr(jg.config, "compile", "blocking")


def kernel_has_shards(fn, *args) -> bool:
    return "shard_arrays(" in fn.lower(*args).source


def test_gradients_equal_the_unsharded_kernel_and_the_tape(monkeypatch):
    params, x, y = cnn_data()
    sharded = jg.jit_grad(cnn_loss, wrt=0)
    assert kernel_has_shards(sharded, params, x, y)
    loss, grads = sharded(params, x, y)
    loss_again, grads_again = sharded(params, x, y)  # the pooled buffers reused
    monkeypatch.setattr(jg.config, "shard_batch", False)
    plain = jg.jit_grad(cnn_loss, wrt=0)
    assert not kernel_has_shards(plain, params, x, y)
    want_loss, want = plain(params, x, y)
    eager_loss, eager = jg.value_and_grad(cnn_loss)(params, x, y)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(eager_loss), rtol=1e-5)
    assert float(loss_again) == float(loss)
    for k in params:
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(want[k]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(eager[k]), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(grads_again[k]), np.asarray(grads[k]))


def test_a_bad_label_raises_before_the_shards():
    params, x, y = cnn_data()
    y[5] = 7
    fn = jg.jit_grad(cnn_loss, wrt=0)
    assert kernel_has_shards(fn, params, x, y)
    with pytest.raises(IndexError, match=r"sparse_softmax_cross_entropy_with_logits: label 7"):
        fn(params, x, y)


def per_example(p, x):
    h = jg.nn.relu(jg.nn.conv2d(x, p["k"], 1, "VALID") + p["c"])
    losses = jg.reduce_sum(jg.nn.max_pool2d(h, 2, 2, "VALID") ** 2, axis=(1, 2, 3))
    return losses, jg.reduce_sum(losses)


def test_per_example_outputs_in_float64():
    params, x, _ = cnn_data(dtype=np.float64)
    fn = jg.jit(per_example)
    assert kernel_has_shards(fn, params, x)
    losses, total = fn(params, x)
    want_losses, want_total = per_example(params, x)
    assert losses.shape == (8,)
    np.testing.assert_allclose(np.asarray(losses), np.asarray(want_losses), rtol=1e-12)
    np.testing.assert_allclose(float(total), float(want_total), rtol=1e-12)


def test_a_train_step_updates_once_with_the_shards_summed(monkeypatch):
    def train(shard_batch):
        monkeypatch.setattr(jg.config, "shard_batch", shard_batch)
        params, x, y = cnn_data()
        optimizer = jg.optim.Adam(0.01)
        state = optimizer.init(params)
        step = jg.jit_train_step(cnn_loss, optimizer)
        losses = [float(step(params, state, x, y)) for _ in range(3)]
        return params, losses, step

    params, losses, step = train(True)
    assert kernel_has_shards(step, params, step.optimizer.init(params), *cnn_data()[1:])
    want_params, want_losses = train(False)[:2]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(
            np.asarray(params[k]), np.asarray(want_params[k]), rtol=1e-4, atol=1e-6
        )


SCRIPT = """
import sys
import numpy as np
import jitgrad as jg
from jitgrad.compiler import function
from jitgrad.passes import shard
sys.path.insert(0, {tests!r})
from shard_models import cnn_data, cnn_loss

function.usable_threads = lambda: 2
shard.MIN_SHARDED_FLOPS = 0
jg.config.compile = "blocking"
fn = jg.jit_grad(cnn_loss, wrt=0)
params, x, y = cnn_data()
loss, grads = fn(params, x, y)
print(fn.cache_info().disk_loads, float(loss), float(np.abs(grads["k"]).sum()))
"""


def test_a_sharded_kernel_loads_from_the_disk_cache_in_a_new_process(tmp_path):
    """The second process loads the kernel and its shard body (bound to its symbol before the
    kernel's machine code is linked) from the cache, and computes the same values."""
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path))
    script = SCRIPT.format(tests=os.path.dirname(os.path.dirname(__file__)))
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.split() for run in runs)
    assert first[0] == "0" and second[0] == "1"  # compiled, then loaded from the disk
    assert first[1:] == second[1:]


def test_dropout_keeps_its_mask_across_shards():
    params, x, y = cnn_data()
    fn = jg.jit_grad(dropout_loss, wrt=0)
    assert kernel_has_shards(fn, params, x, y, np.int32(5))
    loss, grads = fn(params, x, y, np.int32(5))
    eager_loss, eager = jg.value_and_grad(dropout_loss)(params, x, y, np.int32(5))
    np.testing.assert_allclose(float(loss), float(eager_loss), rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(eager[k]), rtol=1e-4, atol=1e-6)


def test_the_blas_threads_are_one_during_the_shards_and_restored_after():
    """Each shard's products run on its own core (set_blas_threads(1) around the shards), and
    the caller's BLAS keeps its thread count."""
    from jitgrad.backend.numba.blas_threads import scipy_openblas

    library = scipy_openblas()
    threads = getattr(library, "scipy_openblas_get_num_threads", None)
    if threads is None:
        pytest.skip("scipy does not bundle OpenBLAS here")
    params, x, y = cnn_data()
    fn = jg.jit_grad(cnn_loss, wrt=0)
    kernel = fn.lower(params, x, y).source.split("def kernel(")[1]
    call = re.search(r"^ +shards\d+\(", kernel, re.MULTILINE).start()
    assert kernel.index("set_blas_threads(np.int32(1))") < call < kernel.index("set_blas_threads(v")
    before = threads()
    fn(params, x, y)
    assert threads() == before
