"""W1 seed-scalar: f(w1, w2) = 3 w1**2 + 2 w1 w2 at (5, 3) -> 105, grads (36, 10).

Microseconds per value+grad call: the dispatch overhead of each system. Each system is called
the way its users call it with two scalars: jitgrad and JAX with Python floats, PyTorch with
scalar tensors, PyTensor with 0-d float32 arrays and `trust_input=True`.
"""

from __future__ import annotations

import numpy as np

from _harness import Bench, Workload, main, setups


def data():
    return (5.0, 3.0)


def reference(d):
    w1, w2 = d
    return 3 * w1**2 + 2 * w1 * w2, [6 * w1 + 2 * w2, 2 * w1]


def f(w1, w2):
    return 3 * w1**2 + 2 * w1 * w2


def _scalars(out):
    value, grads = out
    return np.asarray(value), [np.asarray(g) for g in grads]


def setup_jitgrad(d):
    import jitgrad as jg

    vg = jg.jit_grad(f, wrt=(0, 1))
    w1, w2 = d
    return Bench(lambda: vg(w1, w2), _scalars, note="jit_grad, Python float arguments")


def setup_numpy(d):
    w1, w2 = np.float32(d[0]), np.float32(d[1])

    def vg():  # the derivative written by hand
        return 3 * w1 * w1 + 2 * w1 * w2, (6 * w1 + 2 * w2, 2 * w1)

    return Bench(vg, _scalars, note="hand-derived formulas on np.float32 scalars")


def setup_numba(d):
    import numba as nb

    @nb.njit(cache=True)
    def vg(w1, w2):
        return 3 * w1 * w1 + 2 * w1 * w2, 6 * w1 + 2 * w2, 2 * w1

    w1, w2 = np.float32(d[0]), np.float32(d[1])
    return Bench(
        lambda: vg(w1, w2), lambda out: (out[0], out[1:]), note="njit of the hand-derived formulas"
    )


def setup_jax(d):
    import jax as jx

    vg = jx.jit(jx.value_and_grad(f, argnums=(0, 1)))
    w1, w2 = d
    return Bench(
        lambda: jx.block_until_ready(vg(w1, w2)),
        _scalars,
        note="jit(value_and_grad), Python floats",
    )


def _torch_vg(fn):
    import torch

    w1 = torch.tensor(5.0, requires_grad=True)
    w2 = torch.tensor(3.0, requires_grad=True)

    def vg():
        value = fn(w1, w2)
        return value.detach(), torch.autograd.grad(value, (w1, w2))

    return vg, lambda out: (out[0].numpy(), [g.numpy() for g in out[1]])


def setup_torch(d):
    vg, result = _torch_vg(f)
    return Bench(vg, result, note="autograd.grad on 0-d tensors")


def setup_torch_compile(d):
    import torch as th

    vg, result = _torch_vg(th.compile(f))
    return Bench(vg, result, note="torch.compile(f) + autograd.grad")


def setup_autograd(d):
    import autograd as ag

    vg = ag.value_and_grad(lambda w: f(w[0], w[1]))
    w = (5.0, 3.0)
    return Bench(
        lambda: vg(w),
        lambda out: (out[0], list(out[1])),
        note="value_and_grad of a tuple argument (float64)",
    )


def setup_pytensor(d):
    import pytensor as ptn
    import pytensor.tensor as pt

    w1 = pt.scalar("w1", dtype="float32")
    w2 = pt.scalar("w2", dtype="float32")
    value = f(w1, w2)
    fn = ptn.function([w1, w2], [value, *ptn.grad(value, [w1, w2])], mode="NUMBA", trust_input=True)
    a, b = np.array(d[0], np.float32), np.array(d[1], np.float32)
    return Bench(
        lambda: fn(a, b), lambda out: (out[0], out[1:]), note="mode='NUMBA', trust_input=True"
    )


def setup_tf(d):
    import tensorflow as tfm

    w1, w2 = tfm.Variable(5.0), tfm.Variable(3.0)

    def vg():
        with tfm.GradientTape() as tape:
            value = f(w1, w2)
        return value, tape.gradient(value, [w1, w2])

    return Bench(
        vg,
        lambda out: (out[0].numpy(), [g.numpy() for g in out[1]]),
        note="GradientTape on Variables",
    )


W1 = Workload(
    "W1",
    "seed scalar: 3 w1^2 + 2 w1 w2, value + grad",
    "us",
    data,
    reference,
    setups(globals()),
    rtol=1e-6,
)
WORKLOADS = [W1]

if __name__ == "__main__":
    main(WORKLOADS)
