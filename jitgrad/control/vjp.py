"""Reverse mode through `loop` and `cond`, written with the same primitives (so that grad of
grad, and forward mode as VJP of VJP, work through them).

A loop's gradient is two loops:

1. a forward loop over the same inputs that also stores, at each iteration, the *residuals*:
   the values of the body that the body's backward pass reads and that change from iteration
   to iteration. Values that depend only on the loop's consts and on the index are recomputed
   instead (a pass hoists the loop-invariant ones out of the loop), and nothing is stored
   twice. The `extends` param names the original loop's body: `merge_loops` then replaces the
   original loop with this one, so the forward runs once;
2. a reverse loop over the residual stacks that carries the cotangent of the carry and sums
   the consts' cotangents, and stacks the xs' cotangents.

Policy (DESIGN 13 and issue 13): store what the body's VJP reads, recompute what depends on
nothing but the consts and the index, and what two elementwise operations make from stored
values. A while loop's trip count is known only at run time: its stacks have a `DYNAMIC`
length (sized by `maximum_iterations`, or grown geometrically by the kernel), and the reverse
loop runs over them.

A branch's gradient is a `cond` over the branches' gradients: the taken branch's forward is
recomputed inside its gradient, so only the taken branch runs, forward and backward.
"""

from __future__ import annotations

import numpy as np

from jitgrad.autodiff.vjp import append_backward
from jitgrad.control.layout import INDEX_DTYPE, split_loop_inputs
from jitgrad.core.aval import DYNAMIC, AVal, TupleAVal
from jitgrad.core.dispatch import bind, tape_stack
from jitgrad.core.opdef import REGISTRY
from jitgrad.core.tensor import Tensor
from jitgrad.ir.graph import Graph, Var
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.elementwise import add, zeros_like_value


def _op(name: str):
    """A control-flow primitive by name (primitives.py imports this module for its rules)."""
    return REGISTRY[name]


def _is_float(aval) -> bool:
    return aval.dtype.kind == "f"


def _zeros(aval) -> Tensor:
    return Tensor(np.zeros(aval.shape, aval.dtype))


def _body_joint(body: Graph, seeded: list[int], wrt: list[int]) -> tuple[Graph, int]:
    """(J, number of primal outputs): the graph `(*body inputs, *cotangents of the seeded body
    outputs) -> (*body outputs, *gradients w.r.t. body inputs `wrt`)`, zeros where a
    gradient is unconnected."""
    seeds = [Var(body.outputs[k].aval) for k in seeded]
    extended = Graph(
        body.inputs + tuple(seeds), body.eqns, body.outputs, body.consts, body.custom_vjps
    )
    trace = Trace("loop gradient")
    token = tape_stack.set(())
    try:
        with tracing(trace):
            values = [trace.new_input(v.aval) for v in extended.inputs]
            outs, grads = append_backward(
                extended,
                values,
                [body.outputs[k] for k in seeded],
                [body.inputs[k] for k in wrt],
                seeds,
            )
            grads = [zeros_like_value(values[k]) if g is None else g for k, g in zip(wrt, grads)]
            joint = trace.to_graph(outs + grads)
    finally:
        tape_stack.reset(token)
    return joint, len(outs)


def _split_forward(joint: Graph, n_primal_inputs: int):
    """(forward equations, backward equations, the forward values the backward reads): an
    equation is backward when it depends on a cotangent input."""
    tainted = set(joint.inputs[n_primal_inputs:])
    forward, backward = [], []
    for e in joint.eqns:
        if any(v in tainted for v in e.inputs):
            tainted.add(e.out)
            backward.append(e)
        else:
            forward.append(e)
    read = {}
    for e in backward:
        read.update((v, None) for v in e.inputs if v not in tainted)
    return forward, backward, [v for v in read if v not in joint.consts], tainted


# A value the backward pass reads is stored rather than recomputed when recomputing it takes
# more than this many elementwise operations: a stored scalar costs a store in the forward loop
# and a load in the reverse one, and a scalar loop is as often short of issue slots as it is
# of latency (W8a's adjoint recomputing x[t+1] from x[t]: 6 operations per step).
MAX_RECOMPUTE = 2


def _residuals(
    joint: Graph, forward: list, read: list, invariant_inputs: set, xs: set, remat: bool
):
    """(the values the forward loop stores, the values the reverse loop recomputes) for the
    forward values `read` by the backward pass. Recomputed: what depends only on the consts
    and the index (loop-invariant: hoisted out of the reverse loop later), and what at most
    `MAX_RECOMPUTE` cheap ops (arithmetic, shape ops: `_is_cheap`) make from other recomputed
    or stored values. Stored: the carry, the read values that take more cheap ops, and the
    results of everything else (matrix products, reductions, transcendental functions), each
    once. With `remat`, everything but the carry is
    recomputed."""
    invariant = set(invariant_inputs) | set(joint.consts)
    for e in forward:
        if all(v in invariant for v in e.inputs):
            invariant.add(e.out)
    producer = {e.out: e for e in forward}
    available = invariant | xs
    stored: list = []
    recomputed = set(available)
    pending = list(reversed(read))
    wanted = set(read)
    while pending:
        v = pending.pop()
        if v in recomputed or v in stored:
            continue
        e = producer.get(v)
        if e is not None and _cannot_be_stored(e):
            pass  # recomputed: a loop's tuple, or a stack whose length changes per iteration
        elif e is None or not (remat or _is_cheap(e)):
            stored.append(v)
            continue
        elif not remat and v in wanted and _recompute_cost(v, producer, recomputed) > MAX_RECOMPUTE:
            stored.append(v)
            continue
        missing = [x for x in e.inputs if x not in recomputed and x not in stored]
        if missing:
            pending.append(v)
            pending.extend(reversed(missing))
        else:
            recomputed.add(v)
    return stored, recomputed


def _recompute_cost(v, producer: dict, recomputed: set) -> int:
    """How many cheap operations recomputing `v` takes beyond what is recomputed already (a
    value whose producer is not cheap would be stored, so it costs nothing here)."""
    seen = set()
    pending = [v]
    while pending:
        u = pending.pop()
        e = producer.get(u)
        if u in seen or u in recomputed or e is None or not _is_cheap(e):
            continue
        seen.add(u)
        pending.extend(e.inputs)
    return len(seen)


def _cannot_be_stored(e) -> bool:
    """An inner loop's results (a tuple) and its run-time-length stacks cannot be stacked by
    the outer loop (they may have a different length at each iteration): recomputed."""
    aval = e.out.aval
    return isinstance(aval, TupleAVal) or DYNAMIC in aval.shape


def _is_cheap(e) -> bool:
    """Whether recomputing `e` in the reverse loop costs less than storing and reloading its
    result: shape ops, and elementwise arithmetic without a transcendental function."""
    op = e.op
    if op.kind == "shape":
        return True
    return (
        op.kind == "elementwise"
        and op.vmath is None
        and "math." not in (op.template or "")
        and "np." not in (op.template or "")
    )


def _needed_equations(eqns: list, wanted: set) -> list:
    """The equations of `eqns` that `wanted` values depend on, in order."""
    wanted = set(wanted)
    kept = []
    for e in reversed(eqns):
        if e.out in wanted:
            kept.append(e)
            wanted.update(e.inputs)
    kept.reverse()
    return kept


def loop_vjp(
    g, out, *inputs, body, cond, n_consts, n_carry, length, max_trips, reverse, remat, extends
):
    del out, extends
    consts, init, xs = split_loop_inputs(list(inputs), n_consts, n_carry)
    n_ys = len(body.outputs) - n_carry
    ct_final, ct_ys = list(g[1 : 1 + n_carry]), list(g[1 + n_carry :])
    ins = body.inputs
    float_consts = [k for k, c in enumerate(consts) if _is_float(c)]
    float_carry = [k for k, c in enumerate(init) if _is_float(c)]
    float_xs = [k for k, x in enumerate(xs) if _is_float(x)]
    seeded_ys = [k for k in range(n_ys) if ct_ys[k] is not None and _is_float(ct_ys[k])]
    seeded = float_carry + [n_carry + k for k in seeded_ys]
    wrt = (
        [1 + k for k in float_consts]
        + [1 + n_consts + k for k in float_carry]
        + [1 + n_consts + n_carry + k for k in float_xs]
    )
    joint, n_primal = _body_joint(body, seeded, wrt)
    n_inputs = len(ins)
    j_in = joint.inputs
    forward, backward, read, tainted = _split_forward(joint, n_inputs)
    j_index, j_consts = j_in[0], j_in[1 : 1 + n_consts]
    j_xs = j_in[1 + n_consts + n_carry : n_inputs]
    j_seeds = j_in[n_inputs:]
    grads = joint.outputs[n_primal:]
    # A gradient that is a forward value itself (no cotangent in it) is read as well.
    read += [v for v in grads if v not in tainted and v not in read and v not in joint.consts]
    stored, recomputed = _residuals(joint, forward, read, {j_index, *j_consts}, set(j_xs), remat)
    dynamic = length is None
    if dynamic and not stored and not xs:
        stored = [j_index]  # a reverse loop over run-time-length stacks needs one stack
    # 1. The forward loop, storing the residuals as extra ys.
    forward_body = Graph(
        j_in[:n_inputs],
        tuple(forward),
        tuple(joint.outputs[:n_primal]) + tuple(stored),
        dict(joint.consts),
    )
    fwd = bind(
        _op("loop"),
        *consts,
        *init,
        *xs,
        body=forward_body,
        cond=cond,
        n_consts=n_consts,
        n_carry=n_carry,
        length=length,
        max_trips=max_trips,
        reverse=reverse,
        remat=remat,
        extends=body,
    )
    first_residual = 1 + n_carry + n_ys
    stacks = [bind(_op("tuple_get"), fwd, index=first_residual + k) for k in range(len(stored))]
    # 2. The reverse loop.
    seeds_ys = [ct_ys[k] for k in seeded_ys]
    back_xs = [*xs, *stacks, *seeds_ys]
    back_carry = [
        zeros_like_value(init[k]) if ct_final[k] is None else ct_final[k] for k in float_carry
    ] + [zeros_like_value(consts[k]) for k in float_consts]
    back_body = _reverse_body(
        joint,
        forward,
        backward,
        recomputed,
        stored,
        j_index,
        j_consts,
        j_xs,
        j_seeds,
        float_consts,
        float_carry,
        float_xs,
        grads,
    )
    back = bind(
        _op("loop"),
        *consts,
        *back_carry,
        *back_xs,
        body=back_body,
        cond=None,
        n_consts=n_consts,
        n_carry=len(back_carry),
        length=length,
        max_trips=None,
        reverse=not reverse,
        remat=remat,
        extends=None,
    )
    n_back = len(back_carry)
    results = [bind(_op("tuple_get"), back, index=1 + k) for k in range(n_back + len(float_xs))]
    ct_carry = dict(zip(float_carry, results[: len(float_carry)]))
    ct_consts = dict(zip(float_consts, results[len(float_carry) : n_back]))
    ct_xs = dict(zip(float_xs, results[n_back:]))
    return (
        *[ct_consts.get(k) for k in range(n_consts)],
        *[ct_carry.get(k) for k in range(n_carry)],
        *[ct_xs.get(k) for k in range(len(xs))],
    )


def _reverse_body(
    joint,
    forward,
    backward,
    recomputed,
    stored,
    j_index,
    j_consts,
    j_xs,
    j_seeds,
    float_consts,
    float_carry,
    float_xs,
    grads,
) -> Graph:
    """The reverse loop's body: `(i, *consts, *carry cotangents, *consts' cotangent sums,
    *x slices, *residual slices, *ys' cotangent slices) -> (*carry cotangents one step back,
    *updated sums, *xs' cotangent slices)`."""
    n_float_carry = len(float_carry)
    seeds_carry, seeds_ys = j_seeds[:n_float_carry], j_seeds[n_float_carry:]
    trace = Trace("loop gradient body")
    token = tape_stack.set(())
    try:
        with tracing(trace):
            i = trace.new_input(AVal((), INDEX_DTYPE))
            consts = [trace.new_input(v.aval) for v in j_consts]
            ct_carry = [trace.new_input(v.aval) for v in seeds_carry]
            sums = [trace.new_input(j_consts[k].aval) for k in float_consts]
            x_slices = [trace.new_input(v.aval) for v in j_xs]
            residuals = [trace.new_input(v.aval) for v in stored]
            ct_y = [trace.new_input(v.aval) for v in seeds_ys]
            env = {v: Tensor(c) for v, c in joint.consts.items()}
            env[j_index] = i
            env.update(zip(j_consts, consts))
            env.update(zip(j_xs, x_slices))
            env.update(zip(stored, residuals))
            env.update(zip(seeds_carry, ct_carry))
            env.update(zip(seeds_ys, ct_y))
            wanted = {v for e in backward for v in e.inputs} | set(grads)
            recompute = _needed_equations(
                [e for e in forward if e.out in recomputed and e.out not in env], wanted
            )
            for e in recompute + backward:
                env[e.out] = bind(e.op, *[env[v] for v in e.inputs], **e.params)
            n_consts_g = len(float_consts)
            g_consts = grads[:n_consts_g]
            g_carry = grads[n_consts_g : n_consts_g + n_float_carry]
            g_xs = grads[n_consts_g + n_float_carry :]
            outs = (
                [env[v] for v in g_carry]
                + [add(s, env[v]) for s, v in zip(sums, g_consts)]
                + [env[v] for v in g_xs]
            )
            graph = trace.to_graph(outs)
    finally:
        tape_stack.reset(token)
    return graph


def cond_vjp(g, out, index, *operands, branches):
    del out
    float_ops = [k for k, x in enumerate(operands) if _is_float(x)]
    seeded = [k for k, ct in enumerate(g) if ct is not None and _is_float(ct)]
    if not float_ops or not seeded:
        return (None,) * (1 + len(operands))
    n = len(operands)
    graphs = []
    for branch in branches:
        joint, n_primal = _body_joint(branch, seeded, float_ops)
        graphs.append(Graph(joint.inputs, joint.eqns, joint.outputs[n_primal:], joint.consts))
    result = bind(_op("cond"), index, *operands, *[g[k] for k in seeded], branches=tuple(graphs))
    cts = [bind(_op("tuple_get"), result, index=k) for k in range(len(float_ops))]
    by_operand = dict(zip(float_ops, cts))
    return (None, *[by_operand.get(k) for k in range(n)])
