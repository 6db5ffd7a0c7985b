"""Every failure the differential fuzzer (test_differential.py) found, as a plain test that
rebuilds the failing program, shrunk by hand to the few ops that still fail.

A test marked `xfail(strict=True, reason=...)` is a jitgrad bug that is still open: when it
is fixed the test passes, strict xfail turns that into a failure, and the fixer removes the
mark. Fixed bugs keep their test, and their description in the docstring.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad as jg
from fuzz.programs import Program, check_program


def program(source: str, *inputs, dtype=np.float64) -> Program:
    return Program(source, list(inputs), dtype)


# ---------------------------------------------------------------------------------------------
# float32 round in a fused reduction


ROUND_SUM_RESHAPE = """def program(x0):
    v0 = jg.reduce_sum(jg.round(x0))
    v1 = v0[None]
    return (v1,)
"""


@pytest.mark.parametrize("mode", ["value", "grad"])
def test_float32_round_reduced_then_reshaped(mode):
    """Fixed (emit.py: float32 results of np./math. calls are cast back to float32). Was:
    Numba's np.round of a float32 scalar is float64, so the fused reduction's accumulator
    became float64 and the kernel failed to type (TypingError: Cannot unify array(float32, 1d)
    and array(float64, 1d) at `np.full((1,), acc)`), an internal error instead of a value.
    Found as x1 * round(x0) -> reduce_min(axis=-1) -> 0.5 * . -> [None] in float32."""
    check_program(program(ROUND_SUM_RESHAPE, [0.7, 1.6], dtype=np.float32), mode)


def test_float64_round_reduced_then_reshaped():
    """The float64 twin of the bug above compiles and is right."""
    check_program(program(ROUND_SUM_RESHAPE, [0.7, 1.6]), "grad")


# ---------------------------------------------------------------------------------------------
# Two jitted functions that generate the same kernel source share its loaded module, whose
# dispatcher stops compiling after its first call (api.JitFunction._first_run). Random
# programs often generate the same kernel as an earlier example, with other argument types.


def _jit_warnings(fn, *args) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jg.jit(fn)(*args)
    return [str(w.message) for w in caught]


def _sin(x):
    return jg.sin(x)  # no typed constant: one kernel source for float64 and float32


def _cos(x):
    return jg.cos(x)


def test_same_kernel_twice_in_one_process_warns_nothing(monkeypatch, tmp_path):
    """Fixed in fc0930b. Was: the second of two jitted functions that generate the same kernel
    warned 'the cache entry ... was written by another version and has been recompiled'
    although it reused the loaded kernel (nothing stale, nothing recompiled)."""
    monkeypatch.setattr(jg.config, "cache_dir", str(tmp_path))
    x = np.linspace(-1.0, 1.0, 3)
    assert _jit_warnings(_sin, x) == []
    assert _jit_warnings(_sin, x) == []  # a second jg.jit(_sin): the same kernel source


def test_same_kernel_two_dtypes_warns_nothing(monkeypatch, tmp_path):
    """Fixed in fc0930b. Was: the same kernel source jitted with float64 and then float32
    arguments shared a dispatcher that no longer compiled; the float32 call was taken for a
    corrupted cache entry, warned 'could not be loaded ... rebuilding it in memory' and
    deleted the valid float64 entry from the disk cache."""
    monkeypatch.setattr(jg.config, "cache_dir", str(tmp_path))
    x = np.linspace(-1.0, 1.0, 4)
    assert _jit_warnings(_sin, x) == []
    assert _jit_warnings(_sin, x.astype(np.float32)) == []


def test_same_kernel_alternating_dtypes(monkeypatch, tmp_path):
    """Fixed in fc0930b. Was: the same kernel source jitted with float64, float32, float64,
    float32 arguments: the fourth call raised 'internal error: the compiled kernel for _cos
    failed (TypeError: No matching definition for argument type(s) array(float32, 1d, C),
    ...)' (a shared dispatcher that no longer compiled, and no disk index left to trigger the
    in-memory fallback). Found as random programs with the same kernel source and different
    argument types."""
    monkeypatch.setattr(jg.config, "cache_dir", str(tmp_path))
    x = np.linspace(-1.0, 1.0, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are the tests above' business
        for dtype in [np.float64, np.float32, np.float64, np.float32]:
            got = np.asarray(jg.jit(_cos)(x.astype(dtype)))
            np.testing.assert_allclose(got, np.cos(x.astype(dtype)), rtol=1e-6)
