"""Gradient checking, public (`jitgrad.test`) and used by jitgrad's own tests.

>>> import numpy as np
>>> jitgrad.test.check_grads(jitgrad.sin, [np.array([0.5, 1.0])], order=2)
"""

from __future__ import annotations

import numpy as np

from jitgrad.autodiff.tape import GradientTape
from jitgrad.core import pytree
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ops.base import as_value


def _flat_outputs(out) -> list:
    leaves, _ = pytree.flatten(out)
    return [as_value(x) for x in leaves]


def _tensors(arrays) -> list:
    return [Tensor(a) for a in arrays]


def _as_float64(a) -> np.ndarray:
    """Float arguments in float64 (finite differences need it); integer and bool arguments
    (indices, labels) keep their dtype: they are data, not variables."""
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def eager_gradient(target_fn, sources, **gradient_args):
    """`target_fn()`'s gradient w.r.t. `sources` with the VJP rules run op by op: a
    persistent tape asked inside its `with` block records its own backward pass, which it can
    only do eagerly, so the tape's cached compiled backward kernels are never used (a check
    of the rules must not depend on the compiler, and must not wait for Numba)."""
    with GradientTape(persistent=True) as tape:
        tape.watch(sources)
        target = target_fn()
        if target is None:
            return None
        return tape.gradient(target, sources, **gradient_args)


def compute_gradient(f, xs, delta=None):
    """(theoretical, numerical) Jacobians of `f` at `xs`, like tf.test.compute_gradient: one
    2-d array per argument with y.size rows and x.size columns (entry [k, j] is dy_k/dx_j).

    >>> t, n = jitgrad.test.compute_gradient(lambda x: x * x, [np.array([1.0, 2.0])])
    >>> t[0].tolist()
    [[2.0, 0.0], [0.0, 4.0]]
    """
    xs = [np.asarray(x) for x in xs]
    if delta is None:
        delta = 1e-3 if any(x.dtype.itemsize <= 4 and x.dtype.kind == "f" for x in xs) else 1e-6
    y0 = np.asarray(f(*_tensors(xs)))
    theoretical, numerical = [], []
    for i, x in enumerate(xs):
        jac_t = np.zeros((y0.size, x.size), x.dtype)
        jac_n = np.zeros((y0.size, x.size), x.dtype)
        for k in range(y0.size):
            seed = np.zeros(y0.size, y0.dtype)
            seed[k] = 1
            args = _tensors(xs)
            g = eager_gradient(
                lambda: as_value(f(*args)),  # noqa: B023 - called now
                args[i],
                output_gradients=Tensor(seed.reshape(y0.shape)),
            )
            jac_t[k, :] = 0 if g is None else np.asarray(g).reshape(-1)
        for j in range(x.size):
            shifted = []
            for step in (delta, -delta):
                moved = x.copy().reshape(-1)
                moved[j] += step
                args = [moved.reshape(x.shape) if n == i else a for n, a in enumerate(xs)]
                shifted.append(np.asarray(f(*_tensors(args)), np.float64))
            jac_n[:, j] = ((shifted[0] - shifted[1]) / (2 * delta)).reshape(-1)
        theoretical.append(jac_t)
        numerical.append(jac_n)
    return theoretical, numerical


def _projection(outs, u):
    """<u, f(x)> as a jitgrad scalar, over the float outputs (u[k] is None for the others)."""
    total = None
    for o, w in zip(outs, u):
        if w is None:
            continue
        term = (o * Tensor(w.astype(o.dtype))).sum()
        total = term if total is None else total + term
    return total


def _vjp_fn(f, args, u, argnums):
    """x -> the gradient of <u, f(x)> w.r.t. args[argnums], by the eager tape (op by op)."""

    def g(*xs):
        xs = [as_value(x) for x in xs]
        sources = [xs[i] for i in argnums]
        grads = eager_gradient(
            lambda: _projection(_flat_outputs(f(*xs)), u), sources, unconnected_gradients="zero"
        )
        if grads is None:  # no float output
            from jitgrad.ops.elementwise import zeros_like_value

            return [zeros_like_value(x) for x in sources]
        return grads

    g.__name__ = f"vjp({getattr(f, '__name__', 'f')})"
    return g


def graph_vjp_fn(f, args, u, argnums):
    """Like the tape's VJP, but by graph autodiff: trace x -> <u, f(x)> into the IR, build
    its joint graph (`joint_graph`), verify it and run it with the reference interpreter.
    On tracers (when a higher order is checked) the joint graph is replayed into the trace."""
    from jitgrad.autodiff.vjp import joint_graph
    from jitgrad.ir.interpret import eval_graph, replay
    from jitgrad.ir.trace import Trace, tracing
    from jitgrad.ir.verify import verify
    from jitgrad.ops.elementwise import zeros_like_value

    trace = Trace(f"projected {getattr(f, '__name__', 'f')}")
    with tracing(trace):
        xs = [trace.new_input(Tensor(a).aval) for a in args]
        total = _projection(_flat_outputs(f(*xs)), u)
        if total is None:
            total = zeros_like_value(Tensor(np.zeros((), np.float64)))
        graph = verify(trace.to_graph([total]))
    joint, connected = joint_graph(graph, graph.outputs, [graph.inputs[i] for i in argnums])
    joint = verify(joint)

    def g(*xs):
        if any(isinstance(x, Tracer) for x in xs):
            grads = iter(replay(joint, *[as_value(x) for x in xs])[1:])
        else:
            grads = iter(_tensors(eval_graph(joint, *[np.asarray(x) for x in xs])[1:]))
        return [
            next(grads) if c else zeros_like_value(as_value(xs[i]))
            for i, c in zip(argnums, connected)
        ]

    g.__name__ = f"vjp({getattr(f, '__name__', 'f')})"
    return g


def check_grads(
    f,
    args,
    order: int = 2,
    eps: float = 1e-4,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
    grad_fn=None,
):
    """Check `f`'s derivatives up to `order` at `args` by random projection: draw an input
    tangent v and an output cotangent u and compare <u, J v> by central differences
    (extrapolated, step `eps`) with <vjp(u), v> from autodiff; for order > 1 recurse on
    x -> vjp(u)(x).

    Float arguments are checked in float64; integer/bool arguments (indices, labels) are
    passed unchanged and not differentiated. `grad_fn(f, args, u, argnums)` may replace the
    eager tape (`graph_vjp_fn`, or compiled gradients). Raises AssertionError with the
    mismatch, or when a gradient's shape or dtype differs from its argument's.
    """
    rng = np.random.default_rng(seed)
    args = [_as_float64(a) for a in args]
    argnums = [i for i, a in enumerate(args) if a.dtype.kind == "f"]
    outs = [np.asarray(o) for o in _flat_outputs(f(*_tensors(args)))]
    u = [rng.standard_normal(o.shape) if o.dtype.kind == "f" else None for o in outs]
    v = [rng.standard_normal(args[i].shape) for i in argnums]
    name = getattr(f, "__name__", f)

    def projected(xs):
        return sum(
            float(np.sum(np.asarray(o, np.float64) * w))
            for o, w in zip(_flat_outputs(f(*_tensors(xs))), u)
            if w is not None
        )

    def central(h):
        plus, minus = list(args), list(args)
        for i, vi in zip(argnums, v):
            # np.asarray: numpy returns a scalar, not a 0-d array, for 0-d arithmetic.
            plus[i] = np.asarray(args[i] + h * vi)
            minus[i] = np.asarray(args[i] - h * vi)
        return (projected(plus) - projected(minus)) / (2 * h)

    # Richardson extrapolation: a central difference is D(h) = D + c h^2 + O(h^4), so
    # (4 D(h/2) - D(h)) / 3 = D + O(h^4). Near a domain edge (arcsin at 0.9, whose fourth
    # derivative is ~4000) the plain h^2 term alone would exceed the tolerance.
    numeric = (4 * central(eps / 2) - central(eps)) / 3
    make_vjp = grad_fn or _vjp_fn
    grads = list(make_vjp(f, args, u, argnums)(*_tensors(args)))
    if len(grads) != len(argnums):
        raise AssertionError(
            f"gradient of {name}: {len(grads)} gradients for {len(argnums)} float arguments"
        )
    for i, g in zip(argnums, grads):
        if g is not None and (tuple(g.shape) != args[i].shape or g.dtype != args[i].dtype):
            raise AssertionError(
                f"gradient of {name} w.r.t. argument {i}: {g.dtype}{list(g.shape)} for an "
                f"argument {args[i].dtype}{list(args[i].shape)}"
            )
    analytic = sum(
        float(np.sum(np.asarray(g, np.float64) * vi)) for g, vi in zip(grads, v) if g is not None
    )
    tolerance = atol + rtol * max(abs(numeric), abs(analytic))
    if not abs(numeric - analytic) <= tolerance:
        raise AssertionError(
            f"gradient check failed for {name}: "
            f"finite differences {numeric!r} vs autodiff {analytic!r} "
            f"(difference {abs(numeric - analytic):.3g}, tolerance {tolerance:.3g})"
        )
    if order > 1:
        check_grads(
            make_vjp(f, args, u, argnums), args, order - 1, eps, rtol, atol, seed + 1, grad_fn
        )
