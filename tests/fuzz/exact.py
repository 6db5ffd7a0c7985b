"""Random programs whose compiled results must equal eager ones bit for bit.

Two families, drawn by `programs()` in place of some float programs (programs.py):

* integer programs (int8/16/32/64, uint8) over +, -, *, //, %, negation, abs, sign,
  maximum/minimum, where, casts between integer types and the reductions, on inputs that
  include each type's minimum and maximum, 0 and -1: every result must wrap as numpy's;
* IEEE programs (float32/float64) over exactly rounded ops (+, -, *, /, sqrt, negation, abs,
  sign, floor, ceil, maximum/minimum, where, comparisons, the simplifier's identities x + 0.0,
  0.0 - x, x ** 0.5, ...) on inputs drawn from -0.0, +-inf, NaN, denormals and magnitudes
  whose products overflow.

Compiled and eager results are compared with `assert_same_bits`: equal dtype, shape and bits,
-0.0 apart from +0.0, any NaN for any NaN. The kernels are compiled with fastmath's `reassoc`
and `contract` (emit.py), under which LLVM may fuse `x * y + z` into one rounding or regroup
`(x * a) * b`: an arithmetic op therefore never takes the result of another one directly
(a `max`, `where`, `sqrt`... in between is fine). Integer programs have no such limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import jitgrad as jg
from fuzz.programs import Builder, Var, _axis_args, compile_source, cycle, eager_only
from jitgrad.core.tensor import Tensor

INTEGER_DTYPES = [np.dtype(t) for t in (np.int32, np.uint8, np.int64, np.int8, np.int16)]
FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ARITHMETIC = ("+", "-", "*", "/", "//", "%")


@dataclass
class ExactProgram:
    """Source of `def program(x0, ...) -> tuple` and its inputs, in their own dtypes. Its repr
    rebuilds it (paste a falsifying example into test_regressions.py)."""

    source: str
    inputs: list[np.ndarray]
    literals: tuple[str, ...]
    differentiable = False

    @property
    def dtype(self) -> np.dtype:
        return self.inputs[0].dtype

    def __repr__(self) -> str:
        return f"ExactProgram({self.source!r}, [{', '.join(self.literals)}], ())"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))

    def __str__(self) -> str:
        return f"{self.source}\ninputs = [{', '.join(self.literals)}]"


def exact_literal(x: np.ndarray) -> str:
    """np.array(...) source that recreates x exactly, dtype and the sign of zeros included."""
    values = [float(v) if x.dtype.kind == "f" else int(v) for v in x.reshape(-1)]
    text = ", ".join(_float_text(v) if x.dtype.kind == "f" else str(v) for v in values)
    return f"np.array([{text}], np.{x.dtype.name}).reshape({x.shape!r})"


def _float_text(v: float) -> str:
    if np.isnan(v):
        return "np.nan"
    if np.isinf(v):
        return "-np.inf" if v < 0 else "np.inf"
    return repr(v)


def assert_same_bits(compiled, reference, what: str) -> None:
    compiled, reference = np.asarray(compiled), np.asarray(reference)
    assert compiled.dtype == reference.dtype and compiled.shape == reference.shape, (
        f"{what}: compiled {compiled.dtype}{list(compiled.shape)} vs eager "
        f"{reference.dtype}{list(reference.shape)}"
    )
    if reference.dtype.kind == "f":
        nan = np.isnan(compiled) & np.isnan(reference)
        same = (compiled == reference) & (np.signbit(compiled) == np.signbit(reference))
        bad = ~(nan | same)
    else:
        bad = compiled != reference
    if bad.any():
        k = int(np.argmax(bad))
        raise AssertionError(
            f"{what}: compiled != eager bit for bit at {int(bad.sum())} of {bad.size} elements, "
            f"e.g. flat index {k}: compiled {compiled.flat[k]!r} vs eager {reference.flat[k]!r}"
            f"\ncompiled: {compiled.tolist()!r}\neager:    {reference.tolist()!r}"
        )


def check_exact(program: ExactProgram) -> None:
    """jit(program) == program on eager tensors, bit for bit, for every output."""
    fn = compile_source(program.source)
    with eager_only(), np.errstate(all="ignore"):
        reference = fn(*[Tensor(x) for x in program.inputs])
    compiled = jg.jit(fn)(*program.inputs)
    assert len(compiled) == len(reference)
    for i, (c, e) in enumerate(zip(compiled, reference)):
        assert_same_bits(c, e, f"jit output {i}")


# ---------------------------------------------------------------------------------------------
# The generator


class ExactBuilder(Builder):
    """A Builder whose values keep their dtype and may be anything (inf, NaN, wrapped)."""

    arithmetic: set

    def new_input(self, shape) -> Var:
        x = self.values(tuple(shape))
        return self._add_input(x, exact_literal(x))

    def values(self, shape) -> np.ndarray:
        """Mostly special values of the dtype, some ordinary ones."""
        specials = special_values(self.dtype)
        ordinary = (
            self.rng.integers(-100, 101, shape)
            if self.dtype.kind != "f"
            else np.round(self.rng.standard_normal(shape) * 4, 2)
        )
        pick = self.rng.integers(0, len(specials), shape)
        x = np.where(self.rng.random(shape) < 0.6, np.asarray(specials)[pick], ordinary)
        return np.asarray(x).astype(self.dtype)

    def emit(self, expr: str, arithmetic: bool = False) -> Var:
        name = f"v{self.n_values}"
        self.n_values += 1
        line = f"{name} = {expr}"
        with np.errstate(all="ignore"):
            exec(line, self.env)  # noqa: S102 - generated from our own templates
        self.lines.append(line)
        var = Var(name, np.asarray(self.env[name]))
        self.pool.append(var)
        if arithmetic:
            self.arithmetic.add(name)
        return var

    def plain(self) -> Var:
        """A value that is no arithmetic result (see the module docstring), of a numeric dtype."""
        ok = [v for v in self.pool if v.name not in self.arithmetic and v.value.dtype != bool]
        return self.pick(ok) if ok else self.new_input(self.shape())

    def plain_partner(self, x: Var) -> Var:
        y = self.partner(x)
        if y.name in self.arithmetic or y.value.dtype != x.value.dtype:
            y = self.new_input(y.shape)
        return y


def special_values(dtype: np.dtype) -> list:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = [info.min, info.max, info.min + 1, info.max - 1, 0, 1, 2, info.max // 2 + 1]
        return out + ([-1, -2] if dtype.kind == "i" else [])
    info = np.finfo(dtype)
    tiny, sub = float(info.smallest_normal), float(info.smallest_subnormal)
    big = float(info.max)
    return [
        -0.0,
        0.0,
        np.inf,
        -np.inf,
        np.nan,
        sub,
        -sub,
        tiny,
        -tiny,
        tiny * 0.75,
        big,
        -big,
        big / 3,
        2.0 ** (info.maxexp // 2 + 1),
        -1.0,
        1.0,
        0.5,
    ]


INTEGER_BINARY = [
    "{x} + {y}",
    "{x} - {y}",
    "{x} * {y}",
    "jg.maximum({x}, {y})",
    "jg.minimum({x}, {y})",
    "{x} // {y}",
    "{x} % {y}",
    "jg.where({x} > {y}, {x}, {y})",
    "jg.where({x} <= {y}, {y} - {x}, {x})",
]
INTEGER_UNARY = [
    "-{x}",
    "jg.abs({x})",
    "jg.sign({x})",
    "{x} + 1",
    "{x} - 3",
    "{x} * 7",
    "{x} // 3",
    "{x} % 5",
    "jg.cast({x}, jg.{other})",
]
FLOAT_BINARY = [
    "{x} + {y}",
    "{x} - {y}",
    "{x} * {y}",
    "{x} / {y}",
    "jg.maximum({x}, {y})",
    "jg.minimum({x}, {y})",
    "jg.where({x} > {y}, {x}, {y})",
    "jg.where({x} == {y}, {y}, {x})",
]
FLOAT_UNARY = [
    "-{x}",
    "jg.abs({x})",
    "jg.sign({x})",
    "jg.sqrt({x})",
    "jg.floor({x})",
    "jg.ceil({x})",
    "{x} + 0.0",
    "0.0 - {x}",
    "{x} - 0.0",
    "{x} + -0.0",
    "-0.0 - {x}",
    "{x} * 1.0",
    "{x} / 1.0",
    "{x} * -1.0",
    "{x} ** 0.5",
    "{x} ** 2",
    "{x} ** 1.0",
    "{x} ** 0.0",
    "{x} ** -1.0",
    "jg.square({x})",
    "{x} * 2.0",
    "jg.maximum({x}, 0.0)",
    "jg.minimum({x}, -0.0)",
    "jg.nn.relu({x})",
    "jg.cast({x}, jg.{other})",
]
REDUCE = ["jg.reduce_max({x}{a})", "jg.reduce_min({x}{a})"]
INTEGER_REDUCE = REDUCE + [
    "jg.reduce_sum({x}{a})",
    "jg.reduce_prod({x}{a})",
    "jg.reduce_mean({x}{a})",
]


def _arithmetic(form: str) -> bool:
    """Whether `form` rounds an arithmetic result LLVM could fuse or regroup with another."""
    return any(f" {op} " in form for op in ARITHMETIC) or "**" in form or form.startswith("-")


def _other_dtype(b: ExactBuilder) -> str:
    options = INTEGER_DTYPES if b.dtype.kind in "iu" else FLOAT_DTYPES
    return b.choice([d.name for d in options if d != b.dtype])


def exact_op(b: ExactBuilder) -> None:
    integer = b.dtype.kind in "iu"
    kind = b.choice(["binary", "unary", "reduce"])
    x = (
        b.plain()
        if not integer
        else b.pick([v for v in b.pool if v.value.dtype == b.dtype] or [b.new_input(b.shape())])
    )
    if kind == "reduce" and x.ndim:
        axis = b.axis(x.ndim)
        form = b.choice(INTEGER_REDUCE if integer else REDUCE)
        b.emit(form.format(x=x.name, a=_axis_args(axis, b.bool())))
        return
    if kind == "binary":
        y = b.plain_partner(x) if not integer else b.partner(x)
        if y.value.dtype != x.value.dtype:
            y = b.new_input(y.shape)
        form = b.choice(INTEGER_BINARY if integer else FLOAT_BINARY)
        b.emit(form.format(x=x.name, y=y.name), arithmetic=_arithmetic(form))
        return
    form = b.choice(INTEGER_UNARY if integer else FLOAT_UNARY)
    if integer and x.value.dtype.kind == "u" and form.startswith("-"):
        form = "jg.abs({x})"
    out = b.emit(
        form.format(x=x.name, other=_other_dtype(b) if "{other}" in form else ""),
        arithmetic=_arithmetic(form),
    )
    if "cast" in form:
        b.pool.remove(out)  # another dtype: used as an output only


@st.composite
def exact_programs(draw, max_ops: int = 6):
    """An ExactProgram of one integer or float dtype (drawn), 1..max_ops ops, one compile."""
    dtype = draw(cycle(INTEGER_DTYPES[:3] + FLOAT_DTYPES + INTEGER_DTYPES[3:]), label="dtype")
    seed = draw(st.integers(0, 2**32 - 1), label="values seed")
    b = ExactBuilder(draw, np.random.default_rng(seed), dtype=dtype)
    b.arithmetic = set()
    b.new_input(b.shape())
    outputs = []
    for _ in range(draw(st.integers(1, max_ops), label="ops")):
        exact_op(b)
        outputs.append(b.lines[-1].split(" = ")[0])
    body = "\n".join(f"    {line}" for line in b.lines)
    chosen = sorted(set([outputs[-1]] + [outputs[draw(st.integers(0, len(outputs) - 1))]]))
    source = (
        f"def program({', '.join(x.name for x in b.inputs)}):\n{body}\n"
        f"    return ({''.join(f'{v}, ' for v in chosen)})\n"
    )
    return ExactProgram(source, [np.asarray(x.value) for x in b.inputs], tuple(b.literals))
