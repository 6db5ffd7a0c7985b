"""Accuracy, special-value and vectorisation tests for jitgrad.backend.numba.vmath.

Each function is run the way generated code runs it: inlined into a parallel, fastmath
(reassoc, contract) prange kernel.  Errors are integer ulp distances to a reference computed in
a wider type (float64 for float32, long double for float64) and rounded to the tested type.
"""

import functools
import importlib.util
import math
import pathlib
import re

import numba
import numpy as np
import pytest
import scipy.special
from numba import prange

try:
    from jitgrad.backend.numba import vmath
except ImportError:  # package not importable (yet): load the module from its path
    _PATH = pathlib.Path(__file__).parents[2] / "jitgrad" / "backend" / "numba" / "vmath.py"
    _SPEC = importlib.util.spec_from_file_location("jitgrad.backend.numba.vmath", _PATH)
    vmath = importlib.util.module_from_spec(_SPEC)
    _SPEC.loader.exec_module(vmath)

DTYPES = ("float32", "float64")
KERNEL_JIT = {"parallel": True, "fastmath": {"reassoc", "contract"}, "error_model": "numpy"}

# Max ulp error over all samples: measured maximum + 1 ulp of headroom.
MAX_ULP = {"exp": 2, "log": 2, "tanh": 3, "sigmoid": 3, "softplus": 3, "log1p": 2, "expm1": 3}

# Dense sampling range per op and dtype, covering where the function is not saturated.
DENSE_RANGE = {
    "float32": {
        "exp": (-110, 95),
        "expm1": (-110, 95),
        "sigmoid": (-110, 110),
        "softplus": (-110, 110),
        "log": (0, 4),
        "log1p": (-1, 4),
        "tanh": (-12, 12),
    },
    "float64": {
        "exp": (-750, 715),
        "expm1": (-750, 715),
        "sigmoid": (-750, 750),
        "softplus": (-750, 750),
        "log": (0, 4),
        "log1p": (-1, 4),
        "tanh": (-22, 22),
    },
}

SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan]

# Names of vmath's numba functions, public and internal, as they appear in mangled symbols.
VMATH_FUNCTIONS = ["_poly", "_pow2", "_expm1_reduced", "_log_reduced"] + [
    f"v{op}" for op in vmath.OPS
]


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.logaddexp(x.dtype.type(0), x)


REFERENCE = {
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "log1p": np.log1p,
    "expm1": np.expm1,
}
# numpy's own float-typed results, for the special values that must match exactly.
NUMPY = dict(REFERENCE, sigmoid=scipy.special.expit)


@functools.cache
def kernel(op, dtype, fastmath=None):
    """prange kernel applying the vmath function for (op, dtype) elementwise."""
    f = getattr(vmath, vmath.VMATH[(op, dtype)])
    flags = KERNEL_JIT if fastmath is None else dict(KERNEL_JIT, fastmath=fastmath)

    @numba.njit(**flags)
    def apply(x, out):
        for i in prange(x.size):
            out[i] = f(x[i])

    return apply


def run(op, dtype, x, fastmath=None):
    out = np.empty_like(x)
    kernel(op, dtype, fastmath)(x, out)
    return out


def reference(op, x):
    """Reference in the wider type, rounded to x's dtype."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):
        return REFERENCE[op](x.astype(wide)).astype(x.dtype)


def ulp_distance(got, ref):
    """|got - ref| in ulps (distance in the ordered integer image; inf is one past max)."""
    ints = np.int32 if got.dtype == np.float32 else np.int64

    def ordered(a):
        b = a.view(ints).astype(np.int64)
        return np.where(b < 0, np.iinfo(ints).min - b, b)

    dist = np.abs(ordered(got) - ordered(ref)).astype(np.float64)
    got_nan, ref_nan = np.isnan(got), np.isnan(ref)
    dist[got_nan & ref_nan] = 0
    dist[got_nan ^ ref_nan] = np.inf
    return dist


def samples(op, dtype):
    """(name, x) pairs: dense range, magnitudes, edges, random bit patterns."""
    dt = np.dtype(dtype)
    info = np.finfo(dt)
    ints, uints = (np.int32, np.uint32) if dt == np.float32 else (np.int64, np.uint64)
    lo, hi = DENSE_RANGE[dtype][op]
    dense = np.linspace(lo, hi, 2**20).astype(dt)
    # Every binade from the smallest denormal to max, both signs.
    with np.errstate(over="ignore"):
        mags = np.geomspace(float(info.smallest_subnormal), float(info.max), 2**18).astype(dt)
    # 64 ulps either side of exp's overflow and underflow-to-zero thresholds, x = -1 and x = 0.
    underflow = math.log(float(info.smallest_subnormal)) - math.log(2.0)
    edges = np.array([math.log(float(info.max)), underflow, -1.0, 0.0], dt)
    steps = np.arange(-64, 65, dtype=ints)
    edges = (edges.view(ints)[:, None] + steps).ravel().view(dt)
    edges = np.concatenate([edges, -edges])
    rng = np.random.default_rng(12345)
    bits = rng.integers(0, np.iinfo(uints).max, 2**20, dtype=uints, endpoint=True).view(dt)
    return [
        ("dense", dense),
        ("magnitudes", np.concatenate([mags, -mags])),
        ("edges", edges),
        ("random bits", bits[np.isfinite(bits)]),
    ]


def _cases():
    return [(op, dt) for dt in DTYPES for op in vmath.OPS]


@pytest.mark.parametrize("op,dtype", _cases())
def test_max_ulp_error(op, dtype):
    if dtype == "float64" and np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is not wider than float64: no float64 reference")
    for name, x in samples(op, dtype):
        got, ref = run(op, dtype, x), reference(op, x)
        assert got.dtype == x.dtype
        err = ulp_distance(got, ref)
        worst = int(np.argmax(err))
        assert err[worst] <= MAX_ULP[op], (
            f"{name}: {err[worst]} ulp at x={x[worst]!r}: got {got[worst]!r}, want {ref[worst]!r}"
        )
        # Overflow to inf (and nan-ness) must agree exactly, not just within the ulp bound.
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=name)


@pytest.mark.parametrize("op,dtype", _cases())
def test_special_values_match_numpy(op, dtype):
    x = np.array(SPECIALS, dtype)
    got = run(op, dtype, x)
    with np.errstate(all="ignore"):
        want = NUMPY[op](x).astype(dtype)
    np.testing.assert_array_equal(got, want)  # nan == nan here
    real = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[real]), np.signbit(want[real]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_named_special_values(dtype):
    t = np.dtype(dtype).type
    tiny = np.finfo(dtype).smallest_subnormal
    cases = {
        "exp": [(-np.inf, 0.0), (np.inf, np.inf), (np.nan, np.nan), (1000.0, np.inf)],
        "log": [(0.0, -np.inf), (-1.0, np.nan), (np.inf, np.inf), (-np.inf, np.nan)],
        "tanh": [(np.inf, 1.0), (-np.inf, -1.0), (np.nan, np.nan), (-0.0, -0.0), (tiny, tiny)],
        "sigmoid": [(-np.inf, 0.0), (np.inf, 1.0), (np.nan, np.nan)],
        "softplus": [(np.inf, np.inf), (-np.inf, 0.0), (np.nan, np.nan)],
        "log1p": [(-1.0, -np.inf), (-2.0, np.nan), (np.inf, np.inf), (-0.0, -0.0), (tiny, tiny)],
        "expm1": [(-np.inf, -1.0), (np.inf, np.inf), (-0.0, -0.0), (tiny, tiny), (-tiny, -tiny)],
    }
    for op, pairs in cases.items():
        x = np.array([p[0] for p in pairs], dtype)
        want = np.array([p[1] for p in pairs], dtype)
        got = run(op, dtype, x)
        np.testing.assert_array_equal(got, want, err_msg=op)
        real = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[real]), np.signbit(want[real]), err_msg=op)
    # log of a denormal is finite and accurate, not -inf.
    assert run("log", dtype, np.array([tiny], dtype))[0] == t(np.log(np.longdouble(tiny)))


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "softplus"])
def test_caller_fastmath_does_not_change_results(op):
    # LLVM inlines vmath functions with their own fast-math flags, so even a fastmath=True
    # (nnan, ninf, ...) kernel gets the same bits, special values included.
    x = np.concatenate([samples(op, "float32")[0][1], np.array(SPECIALS, "float32")])
    np.testing.assert_array_equal(run(op, "float32", x, fastmath=True), run(op, "float32", x))


def _vector_widths(ir, elem):
    """Widths of vector float arithmetic (fadd/fsub/fmul/fdiv) on `elem` in LLVM IR."""
    pattern = rf"= (?:fadd|fsub|fmul|fdiv)\b[^\n]*<(\d+) x {elem}>"
    return {int(w) for w in re.findall(pattern, ir)}


@pytest.mark.parametrize("op,dtype", _cases())
def test_prange_loop_vectorises(op, dtype):
    k = kernel(op, dtype)
    x = np.linspace(-2, 2, 64, dtype=dtype)
    k(x, np.empty_like(x))
    ir = "".join(k.inspect_llvm().values())
    elem = "float" if dtype == "float32" else "double"
    # SSE2 is the x86-64 baseline: at least 4 float / 2 double lanes.
    assert max(_vector_widths(ir, elem), default=0) >= (4 if elem == "float" else 2)
    # Fully inlined (no call into vmath's functions) and no libm / LLVM transcendental calls,
    # which LLVM would scalarise.
    assert not re.search(rf"call [^\n]*@\S*({'|'.join(VMATH_FUNCTIONS)})", ir)
    assert not re.search(r"call [^\n]*@(llvm\.)?(exp|expm1|log|log1p|tanh)f?[.(]", ir)
    if dtype == "float32":
        assert "double" not in ir  # nothing promoted to float64 (which halves vector width)


def test_vmath_table():
    assert vmath.SOURCE_MODULE == "jitgrad.backend.numba.vmath"
    transcendental = {(op, dt) for op in vmath.OPS for dt in DTYPES}
    assert set(vmath.VMATH) == transcendental | {("floordiv", "int64")}
    for (op, dt), name in vmath.VMATH.items():
        if (op, dt) in transcendental:
            assert name == f"v{op}_{'f32' if dt == 'float32' else 'f64'}"
        assert callable(getattr(vmath, name))


_INDEX_KEYS = """
import numba
from jitgrad.backend.numba import vmath
from numba.core.registry import cpu_target
codegen = cpu_target.target_context.codegen()
print(vmath.vexp_f32._cache._index_key((numba.float32,), codegen)[2])
print(vmath.vtanh_f64._cache._index_key((numba.float64,), codegen)[2])
"""


def test_cache_keys_are_the_same_in_every_process():
    """Numba keys a closure's cache entries by pickling its cells, and a captured dispatcher
    (vexp calls _expm1_reduced, vtanh calls vexpm1) pickles differently in every process: each
    process compiled them again and added a file to the cache. vmath keys its closures by what
    they compute."""
    import subprocess
    import sys

    keys = {
        subprocess.run(
            [sys.executable, "-c", _INDEX_KEYS], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(keys) == 1, keys


def test_cache_keys_tell_the_float_types_apart():
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    key32 = vmath.vexp_f32._cache._index_key((numba.float64,), codegen)
    key64 = vmath.vexp_f64._cache._index_key((numba.float64,), codegen)
    assert key32 != key64  # the same code, other constants
