"""OpDef: the one definition of a primitive, and the registry of all of them.

A primitive carries every facet the pipeline needs, side by side:

* `abstract_eval(*xs, **params) -> AVal`: the shape/dtype rule; it also validates inputs and
  raises the op's clear errors. `xs` are anything with `.shape` and `.dtype` (tensors, tracers);
* `impl(*arrays, **params) -> ndarray`: the eager numpy implementation;
* `vjp(g, out, *xs, **params) -> tuple`: one cotangent (or None) per input, written with
  jitgrad's own ops so the rule runs on tensors, on tracers, and is differentiable again.
  `NOT_DIFFERENTIABLE` marks ops whose gradient is None (comparisons, argmax, ...);
* `kind` and `template`: how the Numba backend emits it. For `elementwise` ops the template is a
  scalar expression over `{0}`, `{1}`, ... (e.g. `({0} * {1})`). The op layer never imports
  numba: the other facets a backend needs are data, checked here or when the backend loads;
* `reduction`: for the reductions that fuse into loops (sum, max, prod), how a loop accumulates
  them (`Reduction`: the identity element per dtype and the combine's name);
* every other non-elementwise op (reshape, gather, matmul, ...) is a structured op: the backend
  registers an emitter against its name and, when it loads, refuses to run without one for
  every such op in the registry (see `jitgrad.passes.fuse.is_structured`);
* `replay(*tensors, **params)`: for an op holding sub-graphs (control flow), how it runs
  eagerly: op by op through `bind`, so that tapes record the ops inside it (a loop is then a
  Python loop) instead of one opaque node; it may return a tuple (a `TupleAVal` result);
* `raises`: the op's kernel code can raise (an index out of bounds), which a train step that
  writes into the caller's arrays must know (`jitgrad.compiler.train_step`);
* `collective`: the op's value depends on the other processes of an MPI job (allreduce):
  never evaluated while compiling (constant folding), and a function calling one compiles
  before its first call, so that every rank makes the same calls in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = frozenset({"elementwise", "reduce", "shape", "linalg", "index", "other"})
# How a fused reduction folds an element into its accumulator: `acc + x`, `acc * x`, or
# numpy's maximum (NaN wins; on ties the later value, which tells -0.0 from +0.0).
COMBINES = frozenset({"add", "mul", "max"})


def NOT_DIFFERENTIABLE(*_args, **_params):  # noqa: N802 - a sentinel that reads like one
    """VJP of an op without a gradient (comparisons, argmax, ...): None for every input."""
    raise AssertionError("NOT_DIFFERENTIABLE is a marker, never called")


def NO_GRADIENT(*_args, **_params):  # noqa: N802 - a sentinel that reads like one
    """VJP of an op that has no gradient at all (TensorFlow: no entry in its gradient
    registry): differentiating through it raises LookupError, as TensorFlow does, instead of
    silently giving None like NOT_DIFFERENTIABLE."""
    raise AssertionError("NO_GRADIENT is a marker, never called")


@dataclass(frozen=True, slots=True)
class Reduction:
    """How a loop computes a reduction: the accumulator starts at `identity(dtype)` (the
    value of an empty reduction, as numpy and TensorFlow give it) and takes in each element with
    `combine` (one of COMBINES)."""

    combine: str
    identity: Callable  # numpy dtype -> a Python or numpy scalar


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
    reduction: Reduction | None = None
    raises: bool = False
    replay: Callable | None = None
    doc: str = field(default="", repr=False)
    collective: bool = False
    # Eager calls: (input shapes and dtypes, params) -> the AVal abstract_eval returned. The
    # rule runs once per signature, not per call (it costs more than most numpy calls).
    eager_avals: dict = field(default_factory=dict, repr=False)

    @property
    def differentiable(self) -> bool:
        return self.vjp is not NOT_DIFFERENTIABLE and self.vjp is not NO_GRADIENT

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
    reduction: Reduction | None = None,
    raises: bool = False,
    replay: Callable | None = None,
    doc: str = "",
    collective: bool = False,
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
    if reduction is not None:
        _check_reduction(name, kind, reduction)
    op = OpDef(
        name,
        abstract_eval,
        impl,
        vjp,
        kind,
        template,
        vmath,
        reduction,
        raises,
        replay,
        doc,
        collective=collective,
    )
    REGISTRY[name] = op
    return op


def _check_reduction(name: str, kind: str, reduction: Reduction) -> None:
    if kind != "reduce":
        raise ValueError(f"op {name!r}: a reduction facet needs kind 'reduce', not {kind!r}")
    if reduction.combine not in COMBINES:
        raise ValueError(
            f"op {name!r}: unknown reduction combine {reduction.combine!r} "
            f"(one of {sorted(COMBINES)})"
        )
    if not callable(reduction.identity):
        raise ValueError(f"op {name!r}: a reduction's identity is a rule dtype -> value")
