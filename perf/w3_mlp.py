"""W3 mlp-step: MLP 784 -> 256 (relu) -> 10, mean softmax cross-entropy with integer labels,
batch 128, float32; value and grads w.r.t. W1, b1, W2, b2.

Milliseconds per value+grad call. Floor: 104.7 MFLOP (forward + dW1 + dW2 + d(hidden), no
gradient w.r.t. the input) at the measured sgemm peak. The loss functions here are reused by
W4 (time to first gradient) and W7 (Adam step).
"""

from __future__ import annotations

import math
import types

import numpy as np

from _harness import Bench, Workload, main, setups

B, D, H, C = 128, 784, 256, 10
FLOPS = 2 * B * D * H * 2 + 2 * B * H * C * 3  # X@W1, dW1; h@W2, dW2, dh = 104.7 MFLOP
NAMES = ("W1", "b1", "W2", "b2")


def data():
    rng = np.random.default_rng(3)
    f32 = np.float32
    params = {
        "W1": (rng.standard_normal((D, H)) * np.sqrt(2.0 / D)).astype(f32),
        "b1": (0.1 * rng.standard_normal(H)).astype(f32),
        "W2": (rng.standard_normal((H, C)) * np.sqrt(1.0 / H)).astype(f32),
        "b2": (0.1 * rng.standard_normal(C)).astype(f32),
    }
    X = rng.standard_normal((B, D)).astype(f32)
    y = rng.integers(0, C, B).astype(np.int32)
    return types.SimpleNamespace(params=params, X=X, y=y)


def numpy_value_and_grads(p, X, y, dtype):
    """The MLP's loss and gradients, derived by hand (the float64 reference uses this too)."""
    W1, b1, W2, b2 = (p[k].astype(dtype, copy=False) for k in NAMES)
    X = X.astype(dtype, copy=False)
    h = np.maximum(X @ W1 + b1, 0)
    z = h @ W2 + b2
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    dz = e / s
    dz[rows, y] -= 1
    dz /= len(y)
    dh = (dz @ W2.T) * (h > 0)
    return loss, [X.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]


def reference(d):
    return numpy_value_and_grads(d.params, d.X, d.y, np.float64)


def floor(machine):
    peak = machine.get("sgemm_gflops")
    if not peak:
        return None
    return FLOPS / (peak * 1e9), f"{FLOPS / 1e6:.1f} MFLOP at {peak:.0f} GFLOP/s"


def _dict_result(out):
    value, grads = out
    return np.asarray(value), [np.asarray(grads[k]) for k in NAMES]


# -- the loss in each framework ------------------------------------------------------------------
def loss_jitgrad(p, X, y):
    import jitgrad as jg

    h = jg.relu(X @ p["W1"] + p["b1"])
    z = h @ p["W2"] + p["b2"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def loss_jax(p, X, y):
    import jax
    import jax.numpy as jnp

    h = jax.nn.relu(X @ p["W1"] + p["b1"])
    z = h @ p["W2"] + p["b2"]
    logp = jax.nn.log_softmax(z)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def loss_torch(p, X, y):
    import torch

    h = torch.relu(X @ p["W1"] + p["b1"])
    return torch.nn.functional.cross_entropy(h @ p["W2"] + p["b2"], y)


def loss_autograd(p, X, y):
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp

    h = anp.maximum(anp.dot(X, p["W1"]) + p["b1"], 0.0)
    z = anp.dot(h, p["W2"]) + p["b2"]
    return anp.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y])


def loss_pytensor(p, X, y):
    import pytensor.tensor as pt

    h = pt.maximum(X @ p["W1"] + p["b1"], 0)
    logp = pt.special.log_softmax(h @ p["W2"] + p["b2"], axis=1)
    return -pt.mean(logp[pt.arange(y.shape[0]), y])


def loss_tf(p, X, y):
    import tensorflow as tf

    h = tf.nn.relu(X @ p["W1"] + p["b1"])
    z = h @ p["W2"] + p["b2"]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


# -- value and gradient per system ---------------------------------------------------------------
def setup_jitgrad(d):
    import jitgrad as jg

    vg = jg.jit_grad(loss_jitgrad, wrt=0)
    return Bench(
        lambda: vg(d.params, d.X, d.y), _dict_result, note="jit_grad(wrt=0) of a dict of params"
    )


def setup_numpy(d):
    return Bench(
        lambda: numpy_value_and_grads(d.params, d.X, d.y, np.float32),
        lambda out: out,
        note="backprop by hand, float32",
    )


def numba_kernel():
    """The hand-fused W3 kernel: np.dot (BLAS) into caller-allocated buffers with transposed
    operands as views, bias+relu fused after the first matmul, softmax cross-entropy and its
    gradient in one row loop, the relu mask and db1 fused into one loop. (math.exp: 1280 calls
    per step, not worth a vectorised exp, and it keeps jitgrad out of W4's import time.)"""
    import numba as nb

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy", cache=True)
    def kernel(X, y, W1, b1, W2, b2, h, z, dh, dW1, db1, dW2, db2):
        n, hidden = h.shape
        classes = z.shape[1]
        inv = np.float32(1.0) / np.float32(n)
        np.dot(X, W1, h)
        for i in range(n):
            for j in range(hidden):
                v = h[i, j] + b1[j]
                h[i, j] = v if v > np.float32(0.0) else np.float32(0.0)
        np.dot(h, W2, z)
        loss = np.float32(0.0)
        db2[:] = 0
        for i in range(n):  # z becomes d loss / d z
            m = z[i, 0] + b2[0]
            for k in range(classes):
                z[i, k] += b2[k]
                m = max(m, z[i, k])
            s = np.float32(0.0)
            picked = z[i, y[i]]
            for k in range(classes):
                e = math.exp(z[i, k] - m)
                z[i, k] = e
                s += e
            loss += math.log(s) + m - picked
            scale = inv / s
            for k in range(classes):
                z[i, k] *= scale
            z[i, y[i]] -= inv
            for k in range(classes):
                db2[k] += z[i, k]
        np.dot(h.T, z, dW2)
        np.dot(z, W2.T, dh)
        db1[:] = 0
        for i in range(n):
            for j in range(hidden):
                g = dh[i, j] if h[i, j] > np.float32(0.0) else np.float32(0.0)
                dh[i, j] = g
                db1[j] += g
        np.dot(X.T, dh, dW1)
        return loss * inv

    return kernel


def numba_buffers(p, X):
    f32 = np.float32
    return dict(
        h=np.empty((len(X), H), f32),
        z=np.empty((len(X), C), f32),
        dh=np.empty((len(X), H), f32),
        grads={k: np.empty_like(v) for k, v in p.items()},
    )


def setup_numba(d):
    kernel = numba_kernel()
    p, buf = d.params, numba_buffers(d.params, d.X)
    g = buf["grads"]

    def vg():
        loss = kernel(
            d.X,
            d.y,
            p["W1"],
            p["b1"],
            p["W2"],
            p["b2"],
            buf["h"],
            buf["z"],
            buf["dh"],
            g["W1"],
            g["b1"],
            g["W2"],
            g["b2"],
        )
        return loss, g

    return Bench(vg, _dict_result, note="np.dot in njit, fused loops, caller-allocated buffers")


def setup_jax(d):
    import jax

    vg = jax.jit(jax.value_and_grad(loss_jax))
    p = jax.device_put(d.params)
    X, y = jax.device_put(d.X), jax.device_put(d.y)
    return Bench(
        lambda: jax.block_until_ready(vg(p, X, y)), _dict_result, note="jit(value_and_grad)"
    )


def torch_value_and_grad(d, compile_):
    import torch

    p = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in d.params.items()}
    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y.astype(np.int64))
    loss = torch.compile(loss_torch) if compile_ else loss_torch
    leaves = [p[k] for k in NAMES]

    def vg():
        value = loss(p, X, y)
        return value.detach(), dict(zip(NAMES, torch.autograd.grad(value, leaves)))

    return vg, lambda out: (out[0].numpy(), [out[1][k].numpy() for k in NAMES])


def setup_torch(d):
    return Bench(*torch_value_and_grad(d, False), note="autograd.grad, int64 labels")


def setup_torch_compile(d):
    return Bench(*torch_value_and_grad(d, True), note="torch.compile(loss) + autograd.grad")


def setup_autograd(d):
    import autograd

    vg = autograd.value_and_grad(loss_autograd)
    return Bench(lambda: vg(d.params, d.X, d.y), _dict_result, note="value_and_grad")


def pytensor_graph():
    import pytensor.tensor as pt

    p = {
        "W1": pt.matrix("W1", dtype="float32"),
        "b1": pt.vector("b1", dtype="float32"),
        "W2": pt.matrix("W2", dtype="float32"),
        "b2": pt.vector("b2", dtype="float32"),
    }
    X, y = pt.matrix("X", dtype="float32"), pt.vector("y", dtype="int32")
    loss = loss_pytensor(p, X, y)
    return p, X, y, loss


def pytensor_function():
    import pytensor

    p, X, y, loss = pytensor_graph()
    leaves = [p[k] for k in NAMES]
    return pytensor.function([*leaves, X, y], [loss, *pytensor.grad(loss, leaves)], mode="NUMBA")


def setup_pytensor(d):
    fn = pytensor_function()
    args = [d.params[k] for k in NAMES] + [d.X, d.y]
    return Bench(lambda: fn(*args), lambda out: (out[0], out[1:]), note="mode='NUMBA'")


def setup_tf(d):
    import tensorflow as tf

    p = {k: tf.Variable(v) for k, v in d.params.items()}
    X, y = tf.constant(d.X), tf.constant(d.y)

    def vg():
        with tf.GradientTape() as tape:
            value = loss_tf(p, X, y)
        return value, dict(zip(NAMES, tape.gradient(value, [p[k] for k in NAMES])))

    return Bench(
        vg, lambda out: (out[0].numpy(), [out[1][k].numpy() for k in NAMES]), note="GradientTape"
    )


W3 = Workload(
    "W3",
    "MLP 784-256-10, batch 128: value + grads of W1, b1, W2, b2",
    "ms",
    data,
    reference,
    setups(globals()),
    floor=floor,
)
WORKLOADS = [W3]

if __name__ == "__main__":
    main(WORKLOADS)
