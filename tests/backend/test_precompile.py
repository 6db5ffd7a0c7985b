"""precompile.py covers the helper signatures that kernels call: once an installation's helpers
are compiled (the worker's idle time, or `python -m jitgrad.backend.numba.precompile`), a new
kernel never waits for one, and calls it through a symbol (symbols.py) instead of linking its
code in. Products take their operands through runtime.strided (one signature per dtype),
convolutions and pooling through runtime.readonly (one per layout), so that inputs and
buffers share them."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import conv_filters, conv_scatter, conv_tiles, runtime, symbols
from jitgrad.backend.numba.precompile import helper_signatures

HELPERS = (
    runtime.matmul_into,
    runtime.conv2,
    runtime.conv2_gemm,
    conv_tiles.conv2_tiles,
    conv_filters.conv2_filters,
    conv_scatter.conv2_col2im,
    conv_scatter.conv2_scatter,
    runtime.max_pool2,
    runtime.max_pool_scatter2,
)


def cnn_loss(p, x, y):
    """Every conv strategy of emit.conv_strategy that a CNN's value and parameter gradients
    take: 40 output channels by GEMM (conv2_gemm), the depthwise one direct (conv2), few
    output channels by register tiles (conv2_tiles), input gradients by columns (40 channels,
    conv2_col2im) and by scatter (6, conv2_scatter), filter gradients (conv2_filters); max
    pooling and its gradient, and products with transposed operands."""
    nn = jg.nn
    h = nn.relu(nn.conv2d(x, p["k1"], 1, "VALID") + p["c1"])
    h = nn.depthwise_conv2d(h, p["dw"], (1, 1, 1, 1), "SAME")
    h = nn.relu(nn.conv2d(h, p["k2"], 1, "VALID"))
    h = nn.max_pool2d(nn.conv2d(h, p["k3"], 1, "VALID"), 2, 2, "VALID")
    z = jg.reshape(h, (x.shape[0], -1)) @ p["w"] + p["b"]
    return jg.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))


@pytest.mark.parametrize(
    "dtype",
    [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],  # 8 s each
)
def test_kernels_call_only_precompiled_helper_signatures(dtype):
    rng = np.random.default_rng(0)
    p = {
        "k1": rng.standard_normal((3, 3, 1, 40)),
        "c1": np.zeros(40),
        "dw": rng.standard_normal((3, 3, 40, 1)),
        "k2": rng.standard_normal((3, 3, 40, 6)),
        "k3": rng.standard_normal((3, 3, 6, 6)),
        "w": rng.standard_normal((6 * 1 * 6, 3)),
        "b": np.zeros(3),
    }
    p = {k: v.astype(dtype) for k, v in p.items()}
    x = rng.standard_normal((2, 8, 18, 1)).astype(dtype)
    y = np.array([0, 2], np.int32)
    linked_before = symbols.linked_signatures()
    fn = jg.jit_grad(cnn_loss, wrt=0)
    source = fn.lower(p, x, y).source
    for helper in HELPERS:  # the kernel calls each (so this process has compiled or loaded it)
        assert f"through_symbol('{helper.py_func.__name__}'" in source, helper
    value, grads = fn(p, x, y)
    assert symbols.linked_signatures() == linked_before  # every helper through its symbol
    assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grads.values())
    precompiled = {(helper, tuple(sig)) for helper, sig in helper_signatures()}
    for helper in HELPERS:
        assert helper.signatures, helper
        for sig in helper.signatures:
            assert (helper, tuple(sig)) in precompiled, (helper.py_func.__name__, sig)
