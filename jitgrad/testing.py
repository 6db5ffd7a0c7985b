"""Gradient checking, public (`jitgrad.test`) and used by jitgrad's own tests."""

from __future__ import annotations

import numpy as np

from jitgrad.core import pytree
from jitgrad.core.tensor import Tensor
from jitgrad.ops.base import as_value
from jitgrad.tape import GradientTape


def _flat_outputs(out) -> list:
    leaves, _ = pytree.flatten(out)
    return [as_value(x) for x in leaves]


def compute_gradient(f, xs, delta=None):
    """(theoretical, numerical) Jacobians of `f` at `xs`, like tf.test.compute_gradient: one
    2-d array per argument with x.size rows and y.size columns."""
    xs = [np.asarray(x) for x in xs]
    delta = delta if delta is not None else (1e-3 if xs[0].dtype == np.float32 else 1e-6)
    theoretical, numerical = [], []
    for i, x in enumerate(xs):
        y0 = np.asarray(f(*[Tensor(a) for a in xs]))
        jac_t = np.zeros((x.size, y0.size), x.dtype)
        jac_n = np.zeros((x.size, y0.size), x.dtype)
        for k in range(y0.size):
            seed = np.zeros(y0.size, y0.dtype)
            seed[k] = 1
            args = [Tensor(a) for a in xs]
            with GradientTape() as tape:
                tape.watch(args[i])
                y = as_value(f(*args))
            g = tape.gradient(y, args[i], output_gradients=Tensor(seed.reshape(y0.shape)))
            jac_t[:, k] = 0 if g is None else np.asarray(g).reshape(-1)
        for j in range(x.size):
            plus, minus = x.copy().reshape(-1), x.copy().reshape(-1)
            plus[j] += delta
            minus[j] -= delta
            f_plus = np.asarray(f(*[Tensor(plus.reshape(x.shape)) if n == i else Tensor(a)
                                    for n, a in enumerate(xs)]), np.float64)
            f_minus = np.asarray(f(*[Tensor(minus.reshape(x.shape)) if n == i else Tensor(a)
                                     for n, a in enumerate(xs)]), np.float64)
            jac_n[j, :] = ((f_plus - f_minus) / (2 * delta)).reshape(-1)
        theoretical.append(jac_t)
        numerical.append(jac_n)
    return theoretical, numerical


def _vjp_fn(f, args, u, argnums):
    """x -> <u, f(x)>'s gradient w.r.t. args[argnums], by the eager tape."""
    def g(*xs):
        xs = [as_value(x) for x in xs]
        with GradientTape() as tape:
            tape.watch([xs[i] for i in argnums])
            outs = _flat_outputs(f(*xs))
            total = None
            for o, w in zip(outs, u):
                term = (o * Tensor(w.astype(o.dtype))).sum()
                total = term if total is None else total + term
        grads = tape.gradient(total, [xs[i] for i in argnums], unconnected_gradients="zero")
        return grads

    return g


def check_grads(f, args, order: int = 2, eps: float = 1e-4, rtol: float = 1e-5,
                atol: float = 1e-6, seed: int = 0, grad_fn=None):
    """Check `f`'s derivatives up to `order` at `args` (float64 arrays) by random projection:
    draw an input tangent v and an output cotangent u and compare <u, J v> by central
    differences with <vjp(u), v> from autodiff; for order > 1 recurse on x -> vjp(u)(x).
    `grad_fn(f, args, u, argnums)` may replace the eager tape (to check compiled gradients).
    Raises AssertionError with the worst mismatch."""
    rng = np.random.default_rng(seed)
    args = [np.asarray(a, np.float64) for a in args]
    argnums = [i for i, a in enumerate(args) if a.dtype.kind == "f"]
    outs = [np.asarray(o) for o in _flat_outputs(f(*[Tensor(a) for a in args]))]
    u = [rng.standard_normal(o.shape) for o in outs]
    v = [rng.standard_normal(args[i].shape) for i in argnums]

    def projected(xs):
        return sum(float(np.sum(np.asarray(o, np.float64) * w))
                   for o, w in zip(_flat_outputs(f(*[Tensor(a) for a in xs])), u))

    plus = [a.copy() for a in args]
    minus = [a.copy() for a in args]
    for i, vi in zip(argnums, v):
        plus[i] = args[i] + eps * vi
        minus[i] = args[i] - eps * vi
    numeric = (projected(plus) - projected(minus)) / (2 * eps)
    make_vjp = grad_fn or _vjp_fn
    grads = make_vjp(f, args, u, argnums)(*[Tensor(a) for a in args])
    analytic = sum(float(np.sum(np.asarray(g, np.float64) * vi)) for g, vi in zip(grads, v)
                   if g is not None)
    tolerance = atol + rtol * max(abs(numeric), abs(analytic))
    if not abs(numeric - analytic) <= tolerance:
        raise AssertionError(
            f"gradient check of order 1 failed for {getattr(f, '__name__', f)}: "
            f"finite differences {numeric!r} vs autodiff {analytic!r} "
            f"(difference {abs(numeric - analytic):.3g}, tolerance {tolerance:.3g})")
    if order > 1:
        check_grads(make_vjp(f, args, u, argnums), args, order - 1, eps, rtol, atol, seed + 1,
                    grad_fn)
