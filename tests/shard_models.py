"""The small CNNs the batch-shard tests use (tests/passes/test_shard.py, compiled:
tests/backend/test_shards.py): conv, relu, max pool, a dense layer, mean cross-entropy."""

import numpy as np

import jitgrad as jg


def cnn_loss(p, x, y):
    h = jg.nn.relu(jg.nn.conv2d(x, p["k"], 1, "VALID") + p["c"])
    h = jg.nn.max_pool2d(h, 2, 2, "VALID")
    return _dense_loss(p, h, y)


def dropout_loss(p, x, y, key):
    h = jg.nn.relu(jg.nn.conv2d(x, p["k"], 1, "VALID") + p["c"])
    h = jg.nn.dropout(jg.nn.max_pool2d(h, 2, 2, "VALID"), 0.5, key)
    return _dense_loss(p, h, y)


def _dense_loss(p, h, y):
    z = jg.reshape(h, (h.shape[0], -1)) @ p["w"] + p["b"]
    return jg.reduce_mean(jg.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def cnn_data(batch=8, side=6, channels=8, dtype=np.float32, seed=0):
    """(params, images (batch, side, side, 1), labels in 0..2) for cnn_loss."""
    rng = np.random.default_rng(seed)
    flat = ((side - 2) // 2) ** 2 * channels
    params = {
        "k": rng.normal(size=(3, 3, 1, channels)).astype(dtype),
        "c": rng.normal(size=(channels,)).astype(dtype),
        "w": (rng.normal(size=(flat, 3)) / np.sqrt(flat)).astype(dtype),
        "b": rng.normal(size=(3,)).astype(dtype),
    }
    x = rng.normal(size=(batch, side, side, 1)).astype(dtype)
    y = rng.integers(0, 3, size=batch).astype(np.int32)
    return params, x, y
