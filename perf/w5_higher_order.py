"""W5 higher-order: f(x) = sin(x)**2 on 100 float32 points in [-2 pi, 2 pi]; the first, second
and third derivatives (elementwise, by grad of grad of the summed function) against the
analytic sin 2x, 2 cos 2x, -4 sin 2x; microseconds per call of the compiled third derivative.

The error column is max |derivative - analytic| in float32 ulps of the derivative's scale
(ulp(1) for the first, ulp(2) for the second, ulp(4) for the third): "exact to float32
rounding" means a few ulps.
"""

from __future__ import annotations

import numpy as np

from _harness import Bench, MismatchError, Workload, compare, main, setups

EPS32 = float(np.finfo(np.float32).eps)


def data():
    return np.linspace(-2 * np.pi, 2 * np.pi, 100).astype(np.float32)


def reference(x):
    x = x.astype(np.float64)
    return [np.sin(2 * x), 2 * np.cos(2 * x), -4 * np.sin(2 * x)]


def verifier(x, derivatives, bench):
    """Check all three derivatives; put the error in ulps into the note."""

    def verify():
        ulps, worst = [], 0.0
        for k, (fn, ref) in enumerate(zip(derivatives, reference(x)), start=1):
            got = np.asarray(fn(), dtype=np.float64).reshape(-1)
            worst = max(worst, compare(f"derivative {k}", got, ref, 1e-4))
            scale = 2.0 ** (k - 1)  # max |analytic derivative k|
            ulps.append(float(np.max(np.abs(got - ref))) / (EPS32 * scale))
        bench.note = (
            f"{bench.note}; max error {max(ulps):.2f} ulp "
            f"(d1 {ulps[0]:.2f}, d2 {ulps[1]:.2f}, d3 {ulps[2]:.2f})"
        ).lstrip("; ")
        if max(ulps) > 64:
            raise MismatchError(f"derivative error {max(ulps):.1f} ulps")
        return worst

    return verify


def _bench(x, fns, note):
    bench = Bench(fns[2], note=note)
    bench.verify = verifier(x, fns, bench)
    return bench


def setup_jitgrad(x):
    import jitgrad as jg

    def f(x):
        return jg.reduce_sum(jg.sin(x) ** 2)

    d1 = jg.jit(jg.grad(f))
    d2 = jg.jit(jg.grad(jg.grad(f)))
    d3 = jg.jit(jg.grad(jg.grad(jg.grad(f))))
    return _bench(
        x, [lambda: d1(x), lambda: d2(x), lambda: d3(x)], "jit(grad(grad(grad(f)))), f summing"
    )


def setup_numpy(x):
    def d1():
        return np.sin(2 * x)

    def d2():
        return 2 * np.cos(2 * x)

    def d3():
        return -4 * np.sin(2 * x)

    return _bench(x, [d1, d2, d3], "analytic derivatives")


def setup_numba(x):
    import numba as nb

    @nb.njit(fastmath={"contract"}, cache=True)
    def third(x, out):
        for i in range(x.size):
            out[i] = np.float32(-4.0) * np.sin(np.float32(2.0) * x[i])
        return out

    @nb.njit(cache=True)
    def first(x, out):
        for i in range(x.size):
            out[i] = np.sin(np.float32(2.0) * x[i])
        return out

    @nb.njit(cache=True)
    def second(x, out):
        for i in range(x.size):
            out[i] = np.float32(2.0) * np.cos(np.float32(2.0) * x[i])
        return out

    out = np.empty_like(x)
    return _bench(
        x,
        [lambda: first(x, out).copy(), lambda: second(x, out).copy(), lambda: third(x, out)],
        "analytic -4 sin 2x, njit, caller-allocated out",
    )


def _summed_grads(grad, total, f):
    g1 = grad(lambda x: total(f(x)))
    g2 = grad(lambda x: total(g1(x)))
    g3 = grad(lambda x: total(g2(x)))
    return g1, g2, g3


def setup_jax(x):
    import jax
    import jax.numpy as jnp

    g = [jax.jit(h) for h in _summed_grads(jax.grad, jnp.sum, lambda x: jnp.sin(x) ** 2)]
    xj = jax.device_put(x)
    return _bench(
        x, [lambda h=h: jax.block_until_ready(h(xj)) for h in g], "jit(grad of sum of grad ...)"
    )


def _torch_derivatives(x):
    import torch

    def d(k):
        t = torch.from_numpy(x.copy()).requires_grad_()
        y = torch.sin(t) ** 2
        for i in range(k):
            (y,) = torch.autograd.grad(y.sum(), t, create_graph=i < k - 1)
        return y.detach().numpy()

    return d


def setup_torch(x):
    d = _torch_derivatives(x)
    return _bench(
        x,
        [lambda: d(1), lambda: d(2), lambda: d(3)],
        "autograd.grad(create_graph=True), three levels",
    )


def setup_torch_compile(x):
    import torch
    from torch.func import grad

    g = [torch.compile(h) for h in _summed_grads(grad, torch.sum, lambda x: torch.sin(x) ** 2)]
    t = torch.from_numpy(x)
    return _bench(
        x, [lambda h=h: h(t).numpy() for h in g], "torch.compile(torch.func.grad of grad of grad)"
    )


def setup_autograd(x):
    from autograd import elementwise_grad
    from autograd import numpy as anp

    g1 = elementwise_grad(lambda x: anp.sin(x) ** 2)
    g2 = elementwise_grad(g1)
    g3 = elementwise_grad(g2)
    return _bench(x, [lambda h=h: h(x) for h in (g1, g2, g3)], "elementwise_grad x3")


def setup_pytensor(x):
    import pytensor
    import pytensor.tensor as pt

    xs = pt.vector("x", dtype="float32")
    g1 = pytensor.grad(pt.sum(pt.sin(xs) ** 2), xs)
    g2 = pytensor.grad(pt.sum(g1), xs)
    g3 = pytensor.grad(pt.sum(g2), xs)
    fns = [pytensor.function([xs], g, mode="NUMBA") for g in (g1, g2, g3)]
    return _bench(x, [lambda h=h: h(x) for h in fns], "grad of sum x3, mode='NUMBA'")


def setup_tf(x):
    import tensorflow as tf

    def d(k):
        t = tf.constant(x)
        tapes = [tf.GradientTape() for _ in range(k)]
        for tape in tapes:
            tape.__enter__()
            tape.watch(t)
        y = tf.sin(t) ** 2
        for tape in reversed(tapes):
            tape.__exit__(None, None, None)
            y = tape.gradient(y, t)
        return y.numpy()

    return _bench(x, [lambda: d(1), lambda: d(2), lambda: d(3)], "nested GradientTapes")


W5 = Workload(
    "W5",
    "third derivative of sin(x)^2 on 100 points (compiled where possible)",
    "us",
    data,
    reference,
    setups(globals()),
)
WORKLOADS = [W5]

if __name__ == "__main__":
    main(WORKLOADS)
