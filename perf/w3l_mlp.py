"""W3L big-mlp: JAX's MNIST example network, MLP 784 -> 1024 (relu) -> 1024 (relu) -> 10, mean
softmax cross-entropy with integer labels, batch 128, float32; value and grads w.r.t. W1, b1,
W2, b2, W3, b3.

Milliseconds per value+grad call, with the default threads and (run.py's second pass, as for
W2/W3/W7) with one thread. Data (numpy default_rng(SEED)): inputs uniform in [0, 1) (pixel-like),
labels uniform in 0..9 (int32), weights He-normal (std sqrt(2 / fan_in); the last layer
sqrt(1 / fan_in)), biases N(0, 0.01). The seed is one whose float64 forward pass has no hidden
pre-activation within MARGIN of zero (checked by `reference`): a float32 system could otherwise
flip one relu and drop one of the 128 terms of a weight gradient (~10% of its scale), a
disagreement of the data, not of the system.

FLOPs (multiply + add = 2): forward 2 B (784 * 1024 + 1024 * 1024 + 1024 * 10) = 476.6 MFLOP;
backward dW1, dW2, dW3 and the gradients of both hidden layers (none w.r.t. the input) =
747.6 MFLOP; 1,224 MFLOP in all. The floor is that at the measured sgemm peak (as W3's).

Systems: jitgrad (`jit_grad`), numpy by hand (float32), JAX (`jit(value_and_grad)`), PyTorch
eager.

    python perf/w3l_mlp.py --system jax     # one system, this process
    python perf/run.py --only W3L           # through run.py: default threads, then 1 thread
"""

from __future__ import annotations

import types

import numpy as np

from _harness import Bench, Workload, main, setups

B, D, H, C = 128, 784, 1024, 10
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
SEED = 16
MARGIN = 1e-5  # smallest |hidden pre-activation| in the float64 forward pass
_FORWARD = 2 * B * (D * H + H * H + H * C)
_BACKWARD = 2 * B * (D * H + 2 * H * H + 2 * H * C)  # dW1; dW2, dh1; dW3, dh2
FLOPS = _FORWARD + _BACKWARD  # 1,224 MFLOP


def data(seed: int = SEED):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    params = {
        "W1": (rng.standard_normal((D, H)) * np.sqrt(2.0 / D)).astype(f32),
        "b1": (0.1 * rng.standard_normal(H)).astype(f32),
        "W2": (rng.standard_normal((H, H)) * np.sqrt(2.0 / H)).astype(f32),
        "b2": (0.1 * rng.standard_normal(H)).astype(f32),
        "W3": (rng.standard_normal((H, C)) * np.sqrt(1.0 / H)).astype(f32),
        "b3": (0.1 * rng.standard_normal(C)).astype(f32),
    }
    X = rng.random((B, D)).astype(f32)
    y = rng.integers(0, C, B).astype(np.int32)
    return types.SimpleNamespace(params=params, X=X, y=y)


def numpy_value_and_grads(p, X, y, dtype, margin: bool = False):
    """The MLP's loss and gradients, derived by hand (the float64 reference uses this too);
    with `margin`, also the smallest |hidden pre-activation|."""
    W1, b1, W2, b2, W3, b3 = (p[k].astype(dtype, copy=False) for k in NAMES)
    X = X.astype(dtype, copy=False)
    z1 = X @ W1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W2 + b2
    h2 = np.maximum(z2, 0)
    z = h2 @ W3 + b3
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    dz = e / s
    dz[rows, y] -= 1
    dz /= len(y)
    dh2 = (dz @ W3.T) * (z2 > 0)
    dh1 = (dh2 @ W2.T) * (z1 > 0)
    grads = [X.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dz, dz.sum(0)]
    if margin:
        return loss, grads, min(float(np.min(np.abs(z1))), float(np.min(np.abs(z2))))
    return loss, grads


def reference(d):
    loss, grads, margin = numpy_value_and_grads(d.params, d.X, d.y, np.float64, margin=True)
    if margin < MARGIN:
        raise ValueError(
            f"W3L data: a hidden pre-activation is {margin:.2g} from zero (< {MARGIN:g}): "
            "float32 systems could take the other relu branch; change SEED"
        )
    return loss, grads


def floor(machine):
    peak = machine.get("sgemm_gflops")
    if not peak:
        return None
    return FLOPS / (peak * 1e9), f"{FLOPS / 1e6:.0f} MFLOP at {peak:.0f} GFLOP/s"


def _dict_result(out):
    value, grads = out
    return np.asarray(value), [np.asarray(grads[k]) for k in NAMES]


# -- the loss in each framework ------------------------------------------------------------------
def loss_jitgrad(p, X, y):
    import jitgrad as jg

    h = jg.relu(X @ p["W1"] + p["b1"])
    h = jg.relu(h @ p["W2"] + p["b2"])
    z = h @ p["W3"] + p["b3"]
    return jg.reduce_mean(jg.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def loss_jax(p, X, y):
    import jax
    import jax.numpy as jnp

    h = jax.nn.relu(X @ p["W1"] + p["b1"])
    h = jax.nn.relu(h @ p["W2"] + p["b2"])
    logp = jax.nn.log_softmax(h @ p["W3"] + p["b3"])
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def loss_torch(p, X, y):
    import torch

    h = torch.relu(X @ p["W1"] + p["b1"])
    h = torch.relu(h @ p["W2"] + p["b2"])
    return torch.nn.functional.cross_entropy(h @ p["W3"] + p["b3"], y)


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


def setup_jax(d):
    import jax

    vg = jax.jit(jax.value_and_grad(loss_jax))
    p = jax.device_put(d.params)
    X, y = jax.device_put(d.X), jax.device_put(d.y)
    return Bench(
        lambda: jax.block_until_ready(vg(p, X, y)), _dict_result, note="jit(value_and_grad)"
    )


def setup_torch(d):
    import torch

    p = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in d.params.items()}
    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y.astype(np.int64))
    leaves = [p[k] for k in NAMES]

    def vg():
        value = loss_torch(p, X, y)
        return value.detach(), torch.autograd.grad(value, leaves)

    return Bench(
        vg,
        lambda out: (out[0].numpy(), [g.numpy() for g in out[1]]),
        note="autograd.grad, int64 labels",
    )


W3L = Workload(
    "W3L",
    "MLP 784-1024-1024-10 (JAX's MNIST example), batch 128: value + grads of the 6 parameters",
    "ms",
    data,
    reference,
    setups(globals()),
    floor=floor,
)
WORKLOADS = [W3L]

if __name__ == "__main__":
    main(WORKLOADS)
