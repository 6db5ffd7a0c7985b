"""The op case table: one `Case` per op (primitive or public composite) and per interesting way
of calling it. A case holds the function built from jitgrad ops, a sampler that draws shapes,
axes and values inside the op's smooth domain, a numpy reference for the value, the order to
which its derivatives are checked, and the tolerances.

Samplers take a `Draw`: shapes, axes and other structure come from hypothesis (so failures
shrink to small shapes), values from a numpy generator seeded by hypothesis (fast). Values stay
away from kinks and ties by construction (a gap of at least 0.05, far more than the 1e-4 steps
of the finite differences), so every checked point is a smooth one; the singular points
themselves are pinned down exactly in test_conventions.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.special
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jitgrad as jg
from jitgrad.control.primitives import tuple_get_p
from jitgrad.control.shards import shards_p
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.row_shares import exchange_columns
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.conv import conv_filters_p, out_spatial
from jitgrad.ops.index import gather_p, scatter_add_p
from jitgrad.ops.pool import max_pool_gather_p, max_pool_scatter_p
from jitgrad.ops.shape import unslice_p

# Example counts are multiplied by $JITGRAD_FUZZ (default 1) for longer bug hunts.
FUZZ = max(1, int(os.environ.get("JITGRAD_FUZZ", "1")))


def examples(n: int) -> int:
    return n * FUZZ


# ---------------------------------------------------------------------------------------------
# Drawing examples


class Draw:
    """Draws for one example: structure from hypothesis, values from a seeded numpy rng."""

    def __init__(self, data):
        self._data = data
        self.seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, strategy, label=None):
        return self._data.draw(strategy, label=label)

    # -- structure ----------------------------------------------------------------------------
    def shape(self, min_dims=0, max_dims=3, min_side=0, max_side=4) -> tuple[int, ...]:
        return self(
            hnp.array_shapes(
                min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
            ),
            "shape",
        )

    def shapes(self, n=2, min_dims=0, max_dims=3, min_side=0, max_side=4) -> list:
        """`n` mutually broadcastable shapes (size-1 axes, missing axes, empty axes)."""
        drawn = self(
            hnp.mutually_broadcastable_shapes(
                num_shapes=n,
                min_dims=min_dims,
                max_dims=max_dims,
                min_side=min_side,
                max_side=max_side,
            ),
            "shapes",
        )
        return list(drawn.input_shapes)

    def int(self, lo, hi) -> int:
        return self(st.integers(lo, hi))

    def bool(self) -> bool:
        return self(st.booleans())

    def choice(self, options):
        return self(st.sampled_from(list(options)))

    def axis(self, ndim: int, tuples: bool = True, none: bool = True):
        """None, an int or a tuple of distinct axes; each axis possibly negative."""
        kinds = (["none"] if none or ndim == 0 else []) + (["int"] if ndim else [])
        kinds += ["tuple"] if tuples and ndim else []
        kind = self.choice(kinds)
        if kind == "none":
            return None
        if kind == "int":
            return self.int(-ndim, ndim - 1)
        axes = self(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        return tuple(a - ndim if self.bool() else a for a in axes)

    def reduction(self, min_dims=0, max_dims=3, nonempty=True, min_count=1):
        """(shape, axis, keepdims): the reduced axes hold at least `min_count` elements when
        `nonempty` (max/mean/... of nothing is -inf/NaN); other axes may be empty."""
        shape = list(self.shape(min_dims=min_dims, max_dims=max_dims))
        axis = self.axis(len(shape))
        axes = _axes(axis, len(shape))
        if nonempty:
            for a in axes:
                shape[a] = max(shape[a], 1)
            if axes and math.prod(shape[a] for a in axes) < min_count:
                shape[axes[0]] = max(shape[axes[0]], min_count)
        return tuple(shape), axis, self.bool()

    # -- values -------------------------------------------------------------------------------
    def uniform(self, shape, lo=-2.0, hi=2.0) -> np.ndarray:
        return self.rng.uniform(lo, hi, shape)

    def signed(self, shape, lo=0.5, hi=2.0) -> np.ndarray:
        """Magnitudes in (lo, hi) with random signs: divisors, away from 0."""
        return self.rng.uniform(lo, hi, shape) * self.rng.choice([-1.0, 1.0], shape)

    def away(self, shape, lo, hi, kinks=(), gap=0.05) -> np.ndarray:
        """Uniform on (lo, hi), redrawn where within `gap` of a kink."""
        x = self.rng.uniform(lo, hi, shape)
        for _ in range(100):
            bad = np.zeros(x.shape, bool)
            for k in kinks:
                bad |= np.abs(x - k) < gap
            if not bad.any():
                return x
            x[bad] = self.rng.uniform(lo, hi, int(bad.sum()))
        raise AssertionError("could not sample away from the kinks")

    def grid(self, shape, lo=-10, hi=10, offset=0.0, step=0.2) -> np.ndarray:
        """Multiples of `step` plus `offset`: two grids offset by step/2 never tie."""
        return self.rng.integers(lo, hi + 1, shape) * step + offset

    def distinct(self, shape, lo=-2.0, hi=2.0) -> np.ndarray:
        """Values pairwise at least (hi - lo) / (4 size) apart: no ties for max/min/sort."""
        n = math.prod(shape)
        grid = np.linspace(lo, hi, max(n, 1))[:n]
        spacing = (hi - lo) / max(n, 1)
        jitter = self.rng.uniform(-spacing / 4, spacing / 4, n)
        return (self.rng.permutation(grid) + jitter).reshape(shape)

    def indices(self, shape, n: int, negative: bool = True) -> np.ndarray:
        """Integer indices into an axis of size n (with repeats; negative ones too)."""
        if n == 0:  # nothing to index: the only valid index array is an empty one
            shape = (0,) + tuple(shape[1:])
        lo = -n if negative else 0
        return self.rng.integers(lo, n, shape).astype(self.choice([np.int32, np.int64]))


def _axes(axis, ndim) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


# ---------------------------------------------------------------------------------------------
# The case record


@dataclass(frozen=True)
class Case:
    """One row of the table.

    `fn(*arrays, **params)` builds the function from jitgrad ops; `draw(d) -> (arrays,
    params)` samples inside the smooth domain; `ref(*arrays, **params)` is numpy's value;
    `prims` are primitives that every example binds (the registry test relies on it);
    `order` is the derivative order checked (0: not differentiable, values only)."""

    name: str
    fn: Callable
    draw: Callable
    ref: Callable | None = None
    prims: tuple[str, ...] = ()
    order: int = 2
    rtol: float = 1e-5
    atol: float = 1e-6
    eps: float = 1e-4
    tags: frozenset = field(default_factory=frozenset)

    def __repr__(self) -> str:
        return self.name


CASES: list[Case] = []


def case(name, fn, draw, ref=None, **kw) -> Case:
    c = Case(name, fn, draw, ref, **kw)
    if any(other.name == name for other in CASES):
        raise ValueError(f"case {name!r} defined twice")
    CASES.append(c)
    return c


def one(draw_array):
    """A sampler of one array of a drawn shape."""

    def draw(d):
        return [draw_array(d, d.shape())], {}

    return draw


# ---------------------------------------------------------------------------------------------
# Unary elementwise primitives (through their public functions)


def np_log_softmax(x, axis=-1):
    """numpy's reference, defined on empty axes too (scipy's refuses them)."""
    m = np.max(x, axis, keepdims=True, initial=-np.inf)
    shifted = x - np.where(np.isfinite(m), m, 0)
    return shifted - np.log(np.sum(np.exp(shifted), axis, keepdims=True))


def np_softmax(x, axis=-1):
    return np.exp(np_log_softmax(x, axis))


def np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis if axis is not None else None)


def _unary(name, fn, ref, lo, hi, kinks=(), prim=None, **kw):
    case(
        name,
        lambda x: fn(x),
        one(lambda d, s: d.away(s, lo, hi, kinks)),
        ref=lambda x: ref(x),
        prims=(prim or name,),
        **kw,
    )


_unary("neg", jg.negative, np.negative, -3, 3)
_unary("exp", jg.exp, np.exp, -2, 2)
_unary("expm1", jg.expm1, np.expm1, -2, 2)
_unary("log", jg.math.log, np.log, 0.5, 3)
_unary("log1p", jg.math.log1p, np.log1p, -0.5, 3)
_unary("sin", jg.sin, np.sin, -3, 3)
_unary("cos", jg.cos, np.cos, -3, 3)
_unary("tan", jg.tan, np.tan, -1.2, 1.2)
_unary("tanh", jg.tanh, np.tanh, -3, 3)
_unary("sinh", jg.sinh, np.sinh, -2, 2)
_unary("cosh", jg.cosh, np.cosh, -2, 2)
_unary("arcsin", jg.math.asin, np.arcsin, -0.9, 0.9)
_unary("arccos", jg.math.acos, np.arccos, -0.9, 0.9)
_unary("arctan", jg.math.atan, np.arctan, -3, 3)
_unary("sqrt", jg.sqrt, np.sqrt, 0.5, 3)
_unary("erf", jg.erf, scipy.special.erf, -2, 2)
# Special functions (ops/special.py; their full ranges and accuracy: tests/test_special.py)
_unary("lgamma", jg.math.lgamma, scipy.special.gammaln, 0.2, 4)
_unary("lgamma_negative", jg.math.lgamma, scipy.special.gammaln, -2.9, -2.1, prim="lgamma")
_unary("digamma", jg.math.digamma, scipy.special.digamma, 0.3, 4)
_unary("erfc", jg.math.erfc, scipy.special.erfc, -2, 2)
_unary("erfinv", jg.math.erfinv, scipy.special.erfinv, -0.9, 0.9)
_unary("log_ndtr", jg.math.log_ndtr, scipy.special.log_ndtr, -30, 5, prim="erfc")
case(
    "polygamma",
    lambda x, n: jg.math.polygamma(n, x),
    lambda d: ([d.uniform(d.shape(), 0.3, 4)], {"n": d.int(1, 3)}),
    ref=lambda x, n: scipy.special.polygamma(n, x),
    prims=("polygamma",),
)
# betainc is differentiable in x only (None for a and b, as TensorFlow): a, b are params.
case(
    "betainc",
    lambda x, a, b: jg.math.betainc(a, b, x),
    lambda d: ([d.uniform(d.shape(), 0.05, 0.95)], {"a": d.choice([0.7, 2.5]), "b": 1.5}),
    ref=lambda x, a, b: scipy.special.betainc(a, b, x),
    prims=("betainc",),
)
_unary("abs", jg.abs, np.abs, -2, 2, kinks=(0,))
_unary("sign", jg.sign, np.sign, -2, 2, kinks=(0,))
_unary("floor", jg.floor, np.floor, -3, 3, kinks=range(-3, 4))
_unary("ceil", jg.ceil, np.ceil, -3, 3, kinks=range(-3, 4))
_unary("round", jg.round, np.round, -3, 3, kinks=np.arange(-3.5, 4))
_unary("sigmoid", jg.sigmoid, scipy.special.expit, -4, 4)
_unary("softplus", jg.nn.softplus, lambda x: np.logaddexp(x, 0), -4, 4)
_unary("square", jg.square, np.square, -2, 2, prim="mul")
_unary("rsqrt", jg.rsqrt, lambda x: 1 / np.sqrt(x), 0.5, 3, prim="sqrt")
_unary("operator_abs", lambda x: abs(x), np.abs, -2, 2, kinks=(0,), prim="abs")


def _other_float(x):
    return jg.float32 if x.dtype == jg.float64 else jg.float64


# cast to the other precision (float64 <-> float32). The function is linear, so central
# differences are exact for any step; a step of 0.5 keeps float32's rounding (~6e-8 |x|)
# far below the tolerance once divided by the step.
case(
    "cast",
    lambda x: jg.cast(x, _other_float(x)),
    one(lambda d, s: d.uniform(s)),
    ref=lambda x: x.astype(np.float32 if x.dtype == np.float64 else np.float64),
    prims=("cast",),
    eps=0.5,
    tags=frozenset({"mixed_dtype"}),
)
case(
    "cast_roundtrip_int",
    lambda x: x * jg.cast(jg.cast(x, jg.int32), x.dtype),
    one(lambda d, s: d.away(s, -3, 3, kinks=range(-3, 4))),
    ref=lambda x: x * np.trunc(x),
    prims=("cast", "mul"),
)

# ---------------------------------------------------------------------------------------------
# Binary elementwise primitives, with broadcasting between the operands


def _binary(name, fn, ref, draw_xy, prim=None, **kw):
    def draw(d):
        sx, sy = d.shapes(2)
        return list(draw_xy(d, sx, sy)), {}

    case(name, fn, draw, ref=ref, prims=(prim or name,), **kw)


def _plain(d, sx, sy):
    return d.uniform(sx), d.uniform(sy)


def _no_ties(d, sx, sy):
    # x on the grid 0.2 k, y on the grid 0.2 k + 0.1: |x - y| >= 0.1 everywhere.
    return d.grid(sx), d.grid(sy, offset=0.1)


_binary("add", jg.add, np.add, _plain)
_binary("sub", jg.subtract, np.subtract, _plain)
_binary("mul", jg.multiply, np.multiply, _plain)
_binary("div", jg.divide, np.divide, lambda d, sx, sy: (d.uniform(sx), d.signed(sy)))
_binary(
    "pow", jg.pow, np.power, lambda d, sx, sy: (d.uniform(sx, 0.5, 2.0), d.uniform(sy, -2.0, 2.0))
)
_binary("maximum", jg.maximum, np.maximum, _no_ties)
_binary("minimum", jg.minimum, np.minimum, _no_ties)
_binary("logaddexp", jg.logaddexp, np.logaddexp, _plain)
_binary(
    "xlogy",
    jg.math.xlogy,
    scipy.special.xlogy,
    lambda d, sx, sy: (d.uniform(sx), d.uniform(sy, 0.5, 2.0)),
    prim="log",
)
_binary(
    "xlog1py",
    jg.math.xlog1py,
    scipy.special.xlog1py,
    lambda d, sx, sy: (d.uniform(sx), d.uniform(sy, -0.5, 2.0)),
    prim="log1p",
)


def _mod_draw(d):
    # y broadcasts to x's shape; x / y = k + f with f in (0.1, 0.9), away from the jumps at
    # integer quotients.
    sx = d.shape()
    sy = tuple(1 if d.bool() else n for n in sx[d.int(0, len(sx)) :])
    y = d.signed(sy)
    x = (d.rng.integers(-3, 3, sx) + d.rng.uniform(0.1, 0.9, sx)) * np.broadcast_to(y, sx)
    return [x, y], {}


case("mod", jg.math.floormod, _mod_draw, ref=np.mod, prims=("mod",))
_binary(
    "operators",
    lambda x, y: (x + 1.5) * y - x / (y * y + 1.0) + 2**x - x**2,
    lambda x, y: (x + 1.5) * y - x / (y * y + 1.0) + 2**x - x**2,
    _plain,
    prim="pow",
)
_binary(
    "rpow_scalar_base", lambda x, y: 3.0 ** (x * y), lambda x, y: 3.0 ** (x * y), _plain, prim="pow"
)
_binary(
    "pow_integer_exponent", lambda x, y: (x * y) ** 3, lambda x, y: (x * y) ** 3, _plain, prim="pow"
)


def _where_draw(d):
    sc, sx, sy = d.shapes(3)
    return [d.rng.random(sc) < 0.5, d.uniform(sx), d.uniform(sy)], {}


case("where", lambda c, x, y: jg.where(c, x, y), _where_draw, ref=np.where, prims=("select",))


def _clip_draw(d):
    # t on the grid 0.2 k; the bounds on the grid 0.2 k + 0.1, lo < 0 < hi: never a tie.
    st_, slo, shi = d.shapes(3)
    return [d.grid(st_), d.grid(slo, -5, -1, 0.1), d.grid(shi, 0, 5, 0.1)], {}


case(
    "clip_by_value",
    lambda t, lo, hi: jg.clip_by_value(t, lo, hi),
    _clip_draw,
    ref=lambda t, lo, hi: np.minimum(np.maximum(t, lo), hi),
    prims=("maximum", "minimum"),
)
case(
    "clip_by_value_scalars",
    lambda t: jg.clip_by_value(t, -0.5, 0.7),
    one(lambda d, s: d.away(s, -2, 2, kinks=(-0.5, 0.7))),
    ref=lambda t: np.clip(t, -0.5, 0.7),
)

# ---------------------------------------------------------------------------------------------
# Neural-network composites


def _nn(name, fn, ref, lo=-3, hi=3, kinks=(), **kw):
    case(name, fn, one(lambda d, s: d.away(s, lo, hi, kinks)), ref=ref, **kw)


_SELU_A, _SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

_nn("relu", jg.nn.relu, lambda x: np.maximum(x, 0), kinks=(0,))
_nn("relu6", jg.nn.relu6, lambda x: np.clip(x, 0, 6), -2, 8, kinks=(0, 6))
_nn("leaky_relu", jg.nn.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x), kinks=(0,))
_nn(
    "leaky_relu_alpha",
    lambda x: jg.nn.leaky_relu(x, alpha=0.01),
    lambda x: np.where(x > 0, x, 0.01 * x),
    kinks=(0,),
)
_nn("elu", jg.nn.elu, lambda x: np.where(x > 0, x, np.expm1(x)), kinks=(0,))
_nn("selu", jg.nn.selu, lambda x: _SELU_S * np.where(x > 0, x, _SELU_A * np.expm1(x)), kinks=(0,))
_nn("gelu", jg.nn.gelu, lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2))))
_nn(
    "gelu_tanh",
    lambda x: jg.nn.gelu(x, approximate=True),
    lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
)
_nn("log_sigmoid", jg.nn.log_sigmoid, lambda x: -np.logaddexp(0, -x), -6, 6)
_nn("softsign", jg.nn.softsign, lambda x: x / (1 + np.abs(x)), kinks=(0,))
_nn("silu", jg.nn.silu, lambda x: x * scipy.special.expit(x))
_nn("swish_beta", lambda x: jg.nn.swish(x, beta=1.5), lambda x: x * scipy.special.expit(1.5 * x))


def _softmax_draw(d):
    shape = d.shape(min_dims=1)
    return [d.uniform(shape, -3, 3)], {"axis": d.int(-len(shape), len(shape) - 1)}


case(
    "softmax",
    lambda x, axis: jg.nn.softmax(x, axis=axis),
    _softmax_draw,
    ref=lambda x, axis: np_softmax(x, axis),
)
case(
    "log_softmax",
    lambda x, axis: jg.nn.log_softmax(x, axis=axis),
    _softmax_draw,
    ref=lambda x, axis: np_log_softmax(x, axis),
)


def _sparse_xent_draw(d):
    batch = d.shape(max_dims=2)
    classes = d.int(1, 4)
    logits = d.uniform(batch + (classes,), -3, 3)
    return [d.rng.integers(0, classes, batch).astype(d.choice([np.int32, np.int64])), logits], {}


def _sparse_xent_ref(labels, logits):
    logp = np_log_softmax(logits)
    return -np.take_along_axis(logp, labels[..., None].astype(np.int64), -1)[..., 0]


case(
    "sparse_softmax_cross_entropy_with_logits",
    lambda y, z: jg.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z),
    _sparse_xent_draw,
    ref=_sparse_xent_ref,
    prims=("check_index",),
)


def _xent_draw(d):
    shape = d.shape(min_dims=1)
    labels = d.rng.dirichlet(np.ones(shape[-1]), shape[:-1]) if shape[-1] else np.zeros(shape)
    return [labels, d.uniform(shape, -3, 3)], {}


case(
    "softmax_cross_entropy_with_logits",
    lambda y, z: jg.nn.softmax_cross_entropy_with_logits(labels=y, logits=z),
    _xent_draw,
    ref=lambda y, z: -np.sum(y * np_log_softmax(z), axis=-1),
)


def _sigmoid_xent_draw(d):
    shape = d.shape()
    return [d.uniform(shape, 0, 1), d.uniform(shape, -4, 4)], {}


case(
    "sigmoid_cross_entropy_with_logits",
    lambda y, z: jg.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z),
    _sigmoid_xent_draw,
    ref=lambda y, z: np.logaddexp(0, z) - z * y,
)
case("l2_loss", jg.nn.l2_loss, one(lambda d, s: d.uniform(s)), ref=lambda x: np.sum(x * x) / 2)


def _bias_add_draw(d):
    shape = d.shape(min_dims=1)
    return [d.uniform(shape), d.uniform(shape[-1:])], {}


case("bias_add", jg.nn.bias_add, _bias_add_draw, ref=np.add)


def _moments(x, axes):
    mean, var = jg.nn.moments(x, axes)
    return [mean, var]


def _moments_draw(d):
    shape, axis, _ = d.reduction(min_dims=1)
    return [d.uniform(shape)], {"axes": list(_axes(axis, len(shape)))}


case(
    "moments",
    _moments,
    _moments_draw,
    ref=lambda x, axes: [np.mean(x, tuple(axes)), np.var(x, tuple(axes))],
)

# ---------------------------------------------------------------------------------------------
# Reductions: axis None / int / tuple / negative, keepdims


def _reduction_case(name, fn, ref, values, nonempty, prim=None, min_count=1, **kw):
    def draw(d):
        shape, axis, keepdims = d.reduction(
            min_dims=1 if prim or min_count > 1 else 0, nonempty=nonempty, min_count=min_count
        )
        return [values(d, shape)], {"axis": axis, "keepdims": keepdims}

    case(
        name,
        lambda x, axis, keepdims: fn(x, axis=axis, keepdims=keepdims),
        draw,
        ref=lambda x, axis, keepdims: ref(x, axis=axis, keepdims=keepdims),
        prims=(prim,) if prim else (),
        **kw,
    )


def _prod_values(d, shape):
    return d.signed(shape, 0.5, 1.5)


def _with_zeros(d, shape):
    x = d.signed(shape, 0.5, 1.5)
    x[d.rng.random(shape) < 0.35] = 0.0
    return x


_reduction_case("reduce_sum", jg.reduce_sum, np.sum, lambda d, s: d.uniform(s), False, "reduce_sum")
_reduction_case("reduce_mean", jg.reduce_mean, np.mean, lambda d, s: d.uniform(s), True)
_reduction_case("reduce_prod", jg.reduce_prod, np.prod, _prod_values, False, "reduce_prod")
_reduction_case(
    "reduce_prod_with_zeros", jg.reduce_prod, np.prod, _with_zeros, False, "reduce_prod"
)
_reduction_case("reduce_max", jg.reduce_max, np.max, lambda d, s: d.distinct(s), True, "reduce_max")
_reduction_case("reduce_min", jg.reduce_min, np.min, lambda d, s: d.distinct(s), True, "reduce_max")
_reduction_case("reduce_variance", jg.reduce_variance, np.var, lambda d, s: d.uniform(s), True)
_reduction_case("reduce_std", jg.reduce_std, np.std, lambda d, s: d.distinct(s), True, min_count=2)
_reduction_case(
    "reduce_logsumexp", jg.reduce_logsumexp, np_logsumexp, lambda d, s: d.uniform(s, -3, 3), True
)
_reduction_case("logsumexp", jg.nn.logsumexp, np_logsumexp, lambda d, s: d.uniform(s, -3, 3), True)
_reduction_case(
    "method_sum",
    lambda x, axis, keepdims: x.sum(axis, keepdims),
    np.sum,
    lambda d, s: d.uniform(s),
    False,
)
_reduction_case(
    "method_mean",
    lambda x, axis, keepdims: x.mean(axis, keepdims),
    np.mean,
    lambda d, s: d.uniform(s),
    True,
)
_reduction_case(
    "method_max",
    lambda x, axis, keepdims: x.max(axis, keepdims),
    np.max,
    lambda d, s: d.distinct(s),
    True,
)
_reduction_case(
    "method_min",
    lambda x, axis, keepdims: x.min(axis, keepdims),
    np.min,
    lambda d, s: d.distinct(s),
    True,
)

# ---------------------------------------------------------------------------------------------
# Linear algebra


def _matmul_draw(d):
    ba, bb = d.shapes(2, max_dims=2, max_side=3)
    n, k, m = d.int(0, 3), d.int(0, 3), d.int(0, 3)
    vec_a, vec_b = d.choice([False, False, True]), d.choice([False, False, True])
    sa = (k,) if vec_a else ba + (n, k)
    sb = (k,) if vec_b else bb + (k, m)
    return [d.uniform(sa), d.uniform(sb)], {}


case("matmul", lambda a, b: jg.matmul(a, b), _matmul_draw, ref=np.matmul, prims=("matmul",))
case("matmul_operator", lambda a, b: a @ b, _matmul_draw, ref=np.matmul, prims=("matmul",))


def _matmul_t_draw(d):
    batch = d.shape(max_dims=1, max_side=3)
    n, k, m = d.int(0, 3), d.int(1, 3), d.int(0, 3)
    ta, tb = d.bool(), d.bool()
    sa = batch + ((k, n) if ta else (n, k))
    sb = batch + ((m, k) if tb else (k, m))
    return [d.uniform(sa), d.uniform(sb)], {"transpose_a": ta, "transpose_b": tb}


def _matmul_t_ref(a, b, transpose_a, transpose_b):
    return np.matmul(
        np.swapaxes(a, -1, -2) if transpose_a else a, np.swapaxes(b, -1, -2) if transpose_b else b
    )


case(
    "matmul_transposed",
    lambda a, b, **p: jg.matmul(a, b, **p),
    _matmul_t_draw,
    ref=_matmul_t_ref,
    prims=("matmul",),
)


def _tensordot_draw(d):
    form = d.choice(["int", "lists"])
    if form == "int":
        n = d.int(0, 2)
        shared = d.shape(min_dims=n, max_dims=n, max_side=3)
        sa = d.shape(max_dims=2, max_side=3) + shared
        sb = shared + d.shape(max_dims=2, max_side=3)
        return [d.uniform(sa), d.uniform(sb)], {"axes": n}
    sa = d.shape(min_dims=2, max_dims=3, max_side=3)
    ia = d(st.permutations(range(len(sa))))[:2]
    sb = [sa[ia[0]], d.int(0, 3), sa[ia[1]]]
    order = d(st.permutations(range(3)))
    sb = tuple(sb[o] for o in order)
    ib = [order.index(0), order.index(2)]
    ia = [a - len(sa) if d.bool() else a for a in ia]
    return [d.uniform(sa), d.uniform(sb)], {"axes": [ia, ib]}


case(
    "tensordot",
    lambda a, b, axes: jg.tensordot(a, b, axes),
    _tensordot_draw,
    ref=lambda a, b, axes: np.tensordot(a, b, axes),
)

EINSUM_PATTERNS = [
    "ij,jk->ik",
    "bij,bjk->bik",
    "i,i->",
    "i,j->ij",
    "ij->ji",
    "ij->j",
    "bhqd,bhkd->bhqk",
    "ij,ij->ij",
    "ij,ij->",
    "ijk->kji",
    "ij,j->i",
    "ik,jk",
]


def _einsum_draw(d):
    eq = d.choice(EINSUM_PATTERNS)
    letters = sorted(set(eq) - set(",->"))
    sizes = {c: d.int(0, 3) for c in letters}
    terms = eq.split("->")[0].split(",")
    return [d.uniform(tuple(sizes[c] for c in t)) for t in terms], {"equation": eq}


case(
    "einsum",
    lambda *xs, equation: jg.einsum(equation, *xs),
    _einsum_draw,
    ref=lambda *xs, equation: np.einsum(equation, *xs),
)

# ---------------------------------------------------------------------------------------------
# Shapes


def _broadcast_draw(d):
    target = d.shape(min_dims=1)
    rank = d.int(0, len(target) - 1)  # at least one leading axis is created
    src = tuple(1 if d.bool() else t for t in target[len(target) - rank :])
    return [d.uniform(src)], {"shape": target}


case(
    "broadcast_to",
    lambda x, shape: jg.broadcast_to(x, shape),
    _broadcast_draw,
    ref=lambda x, shape: np.broadcast_to(x, shape),
    prims=("broadcast_to",),
)


def _reshape_draw(d):
    shape = d.shape(min_dims=1)
    size = math.prod(shape)
    options = [
        (size,) if len(shape) != 1 else (1, size),
        shape[::-1] + (1,),
        (1,) + shape,
        (-1,) if len(shape) != 1 else (-1, 1),
    ]
    if size:
        options.append((shape[0], -1, 1, 1))
    return [d.uniform(shape)], {"shape": d.choice(options)}


case(
    "reshape",
    lambda x, shape: jg.reshape(x, shape),
    _reshape_draw,
    ref=lambda x, shape: np.reshape(x, shape),
    prims=("reshape",),
)
case(
    "method_reshape",
    lambda x, shape: x.reshape(shape),
    _reshape_draw,
    ref=lambda x, shape: np.reshape(x, shape),
    prims=("reshape",),
)


def _transpose_draw(d):
    shape = d.shape(min_dims=2)
    perm = list(d(st.permutations(range(len(shape)))))
    if perm == sorted(perm):
        perm = perm[::-1]
    perm = [p - len(shape) if d.bool() else p for p in perm]
    return [d.uniform(shape)], {"perm": perm}


case(
    "transpose",
    lambda x, perm: jg.transpose(x, perm),
    _transpose_draw,
    ref=lambda x, perm: np.transpose(x, perm),
    prims=("transpose",),
)
case("transpose_default", jg.transpose, one(lambda d, s: d.uniform(s)), ref=np.transpose)
case(
    "matrix_transpose",
    jg.matrix_transpose,
    lambda d: ([d.uniform(d.shape(min_dims=2))], {}),
    ref=lambda x: np.swapaxes(x, -1, -2),
    prims=("transpose",),
)
case("T", lambda x: x.T, one(lambda d, s: d.uniform(s)), ref=lambda x: x.T)


def _expand_draw(d):
    shape = d.shape()
    return [d.uniform(shape)], {"axis": d.int(-len(shape) - 1, len(shape))}


case(
    "expand_dims",
    lambda x, axis: jg.expand_dims(x, axis),
    _expand_draw,
    ref=lambda x, axis: np.expand_dims(x, axis),
    prims=("reshape",),
)


def _squeeze_draw(d):
    shape = tuple(1 if d.bool() else s for s in d.shape(min_dims=1))
    ones = [i for i, s in enumerate(shape) if s == 1]
    axis = None
    if ones and d.bool():
        picked = d(st.lists(st.sampled_from(ones), min_size=1, unique=True))
        axis = [a - len(shape) if d.bool() else a for a in picked]
    return [d.uniform(shape)], {"axis": axis}


case(
    "squeeze",
    lambda x, axis: jg.squeeze(x, axis),
    _squeeze_draw,
    ref=lambda x, axis: np.squeeze(x, None if axis is None else tuple(axis)),
)


def _concat_draw(d):
    shape = list(d.shape(min_dims=1))
    axis = d.int(-len(shape), len(shape) - 1)
    xs = []
    for _ in range(d.int(2, 3)):
        shape[axis] = d.int(0, 3)
        xs.append(d.uniform(tuple(shape)))
    return xs, {"axis": axis}


case(
    "concat",
    lambda *xs, axis: jg.concat(list(xs), axis),
    _concat_draw,
    ref=lambda *xs, axis: np.concatenate(xs, axis),
    prims=("concat",),
)


def _stack_draw(d):
    shape = d.shape()
    xs = [d.uniform(shape) for _ in range(d.int(1, 3))]
    return xs, {"axis": d.int(-len(shape) - 1, len(shape))}


case(
    "stack",
    lambda *xs, axis: jg.stack(list(xs), axis),
    _stack_draw,
    ref=lambda *xs, axis: np.stack(xs, axis),
)


def _unstack_draw(d):
    shape = d.shape(min_dims=1)
    return [d.uniform(shape)], {"axis": d.int(-len(shape), len(shape) - 1)}


case(
    "unstack",
    lambda x, axis: jg.unstack(x, axis=axis),
    _unstack_draw,
    ref=lambda x, axis: [np.take(x, i, axis) for i in range(x.shape[axis])],
)


def _split_draw(d):
    shape = list(d.shape(min_dims=1))
    axis = d.int(-len(shape), len(shape) - 1)
    if d.bool():
        parts = d.int(1, 3)
        shape[axis] = parts * d.int(0, 2)
        return [d.uniform(tuple(shape))], {"splits": parts, "axis": axis}
    sizes = d(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    shape[axis] = sum(sizes)
    if d.bool():
        sizes[d.int(0, len(sizes) - 1)] = -1
    return [d.uniform(tuple(shape))], {"splits": sizes, "axis": axis}


def _split_ref(x, splits, axis):
    if isinstance(splits, int):
        return np.split(x, splits, axis)
    sizes = list(splits)
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis)


case("split", lambda x, splits, axis: jg.split(x, splits, axis), _split_draw, ref=_split_ref)


def _tile_draw(d):
    shape = d.shape(max_side=3)
    return [d.uniform(shape)], {"multiples": [d.int(0, 3) for _ in shape]}


case(
    "tile",
    lambda x, multiples: jg.tile(x, multiples),
    _tile_draw,
    ref=lambda x, multiples: np.tile(x, multiples),
)


def _pad_draw(d):
    shape = d.shape()
    paddings = [[d.int(0, 2), d.int(0, 2)] for _ in shape]
    return [d.uniform(shape)], {"paddings": paddings, "value": d.choice([0, 1.5])}


case(
    "pad",
    lambda x, paddings, value: jg.pad(x, paddings, constant_values=value),
    _pad_draw,
    ref=lambda x, paddings, value: np.pad(x, paddings, constant_values=value) if paddings else x,
    prims=("pad",),
)

# ---------------------------------------------------------------------------------------------
# Slices and indexing


def _slice_item(d, n):
    step = d.choice([None, 1, 2, -1, -2, 3])
    bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
    return slice(d(bound), d(bound), step)


def _tf_slice_draw(d):
    shape = d.shape(min_dims=1, min_side=1)
    begin = [d.int(0, n) for n in shape]
    size = [d.choice([-1, d.int(0, n - b)]) for n, b in zip(shape, begin)]
    if all(b == 0 and s in (-1, n) for b, s, n in zip(begin, size, shape)):
        begin[0], size[0] = shape[0], -1  # at least one real slice: an empty one
    return [d.uniform(shape)], {"begin": begin, "size": size}


def _tf_slice_ref(x, begin, size):
    return x[tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))]


case(
    "slice",
    lambda x, begin, size: jg.slice(x, begin, size),
    _tf_slice_draw,
    ref=_tf_slice_ref,
    prims=("slice",),
)
case(
    "reverse",
    lambda x: x[::-1],
    lambda d: ([d.uniform(d.shape(min_dims=1))], {}),
    ref=lambda x: x[::-1],
    prims=("slice",),
)


def _basic_index_draw(d):
    shape = d.shape(min_dims=1, max_dims=4)
    items = []
    for n in shape:
        kind = d.choice(["slice", "slice", "int"] if n else ["slice"])
        items.append(d.int(-n, n - 1) if kind == "int" else _slice_item(d, n))
    for _ in range(d.int(0, 2)):
        items.insert(d.int(0, len(items)), None)
    if d.bool():  # replace a run of leading/trailing full slices by `...`
        cut = d.int(0, len(items))
        items = items[:cut] + [Ellipsis] if d.bool() else [Ellipsis] + items[cut:]
    return [d.uniform(shape)], {"index": tuple(items)}


def _getitem(x, index, arrays=()):
    # Integer arrays travel as extra case arguments (they are not differentiated).
    arrays = list(arrays)
    index = tuple(arrays.pop(0) if i is _ARRAY else i for i in index)
    return x[index]


_ARRAY = object()  # placeholder in an index for the next integer-array argument


def _getitem_fn(x, *arrays, index):
    return _getitem(x, index, arrays)


case("getitem_basic", _getitem_fn, _basic_index_draw, ref=_getitem_fn)


def _array_index_draw(d):
    shape = d.shape(min_dims=1, max_dims=3, min_side=1)
    n_arrays = d.int(1, min(2, len(shape)))
    first = d.int(0, len(shape) - n_arrays)
    index_shapes = d.shapes(n_arrays, max_dims=2, min_side=0, max_side=3)
    items, arrays = [], []
    for axis, n in enumerate(shape):
        k = axis - first
        if 0 <= k < n_arrays:
            arrays.append(d.indices(index_shapes[k], n))
            items.append(_ARRAY)
        else:
            items.append(
                d.choice([slice(None), slice(None, None, -1), slice(1, None), d.int(-n, n - 1)])
            )
    if d.bool():  # trailing full slices become `...`
        while items and items[-1] is not _ARRAY and items[-1] == slice(None):
            items.pop()
        items.append(Ellipsis)
    return [d.uniform(shape), *arrays], {"index": tuple(items)}


case("getitem_arrays", _getitem_fn, _array_index_draw, ref=_getitem_fn, prims=("gather",))


def _unslice_draw(d):
    shape = d.shape(min_dims=1)
    index = tuple(_slice_item(d, n).indices(n) for n in shape)
    out = tuple(len(range(*i)) for i in index)
    return [d.uniform(out)], {"index": index, "shape": shape}


def _unslice_ref(g, index, shape):
    out = np.zeros(shape, g.dtype)
    grids = np.ix_(*[np.arange(*i) for i in index])
    out[grids] = g
    return out


case(
    "unslice",
    lambda g, index, shape: bind(unslice_p, g, index=index, shape=shape),
    _unslice_draw,
    ref=_unslice_ref,
    prims=("unslice",),
)


def _gather_draw(d):
    shape = d.shape(min_dims=1, max_dims=3)
    axis = d.int(-len(shape), len(shape) - 1)
    index_shape = d.shape(max_dims=2, max_side=5)
    return [d.uniform(shape), d.indices(index_shape, shape[axis])], {"axis": axis}


case(
    "gather",
    lambda x, i, axis: jg.gather(x, i, axis=axis),
    _gather_draw,
    ref=lambda x, i, axis: np.take(x, i, axis=axis),
    prims=("gather",),
)


def _take_draw(d):
    shape = d.shape(max_dims=3)
    size = math.prod(shape)
    axis = d.choice([None] + list(range(-len(shape), len(shape))))
    n = size if axis is None else shape[axis]
    return [d.uniform(shape), d.indices(d.shape(max_dims=2), n)], {"axis": axis}


case(
    "take",
    lambda x, i, axis: jg.take(x, i, axis=axis),
    _take_draw,
    ref=lambda x, i, axis: np.take(x, i, axis=axis),
    prims=("gather",),
)


def _scatter_draw(d):
    shape = d.shape(min_dims=1, max_dims=3)
    axis = d.int(0, len(shape) - 1)
    idx = d.indices(d.shape(max_dims=2, max_side=5), shape[axis])
    g_shape = shape[:axis] + idx.shape + shape[axis + 1 :]
    return [d.uniform(g_shape), idx], {"axis": axis, "shape": shape}


def _scatter_ref(g, idx, axis, shape):
    out = np.zeros(shape, g.dtype)
    flat = g.reshape(shape[:axis] + (idx.size,) + shape[axis + 1 :])
    np.add.at(np.moveaxis(out, axis, 0), idx.ravel(), np.moveaxis(flat, axis, 0))
    return out


case(
    "scatter_add",
    lambda g, i, axis, shape: bind(scatter_add_p, g, i, axis=axis, shape=shape),
    _scatter_draw,
    ref=_scatter_ref,
    prims=("scatter_add",),
)
case(
    "gather_primitive",
    lambda x, i, axis: bind(gather_p, x, i, axis=axis),
    lambda d: (lambda a, p: (a, {"axis": p["axis"] % a[0].ndim}))(*_gather_draw(d)),
    ref=lambda x, i, axis: np.take(x, i, axis=axis),
    prims=("gather",),
)


def _gather_nd_draw(d):
    shape = d.shape(min_dims=1, max_dims=3, min_side=1)
    depth = d.int(0, len(shape))
    batch = d.shape(max_dims=2, max_side=3)
    idx = (
        np.stack([d.rng.integers(0, n, batch) for n in shape[:depth]], -1)
        if depth
        else np.zeros(batch + (0,), np.int64)
    )
    return [d.uniform(shape), idx.astype(np.int64)], {}


def _gather_nd_ref(x, idx):
    depth = idx.shape[-1]
    return (
        x[tuple(idx[..., k] for k in range(depth))]
        if depth
        else np.broadcast_to(x, idx.shape[:-1] + x.shape)
    )


case(
    "gather_nd",
    lambda x, i: jg.gather_nd(x, i),
    _gather_nd_draw,
    ref=_gather_nd_ref,
    prims=("gather",),
)


def _one_hot_draw(d):
    depth = d.int(0, 4)
    labels = d.rng.integers(-1, depth + 1, d.shape(max_dims=2)).astype(np.int32)
    axis = d.choice([None, -1, 0])
    return [d.uniform(labels.shape + (depth,)), labels], {"depth": depth, "axis": axis}


def _one_hot(x, labels, depth, axis):
    hot = jg.one_hot(labels, depth, axis=axis, dtype=x.dtype)
    if axis == 0:
        hot = jg.transpose(hot, list(range(1, hot.ndim)) + [0])
    return x * hot


def _one_hot_ref(x, labels, depth, axis):
    return x * (labels[..., None] == np.arange(depth))


case("one_hot", _one_hot, _one_hot_draw, ref=_one_hot_ref)

# ---------------------------------------------------------------------------------------------
# Not differentiable: values and shape rules only (order 0)


def _compare_draw(d):
    sx, sy = d.shapes(2)
    return [d.grid(sx, -3, 3), d.grid(sy, -3, 3)], {}


for _name, _fn, _ref in [
    ("equal", jg.equal, np.equal),
    ("not_equal", jg.not_equal, np.not_equal),
    ("less", jg.less, np.less),
    ("less_equal", jg.less_equal, np.less_equal),
    ("greater", jg.greater, np.greater),
    ("greater_equal", jg.greater_equal, np.greater_equal),
    ("floordiv", jg.floordiv, np.floor_divide),
]:
    case(
        _name,
        _fn,
        _compare_draw
        if _name != "floordiv"
        else (lambda d: (lambda s: ([d.uniform(s[0]), d.signed(s[1])], {}))(d.shapes(2))),
        ref=_ref,
        prims=(_name,),
        order=0,
    )


def _logical_draw(d):
    sx, sy = d.shapes(2)
    return [d.rng.random(sx) < 0.5, d.rng.random(sy) < 0.5], {}


case(
    "logical_and",
    jg.logical_and,
    _logical_draw,
    ref=np.logical_and,
    prims=("logical_and",),
    order=0,
)
case("logical_or", jg.logical_or, _logical_draw, ref=np.logical_or, prims=("logical_or",), order=0)
case(
    "logical_not",
    lambda c, _: jg.logical_not(c),
    _logical_draw,
    ref=lambda c, _: np.logical_not(c),
    prims=("logical_not",),
    order=0,
)


def _bits_draw(d):
    """Integers of every sign and both widths, and shift counts past the width (numpy's
    rule: every bit shifted out) and below zero."""
    sx, sy = d.shapes(2)
    dtype = d.choice([np.int32, np.int64, np.uint8])
    low = 0 if dtype == np.uint8 else -(2**20)
    return [
        d.rng.integers(low, 2**20, sx).astype(dtype),
        d.rng.integers(-2, 70, sy).astype(dtype),
    ], {}


for _name, _fn, _ref in [
    ("bitwise_and", jg.bitwise.bitwise_and, np.bitwise_and),
    ("bitwise_or", jg.bitwise.bitwise_or, np.bitwise_or),
    ("bitwise_xor", jg.bitwise.bitwise_xor, np.bitwise_xor),
    ("left_shift", jg.bitwise.left_shift, np.left_shift),
    ("right_shift", jg.bitwise.right_shift, np.right_shift),
]:
    case(_name, _fn, _bits_draw, ref=_ref, prims=(_name,), order=0)
case(
    "invert",
    lambda x, _: jg.bitwise.invert(x),
    _bits_draw,
    ref=lambda x, _: np.invert(x),
    prims=("invert",),
    order=0,
)


def _arg_draw(d):
    shape = d.shape(min_dims=1, min_side=1)
    return [d.distinct(shape)], {"axis": d.int(-len(shape), len(shape) - 1)}


case(
    "argmax",
    lambda x, axis: jg.argmax(x, axis),
    _arg_draw,
    ref=lambda x, axis: np.argmax(x, axis),
    prims=("argmax",),
    order=0,
)
case(
    "argmin",
    lambda x, axis: jg.argmin(x, axis),
    _arg_draw,
    ref=lambda x, axis: np.argmin(x, axis),
    prims=("argmin",),
    order=0,
)


def _sort_draw(d):
    """Distinct values (a sort's gradient is defined where no two are equal), any axis."""
    shape = d.shape(min_dims=1)
    return [d.distinct(shape)], {"axis": d.int(-len(shape), len(shape) - 1)}


def _scatter_extreme_draw(d):
    """Distinct values, so that no update ties with another or with x (where the gradient is
    shared), and repeated rows."""
    rows, width, k = d.int(1, 4), d.int(1, 3), d.int(0, 5)
    values = d.distinct((rows * width + k * width,))
    x = values[: rows * width].reshape(rows, width)
    updates = values[rows * width :].reshape(k, width)
    picks = np.array([d.int(0, rows - 1) for _ in range(k)], np.int64)
    return [x, updates], {"rows": picks, "mode": "max" if d.int(0, 1) else "min"}


def _scatter_extreme_ref(x, updates, rows, mode):
    out = x.copy()
    (np.maximum if mode == "max" else np.minimum).at(out, rows, updates)
    return out


case(
    "scatter_extreme",  # x.at[rows].max / .min on the rows of a matrix
    lambda x, u, rows, mode: bind(
        jg.ops.scatter.scatter_extreme_p, x, u, jg.constant(rows), mode=mode
    ),
    _scatter_extreme_draw,
    ref=_scatter_extreme_ref,
    prims=("scatter_extreme",),
)


def _top_k_draw(d):
    shape = d.shape(min_dims=1)
    return [d.distinct(shape)], {"k": d.int(0, shape[-1])}


case(
    "argsort",
    lambda x, axis: jg.argsort(x, axis),
    _sort_draw,
    ref=lambda x, axis: np.argsort(x, axis, kind="stable").astype(np.int32),
    prims=("argsort",),
    order=0,
)
case(
    "argsort_descending",
    lambda x, axis: jg.argsort(x, axis, direction="DESCENDING"),
    _sort_draw,
    ref=lambda x, axis: np.argsort(-x, axis, kind="stable").astype(np.int32),  # distinct x
    prims=("argsort",),
    order=0,
)
case(
    "sort",  # a gather at the sorting positions: differentiable where the values are distinct
    lambda x, axis: jg.sort(x, axis),
    _sort_draw,
    ref=lambda x, axis: np.sort(x, axis),
    prims=("argsort", "gather"),
)
case(
    "top_k",
    lambda x, k: jg.math.top_k(x, k)[0],
    _top_k_draw,
    ref=lambda x, k: -np.sort(-x, -1)[..., :k],
    prims=("argsort",),
)
case(
    "allreduce",  # the sum over the processes of an MPI job: the value itself in one process
    lambda x: bind(jg.ops.collective.allreduce_p, x) * x,
    one(lambda d, s: d.uniform(s)),
    ref=lambda x: x * x,
    prims=("allreduce",),
)


def _exchange_draw(d):
    """A value of at least one row, and a sharded update's exchange array for it (one rank:
    its published row and the row of new shares, each ending in its control line: wide
    enough for float32, so for float64 too, whichever dtype the test casts them to)."""
    x = d.uniform(d.shape(min_dims=1, min_side=1))
    return [x, np.zeros((2, exchange_columns(x.size, 4)), x.dtype)], {}


def _published(x, ex):
    """What a one-rank job published of `x` and reads back (a sharded update's exchange)."""
    published = bind(jg.ops.collective.publish_rows_p, ex, x, rank=0, size=1)
    return bind(jg.ops.collective.exchange_rows_p, ex, published, row=0, start=0, shape=x.shape)


case(  # a sharded update's exchange (compiler/sharded_step.py); on 2 ranks: test_distributed
    "publish_rows",
    lambda x, ex: _published(x, ex) * x,
    _exchange_draw,
    ref=lambda x, ex: x * x,
    prims=("publish_rows", "exchange_rows"),
    order=0,
)
case(
    "allgather_rows",
    lambda x, ex: (
        bind(
            jg.ops.collective.allgather_rows_p,
            ex,
            x,
            rank=0,
            size=1,
            rows=x.shape[0],
            offset=0,
            tag=1,
        )
        * x
    ),
    _exchange_draw,
    ref=lambda x, ex: x * x,
    prims=("allgather_rows",),
    order=0,
)
case(  # values are checked bit for bit against the numpy impl in tests/test_random.py
    "philox",
    lambda x: x + jg.random.uniform(jg.random.key(7), x.shape, dtype=x.dtype),
    one(lambda d, s: d.uniform(s)),
    prims=("philox",),
    order=0,
)
case(
    "stop_gradient",
    lambda x: x * jg.stop_gradient(x),
    one(lambda d, s: d.uniform(s)),
    ref=lambda x: x * x,
    prims=("stop_gradient",),
    order=0,
)


def _adjust_contrast_ref(x, factor):
    mean = x.mean(axis=(-3, -2), keepdims=True)
    return (x - mean) * factor + mean


case(  # no gradient, as in TensorFlow (tests/test_tf_compat.py checks the LookupError)
    "adjust_contrast",
    lambda x, factor: jg.image.adjust_contrast(x, factor),
    lambda d: ([d.uniform(d.shape(min_dims=3, max_dims=4, min_side=1))], {"factor": 1.5}),
    ref=_adjust_contrast_ref,
    prims=("adjust_contrast",),
    order=0,
)


# ---------------------------------------------------------------------------------------------
# Control flow (loop, cond and tuple_get are bound under a trace; eagerly they are Python
# loops and branches over the ops above)


def _scan_draw(d):
    n, m = d.int(0, 4), d.int(1, 3)
    return [d.uniform((m,)), d.uniform((n, m)), d.uniform((m,))], {
        "reverse": d.choice([False, True])
    }


def _scan_fn(h0, xs, w, reverse):
    def step(h, x):
        h = jg.tanh(h * w + x)
        return h, h * x

    h, ys = jg.lax.scan(step, h0, xs, reverse=reverse)
    return h + jg.reduce_sum(ys, 0)


def _scan_ref(h0, xs, w, reverse):
    h, total = h0, np.zeros_like(h0)
    for x in xs[::-1] if reverse else xs:
        h = np.tanh(h * w + x)
        total = total + h * x
    return h + total


case("scan", _scan_fn, _scan_draw, ref=_scan_ref, prims=("loop", "tuple_get"), rtol=1e-4)


def _cond_draw(d):
    return [d.uniform(d.shape(max_dims=2)), np.asarray(d.choice([-1.0, 1.0]))], {}


def _cond_fn(x, p):
    return jg.cond(p > 0, lambda: jg.sin(x) * x, lambda: jg.exp(x))


case(
    "cond",
    _cond_fn,
    _cond_draw,
    ref=lambda x, p: np.sin(x) * x if p > 0 else np.exp(x),
    prims=("cond", "tuple_get"),
)


def _shards_draw(d):
    rows, cols = d.int(1, 3), d.int(1, 3)
    return [d.uniform((2 * rows, cols)), d.uniform((cols,))], {}


def _shards_fn(x, w):
    """The rows of x as two shards (the sharding pass makes this op after differentiation):
    the column sums of x * w, a partial sum per shard, and tanh(x) * w, rows per shard."""
    t = Trace("shard body")
    with tracing(t):
        xs = t.new_input(AVal((x.shape[0] // 2, x.shape[1]), np.dtype(x.dtype)))
        ws = t.new_input(AVal(tuple(w.shape), np.dtype(w.dtype)))
        body = t.to_graph([jg.reduce_sum(xs * ws, axis=0), jg.tanh(xs) * ws])
    both = bind(shards_p, x, w, body=body, shards=2, in_axes=(0, None), out_kinds=("sum", "concat"))
    return bind(tuple_get_p, both, index=1) * bind(tuple_get_p, both, index=0)


case(
    "shards",
    _shards_fn,
    _shards_draw,
    ref=lambda x, w: np.tanh(x) * w * (x * w).sum(axis=0),
    prims=("shards", "tuple_get"),
    order=0,  # made after differentiation: no gradient
)


# ---------------------------------------------------------------------------------------------
# Convolution (one primitive; conv1d, conv2d, depthwise_conv2d and conv2d_transpose over it)


def _conv2d_draw(d):
    n, c_in, c_out = d.int(1, 2), d.int(1, 3), d.int(1, 3)
    h, w, k = d.int(3, 5), d.int(3, 5), d.int(1, 3)
    params = {
        "strides": d.choice([1, 2, [1, 2]]),
        "padding": d.choice(["SAME", "VALID"]),
        "dilations": d.choice([1, 2]) if k > 1 else 1,
    }
    return [d.uniform((n, h, w, c_in)), d.uniform((k, k, c_in, c_out))], params


def _np_conv2d(x, w, strides, padding, dilations):
    """Direct loops over TensorFlow's definition (SAME: the odd pad at the end)."""
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    kh, kw = w.shape[:2]
    eh, ew = (kh - 1) * dilations + 1, (kw - 1) * dilations + 1
    if padding == "SAME":
        oh, ow = -(-x.shape[1] // sh), -(-x.shape[2] // sw)
        ph = max((oh - 1) * sh + eh - x.shape[1], 0)
        pw = max((ow - 1) * sw + ew - x.shape[2], 0)
        x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    oh, ow = (x.shape[1] - eh) // sh + 1, (x.shape[2] - ew) // sw + 1
    out = np.zeros((x.shape[0], max(oh, 0), max(ow, 0), w.shape[3]), x.dtype)
    for i in range(max(oh, 0)):
        for j in range(max(ow, 0)):
            patch = x[:, i * sh : i * sh + eh : dilations, j * sw : j * sw + ew : dilations, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def _conv_filters_draw(d):
    """x and a cotangent for conv_filters, with its primitive params drawn directly: pads
    (negative ones crop), input (lhs) and window (rhs) dilations, feature groups, 1-D or
    2-D."""
    rank = d.int(1, 2)
    groups = d.choice([1, 2])
    n, c_in, c_out = d.int(1, 2), groups * d.int(1, 3), groups * d.int(1, 2)
    while True:
        spatial = tuple(d.int(2, 5) for _ in range(rank))
        params = {
            "window": tuple(d.int(1, 3) for _ in range(rank)),
            "strides": tuple(d.choice([1, 2]) for _ in range(rank)),
            "padding": tuple((d.int(-1, 1), d.int(0, 2)) for _ in range(rank)),
            "lhs_dilation": tuple(d.choice([1, 2]) for _ in range(rank)),
            "rhs_dilation": tuple(d.choice([1, 2]) for _ in range(rank)),
            "groups": groups,
        }
        keys = ("strides", "padding", "lhs_dilation", "rhs_dilation")
        out = out_spatial(spatial, params["window"], *(params[k] for k in keys))
        if 0 not in out:
            break
    x = d.uniform((n, *spatial, c_in))
    return [x, d.uniform((n, *out, c_out))], params


def _np_conv_filters(x, g, window, strides, padding, lhs_dilation, rhs_dilation, groups):
    """Per group, its channels' filter gradient (`_np_filter_gradient`), side by side."""
    cg, og = x.shape[-1] // groups, g.shape[-1] // groups
    geometry = (window, strides, padding, lhs_dilation, rhs_dilation)
    parts = [
        _np_filter_gradient(x[..., q * cg : (q + 1) * cg], g[..., q * og : (q + 1) * og], *geometry)
        for q in range(groups)
    ]
    return np.concatenate(parts, axis=-1)


def _np_filter_gradient(x, g, window, strides, padding, lhs_dilation, rhs_dilation):
    """The definition, by loops: dw[k, c, o] = sum over n, p of xpd[n, p * s + k * rd, c] *
    g[n, p, o], xpd being x lhs-dilated then padded (negative pads crop)."""
    rank = len(window)
    xd = np.zeros(
        (x.shape[0], *[(m - 1) * d + 1 for m, d in zip(x.shape[1:-1], lhs_dilation)], x.shape[-1])
    )
    xd[(slice(None), *[slice(None, None, d) for d in lhs_dilation])] = x
    xp = np.pad(xd, [(0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding] + [(0, 0)])
    xp = xp[(slice(None), *[slice(max(-lo, 0), None) for lo, _ in padding])]
    dw = np.zeros((*window, x.shape[-1], g.shape[-1]))
    for p in np.ndindex(*g.shape[1:-1]):
        for k in np.ndindex(*window):
            at = tuple(pi * s + ki * d for pi, s, ki, d in zip(p, strides, k, rhs_dilation))
            dw[k] += np.einsum("nc,no->co", xp[(slice(None), *at)], g[(slice(None), *p)])
    assert len(dw.shape) == rank + 2
    return dw


case(
    "conv_filters",
    lambda x, g, **p: bind(conv_filters_p, x, g, **p),
    _conv_filters_draw,
    ref=_np_conv_filters,
    prims=("conv_filters",),
    rtol=1e-4,
)
case(
    "conv2d",
    lambda x, w, **p: jg.nn.conv2d(x, w, p["strides"], p["padding"], dilations=p["dilations"]),
    _conv2d_draw,
    ref=lambda x, w, **p: _np_conv2d(x, w, p["strides"], p["padding"], p["dilations"]),
    prims=("conv",),
    rtol=1e-4,
)


# Pooling: max pooling's three primitives (with distinct values: no ties, where the maximum's
# position, and so the derivative, jumps), average pooling as convolutions.


def _pool_draw(d):
    n, c = d.int(1, 2), d.int(1, 3)
    h, w = d.int(2, 5), d.int(2, 5)
    params = {
        "ksize": d.choice([1, 2, [2, 1]]),
        "strides": d.choice([1, 2]),
        "padding": d.choice(["SAME", "VALID"]),
    }
    return [d.distinct((n, h, w, c))], params


def _pool_params(x, ksize, strides, padding):
    """The primitives' params for a 2-D pool of x (pool.py's own conversion)."""
    from jitgrad.ops.pool import _pool_params as convert

    _, window, strides, pads, _ = convert("max_pool2d", x, ksize, strides, padding, "NHWC", 2)
    return {"window": window, "strides": strides, "padding": pads}


def _np_pool(x, ksize, strides, padding, reduce):
    kh, kw = (ksize, ksize) if isinstance(ksize, int) else ksize
    s = strides
    if padding == "SAME":
        oh, ow = -(-x.shape[1] // s), -(-x.shape[2] // s)
        ph, pw = max((oh - 1) * s + kh - x.shape[1], 0), max((ow - 1) * s + kw - x.shape[2], 0)
    else:
        oh, ow = (x.shape[1] - kh) // s + 1, (x.shape[2] - kw) // s + 1
        ph = pw = 0
    out = np.zeros((x.shape[0], max(oh, 0), max(ow, 0), x.shape[3]), x.dtype)
    for i in range(max(oh, 0)):
        for j in range(max(ow, 0)):
            r0, c0 = i * s - ph // 2, j * s - pw // 2
            rows = slice(max(r0, 0), min(r0 + kh, x.shape[1]))
            cols = slice(max(c0, 0), min(c0 + kw, x.shape[2]))
            out[:, i, j, :] = reduce(x[:, rows, cols, :], axis=(1, 2))
    return out


case(
    "max_pool2d",
    lambda x, **p: jg.nn.max_pool2d(x, p["ksize"], p["strides"], p["padding"]),
    _pool_draw,
    ref=lambda x, **p: _np_pool(x, p["ksize"], p["strides"], p["padding"], np.max),
    prims=("max_pool",),
)
case(
    "avg_pool2d",
    lambda x, **p: jg.nn.avg_pool2d(x, p["ksize"], p["strides"], p["padding"]),
    _pool_draw,
    ref=lambda x, **p: _np_pool(x, p["ksize"], p["strides"], p["padding"], np.mean),
    prims=("conv",),
)


def _pool_scatter_draw(d):
    (x,), params = _pool_draw(d)
    pooled = jg.nn.max_pool2d(x, params["ksize"], params["strides"], params["padding"])
    return [x, d.uniform(pooled.shape)], params


case(
    "max_pool_scatter",
    lambda x, g, **p: bind(max_pool_scatter_p, x, g, **_pool_params(x, **p)),
    _pool_scatter_draw,
    prims=("max_pool_scatter",),
)
case(
    "max_pool_gather",
    lambda x, h, **p: bind(max_pool_gather_p, x, h, **_pool_params(x, **p)),
    lambda d: (lambda a, p: ([a[0], d.uniform(a[0].shape)], p))(*_pool_draw(d)),
    prims=("max_pool_gather",),
)


# ---------------------------------------------------------------------------------------------
# Linear algebra (ops/decompositions.py): well-conditioned matrices with a batch axis or none,
# symmetric positive definite for cholesky, distinct eigenvalues and singular values (the
# derivatives' denominators are their gaps), full rank for qr and lstsq. References call
# numpy/scipy as the impls do, so the values agree to the last bit.


def _batch(d):
    return d.choice([(), (2,)])


def _spd(d, batch, n):
    a = d.rng.uniform(-1, 1, batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) / n + np.eye(n)


def _orthogonal(d, batch, n):
    return np.linalg.qr(d.rng.standard_normal(batch + (n, n)))[0]


def _spectrum(d, batch, k, lo):
    """k values per matrix, ascending, at least 0.5 apart, from `lo` on."""
    return lo + np.cumsum(d.rng.uniform(0.5, 1.0, batch + (k,)), axis=-1)


def _sym_np(a):
    return (a + np.swapaxes(a, -1, -2)) * a.dtype.type(0.5)


def _per_matrix(fn, *arrays):
    batch = arrays[0].shape[:-2]
    first = fn(*[a[(0,) * len(batch)] for a in arrays])
    out = np.empty(batch + first.shape, first.dtype)
    for i in np.ndindex(batch):
        out[i] = fn(*[a[i] for a in arrays])
    return out


def _cholesky_draw(d):
    return [_spd(d, _batch(d), d.int(1, 4))], {}


case(
    "cholesky",
    jg.linalg.cholesky,
    _cholesky_draw,
    ref=lambda a: np.linalg.cholesky(_sym_np(a)),
    prims=("cholesky",),
    rtol=1e-4,
)


def _triangular_draw(d):
    batch, n = _batch(d), d.int(1, 4)
    a = d.rng.uniform(-0.5, 0.5, batch + (n, n)) + 2 * np.eye(n)
    params = {"lower": d.bool(), "adjoint": d.bool()}
    return [a, d.uniform(batch + (n, d.int(1, 3)))], params


def _triangular_ref(a, b, lower, adjoint):
    import scipy.linalg

    return _per_matrix(
        lambda a1, b1: scipy.linalg.solve_triangular(a1, b1, lower=lower, trans=int(adjoint)),
        a,
        b,
    )


case(
    "triangular_solve",
    lambda a, b, **p: jg.linalg.triangular_solve(a, b, **p),
    _triangular_draw,
    ref=_triangular_ref,
    prims=("triangular_solve",),
    rtol=1e-4,
)


def _square_draw(d):
    batch, n = _batch(d), d.int(1, 4)
    return batch, n, d.uniform(batch + (n, n), -1, 1) + 3 * np.eye(n) * d.choice([1, -1])


def _solve_draw(d):
    batch, n, a = _square_draw(d)
    return [a, d.uniform(batch + (n, d.int(1, 3)))], {"adjoint": d.bool()}


case(
    "solve",
    lambda a, b, **p: jg.linalg.solve(a, b, **p),
    _solve_draw,
    ref=lambda a, b, adjoint: np.linalg.solve(np.swapaxes(a, -1, -2) if adjoint else a, b),
    prims=("solve",),
    rtol=1e-4,
)
case(
    "slogdet",
    jg.linalg.slogdet,
    lambda d: ([_square_draw(d)[2]], {}),
    ref=np.linalg.slogdet,
    prims=("slogdet",),
    rtol=1e-4,
)
case(
    "inv",
    jg.linalg.inv,
    lambda d: ([_square_draw(d)[2]], {}),
    ref=np.linalg.inv,
    prims=("solve",),
    rtol=1e-4,
)


def _qr_draw(d):
    m, n = d.int(1, 4), d.int(1, 4)
    # Full matrices only where they are unique (m <= n: the reduced QR).
    return [d.uniform(_batch(d) + (m, n))], {"full_matrices": m <= n and d.bool()}


def _qr_ref(a, full_matrices):
    q, r = np.linalg.qr(a, mode="complete" if full_matrices else "reduced")
    return q, r


case(
    "qr",
    lambda a, **p: jg.linalg.qr(a, **p),
    _qr_draw,
    ref=_qr_ref,
    prims=("qr",),
    rtol=1e-4,
)


def _eigh_draw(d):
    batch, n = _batch(d), d.int(1, 4)
    v = _orthogonal(d, batch, n)
    w = _spectrum(d, batch, n, -2.0)
    return [(v * w[..., None, :]) @ np.swapaxes(v, -1, -2)], {}


case(
    "eigh",
    jg.linalg.eigh,
    _eigh_draw,
    ref=lambda a: tuple(np.linalg.eigh(_sym_np(a))),
    prims=("eigh",),
    rtol=1e-4,
)


def _svd_draw(d):
    batch, m, n = _batch(d), d.int(1, 4), d.int(1, 4)
    k = min(m, n)
    u = _orthogonal(d, batch, m)[..., :k]
    v = _orthogonal(d, batch, n)[..., :k]
    s = _spectrum(d, batch, k, 0.0)[..., ::-1]
    return [(u * s[..., None, :]) @ np.swapaxes(v, -1, -2)], {}


def _svd_ref(a):
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    return s, u, np.swapaxes(vh, -1, -2)


case("svd", jg.linalg.svd, _svd_draw, ref=_svd_ref, prims=("svd",), rtol=1e-4)


def _lstsq_draw(d):
    batch, m, n = _batch(d), d.int(1, 4), d.int(1, 4)
    k = min(m, n)
    u = _orthogonal(d, batch, m)[..., :k]
    v = _orthogonal(d, batch, n)[..., :k]
    a = (u * _spectrum(d, batch, k, 0.5)[..., None, :]) @ np.swapaxes(v, -1, -2)
    return [a, d.uniform(batch + (m, d.int(1, 2)))], {}


def _lstsq_ref(a, b):
    rcond = np.finfo(a.dtype).eps * max(a.shape[-2:])
    return _per_matrix(lambda a1, b1: np.linalg.lstsq(a1, b1, rcond=rcond)[0], a, b)


case("lstsq", jg.linalg.lstsq, _lstsq_draw, ref=_lstsq_ref, prims=("lstsq",), rtol=1e-4)

CASES_BY_NAME = {c.name: c for c in CASES}
