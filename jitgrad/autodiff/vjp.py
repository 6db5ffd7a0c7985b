"""Reverse mode as a graph-to-graph transform, built on the same backprop loop as the tape.

`joint_graph` is the one joint-graph builder: jit_grad and jit_train_step (through
`transforms.value_and_grad` under a trace), the tape's compiled backward and the gradient
checks all build their gradients with it, or with `append_backward`, its body, which appends
the same joint graph to the trace in progress.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jitgrad.autodiff.backprop import backprop
from jitgrad.core.dispatch import bind, current_trace, tape_stack
from jitgrad.core.errors import user_frame
from jitgrad.core.tensor import Tensor
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.elementwise import ones_like_value


def joint_graph(
    graph: Graph,
    outputs: Sequence[Var],
    wrt: Sequence[Var],
    seeds: Sequence[Var | None] | None = None,
    *,
    recompute: bool = True,
) -> tuple[Graph, list[bool]]:
    """(joint graph, connected): a graph computing `graph`'s outputs followed by the gradient
    of the values `outputs` (weighted by the cotangents `seeds`, values of `graph`; None or
    no seeds: ones) with respect to each value of `wrt` that they depend on, and for each
    `wrt` value whether it does (`connected`; the others have no output).

    Its inputs are `graph`'s, then, with `recompute=False`, each equation's output in order:
    the backward then reads the forward values instead of computing them (the tape holds
    them). Applying it again gives higher derivatives."""
    trace = Trace("joint")
    with tracing(trace):
        inputs = [trace.new_input(v.aval) for v in graph.inputs]
        outs, grads = append_backward(graph, inputs, outputs, wrt, seeds, recompute=recompute)
        joint = trace.to_graph(outs + [g for g in grads if g is not None])
    return joint, [g is not None for g in grads]


def append_backward(
    graph: Graph,
    values: Sequence,
    outputs: Sequence[Var],
    wrt: Sequence[Var],
    seeds: Sequence[Var | None] | None = None,
    *,
    recompute: bool = True,
) -> tuple[list, list]:
    """Replay `graph` on `values` into the current trace, then its backward pass (see
    `joint_graph`): (its outputs, the gradients, None where unconnected). The replay goes
    through `bind`, so recording tapes see the forward and backward ops (higher orders)."""
    env, eqns = _replay(graph, values, recompute)
    seeds = [None] * len(outputs) if seeds is None else seeds
    seeded = [
        (env[y], ones_like_value(env[y]) if s is None else env[s]) for y, s in zip(outputs, seeds)
    ]
    # Every op of the backward pass not emitted from user code (a custom gradient's rule)
    # names the line that asked for the gradient: found once, not by each op (user_frame).
    trace = current_trace.get()
    here = sys._getframe()
    if trace is not None:
        trace.known_frames[here] = user_frame()
    try:
        grads = backprop(eqns, seeded, [env[x] for x in wrt])
    finally:
        if trace is not None:
            trace.known_frames.pop(here, None)
    return [env[v] for v in graph.outputs], grads


def _replay(graph: Graph, values: Sequence, recompute: bool) -> tuple[dict, list[Eqn]]:
    """(Var -> value, the equations over values for `backprop`): a custom VJP node follows
    the op it stands for, and is recorded by the tapes as custom_gradient records it.

    A recomputed equation keeps the user's line of the original (`Trace.source`), so that
    errors found later (compile, index checks) name it, not the line that took the gradient."""
    env = {v: Tensor(c) for v, c in graph.consts.items()}
    env.update(zip(graph.inputs, values))
    eqns = []
    trace = current_trace.get()
    custom_vjps = graph.custom_vjps
    tapes = tape_stack.get()
    saved = trace.source if trace is not None else None
    try:
        for e in graph.eqns:
            inputs = tuple([env[v] for v in e.inputs])
            if recompute:
                if trace is not None:
                    trace.source = e.source or saved
                out = env[e.out] = bind(e.op, *inputs, **e.params)
            else:
                out = env[e.out] = trace.new_input(e.out.aval)
            eqns.append(Eqn(e.op, inputs, e.params, out))
            custom = custom_vjps.get(e.out) if custom_vjps else None
            if custom is not None:
                custom_inputs = tuple(env[v] for v in custom.inputs)
                eqns.append(Eqn(custom.op, custom_inputs, {}, out))
                for tape in tapes:
                    tape._maybe_record(custom.op, custom_inputs, {}, out)
    finally:
        if trace is not None:
            trace.source = saved
    return env, eqns
