"""W6 eager-tape loop and W6c compiled train step: logistic regression, 100 features, batch 64,
SGD with learning rate 0.1 on loss = mean(softplus(z) - y z), z = X @ w + b.

Microseconds per step, timed over loops of 200 steps. W6 uses each system's eager tape and
variable updates; W6c compiles the whole step (forward, backward, SGD update).

Check before timing: one step from (w0, b0) must give the float64 loss and the update
-lr * gradient; 200 steps must land on the float64 trajectory's end point.
"""

from __future__ import annotations

import types

import numpy as np

from _harness import Bench, Workload, compare, main

B, F, LR, STEPS = 64, 100, 0.1, 200


def data():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((B, F)).astype(np.float32)
    y = (rng.random(B) < 0.5).astype(np.float32)
    w0 = (0.1 * rng.standard_normal(F)).astype(np.float32)
    b0 = np.array(0.1, np.float32)
    return types.SimpleNamespace(X=X, y=y, w0=w0, b0=b0)


def value_and_grads64(w, b, X, y):
    X, y = X.astype(np.float64), y.astype(np.float64)
    z = X @ w + b
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    dz = (0.5 * (1.0 + np.tanh(0.5 * z)) - y) / len(y)  # sigmoid(z) - y, over the batch
    return loss, X.T @ dz, dz.sum()


def reference(d):
    w, b = d.w0.astype(np.float64), float(d.b0)
    loss, gw, gb = value_and_grads64(w, b, d.X, d.y)
    return loss, [gw, np.float64(gb)]


def trajectory_end(d):
    w, b = d.w0.astype(np.float64), float(d.b0)
    for _ in range(STEPS):
        _, gw, gb = value_and_grads64(w, b, d.X, d.y)
        w, b = w - LR * gw, b - LR * gb
    return w, b


class Trainer:
    """What each system provides: reset(w, b), step() -> loss, params() -> (w, b)."""

    def __init__(self, reset, step, params):
        self.reset, self.step, self.params = reset, step, params


def bench_for(d, trainer: Trainer, note: str) -> Bench:
    def run():
        step = trainer.step
        for _ in range(STEPS):
            loss = step()
        return loss

    def verify():
        trainer.reset(d.w0, d.b0)
        loss = trainer.step()
        w, b = trainer.params()
        ref_loss, (gw, gb) = reference(d)
        worst = compare("loss", float(np.asarray(loss)), ref_loss, 1e-4)
        worst = max(
            worst, compare("w update (-lr dL/dw)", np.asarray(w, np.float64) - d.w0, -LR * gw, 1e-4)
        )
        worst = max(
            worst,
            compare("b update (-lr dL/db)", float(np.asarray(b)) - float(d.b0), -LR * gb, 1e-4),
        )
        trainer.reset(d.w0, d.b0)
        run()
        w, b = trainer.params()
        w_end, b_end = trajectory_end(d)
        compare(f"w after {STEPS} steps", w, w_end, 1e-3)
        compare(f"b after {STEPS} steps", b, b_end, 1e-3)
        trainer.reset(d.w0, d.b0)
        return worst

    return Bench(run, verify=verify, per_call=STEPS, note=note)


# -- W6: eager tapes -----------------------------------------------------------------------------
def eager_jitgrad(d):
    import jitgrad as jg

    w, b = jg.Variable(d.w0), jg.Variable(d.b0)
    X, y = jg.constant(d.X), jg.constant(d.y)

    def step():
        with jg.GradientTape() as tape:
            z = X @ w + b
            loss = jg.reduce_mean(jg.softplus(z) - y * z)
        gw, gb = tape.gradient(loss, [w, b])
        w.assign_sub(LR * gw)
        b.assign_sub(LR * gb)
        return loss

    def reset(w0, b0):
        w.assign(w0)
        b.assign(b0)

    return bench_for(
        d,
        Trainer(reset, step, lambda: (w.numpy(), b.numpy())),
        "GradientTape + Variable.assign_sub",
    )


def eager_numpy(d):
    X, y = d.X, d.y
    w, b = d.w0.copy(), d.b0.copy()
    inv = np.float32(1.0 / B)
    lr = np.float32(LR)

    def step():
        z = X @ w + b
        loss = np.mean(np.logaddexp(np.float32(0), z) - y * z)
        dz = (np.float32(1) / (np.float32(1) + np.exp(-z)) - y) * inv
        w[:] -= lr * (dz @ X)
        b[...] -= lr * dz.sum()
        return loss

    def reset(w0, b0):
        w[:], b[...] = w0, b0

    return bench_for(d, Trainer(reset, step, lambda: (w, b)), "gradient by hand, in place")


def eager_torch(d):
    import torch

    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y)
    w = torch.from_numpy(d.w0.copy()).requires_grad_()
    b = torch.from_numpy(d.b0.copy()).requires_grad_()
    softplus = torch.nn.functional.softplus

    def step():
        z = X @ w + b
        loss = torch.mean(softplus(z) - y * z)
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w.sub_(LR * gw)
            b.sub_(LR * gb)
        return loss.detach()

    def reset(w0, b0):
        with torch.no_grad():
            w.copy_(torch.from_numpy(w0))
            b.copy_(torch.from_numpy(b0))

    return bench_for(
        d,
        Trainer(reset, step, lambda: (w.detach().numpy(), b.detach().numpy())),
        "autograd.grad + in-place sub_",
    )


def eager_autograd(d):
    import autograd
    import autograd.numpy as anp

    def loss_fn(p, X, y):
        z = anp.dot(X, p[0]) + p[1]
        return anp.mean(anp.logaddexp(0.0, z) - y * z)

    vg = autograd.value_and_grad(loss_fn)
    state = {}

    def step():
        loss, (gw, gb) = vg((state["w"], state["b"]), d.X, d.y)
        state["w"] = state["w"] - LR * gw
        state["b"] = state["b"] - LR * gb
        return loss

    def reset(w0, b0):
        state["w"], state["b"] = w0.copy(), b0.copy()

    reset(d.w0, d.b0)
    return bench_for(
        d,
        Trainer(reset, step, lambda: (state["w"], state["b"])),
        "value_and_grad per step (traces every call)",
    )


def eager_tf(d):
    import tensorflow as tf

    X, y = tf.constant(d.X), tf.constant(d.y)
    w, b = tf.Variable(d.w0), tf.Variable(d.b0)

    def step():
        with tf.GradientTape() as tape:
            z = tf.linalg.matvec(X, w) + b
            loss = tf.reduce_mean(tf.nn.softplus(z) - y * z)
        gw, gb = tape.gradient(loss, [w, b])
        w.assign_sub(LR * gw)
        b.assign_sub(LR * gb)
        return loss

    def reset(w0, b0):
        w.assign(w0)
        b.assign(b0)

    return bench_for(
        d,
        Trainer(reset, step, lambda: (w.numpy(), b.numpy())),
        "GradientTape + Variable.assign_sub",
    )


# -- W6c: compiled steps -------------------------------------------------------------------------
def compiled_jitgrad(d):
    import jitgrad as jg
    from _optim import optimizers

    sgd, _, origin = optimizers()

    def loss_fn(p, X, y):
        z = X @ p["w"] + p["b"]
        return jg.reduce_mean(jg.softplus(z) - y * z)

    opt = sgd(LR)
    params = {"w": d.w0.copy(), "b": d.b0.copy()}
    state = opt.init(params)
    train_step = jg.jit_train_step(loss_fn, opt)

    def reset(w0, b0):
        params["w"][:], params["b"][...] = w0, b0

    return bench_for(
        d,
        Trainer(
            reset, lambda: train_step(params, state, d.X, d.y), lambda: (params["w"], params["b"])
        ),
        f"jit_train_step, SGD from {origin}",
    )


def compiled_numba(d):
    import numba as nb

    from jitgrad.backend.numba.vmath import vsigmoid_f32, vsoftplus_f32

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy", cache=True)
    def step(X, y, w, b, lr, dz):
        n, f = X.shape
        inv = np.float32(1.0) / np.float32(n)
        loss = np.float32(0.0)
        gb = np.float32(0.0)
        for i in range(n):
            z = b[()]
            for j in range(f):
                z += X[i, j] * w[j]
            loss += vsoftplus_f32(z) - y[i] * z
            g = (vsigmoid_f32(z) - y[i]) * inv
            dz[i] = g
            gb += g
        for j in range(f):
            gw = np.float32(0.0)
            for i in range(n):
                gw += X[i, j] * dz[i]
            w[j] -= lr * gw
        b[()] -= lr * gb
        return loss * inv

    w, b = d.w0.copy(), d.b0.copy()
    dz = np.empty(B, np.float32)
    lr = np.float32(LR)

    def reset(w0, b0):
        w[:], b[...] = w0, b0

    return bench_for(
        d,
        Trainer(reset, lambda: step(d.X, d.y, w, b, lr, dz), lambda: (w, b)),
        "one njit step, fused loops, in place",
    )


def compiled_jax(d):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, X, y):
        z = X @ p["w"] + p["b"]
        return jnp.mean(jax.nn.softplus(z) - y * z)

    def full_step(p, X, y):
        loss, g = jax.value_and_grad(loss_fn)(p, X, y)
        return loss, jax.tree_util.tree_map(lambda a, ga: a - LR * ga, p, g)

    train_step = jax.jit(full_step, donate_argnums=(0,))
    X, y = jax.device_put(d.X), jax.device_put(d.y)
    state = {}

    def step():
        loss, state["p"] = train_step(state["p"], X, y)
        return loss

    def reset(w0, b0):
        state["p"] = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}

    reset(d.w0, d.b0)
    bench = bench_for(
        d,
        Trainer(reset, step, lambda: (np.asarray(state["p"]["w"]), np.asarray(state["p"]["b"]))),
        "jit of the full step, params donated",
    )
    loop = bench.call
    bench.call = lambda: jax.block_until_ready(loop())  # asynchronous dispatch: wait at the end
    return bench


def compiled_pytensor(d):
    import pytensor
    import pytensor.tensor as pt

    w = pytensor.shared(d.w0.copy(), name="w")
    b = pytensor.shared(d.b0.copy(), name="b")
    X, y = pt.matrix("X", dtype="float32"), pt.vector("y", dtype="float32")
    z = X @ w + b
    loss = pt.mean(pt.softplus(z) - y * z)
    gw, gb = pytensor.grad(loss, [w, b])
    lr = np.float32(LR)
    fn = pytensor.function([X, y], loss, updates=[(w, w - lr * gw), (b, b - lr * gb)], mode="NUMBA")

    def reset(w0, b0):
        w.set_value(w0.copy())
        b.set_value(b0.copy())

    return bench_for(
        d,
        Trainer(reset, lambda: fn(d.X, d.y), lambda: (w.get_value(), b.get_value())),
        "function with updates on shared variables, mode='NUMBA'",
    )


def compiled_torch(d):
    import torch
    from torch.func import grad_and_value

    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y)
    w, b = torch.from_numpy(d.w0.copy()), torch.from_numpy(d.b0.copy())

    def loss_fn(w, b):
        z = X @ w + b
        return torch.mean(torch.nn.functional.softplus(z) - y * z)

    vg = grad_and_value(loss_fn, argnums=(0, 1))

    @torch.compile
    def train_step(w, b):
        (gw, gb), loss = vg(w, b)
        w.sub_(LR * gw)
        b.sub_(LR * gb)
        return loss

    def reset(w0, b0):
        w.copy_(torch.from_numpy(w0))
        b.copy_(torch.from_numpy(b0))

    return bench_for(
        d,
        Trainer(reset, lambda: train_step(w, b), lambda: (w.numpy(), b.numpy())),
        "torch.compile of func.grad_and_value + in-place update",
    )


W6 = Workload(
    "W6",
    "eager tape: logistic regression 100 features, batch 64, SGD",
    "us/step",
    data,
    reference,
    {
        "jitgrad": eager_jitgrad,
        "numpy": eager_numpy,
        "torch": eager_torch,
        "autograd": eager_autograd,
        "tf": eager_tf,
    },
)
W6C = Workload(
    "W6c",
    "compiled train step: the W6 step (forward, backward, SGD) compiled",
    "us/step",
    data,
    reference,
    {
        "jitgrad": compiled_jitgrad,
        "numba": compiled_numba,
        "jax": compiled_jax,
        "torch_compile": compiled_torch,
        "pytensor": compiled_pytensor,
    },
)
WORKLOADS = [W6, W6C]

if __name__ == "__main__":
    main(WORKLOADS)
