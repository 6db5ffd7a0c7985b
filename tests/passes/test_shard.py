"""The sharding pass (passes/shard.py): which graphs it splits across shards, and that the
split graph computes what the graph did (run by the numpy interpreter, shards one after
another: the compiled shards are tests/backend/test_shards.py's)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shard_models import cnn_data, cnn_loss, dropout_loss

import jitgrad as jg
from jitgrad.core import pytree
from jitgrad.ir.interpret import eval_graph
from jitgrad.passes import optimize, shard
from jitgrad.passes.shard import shard_batch


@pytest.fixture(autouse=True)
def _any_size(monkeypatch):
    """Small graphs shard too (the cost threshold is for real models)."""
    monkeypatch.setattr(shard, "MIN_SHARDED_FLOPS", 0)


def graphs(fn, *args, threads=2, grad=True):
    """(fn's optimised graph, the same sharded for `threads`, the graph's input leaves)."""
    jitted = jg.jit_grad(fn, wrt=0) if grad else jg.jit(fn)
    graph = optimize(jitted.lower(*args).traced)
    leaves = pytree.flatten(args)[0]
    return graph, shard_batch(graph, threads), [np.asarray(x) for x in leaves]


def shards_eqns(graph):
    return [e for e in graph.eqns if e.op.name == "shards"]


def assert_same_values(graph, sharded, leaves, rtol=1e-5):
    for want, got in zip(eval_graph(graph, *leaves), eval_graph(sharded, *leaves)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)


def test_a_cnn_gradient_splits_into_partial_sums():
    graph, sharded, leaves = graphs(cnn_loss, *cnn_data(8))
    (e,) = shards_eqns(sharded)
    assert e.params["shards"] == 2
    assert set(e.params["out_kinds"]) == {"sum"}  # the loss and every gradient
    assert e.params["body"].inputs[0].aval.shape[0] == 4 or any(
        v.aval.shape[:1] == (4,) for v in e.params["body"].inputs
    )
    assert_same_values(graph, sharded, leaves)


def test_the_label_check_runs_before_the_shards_on_the_whole_batch():
    graph, sharded, _ = graphs(cnn_loss, *cnn_data(8))
    (e,) = shards_eqns(sharded)
    outer = [x.op.name for x in sharded.eqns]
    assert "check_index" in outer[: outer.index("shards")]
    assert not any(x.op.raises for x in e.params["body"].eqns)


@pytest.mark.parametrize(("batch", "threads", "shards"), [(6, 4, 3), (8, 4, 4), (12, 8, 6)])
def test_equal_shards_of_the_batch(batch, threads, shards):
    graph, sharded, leaves = graphs(cnn_loss, *cnn_data(batch), threads=threads)
    (e,) = shards_eqns(sharded)
    assert e.params["shards"] == shards
    assert_same_values(graph, sharded, leaves)


@pytest.mark.parametrize(("batch", "threads"), [(7, 2), (8, 1)])
def test_no_shards_without_an_equal_split_or_a_second_thread(batch, threads):
    graph, sharded, _ = graphs(cnn_loss, *cnn_data(batch), threads=threads)
    assert sharded is graph


def per_example(p, x, y):
    h = jg.nn.relu(jg.nn.conv2d(x, p["k"], 1, "VALID") + p["c"])
    losses = jg.reduce_sum(h * h, axis=(1, 2, 3))  # one value per example
    return losses, jg.reduce_sum(losses) * 0.5


def test_per_example_outputs_are_concatenated():
    params, x, y = cnn_data(8)
    graph, sharded, leaves = graphs(per_example, params, x, y, grad=False)
    (e,) = shards_eqns(sharded)
    assert sorted(e.params["out_kinds"]) == ["concat", "sum"]
    assert_same_values(graph, sharded, leaves)


def sgd_step(p, x, y):
    """Forward, gradients and an update with a nonlinear use of the gradient: the update must
    see the shards' summed gradients."""
    loss, grads = jg.value_and_grad(cnn_loss)(p, x, y)
    return loss, {
        k: p[k] - 0.1 * grads[k] / (jg.sqrt(jg.reduce_sum(grads[k] ** 2)) + 1.0) for k in p
    }


def test_an_update_after_the_gradients_runs_once_after_the_shards():
    graph, sharded, leaves = graphs(sgd_step, *cnn_data(8), grad=False)
    (e,) = shards_eqns(sharded)
    names = [x.op.name for x in sharded.eqns]
    assert "sqrt" in names[names.index("shards") :]
    assert "sqrt" not in [x.op.name for x in e.params["body"].eqns]
    assert_same_values(graph, sharded, leaves)


def batch_norm_loss(p, x, y):
    h = jg.nn.conv2d(x, p["k"], 1, "VALID")
    mean = jg.reduce_mean(h, axis=(0, 1, 2))
    return jg.reduce_sum((h - mean) ** 2)


def max_over_batch(p, x, y):
    return jg.reduce_max(jg.nn.conv2d(x, p["k"], 1, "VALID"))


def mlp_loss(p, x, y):
    return jg.reduce_mean(jg.tanh(jg.reshape(x, (x.shape[0], -1)) @ p["w"]))


@pytest.mark.parametrize("fn", [batch_norm_loss, max_over_batch])
def test_a_batch_statistic_used_per_example_keeps_the_graph(fn):
    graph, sharded, _ = graphs(fn, *cnn_data(8))
    assert sharded is graph


def test_matrix_products_alone_are_left_to_the_blas(monkeypatch):
    monkeypatch.setattr(shard, "MIN_SHARDED_FLOPS", 4e6)
    params = {"w": np.ones((36, 4), np.float32)}
    x = np.ones((64, 6, 6, 1), np.float32)
    graph, sharded, _ = graphs(mlp_loss, params, x, None)
    assert sharded is graph


def test_a_parameter_as_long_as_the_batch_is_not_sharded():
    # w has 4 rows, as the batch has 4 examples: sharding it too fails the proof (a product
    # contracting a sharded axis with another), and the pass tries again without it.
    params, x, y = cnn_data(4, side=4, channels=4)
    assert params["w"].shape[0] == 4
    graph, sharded, leaves = graphs(cnn_loss, params, x, y)
    (e,) = shards_eqns(sharded)
    w_index = [k for k, v in enumerate(graph.inputs) if v.aval.shape == (4, 3)]
    assert all(e.params["in_axes"][list(e.inputs).index(graph.inputs[k])] is None for k in w_index)
    assert_same_values(graph, sharded, leaves)


def scaled_loss(p, x, y, scale):
    return cnn_loss(p, x, y) * scale + jg.reduce_sum(jg.nn.conv2d(x, p["k"], 1, "VALID")) * scale


def test_a_scalar_input_reaches_every_shard():
    params, x, y = cnn_data(8)
    graph, sharded, leaves = graphs(scaled_loss, params, x, y, np.float32(0.5))
    assert len(shards_eqns(sharded)) == 1
    assert_same_values(graph, sharded, leaves)


def test_float64_and_nchw():
    def loss(p, x, y):
        h = jg.nn.conv2d(x, p["k"], 1, "SAME", data_format="NCHW")
        return jg.reduce_mean(jg.tanh(h)) + jg.reduce_sum(
            jg.nn.max_pool2d(x, 2, 2, "VALID", data_format="NCHW")
        )

    rng = np.random.default_rng(1)
    params = {"k": rng.normal(size=(3, 3, 2, 3))}
    x = rng.normal(size=(6, 2, 6, 6))
    graph, sharded, leaves = graphs(loss, params, x, None)
    assert len(shards_eqns(sharded)) == 1
    assert_same_values(graph, sharded, leaves, rtol=1e-12)


def test_a_dropout_mask_drawn_for_the_whole_batch_is_read_by_rows():
    params, x, y = cnn_data(8)
    graph, sharded, leaves = graphs(dropout_loss, params, x, y, np.int32(3))
    (e,) = shards_eqns(sharded)
    sliced = [v for v, axis in zip(e.inputs, e.params["in_axes"]) if axis == 0]
    assert any(v.aval.dtype == np.bool_ for v in sliced)  # the mask, drawn before the shards
    assert_same_values(graph, sharded, leaves)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.sampled_from([2, 4, 6]),
    threads=st.sampled_from([2, 3]),
    side=st.integers(5, 8),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 4),
    stride=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID"]),
    pool=st.booleans(),
    reduce=st.sampled_from(["mean", "sum"]),
)
def test_any_small_cnn_gives_the_same_values_in_shards(
    batch, threads, side, c_in, c_out, stride, padding, pool, reduce
):
    rng = np.random.default_rng(batch * 100 + side * 10 + c_out)
    params = {
        "k": rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32),
        "c": rng.normal(size=(c_out,)).astype(np.float32),
    }
    x = rng.normal(size=(batch, side, side, c_in)).astype(np.float32)

    def loss(p, x):
        h = jg.tanh(jg.nn.conv2d(x, p["k"], stride, padding) + p["c"])
        if pool:
            h = jg.nn.max_pool2d(h, 2, 2, "SAME")
        per_example = jg.reduce_sum(h * h, axis=(1, 2, 3))
        return jg.reduce_mean(per_example) if reduce == "mean" else jg.reduce_sum(per_example)

    graph, sharded, leaves = graphs(loss, params, x, threads=threads)
    shards = max(n for n in range(1, threads + 1) if batch % n == 0)
    (e,) = shards_eqns(sharded)
    assert e.params["shards"] == shards
    assert_same_values(graph, sharded, leaves, rtol=1e-4)
