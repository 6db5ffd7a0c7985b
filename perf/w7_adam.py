"""W7 adam-step: W3 (MLP 784-256-10, batch 128) plus an Adam update of all four parameters, as
one training step; milliseconds per step.

jitgrad three ways: `jit_train_step` (one kernel, params and state updated in place), `jit_grad`
plus a separately jitted `optimizer.update`, and `jit_grad` alone (the W3 value+grad: the
target is a train step within 1.1x of it). Peers: a JAX jit of the full step with donated
buffers (Adam written by hand in jax.numpy: optax is not a dependency), PyTorch eager with
torch.optim.Adam, PyTensor with updates, TensorFlow eager with Keras' Adam, and the
hand-written numpy and Numba steps.

Adam comes in two forms: Keras' "epsilon hat" (jitgrad.optim, Keras, and the hand-written
steps here: p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps), eps = 1e-7) and the paper's
(torch.optim: p -= lr m^ / (sqrt(v^) + eps), eps = 1e-8). Before timing, one step from the
initial point must match the float64 reference of the system's form: the loss, the first and
second moments (which check the gradients: m = (1 - b1) g after one step) and the update
computed from them.
"""

from __future__ import annotations

import numpy as np

import w3_mlp
from _harness import Bench, Workload, compare, compare_all, main
from w3_mlp import NAMES

LR, B1, B2 = 1e-3, 0.9, 0.999
EPS = {"keras": 1e-7, "paper": 1e-8}


def data():
    return w3_mlp.data()


def reference(d):
    return w3_mlp.reference(d)


def adam_update(m, v, form):
    """The first step's update from its moments m and v (float64)."""
    if form == "keras":
        return -LR * np.sqrt(1 - B2) / (1 - B1) * m / (np.sqrt(v) + EPS[form])
    return -LR * (m / (1 - B1)) / (np.sqrt(v / (1 - B2)) + EPS[form])


def adam_first_step(g, form):
    """(m, v, update) after the first step from zero moments, in float64."""
    m, v = (1 - B1) * g, (1 - B2) * g * g
    return m, v, adam_update(m, v, form)


class Stepper:
    """What each system provides: reset() back to the initial params and zero state,
    step() -> loss, params() -> dict of arrays, moments() -> (m dict, v dict) or None."""

    def __init__(self, reset, step, params, moments=None):
        self.reset, self.step, self.params, self.moments = reset, step, params, moments


def bench_for(d, stepper: Stepper, form: str, note: str) -> Bench:
    def verify():
        stepper.reset()
        loss = stepper.step()
        ref_loss, ref_grads = reference(d)
        worst = compare("loss", float(np.asarray(loss)), ref_loss, 1e-4)
        moments = stepper.moments() if stepper.moments else None
        params = stepper.params()
        for k, g in zip(NAMES, ref_grads):
            m, v, update = adam_first_step(g, form)
            got_update = np.asarray(params[k], np.float64) - d.params[k]
            if moments is None:  # the gradients were checked in W3; the update's sign here
                compare(f"update of {k}", got_update, update, 1e-2)
                continue
            got_m, got_v = (np.asarray(x[k], np.float64) for x in moments)
            worst = max(worst, compare(f"m[{k}] = (1 - b1) g", got_m, m, 1e-4))
            worst = max(worst, compare(f"v[{k}] = (1 - b2) g^2", got_v, v, 1e-4))
            # The update amplifies float32 rounding of g where |g| ~ eps: check it against
            # the system's own moments.
            worst = max(
                worst, compare(f"update of {k}", got_update, adam_update(got_m, got_v, form), 1e-4)
            )
        stepper.reset()
        return worst

    return Bench(
        stepper.step,
        verify=verify,
        note=f"{note}; Adam form {form}" + ("" if stepper.moments else ", moments not checked"),
    )


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


def _load(target, source):
    for k in target:
        target[k][...] = source[k]


# -- jitgrad -------------------------------------------------------------------------------------
def setup_jitgrad(d):
    import jitgrad as jg
    from _optim import optimizers

    _, adam, origin = optimizers()
    opt = adam(LR)
    params = _copy(d.params)
    state = opt.init(params)
    train_step = jg.jit_train_step(w3_mlp.loss_jitgrad, opt)

    def reset():
        _load(params, d.params)
        for leaf in _leaves(state):
            leaf[...] = 0

    stepper = Stepper(
        reset,
        lambda: train_step(params, state, d.X, d.y),
        lambda: params,
        lambda: (state["m"], state["v"]),
    )
    bench = bench_for(d, stepper, "keras", f"jit_train_step, Adam from {origin}")
    bench.label = "jitgrad jit_train_step"
    return bench


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return [tree]


def setup_jitgrad_split(d):
    import jitgrad as jg
    from _optim import optimizers

    _, adam, origin = optimizers()
    opt = adam(LR)
    vg = jg.jit_grad(w3_mlp.loss_jitgrad, wrt=0)
    update = jg.jit(opt.update)
    box = {}

    def reset():
        box["params"] = _copy(d.params)
        box["state"] = opt.init(box["params"])

    def step():
        loss, grads = vg(box["params"], d.X, d.y)
        box["params"], box["state"] = update(box["params"], grads, box["state"])
        return loss

    reset()
    stepper = Stepper(
        reset, step, lambda: box["params"], lambda: (box["state"]["m"], box["state"]["v"])
    )
    bench = bench_for(d, stepper, "keras", f"jit_grad + jit(opt.update), Adam from {origin}")
    bench.label = "jitgrad jit_grad + jit(update)"
    return bench


def setup_jitgrad_w3(d):
    bench = w3_mlp.setup_jitgrad(d)
    value_grads = bench.result

    def verify():
        ref_value, ref_grads = reference(d)
        value, grads = value_grads(bench.call())
        return compare_all(value, grads, ref_value, ref_grads, 1e-4)

    return Bench(
        bench.call,
        verify=verify,
        label="jitgrad jit_grad only (W3, no update)",
        note="the value+grad of W3 measured in this run: the 1.1x target's base",
    )


# -- hand-written --------------------------------------------------------------------------------
def numpy_adam(p, g, m, v, t):
    """Keras' Adam on float32 arrays, in place."""
    alpha = np.float32(LR * np.sqrt(1 - B2**t) / (1 - B1**t))
    m += (g - m) * np.float32(1 - B1)
    v += (g * g - v) * np.float32(1 - B2)
    p -= alpha * m / (np.sqrt(v) + np.float32(EPS["keras"]))


def setup_numpy(d):
    params = _copy(d.params)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    t = [0]

    def reset():
        _load(params, d.params)
        for k in NAMES:
            m[k][...] = 0
            v[k][...] = 0
        t[0] = 0

    def step():
        loss, grads = w3_mlp.numpy_value_and_grads(params, d.X, d.y, np.float32)
        t[0] += 1
        for k, g in zip(NAMES, grads):
            numpy_adam(params[k], g, m[k], v[k], t[0])
        return loss

    return bench_for(
        d,
        Stepper(reset, step, lambda: params, lambda: (m, v)),
        "keras",
        "W3 by hand + Adam in numpy, in place",
    )


def setup_numba(d):
    import numba as nb

    kernel = w3_mlp.numba_kernel()

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy", cache=True)
    def adam(p, g, m, v, alpha, eps):
        p, g, m, v = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
        for i in range(p.size):
            gi = g[i]
            mi = m[i] + (gi - m[i]) * np.float32(1 - B1)
            vi = v[i] + (gi * gi - v[i]) * np.float32(1 - B2)
            m[i] = mi
            v[i] = vi
            p[i] -= alpha * mi / (np.sqrt(vi) + eps)

    params = _copy(d.params)
    buf = w3_mlp.numba_buffers(params, d.X)
    grads = buf["grads"]
    m = {k: np.zeros_like(x) for k, x in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    t = [0]
    eps = np.float32(EPS["keras"])

    def reset():
        _load(params, d.params)
        for k in NAMES:
            m[k][...] = 0
            v[k][...] = 0
        t[0] = 0

    def step():
        p, g = params, grads
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
        t[0] += 1
        alpha = np.float32(LR * np.sqrt(1 - B2 ** t[0]) / (1 - B1 ** t[0]))
        for k in NAMES:
            adam(p[k], g[k], m[k], v[k], alpha, eps)
        return loss

    return bench_for(
        d,
        Stepper(reset, step, lambda: params, lambda: (m, v)),
        "keras",
        "the W3 kernel + one njit Adam loop per parameter, in place",
    )


# -- peers ---------------------------------------------------------------------------------------
def setup_jax(d):
    import jax
    import jax.numpy as jnp

    def full_step(params, state, X, y):
        loss, grads = jax.value_and_grad(w3_mlp.loss_jax)(params, X, y)
        t = state["t"] + 1
        tf = t.astype(jnp.float32)
        alpha = LR * jnp.sqrt(1 - B2**tf) / (1 - B1**tf)
        m = jax.tree_util.tree_map(lambda m, g: m + (g - m) * (1 - B1), state["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: v + (g * g - v) * (1 - B2), state["v"], grads)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - alpha * m / (jnp.sqrt(v) + EPS["keras"]), params, m, v
        )
        return loss, params, {"t": t, "m": m, "v": v}

    train_step = jax.jit(full_step, donate_argnums=(0, 1))
    X, y = jax.device_put(d.X), jax.device_put(d.y)
    box = {}

    def reset():
        box["params"] = jax.device_put(_copy(d.params))
        zeros = {k: jnp.zeros_like(x) for k, x in d.params.items()}
        box["state"] = {
            "t": jnp.zeros((), jnp.int32),
            "m": zeros,
            "v": {k: jnp.zeros_like(x) for k, x in d.params.items()},
        }

    def step():
        loss, box["params"], box["state"] = train_step(box["params"], box["state"], X, y)
        return jax.block_until_ready(loss)

    reset()
    stepper = Stepper(
        reset, step, lambda: box["params"], lambda: (box["state"]["m"], box["state"]["v"])
    )
    return bench_for(d, stepper, "keras", "jit of the full step, params and state donated")


def setup_torch(d):
    import torch

    params = {k: torch.from_numpy(x.copy()).requires_grad_() for k, x in d.params.items()}
    leaves = [params[k] for k in NAMES]
    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y.astype(np.int64))
    box = {}

    def reset():
        with torch.no_grad():
            for k in NAMES:
                params[k].copy_(torch.from_numpy(d.params[k]))
        box["opt"] = torch.optim.Adam(leaves, lr=LR, betas=(B1, B2), eps=EPS["paper"], foreach=True)

    def step():
        opt = box["opt"]
        opt.zero_grad(set_to_none=True)
        loss = w3_mlp.loss_torch(params, X, y)
        loss.backward()
        opt.step()
        return loss.detach()

    def moments():
        st = box["opt"].state
        return (
            {k: st[params[k]]["exp_avg"].numpy() for k in NAMES},
            {k: st[params[k]]["exp_avg_sq"].numpy() for k in NAMES},
        )

    reset()
    stepper = Stepper(
        reset, step, lambda: {k: p.detach().numpy() for k, p in params.items()}, moments
    )
    return bench_for(d, stepper, "paper", "backward() + torch.optim.Adam(foreach=True)")


def setup_pytensor(d):
    import pytensor
    import pytensor.tensor as pt

    shared = {k: pytensor.shared(x.copy(), name=k) for k, x in d.params.items()}
    m = {k: pytensor.shared(np.zeros_like(x), name="m_" + k) for k, x in d.params.items()}
    v = {k: pytensor.shared(np.zeros_like(x), name="v_" + k) for k, x in d.params.items()}
    t = pytensor.shared(np.float32(0), name="t")
    X, y = pt.matrix("X", dtype="float32"), pt.vector("y", dtype="int32")
    loss = w3_mlp.loss_pytensor(shared, X, y)
    grads = pytensor.grad(loss, [shared[k] for k in NAMES])
    t1 = t + np.float32(1)
    alpha = np.float32(LR) * pt.sqrt(1 - np.float32(B2) ** t1) / (1 - np.float32(B1) ** t1)
    updates = [(t, t1)]
    for k, g in zip(NAMES, grads):
        m1 = m[k] + (g - m[k]) * np.float32(1 - B1)
        v1 = v[k] + (g * g - v[k]) * np.float32(1 - B2)
        updates += [
            (m[k], m1),
            (v[k], v1),
            (shared[k], shared[k] - alpha * m1 / (pt.sqrt(v1) + np.float32(EPS["keras"]))),
        ]
    fn = pytensor.function([X, y], loss, updates=updates, mode="NUMBA")

    def reset():
        for k in NAMES:
            shared[k].set_value(d.params[k].copy())
            m[k].set_value(np.zeros_like(d.params[k]))
            v[k].set_value(np.zeros_like(d.params[k]))
        t.set_value(np.float32(0))

    stepper = Stepper(
        reset,
        lambda: fn(d.X, d.y),
        lambda: {k: s.get_value() for k, s in shared.items()},
        lambda: (
            {k: s.get_value() for k, s in m.items()},
            {k: s.get_value() for k, s in v.items()},
        ),
    )
    return bench_for(d, stepper, "keras", "function with Adam updates, mode='NUMBA'")


def setup_tf(d):
    import tensorflow as tf

    params = {k: tf.Variable(x) for k, x in d.params.items()}
    leaves = [params[k] for k in NAMES]
    X, y = tf.constant(d.X), tf.constant(d.y)
    box = {}

    def reset():
        for k in NAMES:
            params[k].assign(d.params[k])
        box["opt"] = tf.keras.optimizers.Adam(LR, beta_1=B1, beta_2=B2, epsilon=EPS["keras"])

    def step():
        with tf.GradientTape() as tape:
            loss = w3_mlp.loss_tf(params, X, y)
        box["opt"].apply_gradients(zip(tape.gradient(loss, leaves), leaves))
        return loss

    reset()
    stepper = Stepper(reset, step, lambda: {k: p.numpy() for k, p in params.items()})
    return bench_for(d, stepper, "keras", "GradientTape + keras Adam.apply_gradients")


W7 = Workload(
    "W7",
    "Adam train step: W3 + Adam on W1, b1, W2, b2",
    "ms",
    data,
    reference,
    {
        "jitgrad": setup_jitgrad,
        "jitgrad_split": setup_jitgrad_split,
        "jitgrad_w3": setup_jitgrad_w3,
        "numpy": setup_numpy,
        "numba": setup_numba,
        "jax": setup_jax,
        "torch": setup_torch,
        "pytensor": setup_pytensor,
        "tf": setup_tf,
    },
)
WORKLOADS = [W7]

if __name__ == "__main__":
    main(WORKLOADS)
