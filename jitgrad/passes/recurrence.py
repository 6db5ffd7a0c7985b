"""Linear recurrences of a loop in Jacobian form: shorter loop-carried dependency chains.

A loop whose carry is a few scalars runs at the speed of its longest loop-carried chain: the
next iteration can start only when this one's carry is ready, whatever else the core could do
meanwhile. A reverse-mode body is linear in its cotangent carry, but autodiff writes it as the
chain rule does, one partial product after another: in W8a's adjoint (Lotka-Volterra, two
states) the new cotangent of x is 7 dependent operations away from the old one
(`g + e`, `* dt`, `neg`, `* c`, `+`, `+`, `+`), so each iteration waits ~20 cycles for it.

When a scalar carry output is a linear combination

    out = const + sum_b coef_b * b

of bases b (the carry inputs, or a carry plus something carry-independent, such as the
`g + 2 * error` where a cotangent enters the body), with `const` and every `coef_b` computed
from values that do not depend on the carry (the consts, this iteration's xs, residuals),
this pass computes it that way: the coefficients (the Jacobian entries a hand-written adjoint
loop computes) are off the chain, and each carry is an add, a multiply and an add or two from
the outputs that read it. The sum is ordered so that the output's own carry comes last. An
output is rewritten only when that shortens the chain from its own carry: an accumulator
`acc + x` is one add from itself already. W8a's gradient: 11.8 -> 10.4 us per call.

Only operations that keep linearity exactly are followed (add, sub, neg, and mul by a
carry-independent value); any other use of a carry leaves that output as it is. Like any
reassociation, the result may differ from the original in the last bits.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.passes.dce import dce

_LINEAR_OPS = ("add", "sub", "neg", "mul")
# Beyond this many terms per output, the linear form is not worth its coefficients.
MAX_TERMS = 16


def shorten_recurrences(graph: Graph) -> Graph:
    """`graph` with the body of each of its loops rewritten as above where that makes a carry
    output's chain shorter (nested loops: `optimize` reaches them through the bodies)."""
    eqns = []
    changed = False
    for e in graph.eqns:
        if e.op.name == "loop":
            p = e.params
            body = _rewrite_body(p["body"], p["n_consts"], p["n_carry"])
            if body is not p["body"]:
                e = Eqn(e.op, e.inputs, {**p, "body": body}, e.out, e.source)
                changed = True
        eqns.append(e)
    if not changed:
        return graph
    return Graph(graph.inputs, tuple(eqns), graph.outputs, graph.consts, graph.custom_vjps)


class _Form:
    """A linear combination of bases: `coefs` {basis Var: coefficient Var, or None for 1}
    plus `const` (a Var, or None for 0), all coefficients and `const` carry-independent."""

    __slots__ = ("coefs", "const")

    def __init__(self, coefs: dict, const):
        self.coefs = coefs
        self.const = const

    def terms(self) -> int:
        return len(self.coefs) + (self.const is not None)


class _Builder:
    """New equations of the body (appended after the original ones, reading only values
    defined before them) and its constants."""

    def __init__(self, body: Graph):
        self.eqns: list[Eqn] = []
        self.consts = dict(body.consts)
        self._constants: dict = {}

    def op(self, name: str, *inputs: Var) -> Var:
        out = Var(AVal((), inputs[0].aval.dtype))
        self.eqns.append(Eqn(REGISTRY[name], inputs, {}, out))
        return out

    def constant(self, value: float, dtype) -> Var:
        key = (value, np.dtype(dtype).str)
        var = self._constants.get(key)
        if var is None:
            var = self._constants[key] = Var(AVal((), np.dtype(dtype)))
            self.consts[var] = np.array(value, dtype)
        return var

    def add(self, a, b):
        """a + b for optional Vars (None: 0)."""
        if a is None or b is None:
            return b if a is None else a
        return self.op("add", a, b)

    def add_coef(self, a, b, dtype):
        """a + b for coefficients (None: 1)."""
        a = self.constant(1.0, dtype) if a is None else a
        b = self.constant(1.0, dtype) if b is None else b
        return self.op("add", a, b)

    def scale(self, coef, factor: Var):
        """coef * factor (coef None: 1)."""
        return factor if coef is None else self.op("mul", coef, factor)

    def negate(self, value, dtype):
        """-value (None: -1 for a coefficient)."""
        return self.constant(-1.0, dtype) if value is None else self.op("neg", value)


def _rewrite_body(body: Graph, n_consts: int, n_carry: int) -> Graph:
    carries = body.inputs[1 + n_consts : 1 + n_consts + n_carry]
    index = {v: k for k, v in enumerate(carries) if _is_float_scalar(v)}
    if not index:
        return body
    build = _Builder(body)
    # Bases: the carry inputs, and values equal to a basis plus something carry-independent
    # (`g + 2 * error`, where a cotangent enters the body). Taking such a value as a term,
    # instead of its carry and its constant apart, keeps the new coefficient products about
    # as many as the original ops.
    forms: dict[Var, _Form | None] = {v: _Form({v: None}, None) for v in index}
    carry_of = dict(index)  # basis -> the carry it is one add (or none) away from
    # {carry index: the longest chain of operations from that carry input} for each value
    chains: dict[Var, dict] = {v: {k: 0} for v, k in index.items()}
    for e in body.eqns:
        reads_carry = [v for v in e.inputs if v in forms]
        if not reads_carry:
            continue
        chain: dict = {}
        for v in reads_carry:
            for k, n in chains[v].items():
                chain[k] = max(chain.get(k, 0), n + 1)
        chains[e.out] = chain
        form = _form_of(e, forms, build) if _is_float_scalar(e.out) else None
        if form is not None and form.const is not None and len(form.coefs) == 1:
            ((basis, coef),) = form.coefs.items()
            if coef is None:
                carry_of[e.out] = carry_of[basis]
                form = _Form({e.out: None}, None)
        forms[e.out] = form
    outputs = list(body.outputs)
    for k, out in enumerate(body.outputs[:n_carry]):
        form = forms.get(out)
        if form is None or out in index or form.terms() > MAX_TERMS:
            continue
        order = sorted(form.coefs, key=lambda b: carry_of[b] == k)  # its own carry last
        if _chain_after(form, order, k, chains) < chains[out].get(k, 0):
            outputs[k] = _emit(form, order, build)
    if outputs == list(body.outputs):
        return body
    return dce(Graph(body.inputs, body.eqns + tuple(build.eqns), tuple(outputs), build.consts))


def _chain_after(form: _Form, order: list, k: int, chains: dict) -> float:
    """The longest chain from carry `k` to the output emitted as `_emit` does."""
    total = None if form.const is None else -np.inf
    for basis in order:
        term = chains[basis].get(k, -np.inf) + (form.coefs[basis] is not None)
        total = term if total is None else max(total, term) + 1
    return total


def _emit(form: _Form, order: list, build: _Builder) -> Var:
    """const + the terms in `order` (the output's own carry last)."""
    total = form.const
    for basis in order:
        coef = form.coefs[basis]
        term = basis if coef is None else build.op("mul", coef, basis)
        total = term if total is None else build.op("add", total, term)
    return total


def _is_float_scalar(v: Var) -> bool:
    aval = v.aval
    return isinstance(aval, AVal) and aval.shape == () and aval.dtype.kind == "f"


def _form_of(e: Eqn, forms: dict, build: _Builder) -> _Form | None:
    """The linear form of `e`'s result, or None when it is not linear in the carry."""
    name = e.op.name
    if name not in _LINEAR_OPS or e.params:
        return None
    dtype = e.out.aval.dtype
    if any(not _is_float_scalar(v) or v.aval.dtype != dtype for v in e.inputs):
        return None
    operands = [forms.get(v, _Independent(v)) for v in e.inputs]
    if any(f is None for f in operands):
        return None
    if name == "neg":
        return _negated(operands[0], build, dtype)
    a, b = operands
    if name == "mul":
        if isinstance(a, _Independent) == isinstance(b, _Independent):
            return None  # carry times carry (both independent cannot happen here)
        form, factor = (b, a.var) if isinstance(a, _Independent) else (a, b.var)
        coefs = {k: build.scale(c, factor) for k, c in form.coefs.items()}
        const = None if form.const is None else build.op("mul", form.const, factor)
        return _Form(coefs, const)
    if name == "sub":
        b = _negated(b, build, dtype)
    a, b = _as_form(a), _as_form(b)
    coefs = dict(a.coefs)
    for k, c in b.coefs.items():
        coefs[k] = build.add_coef(coefs[k], c, dtype) if k in coefs else c
    return _Form(coefs, build.add(a.const, b.const))


class _Independent:
    """An operand that does not depend on the carry."""

    __slots__ = ("var",)

    def __init__(self, var: Var):
        self.var = var


def _as_form(operand) -> _Form:
    if isinstance(operand, _Independent):
        return _Form({}, operand.var)
    return operand


def _negated(operand, build: _Builder, dtype) -> _Form:
    form = _as_form(operand)
    coefs = {k: build.negate(c, dtype) for k, c in form.coefs.items()}
    const = None if form.const is None else build.op("neg", form.const)
    return _Form(coefs, const)
