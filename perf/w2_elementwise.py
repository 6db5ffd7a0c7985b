"""W2 elementwise: loss = mean(tanh(x*w + b)**2) over N = 2**22 float32; grads w.r.t. w, b.

Milliseconds per value+grad call. Floor: 20 bytes/element (read x, w, b; write dw, db) at the
measured memory bandwidth.
"""

from __future__ import annotations

import types

import numpy as np

from _harness import Bench, Workload, main, setups

N = 2**22


def data():
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(N, dtype=np.float32) for _ in range(3))
    return types.SimpleNamespace(x=x, w=w, b=b)


def reference(d):
    x, w, b = (a.astype(np.float64) for a in (d.x, d.w, d.b))
    t = np.tanh(x * w + b)
    g = 2.0 / N * t * (1.0 - t * t)  # d loss / d b; d loss / d w = x g
    return np.mean(t * t), [x * g, g]


def floor(machine):
    bw = machine.get("bandwidth_gbs")
    if not bw:
        return None
    return 20 * N / (bw * 1e9), f"20 B/element x 2^22 = {20 * N / 1e6:.1f} MB at {bw:.1f} GB/s"


def loss_fn(tanh, mean):
    return lambda x, w, b: mean(tanh(x * w + b) ** 2)


def _vg_result(out):
    value, (dw, db) = out
    return np.asarray(value), [np.asarray(dw), np.asarray(db)]


def setup_jitgrad(d):
    import jitgrad as jg

    vg = jg.jit_grad(loss_fn(jg.tanh, jg.reduce_mean), wrt=(1, 2))
    return Bench(lambda: vg(d.x, d.w, d.b), _vg_result, note="jit_grad(wrt=(1, 2))")


def setup_numpy(d):
    x, w, b = d.x, d.w, d.b
    scale = np.float32(2.0 / N)

    def vg():
        t = np.tanh(x * w + b)
        g = scale * t * (np.float32(1.0) - t * t)
        return np.mean(t * t), (x * g, g)

    return Bench(vg, _vg_result, note="np.tanh, temporaries")


def setup_numba(d):
    import numba as nb

    from jitgrad.backend.numba.vmath import vtanh_f32

    @nb.njit(parallel=True, fastmath={"reassoc", "contract"}, error_model="numpy", cache=True)
    def kernel(x, w, b, dw, db):
        n = x.size
        scale = np.float32(2.0) / np.float32(n)
        acc = np.float32(0.0)
        for i in nb.prange(n):
            t = vtanh_f32(x[i] * w[i] + b[i])
            acc += t * t
            g = scale * t * (np.float32(1.0) - t * t)
            db[i] = g
            dw[i] = g * x[i]
        return acc / np.float32(n)

    dw, db = np.empty_like(d.w), np.empty_like(d.b)

    def vg():
        return kernel(d.x, d.w, d.b, dw, db), (dw, db)

    return Bench(
        vg, _vg_result, note="prange, vmath tanh, reassoc+contract, caller-allocated outputs"
    )


def setup_jax(d):
    import jax as jx
    import jax.numpy as jnp

    vg = jx.jit(jx.value_and_grad(loss_fn(jnp.tanh, jnp.mean), argnums=(1, 2)))
    x, w, b = (jx.device_put(a) for a in (d.x, d.w, d.b))
    return Bench(lambda: jx.block_until_ready(vg(x, w, b)), _vg_result, note="jit(value_and_grad)")


def _torch_setup(d, compile_):
    import torch as th

    x = th.from_numpy(d.x)
    w = th.from_numpy(d.w.copy()).requires_grad_()
    b = th.from_numpy(d.b.copy()).requires_grad_()
    loss = loss_fn(th.tanh, th.mean)
    if compile_:
        loss = th.compile(loss)

    def vg():
        value = loss(x, w, b)
        return value.detach(), th.autograd.grad(value, (w, b))

    return vg, lambda out: (out[0].numpy(), [g.numpy() for g in out[1]])


def setup_torch(d):
    return Bench(*_torch_setup(d, False), note="autograd.grad")


def setup_torch_compile(d):
    return Bench(*_torch_setup(d, True), note="torch.compile(loss) + autograd.grad")


def setup_autograd(d):
    import autograd as ag
    import autograd.numpy as anp

    vg = ag.value_and_grad(loss_fn(anp.tanh, anp.mean), argnum=(1, 2))
    return Bench(lambda: vg(d.x, d.w, d.b), _vg_result, note="value_and_grad(argnum=(1, 2))")


def setup_pytensor(d):
    import pytensor as ptn
    import pytensor.tensor as pt

    x, w, b = (pt.vector(n, dtype="float32") for n in "xwb")
    value = loss_fn(pt.tanh, pt.mean)(x, w, b)
    fn = ptn.function([x, w, b], [value, *ptn.grad(value, [w, b])], mode="NUMBA")
    return Bench(lambda: fn(d.x, d.w, d.b), lambda out: (out[0], out[1:]), note="mode='NUMBA'")


def setup_tf(d):
    import tensorflow as tfm

    x = tfm.constant(d.x)
    w, b = tfm.Variable(d.w), tfm.Variable(d.b)
    loss = loss_fn(tfm.tanh, tfm.reduce_mean)

    def vg():
        with tfm.GradientTape() as tape:
            value = loss(x, w, b)
        return value, tape.gradient(value, [w, b])

    return Bench(vg, lambda out: (out[0].numpy(), [g.numpy() for g in out[1]]), note="GradientTape")


W2 = Workload(
    "W2",
    "elementwise: mean(tanh(x*w + b)^2), N = 2^22, value + grads w.r.t. w, b",
    "ms",
    data,
    reference,
    setups(globals()),
    floor=floor,
)
WORKLOADS = [W2]

if __name__ == "__main__":
    main(WORKLOADS)
