"""Random well-typed jitgrad programs, and the differential check each one must pass.

A program is real Python source over jitgrad's public ops, e.g.

    def program(x0, x1):
        v0 = jg.math.log(x0 * x0 + 1.0)
        v1 = jg.reduce_max(v0, axis=-1, keepdims=True)
        v2 = jg.matmul(v1, x1)
        return (v2,)

built by hypothesis one op at a time (`programs()`), with its float64 inputs. The generator
evaluates every statement eagerly as it writes it, so it knows each value's magnitude and keeps
transcendental ops inside their domains with smooth transforms (log(x x + 1),
sqrt(x x + 0.25), asin(0.9 tanh x), exp of a rescaled x) instead of rejecting examples. The
source is what runs (compiled from the text), what `note()` prints on a failure, and what a
regression test pastes.

`check_program` then asserts, for one program in one dtype:

1. eager value == `jitgrad.jit` value;
2. eager value and gradients of a random-weighted scalar loss == `jitgrad.jit_grad`'s;
3. (a subset) eager second derivatives == compiled ones: grad of <u, grad loss>;
4. gradients (and second derivatives) == central finite differences in float64, at points
   where the function is smooth: two step sizes must agree first (a kink, a jump of `where`
   or a tie within reach of the steps makes them disagree, and the check is skipped).
"""

from __future__ import annotations

import contextlib
import itertools
import linecache
import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.core import pytree
from jitgrad.core.tensor import Tensor

RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5}
MAX_SIZE = 48  # elements per value: small arrays, so kernels and finite differences stay cheap
MAX_DIM = 4
# 1 example in 12 is large enough for the emitter's parallel loops (numba.prange with reassoc,
# from 2**17 elements): float64 only, one short sub-program, sizes up to 3 x LARGE.
LARGE = 140_000
LARGE_SHAPES = [(LARGE,), (2, LARGE // 2), (LARGE // 2, 2), (LARGE // 4, 2, 2)]


# ---------------------------------------------------------------------------------------------
# Programs


@dataclass
class Program:
    """Source of `def program(x0, ...) -> tuple`, its float64 inputs and the dtype to run in.

    Its repr is the Python expression that rebuilds it (hypothesis prints it in a falsifying
    example; paste it into test_regressions.py)."""

    source: str
    inputs: list[np.ndarray]
    dtype: np.dtype = np.dtype(np.float64)
    # Whether finite differences can check the gradient; by default, unless the program uses
    # stop_gradient (its gradient is exact, but finite differences see through it).
    differentiable: bool | None = None
    literals: tuple[str, ...] = ()  # source that recreates each input (default: array_literal)

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        self.inputs = [np.asarray(x, np.float64) for x in self.inputs]
        if self.differentiable is None:
            self.differentiable = "stop_gradient" not in self.source
        self.literals = tuple(self.literals) or tuple(array_literal(x) for x in self.inputs)
        self.values = tuple(re.findall(r"^ +(v\d+) = ", self.source, re.MULTILINE))
        self._scale = None

    @property
    def scale(self) -> float:
        """max(1, largest |value| over the intermediates), in float64: the magnitude scale of
        the forward computation, for tolerances."""
        if self._scale is None:
            _, values = self.function_with_values()(*[Tensor(x) for x in self.inputs])
            self._scale = max(
                [1.0] + [float(np.max(np.abs(np.asarray(v)), initial=0.0)) for v in values]
            )
        return self._scale

    def __repr__(self) -> str:
        return (
            f"Program({self.source!r}, [{', '.join(self.literals)}], np.dtype({self.dtype.name!r}))"
        )

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))  # hypothesis's printer: the repr, not the dataclass fields

    @property
    def tag(self) -> str:
        """A hash of the source, dtype and input shapes, in the function's name: the kernels
        of one program have the same names in every run (an on-disk cache can be reused) and
        differ from other programs' kernels, so a failing kernel file names its program."""
        key = f"{self.source}{self.dtype.name}{[x.shape for x in self.inputs]}"
        return f"{zlib.crc32(key.encode()):08x}"

    def function(self):
        fn = compile_source(self.source)
        fn.__name__ = fn.__qualname__ = f"program_{self.tag}"
        return fn

    def function_with_values(self):
        """Like `function`, returning (outputs, [every intermediate value])."""
        body, ret = self.source.rstrip("\n").rsplit("\n", 1)
        names = "".join(f"{v}, " for v in self.values)
        return compile_source(f"{body}\n{ret}, [{names}]\n")

    def args(self, dtype=None) -> list[np.ndarray]:
        dtype = np.dtype(dtype or self.dtype)
        return [np.asarray(x, dtype) for x in self.inputs]

    def __str__(self) -> str:
        inputs = ", ".join(self.literals)
        return f"{self.source}\ninputs = [{inputs}]  # float64; run in {self.dtype.name}"


_counter = itertools.count()


def compile_source(source: str, name: str = "program"):
    """The function `name` defined by `source`, with a fake file in linecache so tracebacks and
    jitgrad's error locations show the program's lines."""
    filename = f"<fuzz program {next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"jg": jg, "np": np}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace[name]


def array_literal(x: np.ndarray) -> str:
    """np.array(...) source that recreates `x` exactly (repr of a Python float round-trips)."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return f"np.array({x.tolist()!r})" if x.ndim else f"np.array({float(x)!r})"
    return f"np.array({x.tolist()!r}, np.{x.dtype.name})"


def fmt(c: float) -> str:
    return repr(float(c))


@dataclass
class Var:
    name: str
    value: np.ndarray  # float64, from the eager evaluation at generation time

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def size(self) -> int:
        return self.value.size

    @property
    def mag(self) -> float:
        return float(np.max(np.abs(self.value), initial=0.0))


@dataclass
class Builder:
    """Writes a program statement by statement, evaluating each one eagerly in float64."""

    draw: object
    rng: np.random.Generator
    dtype: np.dtype = np.dtype(np.float64)
    lines: list[str] = field(default_factory=list)
    inputs: list[Var] = field(default_factory=list)
    literals: list[str] = field(default_factory=list)  # source that recreates each input
    pool: list[Var] = field(default_factory=list)  # values the current sub-program may use
    env: dict = field(default_factory=lambda: {"jg": jg, "np": np})
    n_values: int = 0
    max_size: int = MAX_SIZE

    # -- hypothesis draws (structure) ---------------------------------------------------------
    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def bool(self) -> bool:
        return self.draw(st.booleans())

    def choice(self, options):
        return self.draw(st.sampled_from(list(options)))

    def shape(self, min_dims=0, max_dims=3, max_side=MAX_DIM) -> tuple[int, ...]:
        ndim = self.int(min_dims, max_dims)
        return tuple(self.int(1, max_side) for _ in range(ndim))

    # -- values -------------------------------------------------------------------------------
    def new_input(self, shape) -> Var:
        shape = tuple(shape)
        if math.prod(shape) > 1000:
            # large: an expression that recreates it, instead of a long literal in the notes
            seed = int(self.rng.integers(2**31))
            literal = f"np.random.default_rng({seed}).uniform(-2.0, 2.0, {shape})"
            return self._add_input(eval(literal, {"np": np}), literal)  # noqa: S307
        kind = self.rng.integers(0, 4)
        if kind == 0:
            x = self.rng.standard_normal(shape)
        elif kind == 1:
            x = self.rng.uniform(0.2, 2.0, shape) * self.rng.choice([-1.0, 1.0], shape)
        else:
            x = self.rng.uniform(-2.0, 2.0, shape)
        x = np.asarray(np.round(x, 6))  # short literals in notes and regression tests
        return self._add_input(x, array_literal(x))

    def _add_input(self, x: np.ndarray, literal: str) -> Var:
        var = Var(f"x{len(self.inputs)}", x)
        self.inputs.append(var)
        self.literals.append(literal)
        self.env[var.name] = Tensor(x)
        self.pool.append(var)
        return var

    def emit(self, expr: str) -> Var:
        """`vN = expr`, evaluated now; the new value joins the pool."""
        name = f"v{self.n_values}"
        self.n_values += 1
        line = f"{name} = {expr}"
        exec(line, self.env)  # noqa: S102 - generated from our own templates
        value = np.asarray(self.env[name], np.float64)
        # The generator keeps every value finite; a non-finite one is a generator bug.
        assert np.all(np.isfinite(value)), f"generator produced a non-finite value: {line}"
        self.lines.append(line)
        var = Var(name, value)
        self.pool.append(var)
        return var

    def pick(self, candidates=None) -> Var:
        """An existing value, the most recent first (shrinks towards a chain)."""
        candidates = self.pool if candidates is None else candidates
        return candidates[-1 - self.int(0, len(candidates) - 1)]

    def bounded(self, x: Var, limit: float) -> str:
        """Source for x, rescaled by a power of two when |x| may exceed `limit` (exp, cosh,
        products): exact in floating point, smooth, and a weakly typed Python scalar."""
        if x.mag <= limit:
            return x.name
        k = math.ceil(math.log2(x.mag / limit))
        return self.emit(f"{x.name} * {fmt(2.0**-k)}").name

    def partner(self, x: Var, same_shape: bool = False) -> Var:
        """A value broadcastable with x (an existing one, or a new input of a shape made from
        x's by dropping leading axes, setting axes to 1 or adding a leading axis)."""

        def fits(v):
            if same_shape:
                return v.shape == x.shape
            try:
                shape = np.broadcast_shapes(v.shape, x.shape)
            except ValueError:
                return False
            return math.prod(shape) <= self.max_size

        existing = [v for v in self.pool if fits(v)]
        if existing and self.bool():
            return self.pick(existing)
        if same_shape:
            return self.new_input(x.shape)
        shape = list(x.shape[self.int(0, x.ndim) :])
        shape = [1 if self.bool() else d for d in shape]
        if x.ndim < 3 and self.draw(st.sampled_from([False, False, True])):
            lead = self.int(1, 3)
            if x.size * lead <= self.max_size:
                shape = [lead] + [1] * (x.ndim - len(shape)) + shape
        return self.new_input(shape)

    def axis(self, ndim: int):
        """None, an int or a tuple of distinct axes, each possibly negative."""
        kind = self.choice(["int", "none", "tuple"] if ndim else ["none"])
        if kind == "none":
            return None
        if kind == "int":
            return self.int(-ndim, ndim - 1)
        axes = self.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        return tuple(a - ndim if self.bool() else a for a in axes)


def _axes(axis, ndim) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


# ---------------------------------------------------------------------------------------------
# Ops: each takes the builder, picks operands, and emits one op (plus the transforms that keep
# it in its domain). Ordered roughly simplest first: hypothesis shrinks towards the front.

SMOOTH_UNARY = [
    # hypothesis draws the first entry of a list far more often than the others
    "jg.sin({x})",
    "jg.negative({x})",
    "-{x}",
    "jg.tanh({x})",
    "jg.cos({x})",
    "jg.sigmoid({x})",
    "jg.math.atan({x})",
    "jg.erf({x})",
    "jg.square({x})",
    "{x} ** 2",
    "{x} ** 3",
    "jg.nn.softplus({x})",
    "jg.nn.log_sigmoid({x})",
    "jg.nn.gelu({x})",
    "jg.nn.gelu({x}, approximate=True)",
    "jg.nn.silu({x})",
    "jg.nn.swish({x}, beta=1.5)",
    # domain-restricted ops behind smooth transforms
    "jg.math.log({x} * {x} + 1.0)",
    "jg.log1p({x} * {x})",
    "jg.sqrt({x} * {x} + 0.25)",
    "jg.rsqrt({x} * {x} + 0.5)",
    "1.0 / ({x} * {x} + 1.0)",
    "jg.math.asin(jg.tanh({x}) * 0.9)",
    "jg.math.acos(jg.tanh({x}) * 0.9)",
    "jg.tan(jg.tanh({x}) * 1.2)",
    "({x} * {x} + 0.5) ** 0.75",
    "({x} * {x} + 0.5) ** -1.5",
    "jg.math.log(jg.sigmoid({x}))",
    # a detour through float64 (a float32 program computes this part in float64)
    "jg.cast(jg.sin(jg.cast({x}, jg.float64)) * 2.0, {x}.dtype)",
]
EXP_LIKE = ["jg.exp({x})", "jg.expm1({x})", "jg.sinh({x})", "jg.cosh({x})"]
KINKED_UNARY = [
    "jg.abs({x})",
    "abs({x})",
    "jg.nn.relu({x})",
    "jg.nn.relu6({x} * 4.0)",
    "jg.nn.leaky_relu({x})",
    "jg.nn.elu({x})",
    "jg.nn.selu({x})",
    "jg.nn.softsign({x})",
    "jg.clip_by_value({x}, -0.5, 0.75)",
]
PIECEWISE_CONSTANT = ["jg.sign({x})", "jg.floor({x})", "jg.round({x})"]
SCALAR_FORMS = ["{x} * {c}", "{c} * {x}", "{x} + {c}", "{c} - {x}", "{x} / {c}", "{c} + {x}"]
CONSTANTS = [0.5, 2.0, -1.5, 0.25, 3.0, -0.75]


def op_unary(b: Builder) -> None:
    x = b.pick()
    b.emit(b.choice(SMOOTH_UNARY).format(x=b.bounded(x, 50.0)))


def op_exp_like(b: Builder) -> None:
    x = b.pick()
    b.emit(b.choice(EXP_LIKE).format(x=b.bounded(x, 3.0)))


def op_kinked(b: Builder) -> None:
    x = b.pick()
    b.emit(b.choice(KINKED_UNARY).format(x=x.name))


def op_piecewise_constant(b: Builder) -> None:
    x = b.pick()
    if x.ndim and b.bool():
        # integers inside the kernel: the largest entry of each row, through argmax/one_hot
        b.emit(
            f"jg.one_hot(jg.argmax({x.name}, axis=-1), {x.shape[-1]}, dtype={x.name}.dtype)"
            f" * {x.name}"
        )
        return
    y = b.partner(x)
    b.emit(f"{y.name} * {b.choice(PIECEWISE_CONSTANT).format(x=x.name)}")


def op_scalar(b: Builder) -> None:
    x = b.pick()
    b.emit(b.choice(SCALAR_FORMS).format(x=b.bounded(x, 50.0), c=fmt(b.choice(CONSTANTS))))


BINARY = [
    "{x} * {y}",
    "{x} + {y}",
    "{x} - {y}",
    "jg.add({x}, {y})",
    "jg.subtract({x}, {y})",
    "jg.multiply({x}, {y})",
    "{x} / ({y} * {y} + 1.0)",
    "jg.divide({x}, jg.sigmoid({y}) + 0.5)",
    "jg.square({x} - {y})",
    "({x} * {x} + 0.5) ** jg.tanh({y})",
    "jg.maximum({x}, {y})",
    "jg.minimum({x}, {y})",
    "jg.maximum({x}, 0.25) * {y}",
]
COMPARISONS = [
    "{x} > {y}",
    "{x} < {y}",
    "{x} >= {y}",
    "{x} <= {y}",
    "jg.greater({x}, {y})",
    "jg.less({x}, 0.25)",
    "jg.logical_and({x} > -0.5, {y} < 0.5)",
    "jg.logical_or({x} > 1.0, jg.logical_not({y} > 0.0))",
]


def op_binary(b: Builder) -> None:
    x = b.pick()
    y = b.partner(x)
    if b.bool():
        x, y = y, x
    b.emit(b.choice(BINARY).format(x=b.bounded(x, 50.0), y=b.bounded(y, 50.0)))


def op_where(b: Builder) -> None:
    x = b.pick()
    y = b.partner(x)
    p = b.partner(x)
    q = b.partner(x)
    try:
        shape = np.broadcast_shapes(x.shape, y.shape, p.shape, q.shape)
    except ValueError:
        shape = None
    if shape is None or math.prod(shape) > b.max_size:
        q = p = x
    cond = b.choice(COMPARISONS).format(x=x.name, y=y.name)
    other = b.choice([f"{q.name} * 0.5", "0.0"])
    b.emit(f"jg.where({cond}, {p.name}, {other})")


REDUCTIONS = [
    "jg.reduce_sum({x}{a})",
    "jg.reduce_mean({x}{a})",
    "jg.reduce_max({x}{a})",
    "jg.reduce_min({x}{a})",
    "jg.reduce_logsumexp({x}{a})",
    "jg.nn.logsumexp({x}{a})",
    "jg.reduce_variance({x}{a})",
    "jg.reduce_std({x}{a})",
    "jg.reduce_prod({x}{a})",
]


def _axis_args(axis, keepdims: bool, method: bool = False) -> str:
    """', axis=..., keepdims=True' for functions; '(axis, True)'-style for methods."""
    if method:
        args = [repr(axis)] if axis is not None or keepdims else []
        return ", ".join(args + ["True"] * keepdims)
    parts = [f"axis={axis!r}"] if axis is not None else []
    parts += ["keepdims=True"] if keepdims else []
    return "".join(", " + p for p in parts)


def op_reduce(b: Builder) -> None:
    x = b.pick()
    axis = b.axis(x.ndim)
    keepdims = b.bool()
    axes = _axes(axis, x.ndim)
    count = math.prod(x.shape[a] for a in axes)
    form = b.choice(REDUCTIONS + ["{x}.sum({a})", "{x}.mean({a})"])
    if "std" in form:
        # sqrt(variance) is not differentiable where a slice is constant.
        var = np.var(x.value, axis=axes) if axes else np.zeros(x.shape)
        if count < 2 or np.min(var, initial=np.inf) < 1e-2:
            form = "jg.reduce_variance({x}{a})"
    source = x.name
    if "prod" in form:
        if count > 6:
            form = "jg.reduce_sum({x}{a})"
        else:
            source = b.bounded(x, 1.5)
    elif "logsumexp" not in form:
        source = b.bounded(x, 50.0)
    method = form.startswith("{x}.")
    if x.ndim and b.draw(st.sampled_from([False] * 5 + [True])):
        which = b.int(0, 1)
        b.emit(f"jg.nn.moments({b.bounded(x, 50.0)}, {list(axes)}, keepdims={keepdims})[{which}]")
    elif b.draw(st.sampled_from([False] * 7 + [True])):
        b.emit(f"jg.nn.l2_loss({b.bounded(x, 50.0)})")
    else:
        b.emit(form.format(x=source, a=_axis_args(axis, keepdims, method)))


def op_softmax(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 0:
        x = b.emit(f"jg.reshape({x.name}, (1,))")
    axis = b.int(-x.ndim, x.ndim - 1)
    form = b.choice(
        [
            "jg.nn.softmax({x}, axis={a})",
            "jg.nn.log_softmax({x}, axis={a})",
            "jg.nn.logsumexp({x}, axis={a}, keepdims=True)",
        ]
    )
    b.emit(form.format(x=b.bounded(x, 50.0), a=axis))


def op_xent(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 0:
        x = b.emit(f"jg.reshape({x.name}, (1,))")
    y = b.partner(x, same_shape=True)
    if b.bool():
        b.emit(
            f"jg.nn.softmax_cross_entropy_with_logits(labels=jg.nn.softmax({y.name}), "
            f"logits={b.bounded(x, 50.0)})"
        )
    else:
        b.emit(
            f"jg.nn.sigmoid_cross_entropy_with_logits(labels=jg.sigmoid({y.name}), "
            f"logits={b.bounded(x, 50.0)})"
        )


def op_matmul(b: Builder) -> None:
    a = b.pick()
    if a.ndim == 0:
        a = b.emit(f"jg.reshape({a.name}, (1, 1))")
    k = a.shape[-1]
    vec_b = a.ndim >= 2 and b.draw(st.sampled_from([False, False, True]))
    # b: an existing (..., k, m) or (k,) value, or a new input
    ok = [
        v
        for v in b.pool
        if v is not a
        and v.ndim >= 1
        and (
            (v.ndim == 1 and v.shape[0] == k and a.ndim >= 2)
            or (v.ndim >= 2 and v.shape[-2] == k and _matmul_shape(a.shape, v.shape))
        )
    ]
    if ok and b.bool():
        rhs = b.pick(ok)
    else:
        m = b.int(1, 4)
        rhs = b.new_input((k,) if vec_b else (k, m))
    shape = _matmul_shape(a.shape, rhs.shape)
    if shape is None or math.prod(shape) > b.max_size:
        rhs = b.new_input((k,) if a.ndim >= 2 else (k, 1))
    lhs_src, rhs_src = b.bounded(a, 20.0), b.bounded(rhs, 20.0)
    form = b.choice(["jg.matmul({a}, {b})", "{a} @ {b}", "transposed"])
    if form == "transposed" and a.ndim >= 2 and rhs.ndim >= 2:
        # matmul(a^T, b^T, transpose_a=True, transpose_b=True) == a @ b
        lhs_t = b.emit(f"jg.matrix_transpose({lhs_src})").name
        rhs_t = b.emit(f"jg.matrix_transpose({rhs_src})").name
        b.emit(f"jg.matmul({lhs_t}, {rhs_t}, transpose_a=True, transpose_b=True)")
    else:
        b.emit(
            (form if form != "transposed" else "jg.matmul({a}, {b})").format(a=lhs_src, b=rhs_src)
        )


def _matmul_shape(sa, sb):
    """numpy's matmul shape rule, or None when the shapes do not contract."""
    if not sa or not sb:
        return None
    a, b = (sa if len(sa) > 1 else (1,) + sa), (sb if len(sb) > 1 else sb + (1,))
    if a[-1] != b[-2]:
        return None
    try:
        batch = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return None
    return batch + (a[-2],) * (len(sa) > 1) + (b[-1],) * (len(sb) > 1)


def op_einsum(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 2:
        n, k = x.shape
        eq = b.choice(["ij,jk->ik", "ij,kj->ik", "ij,ij->i", "ij->ji", "ij,j->i"])
        shapes = {
            "ij,jk->ik": (k, b.int(1, 3)),
            "ij,kj->ik": (b.int(1, 3), k),
            "ij,ij->i": (n, k),
            "ij->ji": None,
            "ij,j->i": (k,),
        }[eq]
    elif x.ndim == 1:
        eq = b.choice(["i,i->", "i,j->ij"])
        shapes = x.shape if eq == "i,i->" else (b.int(1, 3),)
    else:
        return op_reduce(b)
    if shapes is None:
        b.emit(f"jg.einsum({eq!r}, {x.name})")
        return
    y = b.new_input(shapes)
    b.emit(f"jg.einsum({eq!r}, {b.bounded(x, 20.0)}, {y.name})")


def _factorizations(size: int) -> list[tuple[int, ...]]:
    out = [(size,)]
    for a in range(1, size + 1):
        if size % a == 0:
            out.append((a, size // a))
            for c in range(1, size // a + 1):
                if (size // a) % c == 0:
                    out.append((a, c, size // a // c))
    return out


def op_reshape(b: Builder) -> None:
    x = b.pick()
    target = list(b.choice(_factorizations(x.size) + [()] * (x.size == 1)))
    if target and b.bool():
        target[b.int(0, len(target) - 1)] = -1
    form = b.choice(["jg.reshape({x}, {s})", "{x}.reshape({s})"])
    b.emit(form.format(x=x.name, s=tuple(target)))


def op_transpose(b: Builder) -> None:
    x = b.pick()
    if x.ndim < 2:
        b.emit(f"jg.expand_dims({x.name}, {b.int(-x.ndim - 1, x.ndim)})")
        return
    perm = list(b.draw(st.permutations(range(x.ndim))))
    form = b.choice(["perm", "default", "T", "matrix"])
    if form == "perm":
        b.emit(f"jg.transpose({x.name}, {[p - x.ndim if b.bool() else p for p in perm]})")
    elif form == "default":
        b.emit(f"jg.transpose({x.name})")
    elif form == "T":
        b.emit(f"{x.name}.T")
    else:
        b.emit(f"jg.matrix_transpose({x.name})")


def op_expand_squeeze(b: Builder) -> None:
    x = b.pick()
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    if ones and b.bool():
        if b.bool():
            b.emit(f"jg.squeeze({x.name})")
        else:
            i = b.choice(ones)
            b.emit(f"jg.squeeze({x.name}, {[i - x.ndim if b.bool() else i]})")
    elif x.ndim < 4:
        b.emit(f"jg.expand_dims({x.name}, {b.int(-x.ndim - 1, x.ndim)})")
    else:
        b.emit(f"jg.reshape({x.name}, (-1,))")


def _slice_item(b: Builder, n: int) -> str:
    """A non-empty slice of an axis of length n, as source text."""
    step = b.choice([1, 1, 2, -1, -2])
    start = b.int(0, n - 1)
    if step > 0:
        stop = b.int(start + 1, n)
        parts = [str(start) if start else "", str(stop) if stop != n else ""]
    else:
        stop = b.int(-1, start - 1)
        parts = [str(start), str(stop) if stop >= 0 else ""]
    if start and b.bool():
        parts[0] = str(start - n)
    text = ":".join(parts)
    return text + (f":{step}" if step != 1 else "")


def op_slice(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 0:
        b.emit(f"{x.name}[None]")
        return
    form = b.choice(["getitem", "getitem", "slice", "reverse", "split"])
    if form == "split":
        axis = b.int(-x.ndim, x.ndim - 1)
        n = x.shape[axis]
        if n % 2 == 0 and b.bool():
            b.emit(f"jg.split({x.name}, 2, axis={axis})[{b.int(0, 1)}]")
        else:
            b.emit(f"jg.unstack({x.name}, axis={axis})[{b.int(-n, n - 1)}]")
    elif form == "reverse":
        b.emit(f"{x.name}[::-1]")
    elif form == "slice":
        begin = [b.int(0, n - 1) for n in x.shape]
        size = [b.choice([-1, b.int(1, n - s)]) for n, s in zip(x.shape, begin)]
        b.emit(f"jg.slice({x.name}, {begin}, {size})")
    else:
        items = []
        for n in x.shape:
            kind = b.choice(["slice", "slice", "int", "full"])
            if kind == "int":
                items.append(str(b.int(-n, n - 1)))
            elif kind == "full":
                items.append(":")
            else:
                items.append(_slice_item(b, n))
        if b.draw(st.sampled_from([False, False, True])):
            items.insert(b.int(0, len(items)), "None")
        if len(items) > 1 and items[-1] == ":" and b.bool():
            items[-1] = "..."
        b.emit(f"{x.name}[{', '.join(items)}]")


def op_concat(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 0:
        x = b.emit(f"jg.reshape({x.name}, (1,))")
    if b.bool():
        axis = b.int(-x.ndim, x.ndim - 1)
        shape = list(x.shape)
        shape[axis] = b.int(1, 3)
        same = [v for v in b.pool if v.shape == tuple(shape)]
        y = b.pick(same) if same and b.bool() else b.new_input(shape)
        if (x.size + y.size) <= b.max_size:
            b.emit(f"jg.concat([{x.name}, {y.name}], {axis})")
            return
    y = b.partner(x, same_shape=True)
    if 2 * x.size <= b.max_size:
        b.emit(f"jg.stack([{x.name}, {y.name}], {b.int(-x.ndim - 1, x.ndim)})")
    else:
        b.emit(f"jg.concat([{x.name}, jg.sin({y.name})], 0)")


def op_tile_pad_broadcast(b: Builder) -> None:
    x = b.pick()
    form = b.choice(["tile", "pad", "broadcast_to"])
    if form == "tile" and x.ndim:
        reps = [b.int(1, 2) for _ in x.shape]
        if x.size * math.prod(reps) <= b.max_size:
            b.emit(f"jg.tile({x.name}, {reps})")
            return
    if form == "pad" and x.ndim:
        pads = [[b.int(0, 1), b.int(0, 1)] for _ in x.shape]
        size = math.prod(n + p + q for n, (p, q) in zip(x.shape, pads))
        if size <= b.max_size:
            value = b.choice([0, 1.5])
            b.emit(f"jg.pad({x.name}, {pads}, constant_values={value})")
            return
    shape = [1 if d == 1 and b.bool() else d for d in x.shape]
    shape = [b.int(1, 3) if d == 1 else d for d in shape]
    if x.ndim < 3 and b.bool():
        shape = [b.int(1, 3)] + shape
    if math.prod(shape) > b.max_size:
        shape = list(x.shape)
    b.emit(f"jg.broadcast_to({x.name}, {tuple(shape)})")


def op_gather(b: Builder) -> None:
    x = b.pick()
    if x.ndim == 0:
        x = b.emit(f"jg.reshape({x.name}, (1,))")
    axis = b.int(0, x.ndim - 1)
    n = x.shape[axis]
    count = b.int(1, 4)
    if x.size // n * count > b.max_size:
        count = 1
    idx = b.rng.integers(-n, n, count)
    b.emit(f"jg.gather({x.name}, {array_literal(idx.astype(np.int64))}, axis={axis})")


def op_stop_gradient(b: Builder) -> None:
    x = b.pick()
    y = b.partner(x)
    b.emit(f"{x.name} * jg.stop_gradient({y.name})")


# Relative frequencies: math first, shape plumbing often, exotic rarely; stop_gradient is rare
# because finite differences cannot check a program that contains it.
OP_WEIGHTS = {
    op_unary: 12,
    op_binary: 12,
    op_scalar: 4,
    op_reduce: 10,
    op_matmul: 6,
    op_exp_like: 4,
    op_kinked: 4,
    op_softmax: 4,
    op_reshape: 4,
    op_transpose: 4,
    op_slice: 6,
    op_expand_squeeze: 2,
    op_concat: 4,
    op_where: 4,
    op_tile_pad_broadcast: 4,
    op_gather: 2,
    op_xent: 2,
    op_einsum: 2,
    op_piecewise_constant: 2,
    op_stop_gradient: 1,
}
OPS = list(OP_WEIGHTS)
_WEIGHTED_OPS = [op for op, w in OP_WEIGHTS.items() for _ in range(w)]
# float32 in ~40% of the examples (as drawn by `cycle`): it found the typing bugs so far
DTYPE_CHOICES = [np.dtype(np.float64), np.dtype(np.float32)]


def cycle(options: list) -> st.SearchStrategy:
    """One of `options` with their given frequencies (st.sampled_from draws the first entry far
    more often than the others); shrinks towards the first."""
    return st.integers(0, 2**16 - 1).map(lambda k: options[k % len(options)])


@st.composite
def programs(draw, max_ops: int = 8, max_programs: int = 3, dtypes=None, large=None):
    """A Program: 1..max_programs independent sub-programs of 1..max_ops ops each, compiled
    together as ONE function returning all their outputs (one compile per example). `large`
    (default: 1 in 12) makes one short float64 program on arrays of ~2**17 elements."""
    if large is None:
        large = draw(cycle([False] * 11 + [True]), label="large")
    dtype = np.dtype(np.float64) if large else draw(cycle(dtypes or DTYPE_CHOICES), label="dtype")
    seed = draw(st.integers(0, 2**32 - 1), label="values seed")
    b = Builder(draw, np.random.default_rng(seed), dtype=dtype)
    if large:
        b.max_size = 3 * LARGE
        max_ops, max_programs = min(max_ops, 4), 1
    outputs = []
    for part in range(draw(st.integers(1, max_programs), label="sub-programs")):
        b.pool = []
        b.lines.append(f"# part {part}")
        b.new_input(b.choice(LARGE_SHAPES) if large else b.shape())
        for _ in range(draw(st.integers(1, max_ops), label="ops")):
            op = draw(st.sampled_from(_WEIGHTED_OPS))
            op(b)
        results = [v for v in b.pool if v.name.startswith("v")]
        chosen = [results[-1]]
        for _ in range(draw(st.integers(0, 1))):
            v = b.pick(results)
            if v not in chosen:
                chosen.append(v)
        outputs += chosen
    body = "\n".join(f"    {line}" for line in b.lines)
    outs = "".join(f"{v.name}, " for v in outputs)
    source = f"def program({', '.join(x.name for x in b.inputs)}):\n{body}\n    return ({outs})\n"
    return Program(source, [x.value for x in b.inputs], dtype, literals=tuple(b.literals))


# ---------------------------------------------------------------------------------------------
# The differential check


@contextlib.contextmanager
def eager_only():
    """The eager reference, op by op. A tape compiles a backward kernel the second time it sees
    the same recorded structure (jitgrad.compiler.tape_backward), which would make the reference a
    compiled one and cost a Numba compile per finite-difference step; an enclosing recording
    tape keeps nested tapes on the eager path (it watches nothing, so it records nothing)."""
    with jg.GradientTape(watch_accessed_variables=False):
        yield


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in pytree.flatten(tree)[0]]


def assert_close(compiled, eager, rtol: float, scale: float, what: str) -> None:
    """|compiled - eager| <= rtol (|eager| + max |eager| of the leaf + scale), element-wise.

    rtol alone is meaningless where a value cancels (x - y with x ~ y, a softmax gradient that
    sums to ~0, a long chain of mixed-sign terms): both sides then carry rounding errors of the
    order of ulp(largest magnitude that flowed into the value), not of ulp(value). The rounding
    error of each result is bounded by (a few ulps per op) x (the magnitudes it was computed
    from), so the absolute part of the tolerance is rtol times the largest magnitude in the
    computation (`scale`: the largest intermediate for values, the largest cotangent for
    gradients) and in the leaf. A real miscompilation is off by O(|value|), far beyond either.
    """
    c_leaves, c_tree = pytree.flatten(compiled)
    e_leaves, e_tree = pytree.flatten(eager)
    assert c_tree == e_tree, f"{what}: structure {c_tree} (compiled) vs {e_tree} (eager)"
    for i, (c, e) in enumerate(zip(c_leaves, e_leaves)):
        c, e = np.asarray(c), np.asarray(e)
        assert c.shape == e.shape and c.dtype == e.dtype, (
            f"{what}[{i}]: compiled {c.dtype}{list(c.shape)} vs eager {e.dtype}{list(e.shape)}"
        )
        leaf_scale = float(np.max(np.abs(e), initial=0.0))
        tol = rtol * (np.abs(e) + leaf_scale + scale)
        bad = ~(np.abs(c.astype(np.float64) - e) <= tol)
        if bad.any():
            k = int(np.argmax(bad))
            raise AssertionError(
                f"{what}[{i}]: compiled != eager at {int(bad.sum())} of {e.size} elements, "
                f"e.g. flat index {k}: compiled {c.flat[k]!r} vs eager {e.flat[k]!r} "
                f"(tolerance {tol.flat[k]:.3g}; shape {list(e.shape)})\n"
                f"compiled: {c.tolist()!r}\neager:    {e.tolist()!r}"
            )


@dataclass
class Checks:
    """The pieces of one check, built from a program and a seed for the random projections."""

    program: Program
    seed: int = 0

    def __post_init__(self):
        self.fn = self.program.function()
        rng = np.random.default_rng(self.seed)
        outs = leaves(self.fn(*[Tensor(x) for x in self.program.inputs]))
        self.weights = [rng.standard_normal(o.shape) for o in outs]
        self.cotangents = [rng.standard_normal(x.shape) for x in self.program.inputs]
        self.directions = [rng.standard_normal(x.shape) for x in self.program.inputs]
        self.wrt = tuple(range(len(self.program.inputs)))

    def loss(self, dtype):
        """x -> (sum_k <w_k, out_k>, outs): a random-weighted scalar loss, outputs as aux."""
        weights = [w.astype(dtype) for w in self.weights]
        fn = self.fn

        def loss(*xs):
            outs = fn(*xs)
            total = jg.reduce_sum(outs[0] * weights[0])
            for o, w in zip(outs[1:], weights[1:]):
                total = total + jg.reduce_sum(o * w)
            return total, outs

        loss.__name__ = loss.__qualname__ = f"loss_{self.program.tag}"
        return loss

    def second(self, dtype):
        """x -> (<u, grad loss(x)>, {loss, grads, outs}): its gradient is a Hessian-vector
        product, so one kernel gives values, first and second derivatives."""
        us = [u.astype(dtype) for u in self.cotangents]
        vg = jg.value_and_grad(self.loss(dtype), self.wrt, has_aux=True)

        def second(*xs):
            (value, outs), grads = vg(*xs)
            total = jg.reduce_sum(grads[0] * us[0])
            for g, u in zip(grads[1:], us[1:]):
                total = total + jg.reduce_sum(g * u)
            return total, {"loss": value, "grads": grads, "outs": outs}

        second.__name__ = second.__qualname__ = f"second_{self.program.tag}"
        return second


def cotangent_scale(program: Program, weights) -> float:
    """The largest |d loss / d v| over the inputs and every intermediate v (eager, float64):
    the magnitude scale of the backward pass, for the absolute part of gradient tolerances."""
    fn = program.function_with_values()
    xs = [Tensor(x) for x in program.inputs]
    with eager_only():
        with jg.GradientTape() as tape:
            tape.watch(xs)
            outs, values = fn(*xs)
            loss = sum(jg.reduce_sum(o * w) for o, w in zip(outs, weights))
        cts = tape.gradient(loss, xs + values, unconnected_gradients="zero")
    return max(float(np.max(np.abs(np.asarray(c)), initial=0.0)) for c in cts)


def richardson(f, x: list[np.ndarray], v: list[np.ndarray], h: float) -> float:
    """d/dt f(x + t v) at 0 by central differences, Richardson-extrapolated (error O(h^4))."""

    def central(step):
        plus = f([xi + step * vi for xi, vi in zip(x, v)])
        minus = f([xi - step * vi for xi, vi in zip(x, v)])
        return (plus - minus) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


STEPS = (1e-4, 1e-3)


def finite_difference_check(f, analytic: float, x, v, scale: float, what: str) -> str:
    """Compare `analytic` (the autodiff directional derivative) with finite differences of the
    scalar function `f` along v. Returns 'checked', or 'kink' when the two step sizes disagree
    (a kink, a jump or a tie lies within reach of the steps: the point is not smooth enough)."""
    d1, d2 = (richardson(f, x, v, h) for h in STEPS)
    # Rounding in f is ~1e-16 * scale; divided by the step 1e-4 (and x3 for the
    # extrapolation) that is ~1e-11 * scale, so 1e-8 * scale leaves a margin of 1000.
    atol = 1e-8 * scale
    if abs(d1 - d2) > 1e-6 * max(abs(d1), abs(d2)) + atol:
        return "kink"
    tol = 1e-5 * max(abs(d1), abs(analytic)) + atol
    assert abs(d1 - analytic) <= tol, (
        f"{what}: autodiff {analytic!r} vs finite differences {d1!r} (steps {STEPS[0]}: {d1!r},"
        f" {STEPS[1]}: {d2!r}; difference {abs(d1 - analytic):.3g}, tolerance {tol:.3g})"
    )
    return "checked"


MODES = ("value", "grad", "grad2", "tape")


def check_program(
    program: Program, mode: str = "grad", seed: int = 0, finite_differences: bool = True
) -> dict:
    """Run the differential checks on `program`; returns what was checked (for statistics).
    Raises AssertionError naming the first mismatch.

    `mode` picks the ONE compiled kernel (each costs a Numba compile): "value", `jit` of the
    program; "grad", `jit_grad` of the weighted loss with the program's outputs as aux;
    "grad2", `jit_grad` of <u, grad loss> with the outputs, loss and gradients as aux; "tape",
    the eager tape's compiled backward pass (jitgrad.compiler.tape_backward compiles the
    backward of a structure it records a second time). The eager reference runs the same
    function op by op.
    Each compiled function is called twice, at x and at x + 1e-3 v: the second call takes the
    hot path, and must not overwrite the first call's results (output buffers are reused when
    the caller no longer holds them). Finite differences (eager, float64) check first and
    second derivatives in every mode."""
    checks = Checks(program, seed)
    fn, dtype = checks.fn, program.dtype
    rtol = RTOL[dtype]
    # The backward pass multiplies cotangents by local derivatives (an operand, exp(x), ...):
    # its terms are bounded by the largest cotangent times the largest forward value.
    grad_scale = cotangent_scale(program, checks.weights) * max(1.0, program.scale)
    scales = {"outs": program.scale, "loss": _loss_scale(checks), "grads": grad_scale}
    u_max = max(float(np.max(np.abs(u), initial=0.0)) for u in checks.cotangents)
    # <u, grad loss> and its gradient: the products of the backward pass once more, by u.
    scales["second"] = grad_scale * _norm1(checks.cotangents)
    scales["hvp"] = grad_scale * max(1.0, program.scale) * u_max
    points = [
        program.args(),
        [(x + 1e-3 * v).astype(dtype) for x, v in zip(program.inputs, checks.directions)],
    ]
    report = {}

    if mode == "value":

        def eager(xs):
            with eager_only():
                return {"outs": fn(*[Tensor(x) for x in xs])}

        jf = jg.jit(fn)

        def compiled(xs):
            return {"outs": jf(*xs)}
    else:
        target = checks.second(dtype) if mode == "grad2" else checks.loss(dtype)
        vg = jg.value_and_grad(target, checks.wrt, has_aux=True)

        def named(result):
            (value, aux), grads = result
            if mode == "grad2":
                return {**aux, "second": value, "hvp": grads}
            return {"outs": aux, "loss": value, "grads": grads}

        def eager(xs):
            with eager_only():
                return named(vg(*[Tensor(x) for x in xs]))

        if mode == "tape":
            from jitgrad.compiler import tape_backward

            before = tape_backward.stats["compiled"]

            def compiled(xs):
                vg(*[Tensor(x) for x in xs])  # recorded once: the next one is compiled
                return named(vg(*[Tensor(x) for x in xs]))
        else:
            jf = jg.jit_grad(target, wrt=checks.wrt, has_aux=True)

            def compiled(xs):
                return named(jf(*xs))

    results = [compiled(xs) for xs in points]
    if mode == "tape":
        report["tape backward"] = (
            "compiled" if tape_backward.stats["compiled"] > before else "eager"
        )
    for k, (xs, result) in enumerate(zip(points, results)):
        reference = eager(xs)
        what = f"{'jit' if mode == 'value' else 'tape' if mode == 'tape' else 'jit_grad'}"
        for name, value in reference.items():
            assert_close(
                result[name],
                value,
                rtol,
                scales[name],
                f"{what} {name}{' (second call, at x + 1e-3 v)' if k else ''}",
            )

    if finite_differences and program.differentiable:
        report.update(_finite_differences(checks, program.args(np.float64), grad_scale))
    return report


def _norm1(arrays) -> float:
    return sum(float(np.sum(np.abs(a))) for a in arrays)


def _loss_scale(checks: Checks) -> float:
    return checks.program.scale * _norm1(checks.weights)


def _finite_differences(checks: Checks, x64: list[np.ndarray], grad_scale: float) -> dict:
    """First and second directional derivatives (eager tape, float64) vs finite differences
    along the random direction v: d/dt loss(x + t v) and d/dt <u, grad loss(x + t v)>."""
    loss = checks.loss(np.float64)
    second = checks.second(np.float64)
    wrt, v, us = checks.wrt, checks.directions, checks.cotangents

    def dot(arrays, others) -> float:
        return sum(float(np.sum(np.asarray(a) * b)) for a, b in zip(arrays, others))

    def loss_value(xs):
        with eager_only():
            return float(np.asarray(loss(*[Tensor(x) for x in xs])[0]))

    def projected_grad(xs):
        with eager_only():
            return float(np.asarray(second(*[Tensor(x) for x in xs])[0]))

    with eager_only():
        _, grads = jg.value_and_grad(loss, wrt, has_aux=True)(*[Tensor(x) for x in x64])
        _, hvp = jg.value_and_grad(second, wrt, has_aux=True)(*[Tensor(x) for x in x64])
    return {
        "first order": finite_difference_check(
            loss_value, dot(grads, v), x64, v, _loss_scale(checks), "<grad loss, v>"
        ),
        "second order": finite_difference_check(
            projected_grad, dot(hvp, v), x64, v, grad_scale * _norm1(us), "<u, hessian v>"
        ),
    }
