"""W10 cnn: a LeNet-style CNN, value + gradients of all six parameters.

Batch 64 of 28x28x1 float32 images (NHWC); conv 5x5 1->8 'VALID' + bias + relu; max-pool 2x2
(stride 2); conv 5x5 8->16 'VALID' + bias + relu; max-pool 2x2 (-> 4x4x16 = 256, flattened in
NHWC order); dense 256 -> 10; mean sparse softmax cross-entropy with integer labels.
Parameters: filters K1 (5, 5, 1, 8) and K2 (5, 5, 8, 16) (HWIO), biases c1 (8,), c2 (16,),
dense W (256, 10), b (10,). Milliseconds per value+grad call.

Data (numpy default_rng(SEED)): images uniform in [0, 1), labels uniform in 0..9 (int32),
filters He-normal (std sqrt(2 / fan_in)), W ~ N(0, 1/256), biases N(0, 0.01). The seed is one
whose float64 forward pass has no relu or max-pool decision within MARGIN of a tie (checked by
`reference`): a float32 system could otherwise route one gradient term differently from the
float64 reference (one term of dK1 is ~1% of its scale), a disagreement of the data, not of
the system.

FLOPs (multiply + add = 2, as W3 counts): forward conv1 14.75 + conv2 26.21 + dense 0.33
MFLOP; backward dK1 14.75 (no gradient w.r.t. the images), dK2 26.21 and d(pool1) 26.21,
dW + d(flat) 0.66: 109.1 MFLOP. The "FLOP floor" is that at the measured sgemm peak (as W3's).

Systems: jitgrad (`jit_grad` of a loss written with jitgrad.nn.conv2d / max_pool2d / relu,
matmul and sparse_softmax_cross_entropy_with_logits), a hand-written numpy im2col reference
(forward + backward by hand, float32), JAX (`jit(value_and_grad)`, lax.conv_general_dilated
NHWC/HWIO and reduce_window max), PyTorch eager and torch.compile (NCHW inside: the images and
filters are converted once at setup, the gradients back for the check), TensorFlow eager
(GradientTape) and tf.function. The float64 reference is computed differently from the numpy
system (sliding windows + einsum, the input gradient as a full correlation with the flipped
filters, the pooling gradient by a first-maximum mask).

Besides the steady-state time, run.py measures first calls in fresh processes
(`--first-call NAME`, the median of up to 3 samples): jitgrad with an empty JITGRAD_CACHE_DIR
(Numba's cache of jitgrad's own helpers as installed, as in W8/W9) in blocking mode
(JITGRAD_COMPILE=blocking: the first call is the compile) and in its default mode (the first
result, and the seconds until the compiled kernel serves, `fn.wait()`); JAX's first call (no
persistent cache). Seconds from building the value+grad function (after the imports, timed on
their own) until the first call returns; the result is checked against the reference.

    python perf/w10_cnn.py --system jax                  # one system, this process
    python perf/w10_cnn.py --first-call jitgrad_blocking # one first-call sample
    python perf/run.py --only W10                        # everything, through run.py
"""

from __future__ import annotations

import os

# jitgrad's compile mode as the caller set it, before _harness makes "blocking" the default
# (the steady-state runs use blocking; the first-call samples set the mode they measure).
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

from _harness import (  # noqa: E402
    Bench,
    Workload,
    compare_all,
    end_compile_worker,
    main,
    setups,
)

N, HW, C = 64, 28, 10  # batch, image side, classes
KS = 5  # filter side
F1, F2 = 8, 16  # channels after conv1, conv2
NAMES = ("K1", "c1", "K2", "c2", "W", "b")
SEED = 10
MARGIN = 1e-5  # smallest distance of a relu / max-pool decision from a tie (float64 forward)

_O1, _P1 = HW - KS + 1, (HW - KS + 1) // 2  # 24, 12
_O2, _P2 = _P1 - KS + 1, (_P1 - KS + 1) // 2  # 8, 4
FLAT = _P2 * _P2 * F2  # 256
_CONV1 = 2 * N * _O1 * _O1 * F1 * KS * KS * 1
_CONV2 = 2 * N * _O2 * _O2 * F2 * KS * KS * F1
_DENSE = 2 * N * FLAT * C
# forward; dK1 (no input gradient); dK2 and d(pool1); dW and d(flat)
FLOPS = (_CONV1 + _CONV2 + _DENSE) + _CONV1 + 2 * _CONV2 + 2 * _DENSE  # 109.1 MFLOP


def data(seed: int = SEED):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    params = {
        "K1": (rng.standard_normal((KS, KS, 1, F1)) * np.sqrt(2.0 / (KS * KS))).astype(f32),
        "c1": (0.1 * rng.standard_normal(F1)).astype(f32),
        "K2": (rng.standard_normal((KS, KS, F1, F2)) * np.sqrt(2.0 / (KS * KS * F1))).astype(f32),
        "c2": (0.1 * rng.standard_normal(F2)).astype(f32),
        "W": (rng.standard_normal((FLAT, C)) * np.sqrt(1.0 / FLAT)).astype(f32),
        "b": (0.1 * rng.standard_normal(C)).astype(f32),
    }
    X = rng.random((N, HW, HW, 1)).astype(f32)
    y = rng.integers(0, C, N).astype(np.int32)
    return types.SimpleNamespace(params=params, X=X, y=y)


def floor(machine):
    peak = machine.get("sgemm_gflops")
    if not peak:
        return None
    return FLOPS / (peak * 1e9), f"{FLOPS / 1e6:.1f} MFLOP at {peak:.0f} GFLOP/s"


def _dict_result(out):
    value, grads = out
    return np.asarray(value), [np.asarray(grads[k]) for k in NAMES]


# -- the float64 reference (sliding windows + einsum) --------------------------------------------
def _windows(a, k):
    """(N, H, W, C) -> (N, H-k+1, W-k+1, C, k, k) view."""
    return np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(1, 2))


def _ref_conv(x, w):
    return np.einsum("nhwcij,ijco->nhwo", _windows(x, w.shape[0]), w, optimize=True)


def _ref_conv_filter_grad(x, g, k):
    return np.einsum("nhwcij,nhwo->ijco", _windows(x, k), g, optimize=True)


def _ref_conv_input_grad(g, w):
    """Full correlation of the output gradient with the flipped filters."""
    k = w.shape[0]
    gp = np.pad(g, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0)))
    return np.einsum("nabopq,pqco->nabc", _windows(gp, k), w[::-1, ::-1], optimize=True)


def _ref_pool(a):
    """2x2 max-pool and the mask of each window's first maximum (row-major scan)."""
    n, h, w, c = a.shape
    parts = [a[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]
    top = np.maximum(np.maximum(parts[0], parts[1]), np.maximum(parts[2], parts[3]))
    mask = np.zeros_like(a, dtype=bool)
    taken = np.zeros(top.shape, dtype=bool)
    for (i, j), part in zip(((0, 0), (0, 1), (1, 0), (1, 1)), parts):
        first = (part == top) & ~taken
        mask[:, i::2, j::2, :] = first
        taken |= first
    return top, mask, parts


def _margin(pre, parts_of_act):
    """The distance of the relu and max-pool decisions from a tie: |pre-activation| where it
    reaches a window's maximum, and the gap between each window's two largest pre-activations
    where the largest is not clearly negative."""
    s = np.sort(np.stack(parts_of_act), axis=0)
    first, second = s[-1], s[-2]
    live = first > -MARGIN
    gaps = (first - second)[live]
    return min(float(np.min(np.abs(first[live]))), float(np.min(gaps)) if gaps.size else np.inf)


def reference(d):
    p = {k: v.astype(np.float64) for k, v in d.params.items()}
    X = d.X.astype(np.float64)
    z1 = _ref_conv(X, p["K1"]) + p["c1"]
    a1 = np.maximum(z1, 0)
    p1, m1, _ = _ref_pool(a1)
    z2 = _ref_conv(p1, p["K2"]) + p["c2"]
    a2 = np.maximum(z2, 0)
    p2, m2, _ = _ref_pool(a2)
    flat = p2.reshape(N, FLAT)
    z = flat @ p["W"] + p["b"]
    margin = min(
        _margin(z1, [z1[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]),
        _margin(z2, [z2[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]),
    )
    if margin < MARGIN:
        raise ValueError(
            f"W10 data: a relu / max-pool decision is {margin:.2g} from a tie (< {MARGIN:g}): "
            "float32 systems could branch differently from the float64 reference; change SEED"
        )
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(N)
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, d.y])
    dz = e / s
    dz[rows, d.y] -= 1
    dz /= N
    dW, db = flat.T @ dz, dz.sum(0)
    dp2 = (dz @ p["W"].T).reshape(p2.shape)
    dz2 = np.repeat(np.repeat(dp2, 2, axis=1), 2, axis=2) * m2 * (z2 > 0)
    dK2, dc2 = _ref_conv_filter_grad(p1, dz2, KS), dz2.sum((0, 1, 2))
    dp1 = _ref_conv_input_grad(dz2, p["K2"])
    dz1 = np.repeat(np.repeat(dp1, 2, axis=1), 2, axis=2) * m1 * (z1 > 0)
    dK1, dc1 = _ref_conv_filter_grad(X, dz1, KS), dz1.sum((0, 1, 2))
    return loss, [dK1, dc1, dK2, dc2, dW, db]


# -- numpy by hand: im2col + GEMM, float32 -------------------------------------------------------
def _im2col(x, k):
    """(N, H, W, C) -> (N*Ho*Wo, k*k*C) columns in (i, j, c) order (HWIO filters' rows)."""
    n, h, w, c = x.shape
    ho, wo = h - k + 1, w - k + 1
    cols = np.empty((n, ho, wo, k, k, c), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = x[:, i : i + ho, j : j + wo, :]
    return cols.reshape(n * ho * wo, k * k * c)


def _col2im(dcols, shape, k):
    n, h, w, c = shape
    ho, wo = h - k + 1, w - k + 1
    dcols = dcols.reshape(n, ho, wo, k, k, c)
    dx = np.zeros(shape, dcols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, i : i + ho, j : j + wo, :] += dcols[:, :, :, i, j, :]
    return dx


def _pool_forward(a):
    """2x2/2 max-pool; returns the pooled values and each window's first argmax (0..3)."""
    n, h, w, c = a.shape
    win = a.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    win = win.reshape(n, h // 2, w // 2, c, 4)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], arg


def _pool_backward(g, arg, shape):
    n, h, w, c = shape
    dwin = np.zeros((n, h // 2, w // 2, c, 4), g.dtype)
    np.put_along_axis(dwin, arg[..., None], g[..., None], -1)
    dwin = dwin.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return dwin.reshape(shape)


def numpy_value_and_grads(p, X, y):
    K1, c1, K2, c2, W, b = (p[k] for k in NAMES)
    cols1 = _im2col(X, KS)
    a1 = np.maximum(cols1 @ K1.reshape(-1, F1) + c1, 0).reshape(N, _O1, _O1, F1)
    p1, arg1 = _pool_forward(a1)
    cols2 = _im2col(p1, KS)
    a2 = np.maximum(cols2 @ K2.reshape(-1, F2) + c2, 0).reshape(N, _O2, _O2, F2)
    p2, arg2 = _pool_forward(a2)
    flat = p2.reshape(N, FLAT)
    z = flat @ W + b
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(N)
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    dz = e / s
    dz[rows, y] -= 1
    dz /= np.float32(N)
    dflat = dz @ W.T
    da2 = _pool_backward(dflat.reshape(p2.shape), arg2, a2.shape)
    da2 *= a2 > 0
    g2 = da2.reshape(-1, F2)
    dK2 = (cols2.T @ g2).reshape(K2.shape)
    dp1 = _col2im(g2 @ K2.reshape(-1, F2).T, p1.shape, KS)
    da1 = _pool_backward(dp1, arg1, a1.shape)
    da1 *= a1 > 0
    g1 = da1.reshape(-1, F1)
    dK1 = (cols1.T @ g1).reshape(K1.shape)
    return loss, [dK1, g1.sum(0), dK2, g2.sum(0), flat.T @ dz, dz.sum(0)]


def setup_numpy(d):
    return Bench(
        lambda: numpy_value_and_grads(d.params, d.X, d.y),
        lambda out: out,
        note="im2col + np.matmul, col2im and the pooling argmax by hand, float32",
    )


# -- the loss in each framework ------------------------------------------------------------------
def loss_jitgrad(p, X, y):
    import jitgrad as jg

    nn = jg.nn
    h = nn.max_pool2d(nn.relu(nn.conv2d(X, p["K1"], 1, "VALID") + p["c1"]), 2, 2, "VALID")
    h = nn.max_pool2d(nn.relu(nn.conv2d(h, p["K2"], 1, "VALID") + p["c2"]), 2, 2, "VALID")
    z = jg.reshape(h, (N, FLAT)) @ p["W"] + p["b"]
    return jg.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def setup_jitgrad(d):
    import jitgrad as jg

    vg = jg.jit_grad(loss_jitgrad, wrt=0)
    bench = Bench(
        lambda: vg(d.params, d.X, d.y),
        _dict_result,
        note="jit_grad(wrt=0) of a dict of params; nn.conv2d, nn.max_pool2d",
    )
    bench.fn = vg
    return bench


def loss_jax(p, X, y):
    import jax
    import jax.numpy as jnp
    from jax import lax

    dims = ("NHWC", "HWIO", "NHWC")

    def block(h, K, c):
        h = lax.conv_general_dilated(h, K, (1, 1), "VALID", dimension_numbers=dims)
        h = jax.nn.relu(h + c)
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    h = block(block(X, p["K1"], p["c1"]), p["K2"], p["c2"])
    z = h.reshape(N, FLAT) @ p["W"] + p["b"]
    logp = jax.nn.log_softmax(z)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def setup_jax(d):
    import jax

    vg = jax.jit(jax.value_and_grad(loss_jax))
    p = jax.device_put(d.params)
    X, y = jax.device_put(d.X), jax.device_put(d.y)
    return Bench(
        lambda: jax.block_until_ready(vg(p, X, y)),
        _dict_result,
        note="jit(value_and_grad); conv_general_dilated NHWC/HWIO, reduce_window max",
    )


def loss_torch(p, X, y):
    """NCHW inside (PyTorch's layout); the flatten permutes to NHWC order first."""
    import torch
    import torch.nn.functional as F

    h = F.max_pool2d(torch.relu(F.conv2d(X, p["K1"], p["c1"])), 2)
    h = F.max_pool2d(torch.relu(F.conv2d(h, p["K2"], p["c2"])), 2)
    z = h.permute(0, 2, 3, 1).reshape(N, FLAT) @ p["W"] + p["b"]
    return F.cross_entropy(z, y)


def torch_value_and_grad(d, compile_):
    import torch

    def to_torch(k, v):
        if k in ("K1", "K2"):  # HWIO -> OIHW
            v = v.transpose(3, 2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(v)).requires_grad_()

    p = {k: to_torch(k, v) for k, v in d.params.items()}
    X = torch.from_numpy(np.ascontiguousarray(d.X.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    y = torch.from_numpy(d.y.astype(np.int64))
    loss = torch.compile(loss_torch) if compile_ else loss_torch
    leaves = [p[k] for k in NAMES]

    def vg():
        value = loss(p, X, y)
        return value.detach(), torch.autograd.grad(value, leaves)

    def result(out):
        grads = [g.numpy() for g in out[1]]
        for i in (0, 2):  # OIHW -> HWIO
            grads[i] = grads[i].transpose(2, 3, 1, 0)
        return out[0].numpy(), grads

    return vg, result


def setup_torch(d):
    return Bench(
        *torch_value_and_grad(d, False),
        note="NCHW (converted once at setup), autograd.grad, int64 labels",
    )


def setup_torch_compile(d):
    """torch.compile with an empty inductor cache (a directory of this process's own, set
    before torch is imported), so that the note's first call is the compile itself."""
    import atexit

    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="perf-w10-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    vg, result = torch_value_and_grad(d, True)
    start = time.perf_counter()
    vg()  # the compile (forward and backward graphs), timed for the note
    seconds = time.perf_counter() - start
    return Bench(
        vg,
        result,
        note=f"torch.compile(loss) + autograd.grad, NCHW; first call {seconds:.1f} s "
        "(empty TORCHINDUCTOR_CACHE_DIR)",
    )


def loss_tf(p, X, y):
    import tensorflow as tf

    h = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(X, p["K1"], 1, "VALID") + p["c1"]), 2, 2, "VALID")
    h = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(h, p["K2"], 1, "VALID") + p["c2"]), 2, 2, "VALID")
    z = tf.reshape(h, (N, FLAT)) @ p["W"] + p["b"]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


def tf_value_and_grad(d, function: bool):
    import tensorflow as tf

    p = {k: tf.Variable(v) for k, v in d.params.items()}
    X, y = tf.constant(d.X), tf.constant(d.y)
    leaves = [p[k] for k in NAMES]

    def vg():
        with tf.GradientTape() as tape:
            value = loss_tf(p, X, y)
        return value, tape.gradient(value, leaves)

    fn = tf.function(vg) if function else vg
    return lambda: fn(), lambda out: (out[0].numpy(), [g.numpy() for g in out[1]])


def setup_tf(d):
    return Bench(*tf_value_and_grad(d, False), note="GradientTape, NHWC")


def setup_tf_function(d):
    return Bench(
        *tf_value_and_grad(d, True),
        label="TensorFlow tf.function",
        note="tf.function of the GradientTape step (graph mode, no XLA), NHWC",
    )


W10 = Workload(
    "W10",
    "LeNet-style CNN, batch 64 of 28x28x1 (NHWC): value + grads of the 6 parameters",
    "ms",
    data,
    reference,
    setups(globals()),
    floor=floor,
)
WORKLOADS = [W10]


# -- first call in a fresh process ---------------------------------------------------------------
TAG = "W10-FIRST "
FIRST_TIMEOUT = 300.0  # seconds per first-call process
# (name, system, JITGRAD_COMPILE; None: jitgrad's default mode), in the order they take turns
FIRST_RUNS = (
    ("jitgrad_blocking", "jitgrad", "blocking"),
    ("jitgrad", "jitgrad", None),
    ("jax", "jax", None),
)
FIRST_LABELS = {
    "jitgrad_blocking": "jitgrad (blocking)",
    "jitgrad": "jitgrad (default mode)",
    "jax": "JAX jit",
}


def first_call_child(name: str) -> None:
    """Build the value+grad of run `name` (FIRST_RUNS) and time its first call (this process is
    fresh); print one TAG line after checking the result (and, where the first result came
    from jitgrad's fallback, the compiled kernel's) against the reference."""
    import importlib

    system, mode_env = next((s, m) for n, s, m in FIRST_RUNS if n == name)
    if system == "jitgrad" and _COMPILE_ENV is None and mode_env is None:
        os.environ.pop("JITGRAD_COMPILE", None)  # jitgrad's default mode, not _harness's
    start = time.monotonic()
    module = importlib.import_module({"jitgrad": "jitgrad", "jax": "jax.numpy"}[system])
    imported = time.monotonic() - start
    d = data()
    mode, tiered = "", False
    if system == "jitgrad":
        tiered = hasattr(module, "wait_for_compiles")
        mode = getattr(module.config, "compile", "blocking") if tiered else "blocking"
        worker = getattr(module.config, "compile_worker", None)
        if mode == "background" and worker:
            mode += f" ({worker} worker)"
    start = time.monotonic()
    bench = W10.systems[system](d)
    out = bench.call()
    first = time.monotonic() - start
    serving, states = first, ()
    fn = getattr(bench, "fn", None)
    if fn is not None and hasattr(fn, "wait"):
        waited = fn.wait()
        serving = time.monotonic() - start
        states = tuple(getattr(fn.cache_info(), "states", ()) or ())
        if not waited or not states or any(s != "compiled" for s in states):
            raise RuntimeError(f"the kernel does not serve: wait() {waited}, states {states}")
    ref_value, ref_grads = reference(d)
    value, grads = bench.result(out)
    err = compare_all(value, grads, ref_value, ref_grads, W10.rtol)
    if fn is not None:  # the first result may be the fallback's: check the kernel's too
        value, grads = bench.result(bench.call())
        err = max(err, compare_all(value, grads, ref_value, ref_grads, W10.rtol))
    info = {"import": imported, "first": first, "serving": serving, "mode": mode, "err": err}
    print(TAG + json.dumps(info), flush=True)
    end_compile_worker()


def _kill_group(proc: subprocess.Popen) -> None:
    """End the child and every process it started (a background compile worker)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def first_call(python: str, name: str, env: dict, prefix=(), limit: float = FIRST_TIMEOUT):
    """One sample of run `name` in a fresh process with an empty JITGRAD_CACHE_DIR (Numba's
    cache of jitgrad's own helpers as installed). Returns {"status": "ok", "import", "first",
    "serving", "mode", "err"} or {"status": "error" / "timeout", "note"}."""
    _, _, mode = next(r for r in FIRST_RUNS if r[0] == name)
    directory = tempfile.mkdtemp(prefix=f"perf-w10-{name}-")
    env = {
        k: v for k, v in env.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JITGRAD_COMPILE")
    }
    env["JITGRAD_CACHE_DIR"] = directory
    if mode is not None:
        env["JITGRAD_COMPILE"] = mode
    proc = subprocess.Popen(
        [*prefix, python, os.path.abspath(__file__), "--first-call", name],
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
        return {"status": "timeout", "note": f"no result within {limit:.0f} s (killed)"}
    finally:
        _kill_group(proc)
        shutil.rmtree(directory, ignore_errors=True)
    for line in stdout.splitlines():
        if line.startswith(TAG):
            return {"status": "ok", **json.loads(line[len(TAG) :])}
    tail = [x for x in stderr.strip().splitlines() if x.strip()][-2:]
    return {"status": "error", "note": f"exit {proc.returncode}: {' | '.join(tail)[-300:]}"}


def first_calls(python: str, env: dict, names, prefix=(), reps: int = 3) -> dict:
    """`reps` samples of each run in `names`, interleaved (a change of the machine's load
    falls on every run alike). Returns {name: {"status": "ok", "first", "serving", "import"
    (medians), "err" (the largest), "samples" (first-call seconds), "servings", "mode"} or that
    run's first failed sample}."""
    samples: dict = {name: [] for name in names}
    failed: dict = {}
    for _ in range(reps):
        for name in names:
            if name in failed:
                continue
            sample = first_call(python, name, env, prefix)
            if sample["status"] != "ok":
                failed[name] = {**sample, "samples": [s["first"] for s in samples[name]]}
                continue
            samples[name].append(sample)
    out = {}
    for name in names:
        if name in failed:
            out[name] = failed[name]
            continue
        runs = samples[name]
        out[name] = {
            **runs[0],
            **{f: float(np.median([s[f] for s in runs])) for f in ("first", "serving", "import")},
            "err": max(s["err"] for s in runs),
            "samples": [s["first"] for s in runs],
            "servings": [s["serving"] for s in runs],
        }
    return out


if __name__ == "__main__":
    if "--first-call" in sys.argv:
        first_call_child(sys.argv[sys.argv.index("--first-call") + 1])
    else:
        main(WORKLOADS)
