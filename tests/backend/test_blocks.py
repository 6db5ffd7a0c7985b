"""Scalar blocks (backend/numba/blocks.py) compute bitwise what Numba computes for the same
statements: every elementwise op, for every dtype it takes, on special values (signed zeros,
infinities, NaN, integer extremes), in a group over no dimensions (a block in an LLVM function
of its own) and in a loop body (a block inlined in the loop). Under fastmath, which licenses
LLVM to contract and reorder differently in different code, on finite values and up to
rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import emit
from jitgrad.core.dispatch import bind
from jitgrad.core.opdef import REGISTRY

ELEMENTWISE = sorted(n for n, op in REGISTRY.items() if op.kind == "elementwise")
SPECIAL = {
    "float32": [-2.5, -0.0, 0.0, 0.7, 3.0, np.nan, np.inf, -np.inf],
    "float64": [-2.5, -0.0, 0.0, 0.7, 3.0, np.nan, np.inf, -np.inf],
    "int32": [-7, -1, 0, 1, 3, 2**31 - 1, -(2**31), 5],
    "int64": [-7, -1, 0, 1, 3, 2**63 - 1, -(2**63), 5],
    "bool": [True, False, True, True, False, False, True, False],
}


def _params(name: str, dtype: np.dtype) -> dict:
    if name != "cast":
        return {}
    return {"dtype": np.dtype(np.float32 if dtype.kind == "f" else np.float64)}


def _arity(name: str) -> int:
    template = REGISTRY[name].template
    return 3 if "{2}" in template else 2 if "{1}" in template else 1


def _valid_ops(dtype: np.dtype) -> list[str]:
    """The elementwise ops that take `dtype` (tried eagerly)."""
    x = np.ones((2,), dtype)
    ops = []
    for name in ELEMENTWISE:
        args = [x] * _arity(name)
        if name == "select":
            args = [np.ones((2,), bool), x, x]
        try:
            bind(REGISTRY[name], *[jg.constant(a) for a in args], **_params(name, dtype))
        except Exception:
            continue
        ops.append(name)
    return ops


def _program(dtype: np.dtype):
    """f(x, y, c): every op valid for `dtype` on (x, y) (select on c), and a chain through all
    of them, so the group is large enough to become a block."""
    names = _valid_ops(dtype)

    def f(x, y, c):
        outs = []
        acc = x
        for name in names:
            op = REGISTRY[name]
            # select picks with the bool c; other 3-operand ops (adjust_contrast) take values
            three = (c, x, y) if name == "select" else (x, y, x)
            args = {1: (x,), 2: (x, y), 3: three}[_arity(name)]
            out = bind(op, *args, **_params(name, dtype))
            outs.append(out)
            if out.dtype == x.dtype and name not in ("floordiv", "mod"):
                acc = bind(REGISTRY["select"], c, acc, out)
        return outs, acc

    return f


def _bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def _run(f, args, blocks: bool, fastmath: bool, monkeypatch):
    big = 10**9
    monkeypatch.setattr(emit, "MIN_BLOCK", 1 if blocks else big)
    monkeypatch.setattr(emit, "MIN_LOOP_BLOCK", 1 if blocks else big)
    jitted = jg.jit(f, fastmath=fastmath)
    source = jitted.lower(*args).source
    assert ("@scalar_block" in source) == blocks
    return jg.core.pytree.flatten(jitted(*args))[0]


# A float case compiles every op of its dtype twice (3-8 s): the default run takes two of the
# eight, which between them cover both float dtypes, both shapes and both fast-math modes; the
# others run with `pytest -m slow`. The integer and bool cases are cheap and all run.
SLOW_BLOCK_CASES = {
    (dtype, shape, math)
    for dtype in ("float32", "float64")
    for shape in ("0d", "loop")
    for math in ("ieee", "fastmath")
} - {("float64", "0d", "ieee"), ("float32", "loop", "fastmath")}


@pytest.mark.parametrize(
    "dtype, shape, fastmath",
    [
        pytest.param(
            dtype,
            shape,
            fastmath,
            id=f"{dtype}-{shape_id}-{math_id}",
            marks=pytest.mark.slow if (dtype, shape_id, math_id) in SLOW_BLOCK_CASES else (),
        )
        for dtype in SPECIAL
        for shape, shape_id in (((), "0d"), ((8,), "loop"))
        for fastmath, math_id in ((False, "ieee"), (True, "fastmath"))
    ],
)
def test_block_equals_numba_bitwise(dtype, shape, fastmath, monkeypatch):
    dtype = np.dtype(dtype)
    if fastmath and dtype.kind != "f":
        pytest.skip("fastmath changes float code only")
    values = np.array(SPECIAL[dtype.name], dtype)
    if fastmath:  # no infinities or NaN under fastmath
        values = np.array([-2.5, -0.5, 0.25, 0.7, 3.0, 1.5, -1.25, 2.0], dtype)
    f = _program(dtype)
    cases = []
    if shape:
        cases.append((values, np.roll(values, 3), np.arange(8) % 3 == 0))
    else:
        for k in range(0, 8, 3):
            cases.append((values[k], values[(k + 5) % 8], np.bool_(k % 2)))
    for x, y, c in cases:
        args = (np.asarray(x, dtype), np.asarray(y, dtype), np.asarray(c))
        with np.errstate(all="ignore"):
            want = _run(f, args, False, fastmath, monkeypatch)
            got = _run(f, args, True, fastmath, monkeypatch)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.asarray(g).dtype == np.asarray(w).dtype
            if fastmath:
                np.testing.assert_allclose(g, w, rtol=1e-5 if dtype == np.float32 else 1e-12)
            else:
                np.testing.assert_array_equal(_bits(g), _bits(w))


def test_block_source_is_plain_python():
    """The block is readable Python that runs as it is: `.py_func` gives the same values."""
    from jitgrad.backend.numba.blocks import scalar_block

    namespace = {"np": np, "scalar_block": scalar_block}
    exec(
        "@scalar_block()\n"
        "def block0(v0, v1):\n"
        "    x2 = (v0 * v1)\n"
        "    x3 = (x2 + np.float64(0.5))\n"
        "    x4 = (x3 if x2 > 0 else -x3)\n"
        "    return (x3, x4)\n",
        namespace,
    )
    assert namespace["block0"].py_func(2.0, 3.0) == (6.5, 6.5)


def euler_loss(theta, z0, obs):
    """Explicit Euler steps of a predator-prey model fitted to `obs`, read element by element
    (one scalar block; the reads of obs[t, k] are in it)."""
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]
    x, y = z0[0], z0[1]
    loss = 0.0
    for t in range(obs.shape[0]):
        x, y = x + 0.01 * (a * x - b * x * y), y + 0.01 * (d * x * y - c * y)
        loss = loss + (x - obs[t, 0]) ** 2 + (y - obs[t, 1]) ** 2
    return loss


def _euler_args(steps: int, seed: int = 0):
    obs = np.random.default_rng(seed).uniform(1, 10, (steps, 2))
    return np.array([1.1, 0.4, 0.4, 0.1]), np.array([10.0, 5.0]), obs


def test_unrolled_model_is_one_block_and_equals_eager():
    f = jg.jit_grad(euler_loss)
    args = _euler_args(6)
    source = f.lower(*args).source
    assert source.count("@scalar_block") == 1 and "own_function=True" in source
    assert "obs" not in source and "v2[5, 1]" in source  # the reads are in the block
    (value, grad), (want_value, want_grad) = f(*args), jg.value_and_grad(euler_loss)(*args)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10)


def test_polymorphic_kernel_with_blocks():
    """A second signature of the same structure gets the shape-polymorphic kernel (sizes and
    scalar constants read at run time, kernels.py); its blocks take them as arguments."""
    f = jg.jit_grad(lambda theta, z0, obs, w: euler_loss(theta, z0, obs) * jg.reduce_mean(w))
    first = (*_euler_args(5), np.ones(6))
    second = (*_euler_args(5, seed=1), np.ones(7))
    f.lower(*first)
    source = f.lower(*second).source
    assert "?" in source.splitlines()[0] and "@scalar_block" in source
    eager = jg.value_and_grad(
        lambda theta, z0, obs, w: euler_loss(theta, z0, obs) * jg.reduce_mean(w)
    )
    for args in (first, second):
        (value, grad), (want_value, want_grad) = f(*args), eager(*args)
        np.testing.assert_allclose(value, want_value, rtol=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10)


CACHED = """
import numpy as np
import jitgrad as jg
import sys
sys.path.insert(0, {here!r})
from test_blocks import euler_loss, _euler_args
f = jg.jit_grad(euler_loss)
value, grad = f(*_euler_args(4))
print(repr(float(value)), repr(np.asarray(grad).tolist()), f.cache_info().disk_loads)
"""


def test_kernel_with_blocks_loads_from_disk_in_a_second_process(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    script = CACHED.format(here=str(pathlib.Path(__file__).parent))
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path))
    outs = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout.rsplit(" ", 1))
    assert outs[0][0] == outs[1][0]  # the same bits
    assert outs[0][1].strip() == "0" and outs[1][1].strip() == "1"  # compiled, then loaded
