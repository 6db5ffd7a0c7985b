"""The graph IR: a flat, immutable SSA list of equations, printed one equation a line.

    { lambda a:f32[3] b:f32[] ;
        c:f32[3] = broadcast_to[shape=(3,)] b
        d:f32[3] = mul a c
      in (d) }

A `Var` is a value (its identity is its name); constants are Vars bound in `Graph.consts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jitgrad.core.aval import AVal


@dataclass(frozen=True, slots=True, eq=False)
class Var:
    """An SSA value of the graph. Compared and hashed by identity."""

    aval: AVal


@dataclass(frozen=True, slots=True, eq=False)
class Eqn:
    """`out = op[params](*inputs)`; the tape records the same shape with tensors as values."""

    op: Any  # OpDef
    inputs: tuple
    params: dict
    out: Any
    source: str | None = None  # the user's `file.py:line`, for error messages

    def params_key(self) -> tuple:
        """Params as a hashable, order-independent key (CSE, cache keys)."""
        return tuple(sorted((k, _hashable(v)) for k, v in self.params.items()))


def _hashable(value):
    if isinstance(value, np.dtype):
        return value.str
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    inputs: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Var, ...]
    consts: dict = field(default_factory=dict)  # Var -> np.ndarray
    # Var -> the Eqn whose VJP stands for the op defining Var (custom_gradient: the forward is
    # a stop_gradient of the body's value, the user's rule its gradient). Only autodiff reads
    # it; passes drop it.
    custom_vjps: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return format_graph(self)


def _param_text(value) -> str:
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, Graph):
        return "\n      " + format_graph(value).replace("\n", "\n      ")
    return repr(value)


def letters(n: int) -> str:
    """The printer's name of value number `n`: a, b, ..., z, aa, ab, ..."""
    name = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        name = chr(97 + r) + name
    return name


def value_numbers(graph: Graph) -> dict[Var, int]:
    """Each value's number, in the printer's order: the inputs, the constants, then each
    equation's output. `str(graph)` names value `n` `letters(n)`; the Numba kernel calls it
    `v{n}` (and names its legend after this function)."""
    numbers: dict[Var, int] = {}
    for v in (*graph.inputs, *graph.consts, *(e.out for e in graph.eqns)):
        numbers.setdefault(v, len(numbers))
    return numbers


def format_graph(graph: Graph) -> str:
    """The graph as text, one equation a line, like a jaxpr."""
    names = {v: letters(n) for v, n in value_numbers(graph).items()}

    def name(v: Var) -> str:
        if v not in names:  # read but never defined: only in a graph the verifier rejects
            names[v] = letters(len(names))
        return names[v]

    def typed(v: Var) -> str:
        return f"{name(v)}:{v.aval.short()}"

    lines = ["{ lambda " + " ".join(typed(v) for v in graph.inputs) + " ;"]
    for v, value in graph.consts.items():
        shown = np.array2string(np.asarray(value), threshold=6, separator=",")
        lines.append(f"    {typed(v)} = const {' '.join(shown.split())}")
    for e in graph.eqns:
        params = ", ".join(f"{k}={_param_text(v)}" for k, v in e.params.items())
        head = f"{e.op.name}[{params}]" if params else e.op.name
        lines.append(f"    {typed(e.out)} = {head} " + " ".join(name(v) for v in e.inputs))
    lines.append("  in (" + ", ".join(name(v) for v in graph.outputs) + ") }")
    return "\n".join(lines)
