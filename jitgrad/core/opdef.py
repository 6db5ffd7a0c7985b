"""OpDef: the one definition of a primitive, and the registry of all of them.

A primitive carries every facet the pipeline needs, side by side:

* `abstract_eval(*xs, **params) -> AVal`: the shape/dtype rule; it also validates inputs and
  raises the op's clear errors. `xs` are anything with `.shape` and `.dtype` (tensors, tracers);
* `impl(*arrays, **params) -> ndarray`: the eager numpy implementation;
* `vjp(g, out, *xs, **params) -> tuple`: one cotangent (or None) per input, written with
  jitgrad's own ops so the rule runs on tensors, on tracers, and is differentiable again.
  `NOT_DIFFERENTIABLE` marks ops whose gradient is None (comparisons, argmax, ...);
* `kind` and `template`: how the Numba backend emits it. For `elementwise` ops the template is a
  scalar expression over `{0}`, `{1}`, ... (e.g. `({0} * {1})`); other kinds are emitted by the
  backend's emitter for that kind. The op layer never imports numba.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = frozenset(
    {"elementwise", "reduce", "shape", "linalg", "index", "other"}
)


def NOT_DIFFERENTIABLE(*_args, **_params):  # noqa: N802 - a sentinel that reads like one
    """VJP of an op without a gradient (comparisons, argmax, ...): None for every input."""
    raise AssertionError("NOT_DIFFERENTIABLE is a marker, never called")


@dataclass(frozen=True, slots=True, eq=False)
class OpDef:
    name: str
    abstract_eval: Callable
    impl: Callable
    vjp: Callable
    kind: str
    template: str | None = None
    # Elementwise ops that need a helper from the vectorisable math module, per dtype.
    vmath: str | None = None
    doc: str = field(default="", repr=False)
    # Eager calls: (input shapes and dtypes, params) -> the AVal abstract_eval returned. The
    # rule runs once per signature, not per call (it costs more than most numpy calls).
    eager_avals: dict = field(default_factory=dict, repr=False)

    @property
    def differentiable(self) -> bool:
        return self.vjp is not NOT_DIFFERENTIABLE

    def __repr__(self) -> str:
        return f"<op {self.name}>"


REGISTRY: dict[str, OpDef] = {}


def defop(
    name: str,
    *,
    abstract_eval: Callable,
    impl: Callable,
    vjp: Callable,
    kind: str,
    template: str | None = None,
    vmath: str | None = None,
    doc: str = "",
) -> OpDef:
    """Define and register a primitive; a missing facet fails here, at import."""
    if name in REGISTRY:
        raise ValueError(f"op {name!r} is defined twice")
    if kind not in KINDS:
        raise ValueError(f"op {name!r}: unknown kind {kind!r}")
    if kind == "elementwise" and template is None:
        raise ValueError(f"elementwise op {name!r} needs a scalar code template")
    if not (callable(abstract_eval) and callable(impl) and callable(vjp)):
        raise ValueError(f"op {name!r}: abstract_eval, impl and vjp must be callables")
    op = OpDef(name, abstract_eval, impl, vjp, kind, template, vmath, doc)
    REGISTRY[name] = op
    return op
