"""The one chain-rule loop. It serves the eager tape (values are Tensors) and the graph
transform (values are Tracers): VJP rules run through `bind`, so the backward pass is itself
recorded by any enclosing tape or trace, which is what makes higher derivatives work."""

from __future__ import annotations

from jitgrad.core.errors import with_location
from jitgrad.core.opdef import NO_GRADIENT, NOT_DIFFERENTIABLE
from jitgrad.ops.elementwise import add


def backprop(eqns, seeds, sources) -> list:
    """Cotangents of `sources` given `seeds` [(value, cotangent)] flowing back through `eqns`
    (in recording order; each has op, inputs, params, out). None where no path exists."""
    reach = {id(s) for s in sources if s.dtype.kind == "f"}
    relevant = []
    for e in eqns:
        if e.op.vjp is NOT_DIFFERENTIABLE:
            continue
        for x in e.inputs:
            if id(x) in reach:
                reach.add(id(e.out))
                relevant.append(e)
                break
    cts: dict[int, object] = {}
    for value, ct in seeds:
        if id(value) in reach:
            _accumulate(cts, value, ct)
    for e in reversed(relevant):
        g = cts.get(id(e.out))
        if g is None:
            continue
        if e.op.vjp is NO_GRADIENT:
            raise LookupError(
                with_location(
                    f"gradient registry has no entry for: {e.op.name} (the op has no gradient, "
                    "in jitgrad as in TensorFlow; stop_gradient its inputs if they need none)",
                    getattr(e, "source", None),
                )
            )
        in_cts = e.op.vjp(g, e.out, *e.inputs, **e.params)
        for x, ct in zip(e.inputs, in_cts):
            if ct is None or id(x) not in reach:
                continue
            _accumulate(cts, x, ct() if callable(ct) else ct)
    return [cts.get(id(s)) for s in sources]


def _accumulate(cts: dict, x, ct) -> None:
    if isinstance(ct, tuple):  # the cotangent of a control-flow primitive's tuple of results
        previous = cts.get(id(x))
        if previous is not None:
            ct = tuple(
                a if b is None else b if a is None else add(a, b) for a, b in zip(previous, ct)
            )
        cts[id(x)] = ct
        return
    if ct.shape != x.shape or ct.dtype != x.dtype:
        raise AssertionError(
            f"internal error: cotangent {ct.dtype.name}{list(ct.shape)} for a value "
            f"{x.dtype.name}{list(x.shape)}"
        )
    key = id(x)
    previous = cts.get(key)
    cts[key] = ct if previous is None else add(previous, ct)
