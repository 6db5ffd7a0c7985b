"""Compiled == eager: for every op case and for small models, the value and the first- and
second-order gradients that ONE Numba kernel computes equal the eager tape's (float64: rtol
1e-9, float32: rtol 1e-5).

Each op case runs on ONE fixed sample (every distinct shape costs a Numba compile), chosen to
hit what the compiler must get right: 0-d inputs, broadcasting, reductions over int, negative
and tuple axes with and without keepdims, batch/broadcast/1-d matmul, negative-step slices,
integer-array indices with repeats. For a function f of float arguments x (integer arguments,
labels and indices, are data), one kernel computes

    value     f(x)
    first     L(x) = <w, f(x)> and grad L(x)          (w: a fixed random output cotangent)
    second    grad of H(x) = <u, grad L(x)>           (u: a fixed random input cotangent)

as `jit_grad(H, wrt=float args, has_aux=True)` with the value, L and grad L as the aux; the
eager reference is `value_and_grad` of the same function on the tape. The functions come from
the op table (tests/ops/cases.py); the samples are this file's.

Comparison: |compiled - eager| <= rtol * (|eager| + max |eager| of that output + 0.1), i.e. a
relative error per element plus a norm-wise one, so that entries that cancel to ~0 (the
gradient of a softmax summed over its axis) are judged against the scale of their output, and
a small absolute one for outputs that cancel as a whole (the samples' values are of order 1).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from ops.cases import CASES, CASES_BY_NAME  # tests/ops; tests/conftest.py puts tests/ on the path

import jitgrad as jg
from jitgrad.core import pytree
from jitgrad.core.dispatch import bind
from jitgrad.core.opdef import REGISTRY
from jitgrad.core.row_shares import exchange_columns
from jitgrad.core.tensor import Tensor
from jitgrad.ops.pool import max_pool_gather_p

RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5}
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
# (dtype, highest derivative order, id, runs by default). Numba compile time is what this file
# spends, and a second-order kernel is ~3x the first-order one: float32's second order runs with
# the slow tests (float64 covers second-order code generation on every run), and so does
# float32's first order of structured ops (matmul, conv, gather, loops, ...), whose kernels
# differ from float64's only in the types the helpers are called with. Elementwise math keeps
# its float32 run by default: typed constants and the float32 vmath/special helpers are where
# float32 code differs.
MODES = [
    (np.float64, 2, "f64", True),
    (np.float32, 1, "f32", "elementwise"),
    (np.float32, 2, "f32-second", False),
]


# ---------------------------------------------------------------------------------------------
# Fixed samples


class Values:
    """Fixed values for one sample (float64; cast to the tested dtype later)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def uniform(self, shape, lo=-2.0, hi=2.0) -> np.ndarray:
        return np.asarray(self.rng.uniform(lo, hi, shape))

    def signed(self, shape, lo=0.5, hi=2.0) -> np.ndarray:
        """Magnitudes in (lo, hi), random signs: divisors away from 0."""
        return np.asarray(self.rng.uniform(lo, hi, shape) * self.rng.choice([-1.0, 1.0], shape))

    def away(self, shape, lo, hi, kinks=(), gap=0.05) -> np.ndarray:
        """Uniform on (lo, hi); values within `gap` of a kink are moved 2 `gap` away from it."""
        x = np.asarray(self.rng.uniform(lo, hi, shape))
        for k in kinks:
            near = np.abs(x - k) < gap
            x = np.where(near, k + np.where(x >= k, gap, -gap) * 2, x)
        return x

    def grid(self, shape, lo=-10, hi=10, offset=0.0, step=0.2) -> np.ndarray:
        """Multiples of `step` plus `offset`: two grids offset by step/2 never tie."""
        return np.asarray(self.rng.integers(lo, hi + 1, shape) * step + offset)

    def distinct(self, shape, lo=-2.0, hi=2.0) -> np.ndarray:
        """Pairwise distinct values (no ties for max/min/argmax)."""
        n = math.prod(shape)
        return (self.rng.permutation(np.linspace(lo, hi, max(n, 1))[:n])).reshape(shape)

    def ints(self, shape, lo, hi, dtype=np.int64) -> np.ndarray:
        return np.asarray(self.rng.integers(lo, hi, shape), dtype)


@dataclass(frozen=True)
class Sample:
    """One compiled check: the op-table case `case` (or `fn`) on the arrays and params that
    `build(values)` returns. `order` overrides the case's (stop_gradient: its gradient is
    exact, only finite differences disagree with it)."""

    case: str
    build: Callable
    variant: str = ""
    fn: Callable | None = None
    order: int | None = None
    xfail: str | None = None
    slow: bool = False  # a variant of a sample that runs by default (pytest -m slow runs it)

    @property
    def id(self) -> str:
        return f"{self.case}-{self.variant}" if self.variant else self.case

    def function(self):
        fn = self.fn or CASES_BY_NAME[self.case].fn
        _, params = self.args()
        return (lambda *xs: fn(*xs, **params)) if params else fn

    def args(self):
        return self.build(Values(zlib.crc32(self.id.encode())))

    def derivative_order(self) -> int:
        if self.order is not None:
            return self.order
        return CASES_BY_NAME[self.case].order if self.case in CASES_BY_NAME else 2


SAMPLES: list[Sample] = []


def sample(case, build, variant="", **kw) -> None:
    SAMPLES.append(Sample(case, build, variant, **kw))


def unary(case, lo, hi, kinks=(), shape=(2, 3), **kw):
    sample(case, lambda v: ([v.away(shape, lo, hi, kinks)], {}), **kw)


# Unary elementwise math; the shapes vary so that 0-d (scalar) and 1-d kernels appear too.
unary("neg", -3, 3, shape=())
unary("exp", -2, 2)
unary("expm1", -2, 2, shape=(5,))
unary("log", 0.5, 3)
unary("log1p", -0.5, 3)
unary("sin", -3, 3, shape=(2, 1, 3))
unary("cos", -3, 3)
unary("tan", -1.2, 1.2)
unary("tanh", -3, 3, shape=())
unary("sinh", -2, 2)
unary("cosh", -2, 2)
unary("arcsin", -0.9, 0.9)
unary("arccos", -0.9, 0.9)
unary("arctan", -3, 3)
unary("sqrt", 0.5, 3)
unary("erf", -2, 2)
# Special functions: by default one sample per way of emitting them (a libm template, a helper
# of one argument, with an int param, of three arguments); the rest with -m slow, since
# tests/test_special.py compiles every one of them (values, gradients) in a kernel per dtype.
unary("lgamma", 0.2, 4)
unary("lgamma_negative", -2.9, -2.1, slow=True)
unary("digamma", 0.3, 4)
unary("erfc", -2, 2, slow=True)
unary("erfinv", -0.9, 0.9, slow=True)
unary("log_ndtr", -30, 5, shape=(7,), slow=True)
sample("polygamma", lambda v: ([v.uniform((2, 3), 0.3, 4)], {"n": 2}))
sample("betainc", lambda v: ([v.uniform((2, 3), 0.05, 0.95)], {"a": 2.5, "b": 1.5}))
sample("logaddexp", lambda v: ([v.uniform((2, 3)), v.uniform((3,))], {}), slow=True)
sample("xlogy", lambda v: ([v.uniform((2, 3)), v.uniform((3,), 0.5, 2.0)], {}), slow=True)
sample("xlog1py", lambda v: ([v.uniform((2, 3)), v.uniform((3,), -0.5, 2.0)], {}), slow=True)
unary("abs", -2, 2, kinks=(0,))
# sign, floor, ceil, round: the gradient is a broadcast zero and a graph output, once never
# written (emit.py) and, when also inlined in another loop, a buffer with two writers (fuse.py).
unary("sign", -2, 2, kinks=(0,))
unary("floor", -3, 3, kinks=range(-3, 4))
unary("ceil", -3, 3, kinks=range(-3, 4), shape=())
unary("round", -3, 3, kinks=np.arange(-3.5, 4))
unary("sigmoid", -4, 4)
unary("softplus", -4, 4, shape=(4,))
unary("square", -2, 2)
unary("rsqrt", 0.5, 3)
unary("operator_abs", -2, 2, kinks=(0,))
sample("cast", lambda v: ([v.uniform((2, 3))], {}))
unary("cast_roundtrip_int", -3, 3, kinks=range(-3, 4))

# Binary elementwise math, with broadcasting between the operands.
sample("add", lambda v: ([v.uniform((2, 3)), v.uniform((3,))], {}))
sample("sub", lambda v: ([v.uniform((2, 1, 3)), v.uniform((4, 1))], {}))
sample("mul", lambda v: ([v.uniform(()), v.uniform((2, 3))], {}))
sample("div", lambda v: ([v.uniform((2, 3)), v.signed((2, 1))], {}))
sample("pow", lambda v: ([v.uniform((2, 3), 0.5, 2.0), v.uniform((3,))], {}), "tensor_exponent")
sample("maximum", lambda v: ([v.grid((2, 3)), v.grid((1, 3), offset=0.1)], {}))
sample("minimum", lambda v: ([v.grid((3,)), v.grid((2, 3), offset=0.1)], {}))


def _mod_sample(v):
    y = v.signed((3,))
    x = (v.ints((2, 3), -3, 3) + v.uniform((2, 3), 0.1, 0.9)) * y
    return [x, y], {}


sample("mod", _mod_sample)
# `2 ** x` and `x ** 2`: pow with scalar base and scalar exponent.
sample("operators", lambda v: ([v.uniform((2, 3)), v.uniform((3,))], {}), "scalar_exponent")
sample("rpow_scalar_base", lambda v: ([v.uniform((3,)), v.uniform((2, 3))], {}))
sample("pow_integer_exponent", lambda v: ([v.uniform((2, 3)), v.uniform((2, 3))], {}))
sample("where", lambda v: ([v.uniform((2, 1)) < 0, v.uniform((2, 3)), v.uniform((3,))], {}))
sample(
    "clip_by_value",
    lambda v: ([v.grid((2, 3)), v.grid((3,), -5, -1, 0.1), v.grid((2, 1), 0, 5, 0.1)], {}),
)
unary("clip_by_value_scalars", -2, 2, kinks=(-0.5, 0.7))

# nn activations.
unary("relu", -3, 3, kinks=(0,), shape=(3, 4))
unary("relu6", -2, 8, kinks=(0, 6))
unary("leaky_relu", -3, 3, kinks=(0,))
unary("leaky_relu_alpha", -3, 3, kinks=(0,), shape=())
unary("elu", -3, 3, kinks=(0,))
unary("selu", -3, 3, kinks=(0,))
unary("gelu", -3, 3)
unary("gelu_tanh", -3, 3)
unary("log_sigmoid", -6, 6)
unary("softsign", -3, 3, kinks=(0,))
unary("silu", -3, 3)
unary("swish_beta", -3, 3)

# softmax, log_softmax, cross-entropies and other nn composites. softmax's second order once
# made fusion produce a cycle (fuse.py judged convexity on stale dependencies).
sample("softmax", lambda v: ([v.uniform((2, 3, 4), -3, 3)], {"axis": 1}), "axis1")
sample("softmax", lambda v: ([v.uniform((5,), -3, 3)], {"axis": -1}), "1d")
sample("log_softmax", lambda v: ([v.uniform((3, 4), -3, 3)], {"axis": -1}))
sample(
    "sparse_softmax_cross_entropy_with_logits",
    lambda v: ([v.ints((3,), 0, 4, np.int32), v.uniform((3, 4), -3, 3)], {}),
)
sample(
    "softmax_cross_entropy_with_logits",
    lambda v: ([v.rng.dirichlet(np.ones(4), (3,)), v.uniform((3, 4), -3, 3)], {}),
)
sample(
    "sigmoid_cross_entropy_with_logits",
    lambda v: ([v.uniform((2, 3), 0, 1), v.uniform((2, 3), -4, 4)], {}),
)
unary("l2_loss", -2, 2)
sample("bias_add", lambda v: ([v.uniform((2, 3)), v.uniform((3,))], {}))
sample("moments", lambda v: ([v.uniform((2, 3, 4))], {"axes": [0, 2]}))


# Reductions: axis None / int / negative / tuple, keepdims.
def reduction(case, shape, axis, keepdims, values="uniform", variant=None):
    def build(v):
        return [getattr(v, values)(shape)], {"axis": axis, "keepdims": keepdims}

    sample(case, build, variant or f"axis{axis}{'_keepdims' if keepdims else ''}".replace(" ", ""))


reduction("reduce_sum", (2, 3), None, False)
reduction("reduce_sum", (2, 3, 4), -1, True)
reduction("reduce_sum", (2, 3, 4), (0, 2), False)
reduction("reduce_sum", (2, 3, 4), (-1, 0), True)
reduction("reduce_mean", (2, 3, 4), (0, -1), True)
reduction("reduce_mean", (3, 4), 1, False)
reduction("reduce_prod", (2, 3, 4), 1, False, "signed")
reduction("reduce_max", (2, 3, 4), (0, 2), True, "distinct")
reduction("reduce_max", (3, 4), None, False, "distinct")
reduction("reduce_min", (2, 3, 4), -2, False, "distinct")
reduction("reduce_variance", (4, 3), 0, True)
reduction("reduce_std", (2, 5), -1, False, "distinct")
reduction("reduce_logsumexp", (2, 3, 4), (1,), True)
reduction("logsumexp", (3, 4), None, False)
reduction("method_sum", (3, 4), 0, True)
reduction("method_mean", (3, 4), -1, False)
reduction("method_max", (2, 3, 4), None, True, "distinct")
reduction("method_min", (2, 3, 4), (0, 1), False, "distinct")


def _prod_with_zeros(v):
    # Rows with no zero, one zero and two zeros: all three branches of the product rule.
    x = v.signed((3, 4), 0.5, 1.5)
    x[1, 2] = 0.0
    x[2, 0] = x[2, 3] = 0.0
    return [x], {"axis": -1, "keepdims": False}


sample("reduce_prod_with_zeros", _prod_with_zeros)

# Linear algebra.
sample("matmul", lambda v: ([v.uniform((3, 4)), v.uniform((4, 2))], {}), "2d")
sample("matmul", lambda v: ([v.uniform((2, 3, 4)), v.uniform((4, 2))], {}), "batch_broadcast")
sample("matmul", lambda v: ([v.uniform((1, 3, 4)), v.uniform((2, 4, 2))], {}), "batch_size_one")
sample("matmul", lambda v: ([v.uniform((4,)), v.uniform((2, 4, 3))], {}), "vector_batch")
sample("matmul", lambda v: ([v.uniform((2, 3, 4)), v.uniform((4,))], {}), "batch_vector")
sample("matmul_operator", lambda v: ([v.uniform((4,)), v.uniform((4,))], {}), "dot")
sample(
    "matmul_transposed",
    lambda v: (
        [v.uniform((2, 4, 3)), v.uniform((2, 5, 4))],
        {"transpose_a": True, "transpose_b": True},
    ),
)
sample("tensordot", lambda v: ([v.uniform((2, 3)), v.uniform((3, 4))], {"axes": 1}), "int")
sample(
    "tensordot",
    lambda v: ([v.uniform((3, 2, 4)), v.uniform((4, 5, 3))], {"axes": [[0, -1], [2, 0]]}),
    "lists",
)
EINSUMS = {
    "bij,bjk->bik": [(2, 3, 4), (2, 4, 2)],
    "i,j->ij": [(3,), (4,)],
    "bhqd,bhkd->bhqk": [(1, 2, 3, 4), (1, 2, 5, 4)],
    "ij->j": [(3, 4)],
    "ik,jk": [(2, 3), (4, 3)],
    "ij,ij->": [(2, 3), (2, 3)],
}
for _eq, _shapes in EINSUMS.items():
    sample(
        "einsum",
        lambda v, s=_shapes, eq=_eq: ([v.uniform(x) for x in s], {"equation": eq}),
        _eq.replace(",", "_").replace("->", "_to_"),
    )

# Shapes.
sample("broadcast_to", lambda v: ([v.uniform((3, 1))], {"shape": (2, 3, 4)}))
sample("reshape", lambda v: ([v.uniform((2, 3, 4))], {"shape": (4, -1, 1)}))
sample("method_reshape", lambda v: ([v.uniform((2, 3))], {"shape": (6,)}))
sample("transpose", lambda v: ([v.uniform((2, 3, 4))], {"perm": [-1, 0, 1]}))
sample("transpose_default", lambda v: ([v.uniform((2, 3, 4))], {}))
sample("matrix_transpose", lambda v: ([v.uniform((2, 3, 4))], {}))
sample("T", lambda v: ([v.uniform((2, 3))], {}))
sample("expand_dims", lambda v: ([v.uniform((2, 3))], {"axis": -1}))
sample("squeeze", lambda v: ([v.uniform((2, 1, 3, 1))], {"axis": [-1]}), "axis")
sample("squeeze", lambda v: ([v.uniform((1, 3, 1))], {"axis": None}), "all")
sample(
    "concat", lambda v: ([v.uniform((2, 1)), v.uniform((2, 3)), v.uniform((2, 2))], {"axis": -1})
)
sample("stack", lambda v: ([v.uniform((2, 3)), v.uniform((2, 3))], {"axis": 1}))
sample("unstack", lambda v: ([v.uniform((2, 3))], {"axis": -1}))
sample("split", lambda v: ([v.uniform((2, 5))], {"splits": [1, -1, 2], "axis": 1}))
sample("tile", lambda v: ([v.uniform((2, 3))], {"multiples": [2, 1]}))
sample("pad", lambda v: ([v.uniform((2, 3))], {"paddings": [[1, 0], [2, 1]], "value": 1.5}))

# Slices and indexing.
sample("slice", lambda v: ([v.uniform((4, 5))], {"begin": [1, 2], "size": [2, -1]}))
sample("reverse", lambda v: ([v.uniform((4, 3))], {}))
sample(
    "getitem_basic",
    lambda v: ([v.uniform((5, 3, 4))], {"index": (slice(None, None, -2), None, 1, Ellipsis)}),
    "negative_step",
)
sample(
    "getitem_basic",
    lambda v: ([v.uniform((4, 5))], {"index": (slice(1, -1), slice(4, 0, -2))}),
    "bounds",
)
sample(
    "getitem_arrays",
    lambda v: ([v.uniform((4, 3)), np.array([[0, 2, 2], [-1, 0, 0]])], {}),
    "repeated",
    fn=lambda x, i: x[i, ::-1],
)
sample(
    "getitem_arrays",
    lambda v: ([v.uniform((2, 4, 3)), np.array([3, 3, -4]), np.array([[0], [2]], np.int32)], {}),
    "two_arrays",
    fn=lambda x, i, j: x[1:, i, j],
)
sample(
    "unslice", lambda v: ([v.uniform((2, 3))], {"index": ((0, 4, 2), (2, -1, -1)), "shape": (4, 3)})
)
sample("gather", lambda v: ([v.uniform((4, 3)), np.array([0, 3, 3, -1])], {"axis": 0}))
sample(
    "gather",
    lambda v: ([v.uniform((2, 3)), np.array([[2, 2], [0, -3]], np.int32)], {"axis": -1}),
    "axis_last",
)
sample("take", lambda v: ([v.uniform((2, 3)), np.array([5, 0, 5, -2])], {"axis": None}))
sample(
    "scatter_add",
    lambda v: ([v.uniform((2, 4)), np.array([1, 1, 0, -1])], {"axis": 1, "shape": (2, 3)}),
)
sample("gather_primitive", lambda v: ([v.uniform((2, 3, 2)), np.array([2, 0, 2])], {"axis": 1}))
sample("gather_nd", lambda v: ([v.uniform((3, 4, 2)), np.array([[2, 1], [0, 3], [2, 1]])], {}))
sample(
    "one_hot",
    lambda v: ([v.uniform((3, 4)), np.array([1, -1, 4], np.int32)], {"depth": 4, "axis": None}),
)
sample(
    "one_hot",
    lambda v: ([v.uniform((3, 4)), np.array([3, 0, 0], np.int32)], {"depth": 4, "axis": 0}),
    "axis0",
)

# Empty axes: loops that never run, reductions of nothing (their identity), empty BLAS calls.
reduction("reduce_sum", (0, 3), 0, False, variant="empty_axis")
sample("matmul", lambda v: ([v.uniform((2, 0)), v.uniform((0, 3))], {}), "empty_contraction")
sample("concat", lambda v: ([v.uniform((2, 0)), v.uniform((2, 3))], {"axis": 1}), "empty_part")

# Control flow: native loops and branches in the kernel, and their gradient loops.
sample(
    "scan",
    lambda v: ([v.uniform((3,)), v.uniform((5, 3)), v.uniform((3,))], {"reverse": False}),
)
sample(
    "scan",
    lambda v: ([v.uniform((2,)), v.uniform((4, 2)), v.uniform((2,))], {"reverse": True}),
    "reverse",
    slow=True,
)
sample(
    "scan",
    lambda v: ([v.uniform((2,)), v.uniform((0, 2)), v.uniform((2,))], {"reverse": False}),
    "empty",
    slow=True,
)
sample("cond", lambda v: ([v.uniform((2, 3)), np.asarray(1.0)], {}))
sample("cond", lambda v: ([v.uniform(()), np.asarray(-1.0)], {}), "false", slow=True)
sample("shards", lambda v: ([v.uniform((4, 3)), v.uniform((3,))], {}))

# Convolutions: strides, padding, dilations, groups (depthwise), channels first.
sample(
    "conv2d",
    lambda v: ([v.uniform((2, 5, 6, 3)), v.uniform((3, 2, 3, 4))], {}),
    fn=lambda x, w: jg.nn.conv2d(x, w, [1, 2], "SAME", dilations=[2, 1]),
)
sample(
    "conv2d",
    lambda v: ([v.uniform((1, 6, 5, 2)), v.uniform((2, 2, 2, 2))], {}),
    "depthwise_nchw",
    fn=lambda x, w: jg.nn.depthwise_conv2d(
        jg.transpose(x, (0, 3, 1, 2)), w, [1, 1, 2, 2], "VALID", data_format="NCHW"
    ),
)

# A conv's filter gradient as a primitive (conv_filters.conv2_filters): strides,
# padding that crops on one side, both dilations; with feature groups; and a 1-D one (as 2-D
# of height 1).
_FILTERS_2D = {
    "window": (3, 2),
    "strides": (2, 1),
    "padding": ((1, 1), (-1, 1)),
    "lhs_dilation": (1, 2),
    "rhs_dilation": (2, 1),
    "groups": 1,
}
sample(
    "conv_filters",
    lambda v: ([v.uniform((2, 6, 4, 3)), v.uniform((2, 2, 6, 2))], _FILTERS_2D),
)
sample(
    "conv_filters",
    lambda v: (
        [v.uniform((2, 6, 4, 4)), v.uniform((2, 2, 6, 6))],
        {**_FILTERS_2D, "groups": 2},
    ),
    "groups",
)
sample(
    "conv_filters",
    lambda v: (
        [v.uniform((3, 7, 2)), v.uniform((3, 3, 4))],
        {
            "window": (3,),
            "strides": (2,),
            "padding": ((0, 0),),
            "lhs_dilation": (1,),
            "rhs_dilation": (1,),
            "groups": 1,
        },
    ),
    "1d",
)

# Pooling: a tie goes to the window's first maximum (eager and compiled agree on it).
sample(
    "max_pool2d",
    lambda v: ([v.distinct((2, 5, 4, 3))], {"ksize": 2, "strides": 2, "padding": "SAME"}),
)
sample(
    "max_pool2d",
    lambda v: ([np.repeat(v.distinct((1, 4, 2, 2)), 2, axis=2)], {}),
    "ties",
    fn=lambda x: jg.nn.max_pool2d(x, [2, 2], 1, "VALID"),
    order=1,
)
sample(
    "avg_pool2d",
    lambda v: ([v.uniform((1, 5, 5, 2))], {"ksize": 3, "strides": 2, "padding": "SAME"}),
)
sample(
    "max_pool_scatter",
    lambda v: ([v.distinct((1, 4, 5, 2)), v.uniform((1, 2, 3, 2))], {}),
    fn=lambda x, g: jg.grad(lambda x: jg.reduce_sum(jg.nn.max_pool2d(x, 2, 2, "SAME") * g))(x),
    order=1,
)
sample(
    "max_pool_gather",
    lambda v: ([v.distinct((1, 4, 4, 1)), v.uniform((1, 4, 4, 1))], {}),
    fn=lambda x, h: bind(
        max_pool_gather_p, x, h, window=(2, 2), strides=(2, 2), padding=((0, 0), (0, 0))
    ),
)


# Linear algebra (ops/decompositions.py): one kernel per sample and dtype, and Numba compiles
# np.linalg slowly, so these run with -m slow; tests/test_linalg.py compiles every primitive
# in one shared kernel per dtype by default.
def _spd(v, shape):
    a = v.uniform(shape, -1, 1)
    return a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1])


def _well_posed(v, shape):
    return v.uniform(shape, -1, 1) + 3 * np.eye(shape[-1])


sample("cholesky", lambda v: ([_spd(v, (2, 3, 3))], {}), slow=True)
sample(
    "triangular_solve",
    lambda v: (
        [_well_posed(v, (2, 3, 3)), v.uniform((2, 3, 2))],
        {"lower": False, "adjoint": True},
    ),
    slow=True,
)
sample(
    "solve", lambda v: ([_well_posed(v, (3, 3)), v.uniform((3, 2))], {"adjoint": False}), slow=True
)
sample("slogdet", lambda v: ([_well_posed(v, (2, 3, 3))], {}), slow=True)
sample("inv", lambda v: ([_well_posed(v, (3, 3))], {}), slow=True)
sample("qr", lambda v: ([v.uniform((2, 4, 3))], {"full_matrices": False}), slow=True)
sample(
    "eigh",
    lambda v: ([np.diag([1.0, 2.0, 4.0]) + 0.1 * _spd(v, (3, 3))], {}),
    slow=True,
)
sample(
    "svd",
    lambda v: ([np.diag([3.0, 2.0, 1.0])[:, :2] + 0.1 * v.uniform((3, 2))], {}),
    slow=True,
)
sample("lstsq", lambda v: ([v.uniform((2, 4, 2)), v.uniform((2, 4, 1))], {}), slow=True)

# Not differentiable: values only.
for _name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
    sample(_name, lambda v: ([v.grid((2, 3), -3, 3), v.grid((3,), -3, 3)], {}))
sample("floordiv", lambda v: ([v.uniform((2, 3)), v.signed((3,))], {}))
sample("logical_and", lambda v: ([v.uniform((2, 3)) < 0, v.uniform((3,)) < 0], {}))
sample("logical_or", lambda v: ([v.uniform((2, 3)) < 0, v.uniform((2, 1)) < 0], {}))
sample("logical_not", lambda v: ([v.uniform((2, 3)) < 0, v.uniform((2, 3)) < 0], {}))
for _name in ("bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "invert"):
    sample(
        _name, lambda v: ([v.ints((2, 3), -99, 99, np.int32), v.ints((3,), -1, 40, np.int32)], {})
    )
sample("argmax", lambda v: ([v.distinct((3, 4))], {"axis": -1}))
sample("argmin", lambda v: ([v.distinct((3, 4, 2))], {"axis": 1}))
sample("argsort", lambda v: ([v.distinct((3, 4, 2))], {"axis": 1}))
sample("argsort_descending", lambda v: ([v.distinct((5,))], {"axis": 0}))
sample("sort", lambda v: ([v.distinct((2, 5))], {"axis": -1}))
sample("top_k", lambda v: ([v.distinct((3, 6))], {"k": 2}))
sample(
    "scatter_extreme",
    lambda v: (
        [v.distinct((3, 2)), v.distinct((4, 2)) + 0.01],
        {"rows": np.array([2, 0, 2, 1]), "mode": "max"},
    ),
)
sample("stop_gradient", lambda v: ([v.uniform((2, 3))], {}), order=2)
sample("adjust_contrast", lambda v: ([v.uniform((2, 3, 2))], {"factor": 1.5}))
sample("philox", lambda v: ([v.uniform((2, 3))], {}))


def _allreduce_sample(v):
    """A one-process MPI job: the kernel calls MPI's allreduce (the distributed extra)."""
    pytest.importorskip("mpi4py")
    return [v.uniform((2, 3))], {}


sample("allreduce", _allreduce_sample, order=1)


def _exchange_sample(v):
    """A one-process job: a sharded update's exchange (its exchange points find no other rank
    to wait for), the value computed in place in the exchange array and not; the rows wide
    enough for float32 values and their control line, so for float64 too."""
    x = v.uniform((3, 2))
    return [x, np.zeros((2, exchange_columns(x.size, 4)), x.dtype)], {}


sample("publish_rows", _exchange_sample)
sample("allgather_rows", _exchange_sample)


# ---------------------------------------------------------------------------------------------
# The check


def _cast_floats(args, dtype) -> list[Tensor]:
    """Tensors (functions that bind primitives directly take no numpy arrays), floats in
    `dtype`; integer and bool arguments keep theirs."""
    return [
        Tensor(np.asarray(a, dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a))
        for a in args
    ]


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in pytree.flatten(tree)[0]]


def derivative_suite(f, args, order: int, seed: int = 0):
    """(function, wrt) whose `jit_grad(..., has_aux=True)` gives value, first and second
    order in one kernel (see the module docstring); for order 0, (f, None)."""
    floats = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
    if order == 0 or not floats:
        return f, None
    rng = np.random.default_rng(seed)
    outs = _leaves(f(*args))
    ws = [
        rng.standard_normal(o.shape).astype(o.dtype) if o.dtype.kind == "f" else None for o in outs
    ]
    us = [rng.standard_normal(args[i].shape).astype(args[i].dtype) for i in floats]

    def projected(*xs):
        outs = pytree.flatten(f(*xs))[0]
        return sum(jg.reduce_sum(o * w) for o, w in zip(outs, ws) if w is not None)

    if order == 1:

        def suite(*xs):
            return projected(*xs), f(*xs)

        return suite, floats

    def suite(*xs):
        value = f(*xs)
        first, grads = jg.value_and_grad(projected, floats)(*xs)
        second = sum(jg.reduce_sum(g * u) for g, u in zip(grads, us))
        return second, {"value": value, "first": first, "grad": grads}

    return suite, floats


def run_compiled(f, args, order: int, seed: int = 0):
    """(compiled, eager) results of the derivative suite of `f`, and the jitted function."""
    suite, wrt = derivative_suite(f, args, order, seed)
    if wrt is None:
        jf = jg.jit(suite)
        return jf(*args), suite(*args), jf
    jf = jg.jit_grad(suite, wrt=wrt, has_aux=True)
    return jf(*args), jg.value_and_grad(suite, wrt, has_aux=True)(*args), jf


def assert_same(compiled, eager, rtol: float, what: str = "") -> None:
    c_leaves, c_tree = pytree.flatten(compiled)
    e_leaves, e_tree = pytree.flatten(eager)
    assert c_tree == e_tree, (
        f"{what}: compiled {pytree.describe(c_tree)} vs eager {pytree.describe(e_tree)}"
    )
    names = _leaf_names(e_tree)
    failures = []
    for name, c, e in zip(names, c_leaves, e_leaves):
        c, e = np.asarray(c), np.asarray(e)
        if c.shape != e.shape or c.dtype != e.dtype:
            failures.append(
                f"{name}: compiled {c.dtype}{list(c.shape)} vs eager {e.dtype}{list(e.shape)}"
            )
        elif e.dtype.kind != "f":
            if not np.array_equal(c, e):
                failures.append(f"{name}: compiled {c.tolist()} vs eager {e.tolist()}")
        else:
            tol = max(rtol, RTOL[e.dtype])  # a float32 output of a float64 function (cast)
            scale = float(np.max(np.abs(e), initial=0.0))
            bad = ~(np.abs(c - e) <= tol * (np.abs(e) + scale + 0.1))
            bad &= ~(np.isnan(c) & np.isnan(e))
            if bad.any():
                k = np.argmax(bad)
                failures.append(
                    f"{name}: {int(bad.sum())} of {e.size} elements differ, e.g. "
                    f"compiled {c.flat[k]!r} vs eager {e.flat[k]!r} (rtol {tol})"
                )
    assert not failures, f"{what}: compiled != eager\n  " + "\n  ".join(failures)


def _leaf_names(treedef, prefix="out") -> list[str]:
    """Readable paths of the leaves of a structure, e.g. 'out[0][1]['grad'][0]'."""
    if treedef == pytree.LEAF:
        return [prefix]
    if treedef is None:
        return []
    kind, meta, children = treedef
    keys = meta if kind == "dict" else range(len(children))
    names = []
    for k, child in zip(keys, children):
        names += _leaf_names(child, f"{prefix}[{k!r}]")
    return names


def _elementwise(s: Sample) -> bool:
    """Whether the sample's op-table case binds elementwise primitives only."""
    case = CASES_BY_NAME.get(s.case)
    return bool(case and case.prims) and all(REGISTRY[p].kind == "elementwise" for p in case.prims)


def _params(samples):
    out = []
    for s in samples:
        for dtype, order, mode, default in MODES:
            marks = [pytest.mark.xfail(strict=True, reason=s.xfail)] if s.xfail else []
            if s.slow or not default or (default == "elementwise" and not _elementwise(s)):
                marks.append(pytest.mark.slow)
            out.append(pytest.param(s, dtype, order, id=f"{s.id}-{mode}", marks=marks))
    return out


@pytest.mark.parametrize("s, dtype, order", _params(SAMPLES))
def test_op_compiled_equals_eager(s: Sample, dtype, order):
    if dtype is np.float32 and order > 1 and s.derivative_order() < 2:
        pytest.skip("no second order: the float32 first-order run covers this sample")
    args = _cast_floats(s.args()[0], dtype)
    compiled, eager, _ = run_compiled(
        s.function(), args, min(order, s.derivative_order()), seed=zlib.crc32(s.id.encode())
    )
    assert_same(compiled, eager, RTOL[np.dtype(dtype)], s.id)


def test_every_case_has_a_compiled_sample():
    """Every row of the op table is compiled here too (add a fixed sample when adding a case)."""
    covered = {s.case for s in SAMPLES}
    missing = [c.name for c in CASES if c.name not in covered]
    assert not missing, f"op cases without a compiled sample in {__file__}: {missing}"


# ---------------------------------------------------------------------------------------------
# Composite models


def mlp(x, labels, w1, b1, w2, b2):
    """784 -> hidden (relu) -> 10, mean sparse softmax cross-entropy."""
    hidden = jg.nn.relu(jg.matmul(x, w1) + b1)
    logits = jg.matmul(hidden, w2) + b2
    return jg.reduce_mean(
        jg.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def attention(x, wq, wk, wv, wo):
    """Single-head self-attention over (sequence, features). Unbatched: its second order
    has ~50 matmuls, and batched ones cost far more Numba compile time (batch matmuls are
    checked in the op samples)."""
    q, k, v = jg.matmul(x, wq), jg.matmul(x, wk), jg.matmul(x, wv)
    scores = jg.matmul(q, jg.transpose(k)) / math.sqrt(x.shape[-1])
    return jg.matmul(jg.matmul(jg.nn.softmax(scores, axis=-1), v), wo)


def layer_norm(x, gamma, beta):
    """(x - mean) / sqrt(variance + eps) * gamma + beta over the last axis."""
    mean = jg.reduce_mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = jg.reduce_mean(centered * centered, axis=-1, keepdims=True)
    return centered * jg.rsqrt(variance + 1e-5) * gamma + beta


def polynomial(a, b, c, x):
    """sum(a[:, None] x^2 + b x + c): three broadcasts into one expression."""
    return jg.reduce_sum(a[:, None] * x**2 + b * x + c)


def _mlp_args(v):
    return [
        v.uniform((8, 784), 0, 1),
        v.ints((8,), 0, 10, np.int32),
        v.uniform((784, 32), -0.1, 0.1),
        v.uniform((32,), -0.1, 0.1),
        v.uniform((32, 10), -0.3, 0.3),
        v.uniform((10,), -0.1, 0.1),
    ]


MODELS = {
    "mlp": (mlp, _mlp_args),
    "attention": (
        attention,
        lambda v: [v.uniform((5, 8))] + [v.uniform((8, 8), -0.5, 0.5) for _ in range(4)],
    ),
    "layer_norm": (layer_norm, lambda v: [v.uniform((4, 6)), v.uniform((6,)), v.uniform((6,))]),
    "polynomial": (
        polynomial,
        lambda v: [v.uniform((3,)), v.uniform((4,)), v.uniform(()), v.uniform((3, 4))],
    ),
}


@pytest.mark.parametrize(
    "dtype, order",
    [  # the composite models keep their float32 first order by default
        pytest.param(dtype, order, id=mode, marks=[] if default else [pytest.mark.slow])
        for dtype, order, mode, default in MODES
    ],
)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_compiled_equals_eager(name, dtype, order):
    fn, build = MODELS[name]
    args = _cast_floats(build(Values(zlib.crc32(name.encode()))), dtype)
    compiled, eager, jf = run_compiled(fn, args, order, seed=1)
    assert_same(compiled, eager, RTOL[np.dtype(dtype)], name)
    assert jf.lower(*args).source.count("def kernel") == 1


# ---------------------------------------------------------------------------------------------
# Transforms under jit: grad of grad, hessian, value_and_grad


def _sin_squared(x):
    return jg.sin(x) ** 2


def _cubic_mix(x):
    return jg.reduce_sum(x**3 * jg.sin(x)) + x[0] * x[1] * x[2]


def _seed_polynomial(w1, w2):
    return 3 * w1**2 + 2 * w1 * w2


def _w2_loss(x, w, b):
    return jg.reduce_mean(jg.tanh(x * w + b) ** 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_of_grad_of_grad(dtype):
    x = np.asarray(0.7, dtype)
    second = jg.grad(jg.grad(_sin_squared))
    jf = jg.jit(second)
    assert_same(jf(x), second(Tensor(x)), RTOL[np.dtype(dtype)], "grad(grad(sin^2))")
    # d^2/dx^2 sin(x)^2 = 2 cos(2x)
    np.testing.assert_allclose(np.asarray(jf(x)), 2 * np.cos(2 * 0.7), rtol=10 * RTOL[x.dtype])
    assert jf.lower(x).source.count("def kernel") == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_of_hessian(dtype):
    x = np.asarray([0.3, -1.2, 0.8], dtype)
    hess = jg.hessian(_cubic_mix)
    jf = jg.jit(hess)
    assert_same(jf(x), hess(Tensor(x)), RTOL[np.dtype(dtype)], "hessian")
    x64 = x.astype(np.float64)
    diag = 6 * x64 * np.sin(x64) + 6 * x64**2 * np.cos(x64) - x64**3 * np.sin(x64)
    expected = np.diag(diag) + np.array(
        [[0, x64[2], x64[1]], [x64[2], 0, x64[0]], [x64[1], x64[0], 0]]
    )
    np.testing.assert_allclose(
        np.asarray(jf(x)), expected, rtol=10 * RTOL[x.dtype], atol=10 * RTOL[x.dtype]
    )
    assert jf.lower(x).source.count("def kernel") == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "fn, wrt, build",
    [
        (_seed_polynomial, (0, 1), lambda: [np.asarray(5.0), np.asarray(3.0)]),
        # 2**17 elements: the fused loop is a parallel (prange) reduction.
        (
            _w2_loss,
            (1, 2),
            lambda: [
                np.linspace(-1, 1, 1 << 17),
                np.linspace(0.5, -0.5, 1 << 17),
                np.linspace(0.1, 0.2, 1 << 17),
            ],
        ),
    ],
    ids=["seed_polynomial", "w2_loss_parallel"],
)
def test_jit_grad_equals_jit_of_value_and_grad(fn, wrt, build, dtype):
    args = [np.asarray(a, dtype) for a in build()]
    fused = jg.jit_grad(fn, wrt=wrt)
    composed = jg.jit(jg.value_and_grad(fn, wrt))
    rtol = RTOL[np.dtype(dtype)]
    assert_same(fused(*args), composed(*args), rtol, "jit_grad vs jit(value_and_grad)")
    assert_same(
        fused(*args),
        jg.value_and_grad(fn, wrt)(*[Tensor(a) for a in args]),
        rtol,
        "jit_grad vs eager value_and_grad",
    )
    for jf in (fused, composed):
        assert jf.lower(*args).source.count("def kernel") == 1
    if fn is _seed_polynomial:
        value, (g1, g2) = fused(*args)
        assert (float(value), float(g1), float(g2)) == (105.0, 36.0, 10.0)


def test_same_kernel_source_for_two_dtypes_compiles_without_warning():
    """argmax's kernel has no typed constant, so float64 and float32 inputs give the same
    source: each signature still compiles quietly (regression: the second dtype once hit a
    dispatcher that had stopped compiling and warned that the cache entry was unusable)."""
    x = np.random.default_rng(0).uniform(size=(5, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float64, np.float32):
            out = jg.jit(lambda t: jg.argmax(t, axis=-1))(x.astype(dtype))
            np.testing.assert_array_equal(np.asarray(out), np.argmax(x, axis=-1))
