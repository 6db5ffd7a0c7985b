"""Algebraic simplification with rewrites that are exact in IEEE arithmetic.

Each rule is a small function registered for one op. It gets the equation and a `Context`
and returns None (no change), a Var that replaces the equation's output, or a list of new
equations whose last output replaces it. "Exact" means bit for bit equal to what the eager
ops (numpy) compute, for every input: -0.0, infinities, NaN (any NaN for a NaN), denormals
and results that overflow included. So `x * 0 -> 0` is never done (NaN * 0 is NaN, inf * 0
is NaN), `x + 0.0 -> x` neither (-0.0 + 0.0 is +0.0): only `x + (-0.0) -> x` is, and
`x * a * b -> x * (a * b)` neither (x * 1e38 overflows before * 1e-38 can bring it back).
The one exception is a sum's order: `sum_of_max_pool_scatter` sums the same terms in another
order, a choice every compiled reduction makes anyway (numpy's pairwise sums are not kept).
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import Eqn, Graph, Var

RULES: dict[str, list] = {}
# Rules that only fire when an input is a uniform constant (or a broadcast of one): skipped,
# without asking, for equations none of whose inputs is a constant or a broadcast.
NEEDS_CONSTANT: set = set()
MAX_ROUNDS = 8


def rule(*ops: str, needs_constant: bool = False):
    def register(fn):
        for op in ops:
            RULES.setdefault(op, []).append(fn)
        if needs_constant:
            NEEDS_CONSTANT.add(fn)
        return fn

    return register


class Context:
    """What rules may ask about the graph: constants and producers.

    `uniform` remembers, per constant Var, its uniform value (or None): a constant Var always
    stands for the same value, so the passes of one `optimize` share it (`ScalarMemo`)."""

    def __init__(self, graph: Graph, uniform: dict | None = None):
        self.consts = dict(graph.consts)  # rules may add constants
        self.producer: dict[Var, Eqn] = {}
        self.uniform = {} if uniform is None else uniform

    def filled(self, value, aval: AVal):
        """Eqns (or a Var) for a new constant of `aval` with every element `value`."""
        scalar = Var(AVal((), aval.dtype))
        self.consts[scalar] = np.asarray(value, aval.dtype)
        return [_new("broadcast_to", [scalar], aval, shape=aval.shape)] if aval.shape else scalar

    def with_filled(self, value, aval: AVal, use) -> list:
        """Eqns for a constant of `aval` filled with `value`, then `use(constant)`'s eqn."""
        made = self.filled(value, aval)
        if isinstance(made, Var):
            return [use(made)]
        return made + [use(made[-1].out)]

    def scalar(self, v: Var):
        """The value if `v` is a constant with all elements equal (or a broadcast of one)."""
        while True:
            if v in self.consts:
                s = self.uniform.get(v, _UNKNOWN)
                if s is _UNKNOWN:
                    s = self.uniform[v] = uniform_value(self.consts[v])
                return s
            e = self.producer.get(v)
            if e is None or e.op.name != "broadcast_to":
                return None
            v = e.inputs[0]

    def is_scalar(self, v: Var, value) -> bool:
        """Whether every element of `v` is `value` (for 0, +0: not -0.0)."""
        s = self.scalar(v)
        return s is not None and s == value and not (value == 0 and np.signbit(s))

    def is_additive_zero(self, v: Var) -> bool:
        """Whether every element of `v` is the zero z with x + z = x for every x: -0.0 for
        floats (x + (+0.0) is +0.0 at x = -0.0), 0 for integers."""
        s = self.scalar(v)
        return s is not None and s == 0 and (v.aval.dtype.kind != "f" or bool(np.signbit(s)))


_UNKNOWN = object()


def uniform_value(c):
    """The value of every element of the constant `c` as a numpy scalar, or None if they are
    not all equal as values AND in sign ([-0.0, 0.0] is not uniform; neither is NaN, which
    equals nothing)."""
    c = np.asarray(c)
    if not c.size:
        return None
    first = c.reshape(-1)[0]
    if c.size == 1:
        return first if first == first else None
    if np.all((c == first) & (np.signbit(c) == np.signbit(first))):
        return first
    return None


def _new(op: str, inputs, aval: AVal, **params) -> Eqn:
    return Eqn(REGISTRY[op], tuple(inputs), params, Var(aval))


@rule("mul", needs_constant=True)
def fold_mul_by_one(e, ctx):
    """x * 1 = 1 * x = x."""
    x, y = e.inputs
    if ctx.is_scalar(y, 1):
        return x
    if ctx.is_scalar(x, 1):
        return y
    return None


@rule("mul", needs_constant=True)
def mul_by_minus_one_to_neg(e, ctx):
    """x * -1 = -x."""
    x, y = e.inputs
    for a, b in ((x, y), (y, x)):
        if ctx.is_scalar(b, -1):
            return [_new("neg", [a], e.out.aval)]
    return None


@rule("add", needs_constant=True)
def fold_add_zero(e, ctx):
    """x + (-0.0) = -0.0 + x = x for every x (-0.0 + -0.0 = -0.0); integers: x + 0 = x. Not
    x + 0.0: -0.0 + 0.0 = +0.0."""
    x, y = e.inputs
    if ctx.is_additive_zero(y):
        return x
    if ctx.is_additive_zero(x):
        return y
    return None


@rule("sub", needs_constant=True)
def fold_sub_zero(e, ctx):
    """x - 0.0 = x + (-0.0) = x exactly (-0.0 - 0.0 = -0.0). Not x - (-0.0): that is x + 0.0."""
    x, y = e.inputs
    return x if ctx.is_scalar(y, 0) else None


@rule("sub", needs_constant=True)
def sub_from_zero_to_neg(e, ctx):
    """-0.0 - x = -x exactly (at x = +0.0: -0.0; at -0.0: +0.0); integers: 0 - x = -x, with
    the same wraparound. Not 0.0 - x: 0.0 - 0.0 is +0.0 but -(0.0) is -0.0."""
    x, y = e.inputs
    return [_new("neg", [y], e.out.aval)] if ctx.is_additive_zero(x) else None


@rule("div", needs_constant=True)
def fold_div_by_one(e, ctx):
    """x / 1 = x."""
    return e.inputs[0] if ctx.is_scalar(e.inputs[1], 1) else None


@rule("neg")
def fold_double_negation(e, ctx):
    """-(-x) = x."""
    p = ctx.producer.get(e.inputs[0])
    return p.inputs[0] if p is not None and p.op.name == "neg" else None


@rule("pow", needs_constant=True)
def fold_pow_one(e, ctx):
    """x ** 1 = x."""
    return e.inputs[0] if ctx.is_scalar(e.inputs[1], 1) else None


@rule("pow", needs_constant=True)
def fold_pow_zero(e, ctx):
    """x ** 0 = 1 for every x, NaN and inf included (C99 and numpy agree)."""
    return ctx.filled(1, e.out.aval) if ctx.is_scalar(e.inputs[1], 0) else None


@rule("pow", needs_constant=True)
def expand_square(e, ctx):
    """x ** 2 = x * x: numpy computes a power with a scalar exponent 2 as a square (as it
    does for -1 and 0.5 below: its exact shortcuts, which the eager ops take since a weak
    scalar exponent is a stride-0 broadcast); C's pow would agree here, and is costlier."""
    x, y = e.inputs
    return [_new("mul", [x, x], e.out.aval)] if ctx.is_scalar(y, 2) else None


@rule("pow", needs_constant=True)
def pow_minus_one_to_reciprocal(e, ctx):
    """x ** -1 = 1 / x, numpy's shortcut (exactly rounded; C's pow may be off by an ulp)."""
    x, y = e.inputs
    if not ctx.is_scalar(y, -1):
        return None
    return ctx.with_filled(1, e.out.aval, lambda one: _new("div", [one, x], e.out.aval))


@rule("pow", needs_constant=True)
def pow_half_to_sqrt(e, ctx):
    """x ** 0.5 = sqrt(x), numpy's shortcut. Not C's pow, which differs at -0.0 (pow: +0.0,
    sqrt: -0.0) and -inf (pow: +inf, sqrt: NaN); the eager ops compute the square root."""
    x, y = e.inputs
    return [_new("sqrt", [x], e.out.aval)] if ctx.is_scalar(y, 0.5) else None


@rule("stop_gradient")
def drop_stop_gradient(e, ctx):
    """After differentiation stop_gradient is the identity."""
    return e.inputs[0]


@rule("reshape")
def compose_reshapes(e, ctx):
    """reshape(reshape(x)) = reshape(x); a reshape to the same shape is x."""
    x = e.inputs[0]
    if x.aval.shape == e.out.aval.shape:
        return x
    p = ctx.producer.get(x)
    if p is not None and p.op.name == "reshape":
        return [_new("reshape", [p.inputs[0]], e.out.aval, shape=e.params["shape"])]
    return None


@rule("transpose")
def compose_transposes(e, ctx):
    """transpose(transpose(x, p), q) = transpose(x, p[q]); the identity permutation is x."""
    perm = e.params["perm"]
    if perm == tuple(range(len(perm))):
        return e.inputs[0]
    p = ctx.producer.get(e.inputs[0])
    if p is not None and p.op.name == "transpose":
        inner = p.params["perm"]
        composed = tuple(inner[i] for i in perm)
        if composed == tuple(range(len(perm))):
            return p.inputs[0]
        return [_new("transpose", [p.inputs[0]], e.out.aval, perm=composed)]
    return None


@rule("broadcast_to")
def compose_broadcasts(e, ctx):
    """broadcast_to(broadcast_to(x, s1), s2) = broadcast_to(x, s2); to its own shape, x;
    broadcast_to(reshape(x, (1, ..., 1)), s) = broadcast_to(x, s) for a 0-d x (a mean's
    gradient: no one-element array to make, at every iteration of a loop)."""
    x = e.inputs[0]
    if x.aval.shape == e.out.aval.shape:
        return x
    p = ctx.producer.get(x)
    if p is not None and (
        p.op.name == "broadcast_to" or (p.op.name == "reshape" and p.inputs[0].aval.ndim == 0)
    ):
        return [_new("broadcast_to", [p.inputs[0]], e.out.aval, shape=e.params["shape"])]
    return None


@rule("select", needs_constant=True)
def fold_uniform_condition(e, ctx):
    """where(True, x, y) = x and where(False, x, y) = y for a constant condition."""
    c = ctx.scalar(e.inputs[0])
    if c is None:
        return None
    return e.inputs[1] if bool(c) else e.inputs[2]


@rule("select")
def fold_same_branches(e, ctx):
    """where(c, x, x) = x."""
    return e.inputs[1] if e.inputs[1] is e.inputs[2] else None


@rule("select", needs_constant=True)
def mask_before_max_pool_scatter(e, ctx):
    """The relu mask of a max pool's gradient, applied to the pooled cotangent:

        where(m, max_pool_scatter(s, g), 0) = max_pool_scatter(s, where(max_pool(s) > b, g, 0))
        where m = a > b, s = where(m, a, c), b and c uniform constants with c <= b

    (relu then max_pool: a = the pre-activation, b = c = 0). s > b exactly where m holds, so
    at each window's first maximum p (where the scatter adds the window's cotangent)
    m[p] = (s[p] > b) = (max_pool(s) > b) for that window: the cotangents the mask would zero
    are zeroed before the scatter instead, on the pooled tensor (4x smaller for 2x2 windows),
    and no mask of the input's size is kept for the backward pass. Bit for bit: a position
    no window reaches is +0.0 on both sides (the scatter starts from +0.0), and a position
    some windows reach is the same sum of the same cotangents in the same order."""
    m, scattered, zero = e.inputs
    if not ctx.is_scalar(zero, 0):
        return None
    scatter = ctx.producer.get(scattered)
    if scatter is None or scatter.op.name != "max_pool_scatter":
        return None
    s, g = scatter.inputs
    activation, compare = ctx.producer.get(s), ctx.producer.get(m)
    if activation is None or compare is None or compare.op.name != "greater":
        return None
    if activation.op.name != "select" or activation.inputs[0] is not m:
        return None
    a, b = compare.inputs
    if activation.inputs[1] is not a:
        return None
    threshold, below = ctx.scalar(b), ctx.scalar(activation.inputs[2])
    if threshold is None or below is None or not below <= threshold:
        return None
    params = scatter.params
    pooled = _new("max_pool", [s], g.aval, **params)
    made = [pooled]

    def filled(value):
        eqns = ctx.filled(value, g.aval)
        if isinstance(eqns, Var):
            return eqns
        made.extend(eqns)
        return eqns[-1].out

    bound = filled(threshold)
    reached = _new("greater", [pooled.out, bound], AVal(g.aval.shape, np.dtype(bool)))
    masked = _new("select", [reached.out, g, filled(0)], g.aval)
    return made + [reached, masked, _new("max_pool_scatter", [s, masked.out], e.out.aval, **params)]


@rule("reduce_sum")
def sum_of_max_pool_scatter(e, ctx):
    """sum(max_pool_scatter(x, g), axes) = sum(g, axes) when the axes include every spatial
    axis: the scatter only moves each window's cotangent to one position of its window, in
    the same image and channel. Every window must reach the input: no padding as wide as the
    window (a window wholly in the padding drops its cotangent). The same terms are summed
    (and zeros dropped), in another order: a different rounding, as any reduction's order in
    compiled code; the sum reads the pooled tensor instead of the input-sized one."""
    scatter = ctx.producer.get(e.inputs[0])
    if scatter is None or scatter.op.name != "max_pool_scatter":
        return None
    window, padding = scatter.params["window"], scatter.params["padding"]
    spatial = set(range(1, len(window) + 1))
    if not spatial <= set(e.params["axes"]):
        return None
    if any(not (0 <= lo < k and 0 <= hi < k) for k, (lo, hi) in zip(window, padding)):
        return None
    return [_new("reduce_sum", [scatter.inputs[1]], e.out.aval, **e.params)]


@rule("cast")
def fold_identity_cast(e, ctx):
    """cast(x, x.dtype) = x."""
    return e.inputs[0] if e.inputs[0].aval.dtype == e.params["dtype"] else None


def simplify(graph: Graph, uniform: dict | None = None) -> Graph:
    """Apply the rules bottom-up (in topological order) until nothing changes. `uniform`: a
    memo of the constants' uniform values to share with later calls (see `Context`).

    A round only fires rules on equations it made or whose inputs it replaced: every other
    equation was already looked at, with the same inputs, producers and constants, by the
    previous round (rules read nothing else). So after the first round each round starts
    from the equations the last one made, and the loop ends when no rule fires on them,
    without a round over the whole graph that changes nothing."""
    uniform = {} if uniform is None else uniform
    graph, ctx, made = _one_round(graph, uniform, None)
    rounds = 1
    while made is not None and rounds < MAX_ROUNDS:
        rounds += 1
        if not made or not _any_fires(made, ctx):
            break
        graph, ctx, made = _one_round(graph, uniform, made)
    return graph


def _fire(e: Eqn, ctx: Context, rules: list):
    constant = None  # whether an input is a constant or a broadcast (asked once, if needed)
    for fn in rules:
        if fn in NEEDS_CONSTANT:
            if constant is None:
                constant = _has_constant_input(e, ctx)
            if not constant:
                continue
        result = fn(e, ctx)
        if result is not None:
            return result
    return None


def _has_constant_input(e: Eqn, ctx: Context) -> bool:
    consts, producer = ctx.consts, ctx.producer
    for v in e.inputs:
        if v in consts:
            return True
        p = producer.get(v)
        if p is not None and p.op.name == "broadcast_to":
            return True
    return False


def _any_fires(eqns: list, ctx: Context) -> bool:
    """Whether a rule rewrites one of `eqns` (in the graph `ctx` describes). Rules that
    fire may add constants, so they get a copy of `ctx` that is then dropped."""
    probe = Context.__new__(Context)
    probe.consts = dict(ctx.consts)
    probe.producer = ctx.producer
    probe.uniform = ctx.uniform
    for e in eqns:
        rules = RULES.get(e.op.name)
        if rules and _fire(e, probe, rules) is not None:
            return True
    return False


def _one_round(graph: Graph, uniform: dict, made: list | None):
    """(graph after one round, its Context, the equations the round made: None if it changed
    nothing). `made`: the equations the previous round made, the only ones (with those
    whose inputs this round replaces) that rules can rewrite; None: every equation."""
    ctx = Context(graph, uniform)
    producer, consts = ctx.producer, ctx.consts
    # Ops all of whose rules need a constant input: their equations without one are passed
    # over here, without a call (most equations of a big graph).
    constant_only = {name for name, fns in RULES.items() if all(fn in NEEDS_CONSTANT for fn in fns)}
    candidates = None if made is None else set(made)
    replace: dict[Var, Var] = {}
    eqns: list[Eqn] = []
    new_eqns: list[Eqn] = []
    changed = False
    for e in graph.eqns:
        look = candidates is None or e in candidates
        if replace:
            inputs = e.inputs
            for v in inputs:
                if v in replace:
                    inputs = tuple([replace.get(x, x) for x in inputs])
                    e = Eqn(e.op, inputs, e.params, e.out, e.source)
                    look = True
                    break
        result = None
        if look:
            name = e.op.name
            rules = RULES.get(name)
            if rules and name in constant_only:
                for v in e.inputs:
                    if v in consts:
                        break
                    p = producer.get(v)
                    if p is not None and p.op.name == "broadcast_to":
                        break
                else:
                    rules = None
            if rules:
                result = _fire(e, ctx, rules)
        if result is None:
            eqns.append(e)
            producer[e.out] = e
            continue
        changed = True
        if isinstance(result, Var):
            replace[e.out] = result
            continue
        for new in result:
            new = Eqn(new.op, new.inputs, new.params, new.out, e.source)
            eqns.append(new)
            new_eqns.append(new)
            producer[new.out] = new
        replace[e.out] = result[-1].out
    if not changed:
        return Graph(graph.inputs, graph.eqns, graph.outputs, ctx.consts), ctx, None
    outputs = tuple([replace.get(v, v) for v in graph.outputs])
    return Graph(graph.inputs, tuple(eqns), outputs, ctx.consts), ctx, new_eqns
