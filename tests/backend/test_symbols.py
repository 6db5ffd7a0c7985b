"""Kernels call the precompiled runtime helpers through a symbol (symbols.py): the result is
the convolution's, exceptions raised inside a helper reach the caller with their message, a
kernel loaded from the cache in a fresh process finds its helpers, and argument types that no
precompiled signature has are linked in instead (and reported)."""

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from jitgrad.backend.numba import precompile, runtime, symbols

conv2_gemm = symbols.through_symbol("conv2_gemm", ("float64",))
copy2 = symbols.through_symbol("copy2", ("float64",))


@numba.njit
def _gemm_conv(x, w, out, patches):
    ones = (np.int64(1), np.int64(1))
    conv2_gemm(runtime.readonly(x), runtime.readonly(w), out, patches, ones, ones, ones)


def _conv_operands(rng, block):
    x = rng.standard_normal((2, 5, 6, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    return x, w, np.zeros((2, 5, 6, 4)), np.empty((block, 27))


@pytest.mark.parametrize("block", [1, 7, 60])
def test_a_call_through_a_symbol_computes_the_convolution(block):
    x, w, out, patches = _conv_operands(np.random.default_rng(block), block)
    _gemm_conv(x, w, out, patches)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    expected = np.einsum("nijcab,abco->nijo", windows, w)  # (N, 5, 6, C, 3, 3) windows
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert ("conv2_gemm", tuple(_gemm_conv.signatures[0])) not in symbols.linked_signatures()


def test_an_exception_inside_the_helper_reaches_the_caller_with_its_message():
    x, w, out, _ = _conv_operands(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="conv2_gemm: the patches scratch has the wrong shape"):
        _gemm_conv(x, w, out, np.empty((4, 26)))
    with pytest.raises(ValueError, match="the images', filters', output's shapes do not agree"):
        _gemm_conv(x, w, np.zeros((2, 5, 6, 5)), np.empty((4, 27)))


def test_argument_types_without_a_precompiled_signature_are_linked_in():
    """copy2 is precompiled for C-contiguous sources; a transposed (F-ordered) source is not
    one of those signatures: the call is linked in as Numba would, and reported."""

    @numba.njit
    def copy_transposed(dst, src):
        copy2(dst, src.T)

    src = np.arange(12.0).reshape(3, 4)
    dst = np.empty((4, 3))
    copy_transposed(dst, src)
    np.testing.assert_array_equal(dst, src.T)
    linked = {name for name, _ in symbols.linked_signatures()}
    assert "copy2" in linked


def test_every_precompiled_signature_binds_to_its_own_stable_alias():
    names = {"conv2_gemm", "matmul_into", "max_pool2", "copy3", "philox_normal"}
    aliases = []
    for dispatcher, argtypes in precompile.helper_signatures():
        if dispatcher.__name__ in names:
            alias = symbols._bind(dispatcher, tuple(argtypes))
            assert symbols._bind(dispatcher, tuple(argtypes)) == alias
            assert alias.startswith(f"jitgrad_{dispatcher.__name__}_")
            aliases.append(alias)
    assert len(aliases) == len(set(aliases)) > len(names)


SCRIPT = textwrap.dedent("""
    import numpy as np
    import jitgrad as jg

    def loss(k, w, x):
        h = jg.nn.max_pool2d(jg.nn.relu(jg.nn.conv2d(x, k, 1, "SAME")), 2, 2, "VALID")
        z = jg.reshape(h, (x.shape[0], -1)) @ w
        return jg.reduce_sum(jg.math.square(z))

    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    w = rng.standard_normal((3 * 4 * 4, 2)).astype(np.float32)
    x = rng.standard_normal((2, 8, 8, 2)).astype(np.float32)
    f = jg.jit_grad(loss, wrt=(0, 1))
    value, (dk, dw) = f(k, w, x)
    print(repr(float(value)), repr(float(np.abs(dk).sum())), repr(float(np.abs(dw).sum())),
          f.cache_info().disk_loads)
""")


def test_a_kernel_loaded_from_the_cache_in_a_fresh_process_finds_its_helpers(tmp_path):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(tmp_path), JITGRAD_COMPILE="blocking")
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        runs.append(out.stdout.split())
    (*first, compiled), (*second, loaded) = runs
    assert first == second
    assert (compiled, loaded) == ("0", "1")
