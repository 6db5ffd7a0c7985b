"""W8 loops: value + gradient of losses computed by a loop of many small steps.

W8a ode-fit: Lotka-Volterra x' = a x - b x y, y' = d x y - c y from z0 = (10, 5) with
theta = (a, b, c, d) = (1.1, 0.4, 0.4, 0.1); 1,000 explicit Euler steps of dt = 0.01, float64;
loss = sum over the steps of the squared error of (x, y) after the step against fixed
observations (uniform in [1, 10], numpy default_rng(0), shape (1000, 2): the same as W9's
unrolled ODE); value + gradient w.r.t. theta. Microseconds per call.

W8b rnn: tanh RNN h_{t+1} = tanh(h_t W + x_t U + b), h_0 = 0, batch 16, input 8, hidden 32,
T = 100, float32; loss = mean(h_T^2) + (1/T) sum_{t=1..T} mean(h_t)^2 (the square of each
step's mean); value + grads of W, U, b. Data from numpy default_rng(8): x_t standard normal
(T, 16, 8), W ~ N(0, 1/32) (32, 32), U ~ N(0, 1/8) (8, 32), b ~ N(0, 0.01) (32,). Milliseconds
per call.

Systems: jitgrad (`jitgrad.lax.scan`, JAX's signature, under `jit_grad`), the hand-written
Numba references (forward + backprop through time by hand in one @njit function; W8b also
with np.dot), numpy by hand, JAX (`jit(value_and_grad)` of a `lax.scan` loss), PyTensor
(`pytensor.scan`, mode='NUMBA'), PyTorch eager and HIPS autograd (Python loops).

Besides the steady-state time (the harness protocol), run.py measures each system's first
call in fresh processes (`--first-call SYSTEM W8a`; the median of up to 3 samples): seconds
from the start of building the value+grad function (after the imports, timed on their own)
until the first call returns; jitgrad with an empty JITGRAD_CACHE_DIR (Numba's cache of
jitgrad's own helpers as installed, as in W9) in its default compile mode, plus the seconds
until its compiled kernel serves (`fn.wait()`; the kernel's result is checked too); JAX without
a persistent cache; PyTensor with an empty compile directory and NUMBA_CACHE_DIR; the
hand-written Numba kernels are not cached (they compile in every process).

Compile time against the trip count (issue 13: "the first call for T = 10 and T = 10,000 within
10%"; `trip_counts`, jitgrad only): the W8a loss as in `ode_jitgrad` with T = 10 and T = 10,000
Euler steps (observations drawn as W8a's, `ode_data(T)`), each sample a fresh first-call process
as above with JITGRAD_COMPILE=blocking, so that the first call is the compile (trace, optimise,
Numba); the medians of 3 samples per T (interleaved) and their ratio T = 10,000 / T = 10. Then
T = 10,000 in jitgrad's default mode (background): the first gradient (the numpy fallback runs
the loop step by step, so it grows with T) and the seconds until the kernel serves.

    python perf/w8_loops.py --system jax          # one system, both workloads, this process
    python perf/w8_loops.py --first-call jax W8a  # one first-call sample
    python perf/w8_loops.py --first-call jitgrad W8a --steps 10000  # W8a with T = 10,000
    python perf/run.py --only W8                  # everything, through run.py
"""

from __future__ import annotations

import os

# jitgrad's compile mode as the caller set it, before _harness makes "blocking" the default
# (the steady-state runs use blocking; the first-call samples use jitgrad's default mode).
_COMPILE_ENV = os.environ.get("JITGRAD_COMPILE")

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

from _harness import Bench, Workload, compare_all, end_compile_worker, main  # noqa: E402

# -- W8a: Lotka-Volterra -------------------------------------------------------------------------
STEPS, DT = 1000, 0.01
THETA = (1.1, 0.4, 0.4, 0.1)
Z0 = (10.0, 5.0)


def ode_data(steps: int = STEPS):
    """W8a's theta and observations; `steps` other than 1,000 for the trip-count measurement
    (the same draw, numpy default_rng(0), of shape (steps, 2))."""
    obs = np.random.default_rng(0).uniform(1.0, 10.0, (steps, 2))
    return types.SimpleNamespace(theta=np.array(THETA, dtype=np.float64), obs=obs)


def ode_loss_python(theta, obs):
    """The loss as a plain Python loop (floats or complex numbers)."""
    a, b, c, d = theta
    x, y = Z0
    total = 0.0
    for ox, oy in obs:
        x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
        total += (x - ox) ** 2 + (y - oy) ** 2
    return total


def ode_reference(d):
    """float64 value; gradient by complex-step differentiation (exact to rounding)."""
    obs = d.obs.tolist()
    theta = [float(v) for v in d.theta]
    h = 1e-30
    grad = np.empty(4)
    for k in range(4):
        tc = [complex(v) for v in theta]
        tc[k] += 1j * h
        grad[k] = ode_loss_python(tc, obs).imag / h
    return ode_loss_python(theta, obs), [grad]


def _ode_result(out):
    value, grad = out
    return np.asarray(value), [np.asarray(grad)]


def ode_numpy(d):
    obs = d.obs.tolist()

    def vg():
        """Forward, then the adjoint recursion backwards, on Python floats."""
        a, b, c, dd = (float(v) for v in d.theta)
        x, y = Z0
        xs, ys = [x], [y]
        total = 0.0
        for ox, oy in obs:
            x, y = x + DT * (a * x - b * x * y), y + DT * (dd * x * y - c * y)
            total += (x - ox) ** 2 + (y - oy) ** 2
            xs.append(x)
            ys.append(y)
        gx = gy = ga = gb = gc = gd = 0.0
        for t in range(STEPS - 1, -1, -1):
            ox, oy = obs[t]
            gx += 2.0 * (xs[t + 1] - ox)
            gy += 2.0 * (ys[t + 1] - oy)
            x, y = xs[t], ys[t]
            ga += gx * DT * x
            gb -= gx * DT * x * y
            gd += gy * DT * x * y
            gc -= gy * DT * y
            gx, gy = (
                gx * (1.0 + DT * (a - b * y)) + gy * DT * dd * y,
                gy * (1.0 + DT * (dd * x - c)) - gx * DT * b * x,
            )
        return total, np.array([ga, gb, gc, gd])

    return Bench(vg, _ode_result, note="adjoint recursion by hand on Python floats")


def _ode_numba_kernel():
    import numba as nb

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy")
    def ode_vg(theta, obs, xs, ys, grad):
        a, b, c, d = theta[0], theta[1], theta[2], theta[3]
        n = obs.shape[0]
        x, y = 10.0, 5.0
        xs[0], ys[0] = x, y
        total = 0.0
        for t in range(n):
            x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
            ex, ey = x - obs[t, 0], y - obs[t, 1]
            total += ex * ex + ey * ey
            xs[t + 1], ys[t + 1] = x, y
        gx = gy = ga = gb = gc = gd = 0.0
        for t in range(n - 1, -1, -1):
            gx += 2.0 * (xs[t + 1] - obs[t, 0])
            gy += 2.0 * (ys[t + 1] - obs[t, 1])
            x, y = xs[t], ys[t]
            ga += gx * DT * x
            gb -= gx * DT * x * y
            gd += gy * DT * x * y
            gc -= gy * DT * y
            gx, gy = (
                gx * (1.0 + DT * (a - b * y)) + gy * DT * d * y,
                gy * (1.0 + DT * (d * x - c)) - gx * DT * b * x,
            )
        grad[0], grad[1], grad[2], grad[3] = ga, gb, gc, gd
        return total

    return ode_vg


def ode_numba(d):
    kernel = _ode_numba_kernel()
    xs, ys, grad = np.empty(STEPS + 1), np.empty(STEPS + 1), np.empty(4)
    theta, obs = d.theta, np.ascontiguousarray(d.obs)
    return Bench(
        lambda: (kernel(theta, obs, xs, ys, grad), grad),
        _ode_result,
        label="Numba (hand-written BPTT)",
        note="one njit: forward storing the trajectory, adjoint loop backwards; "
        "caller-allocated buffers",
    )


def ode_loss_scan(scan, reduce_sum, theta, ox, oy, x0, y0):
    """W8a with a scan over the observations (xs = the pytree (ox, oy)); JAX's signature."""
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]

    def step(carry, obs):
        x, y = carry
        x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
        return (x, y), (x - obs[0]) ** 2 + (y - obs[1]) ** 2

    _, errors = scan(step, (x0, y0), (ox, oy))
    return reduce_sum(errors)


def jitgrad_scan():
    """`jitgrad.lax.scan`, or a RuntimeError saying it is missing (not an ImportError: the
    harness would report the system as not installed)."""
    import jitgrad as jg

    try:
        import jitgrad.lax  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"jitgrad.lax.scan is not available in this jitgrad ({exc})") from None
    scan = getattr(jg.lax, "scan", None)
    if scan is None:
        raise RuntimeError("jitgrad.lax has no scan in this jitgrad")
    return jg, scan


def ode_jitgrad(d):
    jg, scan = jitgrad_scan()
    x0, y0 = np.float64(Z0[0]), np.float64(Z0[1])
    vg = jg.jit_grad(
        lambda theta, ox, oy: ode_loss_scan(scan, jg.reduce_sum, theta, ox, oy, x0, y0), wrt=0
    )
    ox, oy = np.ascontiguousarray(d.obs[:, 0]), np.ascontiguousarray(d.obs[:, 1])
    bench = Bench(
        lambda: vg(d.theta, ox, oy),
        _ode_result,
        note="jit_grad(wrt=0) of a jitgrad.lax.scan over the observations",
    )
    bench.fn = vg  # the first-call child waits for its kernel
    return bench


def ode_jax(d):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x0, y0 = jnp.float64(Z0[0]), jnp.float64(Z0[1])
    vg = jax.jit(
        jax.value_and_grad(
            lambda theta, ox, oy: ode_loss_scan(jax.lax.scan, jnp.sum, theta, ox, oy, x0, y0)
        )
    )
    theta, ox, oy = (jax.device_put(v) for v in (d.theta, d.obs[:, 0], d.obs[:, 1]))
    return Bench(
        lambda: jax.block_until_ready(vg(theta, ox, oy)),
        _ode_result,
        note="jit(value_and_grad) of a lax.scan over the observations, x64",
    )


def ode_pytensor(d):
    import pytensor
    import pytensor.tensor as pt

    theta, obs = pt.dvector("theta"), pt.dmatrix("obs")
    a, b, c, dd = theta[0], theta[1], theta[2], theta[3]

    def step(ob, x, y):
        xn = x + DT * (a * x - b * x * y)
        yn = y + DT * (dd * x * y - c * y)
        return xn, yn, (xn - ob[0]) ** 2 + (yn - ob[1]) ** 2

    x0, y0 = pt.constant(np.float64(Z0[0])), pt.constant(np.float64(Z0[1]))
    _, _, errors = pytensor.scan(
        step, sequences=[obs], outputs_info=[x0, y0, None], return_updates=False
    )
    loss = errors.sum()
    fn = pytensor.function([theta, obs], [loss, pytensor.grad(loss, theta)], mode="NUMBA")
    return Bench(
        lambda: fn(d.theta, d.obs), lambda out: (out[0], [out[1]]), note="scan, mode='NUMBA'"
    )


def ode_torch(d):
    import torch

    obs = d.obs.tolist()
    theta = torch.tensor(d.theta, dtype=torch.float64, requires_grad=True)

    def vg():
        a, b, c, dd = theta.unbind()
        x = torch.tensor(Z0[0], dtype=torch.float64)
        y = torch.tensor(Z0[1], dtype=torch.float64)
        total = 0.0
        for ox, oy in obs:
            x, y = x + DT * (a * x - b * x * y), y + DT * (dd * x * y - c * y)
            total = total + (x - ox) ** 2 + (y - oy) ** 2
        (g,) = torch.autograd.grad(total, (theta,))
        return total.detach(), g

    return Bench(
        vg,
        lambda out: (out[0].numpy(), [out[1].numpy()]),
        note="Python loop on 0-d float64 tensors + autograd.grad",
    )


def ode_autograd(d):
    import autograd

    obs = d.obs.tolist()
    vg = autograd.value_and_grad(lambda theta: ode_loss_python(theta, obs))
    return Bench(
        lambda: vg(d.theta), _ode_result, note="value_and_grad of the Python loop (float64)"
    )


# -- W8b: tanh RNN -------------------------------------------------------------------------------
T, B, D_IN, H = 100, 16, 8, 32
RNN_NAMES = ("W", "U", "b")


def rnn_data():
    rng = np.random.default_rng(8)
    f32 = np.float32
    xs = rng.standard_normal((T, B, D_IN)).astype(f32)
    params = {
        "W": (rng.standard_normal((H, H)) / np.sqrt(H)).astype(f32),
        "U": (rng.standard_normal((D_IN, H)) / np.sqrt(D_IN)).astype(f32),
        "b": (0.1 * rng.standard_normal(H)).astype(f32),
    }
    return types.SimpleNamespace(params=params, xs=xs)


def rnn_numpy_value_and_grads(p, xs, dtype):
    """Forward storing every h_t, then backprop through time, by hand (vectorised numpy)."""
    W, U, b = (p[k].astype(dtype, copy=False) for k in RNN_NAMES)
    xs = xs.astype(dtype, copy=False)
    hs = np.zeros((T + 1, B, H), dtype)
    for t in range(T):
        hs[t + 1] = np.tanh(hs[t] @ W + xs[t] @ U + b)
    means = hs[1:].mean(axis=(1, 2))
    loss = np.mean(hs[T] ** 2) + np.sum(means**2) / T
    # d loss / d h_t, direct part: (2 / T) mean(h_t) / (B H) on every element (+ 2 h_T / (B H))
    direct = (2.0 / T) * means / (B * H)
    dW, dU, db = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    g = (2.0 / (B * H)) * hs[T] + direct[T - 1].astype(dtype)
    for t in range(T, 0, -1):
        da = g * (1 - hs[t] ** 2)
        dW += hs[t - 1].T @ da
        dU += xs[t - 1].T @ da
        db += da.sum(axis=0)
        g = da @ W.T
        if t > 1:
            g += direct[t - 2]
    return loss, [dW, dU, db]


def rnn_reference(d):
    return rnn_numpy_value_and_grads(d.params, d.xs, np.float64)


def _rnn_result(out):
    value, grads = out
    return np.asarray(value), [np.asarray(grads[k]) for k in RNN_NAMES]


def rnn_numpy(d):
    return Bench(
        lambda: (lambda v, g: (v, dict(zip(RNN_NAMES, g))))(
            *rnn_numpy_value_and_grads(d.params, d.xs, np.float32)
        ),
        _rnn_result,
        note="BPTT by hand, float32, matmuls with @",
    )


def _vtanh():
    """jitgrad's vectorisable float32 tanh (the suite's hand-fused convention), else math.tanh."""
    try:
        from jitgrad.backend.numba.vmath import vtanh_f32

        return vtanh_f32, "vmath tanh"
    except Exception:  # noqa: BLE001 - jitgrad absent or broken: the scalar libm tanh
        import math

        import numba as nb

        return nb.njit(lambda x: np.float32(math.tanh(x))), "math.tanh"


def _rnn_numba_loops():
    import numba as nb

    tanh, how = _vtanh()

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy")
    def rnn_vg(W, U, b, xs, hs, acc, g, gn, da, means, dW, dU, db):
        T_, B_, I_ = xs.shape
        H_ = W.shape[0]
        inv = np.float32(1.0) / np.float32(B_ * H_)
        f0, f1, f2 = np.float32(0.0), np.float32(1.0), np.float32(2.0)
        hs[0, :, :] = f0
        loss = f0
        for t in range(T_):
            s = f0
            for i in range(B_):
                for j in range(H_):
                    acc[j] = b[j]
                for k in range(H_):
                    hk = hs[t, i, k]
                    for j in range(H_):
                        acc[j] += hk * W[k, j]
                for k in range(I_):
                    xk = xs[t, i, k]
                    for j in range(H_):
                        acc[j] += xk * U[k, j]
                for j in range(H_):
                    v = tanh(acc[j])
                    hs[t + 1, i, j] = v
                    s += v
            m = s * inv
            means[t] = m
            loss += m * m / np.float32(T_)
        sq = f0
        for i in range(B_):
            for j in range(H_):
                v = hs[T_, i, j]
                sq += v * v
                g[i, j] = f2 * inv * v + f2 / np.float32(T_) * means[T_ - 1] * inv
        loss += sq * inv
        dW[:, :] = f0
        dU[:, :] = f0
        db[:] = f0
        for t in range(T_, 0, -1):
            for i in range(B_):
                for j in range(H_):
                    v = hs[t, i, j]
                    da[i, j] = g[i, j] * (f1 - v * v)
            for i in range(B_):
                for k in range(H_):
                    hk = hs[t - 1, i, k]
                    for j in range(H_):
                        dW[k, j] += hk * da[i, j]
                for k in range(I_):
                    xk = xs[t - 1, i, k]
                    for j in range(H_):
                        dU[k, j] += xk * da[i, j]
                for j in range(H_):
                    db[j] += da[i, j]
            direct = f2 / np.float32(T_) * means[t - 2] * inv if t > 1 else f0
            for i in range(B_):
                for k in range(H_):
                    s = direct
                    for j in range(H_):
                        s += da[i, j] * W[k, j]
                    gn[i, k] = s
            g, gn = gn, g
        return loss

    return rnn_vg, how


def _rnn_numba_dot():
    import numba as nb

    tanh, how = _vtanh()

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy")
    def rnn_vg(W, U, b, xs, hs, WT, da, means, dW, dU, db):
        T_, B_, _ = xs.shape
        H_ = W.shape[0]
        inv = np.float32(1.0) / np.float32(B_ * H_)
        f0, f1, f2 = np.float32(0.0), np.float32(1.0), np.float32(2.0)
        hs[0, :, :] = f0
        loss = f0
        for t in range(T_):
            a = np.dot(hs[t], W) + np.dot(xs[t], U)
            s = f0
            for i in range(B_):
                for j in range(H_):
                    v = tanh(a[i, j] + b[j])
                    hs[t + 1, i, j] = v
                    s += v
            m = s * inv
            means[t] = m
            loss += m * m / np.float32(T_)
        for k in range(H_):
            for j in range(H_):
                WT[j, k] = W[k, j]
        g = np.empty((B_, H_), np.float32)
        sq = f0
        for i in range(B_):
            for j in range(H_):
                v = hs[T_, i, j]
                sq += v * v
                g[i, j] = f2 * inv * v + f2 / np.float32(T_) * means[T_ - 1] * inv
        loss += sq * inv
        dW[:, :] = f0
        dU[:, :] = f0
        db[:] = f0
        for t in range(T_, 0, -1):
            for i in range(B_):
                for j in range(H_):
                    v = hs[t, i, j]
                    da[i, j] = g[i, j] * (f1 - v * v)
                    db[j] += da[i, j]
            dW += np.dot(hs[t - 1].T, da)
            dU += np.dot(xs[t - 1].T, da)
            g = np.dot(da, WT)
            if t > 1:
                g += f2 / np.float32(T_) * means[t - 2] * inv
        return loss

    return rnn_vg, how


def rnn_numba(d):
    kernel, how = _rnn_numba_loops()
    W, U, b = (d.params[k] for k in RNN_NAMES)
    f32 = np.float32
    hs, acc = np.empty((T + 1, B, H), f32), np.empty(H, f32)
    g, gn, da = (np.empty((B, H), f32) for _ in range(3))
    means = np.empty(T, f32)
    grads = {k: np.empty_like(v) for k, v in d.params.items()}
    args = (W, U, b, d.xs, hs, acc, g, gn, da, means, grads["W"], grads["U"], grads["b"])
    return Bench(
        lambda: (kernel(*args), grads),
        _rnn_result,
        label="Numba (hand-written loops, no BLAS)",
        note=f"one njit: forward + BPTT as explicit loops, {how}, reassoc+contract, "
        "caller-allocated buffers",
    )


def setup_rnn_numba_dot(d):
    kernel, how = _rnn_numba_dot()
    W, U, b = (d.params[k] for k in RNN_NAMES)
    f32 = np.float32
    hs, WT, da = np.empty((T + 1, B, H), f32), np.empty((H, H), f32), np.empty((B, H), f32)
    means = np.empty(T, f32)
    grads = {k: np.empty_like(v) for k, v in d.params.items()}
    args = (W, U, b, d.xs, hs, WT, da, means, grads["W"], grads["U"], grads["b"])
    return Bench(
        lambda: (kernel(*args), grads),
        _rnn_result,
        label="Numba (hand-written, np.dot)",
        note=f"one njit: forward + BPTT with np.dot (BLAS) for the matmuls, {how}",
    )


def rnn_loss_scan(scan, tanh, mean, total, p, xs, h0):
    """W8b with a scan over xs (T, B, I); JAX's signature."""

    def step(h, x):
        h = tanh(h @ p["W"] + x @ p["U"] + p["b"])
        return h, mean(h) ** 2

    h_T, sq_means = scan(step, h0, xs)
    return mean(h_T**2) + total(sq_means) / T


def rnn_jitgrad(d):
    jg, scan = jitgrad_scan()
    h0 = np.zeros((B, H), np.float32)
    vg = jg.jit_grad(
        lambda p, xs: rnn_loss_scan(scan, jg.tanh, jg.reduce_mean, jg.reduce_sum, p, xs, h0),
        wrt=0,
    )
    bench = Bench(
        lambda: vg(d.params, d.xs),
        _rnn_result,
        note="jit_grad(wrt=0) of a jitgrad.lax.scan over xs, dict of params",
    )
    bench.fn = vg
    return bench


def rnn_jax(d):
    import jax
    import jax.numpy as jnp

    h0 = jnp.zeros((B, H), jnp.float32)
    vg = jax.jit(
        jax.value_and_grad(
            lambda p, xs: rnn_loss_scan(jax.lax.scan, jnp.tanh, jnp.mean, jnp.sum, p, xs, h0)
        )
    )
    p = {k: jax.device_put(v) for k, v in d.params.items()}
    xs = jax.device_put(d.xs)
    return Bench(
        lambda: jax.block_until_ready(vg(p, xs)),
        _rnn_result,
        note="jit(value_and_grad) of a lax.scan over xs",
    )


def rnn_pytensor(d):
    import pytensor
    import pytensor.tensor as pt

    W, U = pt.matrix("W", dtype="float32"), pt.matrix("U", dtype="float32")
    b, xs = pt.vector("b", dtype="float32"), pt.tensor3("xs", dtype="float32")

    def step(x, h):
        h = pt.tanh(h @ W + x @ U + b)
        return h, pt.mean(h) ** 2

    h0 = pt.zeros((B, H), dtype="float32")
    hs, sq_means = pytensor.scan(
        step, sequences=[xs], outputs_info=[h0, None], return_updates=False
    )
    loss = pt.mean(hs[-1] ** 2) + pt.sum(sq_means) / T
    fn = pytensor.function([W, U, b, xs], [loss, *pytensor.grad(loss, [W, U, b])], mode="NUMBA")
    args = [d.params[k] for k in RNN_NAMES] + [d.xs]
    return Bench(
        lambda: fn(*args),
        lambda out: (out[0], out[1:]),
        note="scan, mode='NUMBA'",
    )


def rnn_torch(d):
    import torch

    p = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in d.params.items()}
    xs = torch.from_numpy(d.xs)
    leaves = [p[k] for k in RNN_NAMES]

    def vg():
        W, U, b = leaves
        h = torch.zeros((B, H), dtype=torch.float32)
        total = 0.0
        for t in range(T):
            h = torch.tanh(h @ W + xs[t] @ U + b)
            total = total + torch.mean(h) ** 2
        loss = torch.mean(h**2) + total / T
        grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), dict(zip(RNN_NAMES, grads))

    return Bench(
        vg,
        lambda out: (out[0].numpy(), [out[1][k].numpy() for k in RNN_NAMES]),
        note="Python loop + autograd.grad",
    )


def rnn_autograd(d):
    import autograd
    import autograd.numpy as anp

    def loss(p, xs):
        h = np.zeros((B, H), np.float32)
        total = 0.0
        for t in range(T):
            h = anp.tanh(anp.dot(h, p["W"]) + anp.dot(xs[t], p["U"]) + p["b"])
            total = total + anp.mean(h) ** 2
        return anp.mean(h**2) + total / T

    vg = autograd.value_and_grad(loss)
    return Bench(lambda: vg(d.params, d.xs), _rnn_result, note="value_and_grad of the Python loop")


W8A = Workload(
    "W8a",
    "Lotka-Volterra ODE fit, 1,000 Euler steps (float64): value + grad w.r.t. theta",
    "us",
    ode_data,
    ode_reference,
    {
        "jitgrad": ode_jitgrad,
        "numba": ode_numba,
        "numpy": ode_numpy,
        "jax": ode_jax,
        "torch": ode_torch,
        "autograd": ode_autograd,
        "pytensor": ode_pytensor,
    },
    rtol=1e-8,
)
W8B = Workload(
    "W8b",
    "tanh RNN, T = 100, batch 16, input 8, hidden 32 (float32): value + grads of W, U, b",
    "ms",
    rnn_data,
    rnn_reference,
    {
        "jitgrad": rnn_jitgrad,
        "numba": rnn_numba,
        "numba_dot": setup_rnn_numba_dot,
        "numpy": rnn_numpy,
        "jax": rnn_jax,
        "torch": rnn_torch,
        "autograd": rnn_autograd,
        "pytensor": rnn_pytensor,
    },
)
WORKLOADS = [W8A, W8B]
KEYS = tuple(w.key for w in WORKLOADS)


# -- first call in a fresh process ---------------------------------------------------------------
TAG = "W8-FIRST "
FIRST_TIMEOUT = 300.0  # seconds per first-call process
MODULES = {"jitgrad": "jitgrad", "jax": "jax", "torch": "torch", "autograd": "autograd"}
MODULES.update({"pytensor": "pytensor", "numba": "numba", "numba_dot": "numba"})


def first_call_child(system: str, key: str, steps: int | None = None) -> None:
    """Build `system`'s value+grad for workload `key` and time its first call (this process is
    fresh); print one TAG line, then check the result against the reference. `steps`: W8a
    with that many Euler steps instead of 1,000 (the trip-count measurement)."""
    import importlib

    if system == "jitgrad" and _COMPILE_ENV is None:
        os.environ.pop("JITGRAD_COMPILE", None)  # jitgrad's default mode, not _harness's
    workload = next(w for w in WORKLOADS if w.key == key)
    if steps is not None and key != "W8a":
        raise ValueError(f"--steps is for W8a only, not {key}")
    start = time.monotonic()
    module = importlib.import_module(MODULES.get(system, "numpy"))
    if system == "jax":
        importlib.import_module("jax.numpy")
    imported = time.monotonic() - start
    d = workload.data() if steps is None else ode_data(steps)
    mode = ""
    if system == "jitgrad":
        tiered = hasattr(module, "wait_for_compiles")
        mode = getattr(module.config, "compile", "blocking") if tiered else "blocking"
        worker = getattr(module.config, "compile_worker", None)
        if mode == "background" and worker:
            mode += f" ({worker} worker)"
    start = time.monotonic()
    bench = workload.systems[system](d)
    out = bench.call()
    first = time.monotonic() - start
    serving = first
    fn = getattr(bench, "fn", None)
    states: tuple = ()
    if fn is not None and hasattr(fn, "wait"):
        waited = fn.wait()
        serving = time.monotonic() - start
        states = tuple(getattr(fn.cache_info(), "states", ()) or ())
        if not waited or not states or any(s != "compiled" for s in states):
            raise RuntimeError(f"the kernel does not serve: wait() {waited}, states {states}")
    ref_value, ref_grads = workload.reference(d)
    value, grads = bench.result(out)
    err = compare_all(np.asarray(value), grads, ref_value, ref_grads, workload.rtol)
    if fn is not None:  # the first result may be the fallback's: check the kernel's too
        value, grads = bench.result(bench.call())
        err = max(err, compare_all(np.asarray(value), grads, ref_value, ref_grads, workload.rtol))
    info = {"import": imported, "first": first, "serving": serving, "mode": mode, "err": err}
    print(TAG + json.dumps(info), flush=True)
    end_compile_worker()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def first_call(
    python: str,
    system: str,
    key: str,
    env: dict,
    prefix=(),
    limit: float = FIRST_TIMEOUT,
    steps: int | None = None,
    compile_mode: str | None = None,
) -> dict:
    """One first-call sample of `system` on `key` in a fresh process with empty caches (see
    the module docstring); `steps`: W8a with that many Euler steps; `compile_mode`: jitgrad's
    JITGRAD_COMPILE (None: its default mode). Returns {"status": "ok", "import", "first",
    "serving", "mode", "err"} or {"status": "error" / "timeout", "note"}."""
    directory = tempfile.mkdtemp(prefix=f"perf-w8-{system}-")
    env = {
        k: v for k, v in env.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JITGRAD_COMPILE")
    }
    env["JITGRAD_CACHE_DIR"] = directory
    if compile_mode is not None:
        env["JITGRAD_COMPILE"] = compile_mode
    extra = [] if steps is None else ["--steps", str(steps)]
    if system == "pytensor":
        env["PYTENSOR_FLAGS"] = f"base_compiledir={directory}"
        env["NUMBA_CACHE_DIR"] = os.path.join(directory, "numba")
    proc = subprocess.Popen(
        [*prefix, python, os.path.abspath(__file__), "--first-call", system, key, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return {"status": "timeout", "note": f"no first result within {limit:.0f} s (killed)"}
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        else:
            try:  # a process the child started and left running (a background compile)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(directory, ignore_errors=True)
    for line in stdout.splitlines():
        if line.startswith(TAG):
            return {"status": "ok", **json.loads(line[len(TAG) :])}
    tail = [x for x in stderr.strip().splitlines() if x.strip()][-2:]
    return {"status": "error", "note": f"exit {proc.returncode}: {' | '.join(tail)[-300:]}"}


def first_calls(
    python: str, system: str, key: str, env: dict, prefix=(), reps: int = 3, budget: float = 30.0
) -> dict:
    """Up to `reps` first-call samples, fewer (at least one) when another would take the
    system past `budget` seconds; the medians of first, serving and import, and the samples."""
    samples = []
    start = time.monotonic()
    while len(samples) < reps:
        t0 = time.monotonic()
        sample = first_call(python, system, key, env, prefix)
        if sample["status"] != "ok":
            return {**sample, "samples": [s["first"] for s in samples]}
        samples.append(sample)
        now = time.monotonic()
        if now - start + (now - t0) > budget:
            break
    return summarize(samples)


def summarize(samples: list[dict]) -> dict:
    """First-call samples (all "ok") as one: the medians of first, serving and import, the
    largest error, and the samples' first-call seconds."""
    summary = {
        field: float(np.median([s[field] for s in samples]))
        for field in ("first", "serving", "import")
    }
    return {
        **samples[0],
        **summary,
        "err": max(s["err"] for s in samples),
        "samples": [s["first"] for s in samples],
    }


# -- compile time against the trip count ---------------------------------------------------------
TRIP_COUNTS = (10, 10_000)
# (name, Euler steps, JITGRAD_COMPILE): the compile itself (blocking) for each trip count, and
# the longest in jitgrad's default mode (background: the numpy fallback answers first).
TRIP_RUNS = (
    ("short", TRIP_COUNTS[0], "blocking"),
    ("long", TRIP_COUNTS[1], "blocking"),
    ("long_default", TRIP_COUNTS[1], None),
)


def trip_counts(python: str, env: dict, prefix=(), reps: int = 3) -> dict:
    """jitgrad's first call on W8a with T = 10 and T = 10,000 Euler steps in fresh processes
    (see the module docstring): `reps` samples of each of TRIP_RUNS, interleaved so that a
    change of the machine's load falls on every run alike. Returns {"status": "ok", "ratio"
    (the medians' long / short, blocking), "runs": {name: summary with "steps"}} or the first
    failed sample's {"status", "note", "run"}."""
    samples: dict[str, list[dict]] = {name: [] for name, _, _ in TRIP_RUNS}
    for _ in range(reps):
        for name, steps, mode in TRIP_RUNS:
            sample = first_call(
                python, "jitgrad", "W8a", env, prefix, steps=steps, compile_mode=mode
            )
            if sample["status"] != "ok":
                return {**sample, "run": f"T = {steps:,} ({mode or 'default mode'})"}
            samples[name].append(sample)
    runs = {name: {**summarize(samples[name]), "steps": steps} for name, steps, _ in TRIP_RUNS}
    return {
        "status": "ok",
        "ratio": runs["long"]["first"] / runs["short"]["first"],
        "runs": runs,
    }


if __name__ == "__main__":
    if "--first-call" in sys.argv:
        i = sys.argv.index("--first-call")
        steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else None
        first_call_child(sys.argv[i + 1], sys.argv[i + 2], steps)
    else:
        main(WORKLOADS)
