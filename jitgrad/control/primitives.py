"""The control-flow primitives: `loop`, `cond` and `tuple_get`.

Each holds its bodies as graphs in its static params (DESIGN 13): traced once, so that the
graph's size never depends on a trip count. Their results are one tuple value (a `TupleAVal`)
that `tuple_get` takes apart; no other op reads a tuple.

    loop[body, cond, n_consts, n_carry, length, max_trips, reverse, remat, extends](
        *consts, *init, *xs) -> (trips, *carry, *ys)

* `body`: graph `(i, *consts, *carry, *x_slices) -> (*carry, *y_slices)`; `i` is the int32
  iteration index, `x_slices` are `xs[i]`, and `ys[i]` are the `y_slices`;
* the trip count: `length` (an int: every x has that leading dimension); or, with
  `length=None`, while `cond` (graph `(i, *consts, *carry) -> bool[]`) holds and `i` is below
  `max_trips` (if not None); or, without `cond`, the leading dimension of the xs, which is
  then only known at run time (`DYNAMIC`: the residual stacks of a while loop's gradient);
* `reverse`: `i` runs from the last index down to 0 (a static or xs-length loop only);
* `trips` (int32[]) is the number of iterations run; ys stack each iteration's y slices along
  a new leading axis of the trip count's length (`DYNAMIC` unless `length` is static);
* `remat`: the gradient stores only the carry and recomputes the rest of the body (less
  memory for long loops; see vjp.py);
* `extends`: None, or the body of another loop over the same inputs whose results are a
  prefix of this one's (a gradient's forward loop that also stores residuals); the `merge_loops`
  pass makes the two one loop.

    cond[branches](index, *operands) -> (*outs)

runs `branches[index]` (graphs `(*operands) -> (*outs)`, all of one output type); `index` is
an int32 scalar clamped to the branches, as `jax.lax.switch` does.

Their gradients are in `vjp.py`; their eager form (`replay`) is a Python loop / branch over
`bind`, so that a tape records the ops inside them.
"""

from __future__ import annotations

import numpy as np

from jitgrad.control.layout import INDEX_DTYPE, aval_of, split_loop_inputs
from jitgrad.control.vjp import cond_vjp, loop_vjp
from jitgrad.core.aval import DYNAMIC, AVal, TupleAVal
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.core.tensor import Tensor
from jitgrad.ir.execute import make_executor
from jitgrad.ir.interpret import replay
from jitgrad.ops.shape import stack


def loop_abstract_eval(
    *inputs, body, cond, n_consts, n_carry, length, max_trips, reverse, remat, extends
):
    avals = [aval_of(x) for x in inputs]
    consts, init, xs = split_loop_inputs(avals, n_consts, n_carry)
    body_in = [v.aval for v in body.inputs]
    if len(body_in) != 1 + len(avals):
        raise op_error("loop", f"body takes {len(body_in)} inputs, the loop has {len(avals)}+1")
    leading = {x.shape[0] if x.ndim else "scalar" for x in xs}
    if "scalar" in leading:
        raise op_error("loop", "a scanned input has no leading axis to iterate over")
    if length is not None:
        if cond is not None:
            raise op_error("loop", "a loop has either a static length or a condition")
        if leading - {length}:
            raise op_error("loop", f"scanned inputs of lengths {sorted(leading)} != {length}")
    elif cond is None and (not xs or leading != {DYNAMIC}):
        raise op_error("loop", "a loop without length or condition scans run-time-length xs")
    if reverse and cond is not None:
        raise op_error("loop", "a while loop cannot run in reverse")
    expected = [AVal((), INDEX_DTYPE), *consts, *init, *[AVal(x.shape[1:], x.dtype) for x in xs]]
    for k, (want, have) in enumerate(zip(expected, body_in)):
        if want != have:
            raise op_error(
                "loop", f"body input {k} is {have.short()}, the loop gives {want.short()}"
            )
    outs = [v.aval for v in body.outputs]
    if [o for o in outs[:n_carry]] != list(init):
        raise op_error("loop", "the body's carry out differs from its carry in")
    if cond is not None:
        cond_in = [v.aval for v in cond.inputs]
        if cond_in != expected[: 1 + n_consts + n_carry]:
            raise op_error("loop", "the condition's inputs differ from the body's")
        if [v.aval for v in cond.outputs] != [AVal((), np.dtype(bool))]:
            raise op_error("loop", "the condition must give one bool scalar")
    n = length if length is not None else DYNAMIC
    ys = [AVal((n, *y.shape), y.dtype) for y in outs[n_carry:]]
    return TupleAVal((AVal((), INDEX_DTYPE), *init, *ys))


def iteration_order(trips: int, reverse: bool) -> range:
    return range(trips - 1, -1, -1) if reverse else range(trips)


def run_loop(inputs, params, run_graph, take, to_bool, finish_ys, make_index):
    """The loop's semantics, shared by the numpy impl and the eager replay: `run_graph(graph,
    *values)` runs a body, `take(x, i)` is `x[i]`, `finish_ys(slices per y, avals)` stacks,
    `to_bool` reads the condition, `make_index(i)` makes the body's `i`."""
    body, cond = params["body"], params["cond"]
    n_consts, n_carry = params["n_consts"], params["n_carry"]
    consts, carry, xs = split_loop_inputs(list(inputs), n_consts, n_carry)
    y_avals = [v.aval for v in body.outputs[n_carry:]]
    slices = [[] for _ in y_avals]
    if cond is None:
        trips = params["length"] if params["length"] is not None else int(xs[0].shape[0])
        order = iteration_order(trips, params["reverse"])
    else:
        order = _while_indices(params["max_trips"])
    done = 0
    for i in order:
        index = make_index(i)
        if cond is not None and not to_bool(run_graph(cond, index, *consts, *carry)[0]):
            break
        outs = run_graph(body, index, *consts, *carry, *[take(x, i) for x in xs])
        carry = list(outs[:n_carry])
        for slot, y in zip(slices, outs[n_carry:]):
            slot.append(y)
        done += 1
    if params["reverse"]:
        for slot in slices:
            slot.reverse()
    return done, carry, finish_ys(slices, y_avals)


def _while_indices(max_trips):
    i = 0
    while max_trips is None or i < max_trips:
        yield i
        i += 1


# Graph -> its numpy executor (ir/execute.py), built once: the numpy implementations (the
# interpreter, and the fallback that serves calls while the kernel compiles) run a body at
# every iteration. Keyed by identity (graphs are compared by identity) and bounded.
_EXECUTORS: dict = {}
_MAX_EXECUTORS = 512


def run_graph(graph, *values) -> list:
    """`graph`'s outputs for `values` (numpy arrays or scalars), by its cached executor."""
    entry = _EXECUTORS.get(id(graph))
    if entry is None or entry[0] is not graph:
        if len(_EXECUTORS) >= _MAX_EXECUTORS:
            _EXECUTORS.clear()
        entry = _EXECUTORS[id(graph)] = (graph, make_executor(graph, "loop body"))
    return entry[1](list(values))


def loop_impl(*inputs, **params):
    def finish_ys(slices, avals):
        return [
            np.stack(s) if s else np.zeros((0, *a.shape), a.dtype) for s, a in zip(slices, avals)
        ]

    done, carry, ys = run_loop(
        inputs,
        params,
        run_graph,
        lambda x, i: x[i],
        bool,
        finish_ys,
        lambda i: np.int32(i),
    )
    return (np.int32(done), *[np.asarray(c) for c in carry], *ys)


def loop_replay(*inputs, **params):
    """Eagerly: a Python loop over the body's ops, through `bind` (a tape records them)."""

    def finish_ys(slices, avals):
        return [
            stack(s) if s else Tensor(np.zeros((0, *a.shape), a.dtype))
            for s, a in zip(slices, avals)
        ]

    done, carry, ys = run_loop(
        inputs,
        params,
        replay,
        lambda x, i: x[i],
        lambda t: bool(t._value),
        finish_ys,
        lambda i: Tensor(np.asarray(i, INDEX_DTYPE)),
    )
    return (Tensor(np.asarray(done, INDEX_DTYPE)), *carry, *ys)


loop_p = defop(
    "loop",
    abstract_eval=loop_abstract_eval,
    impl=loop_impl,
    vjp=loop_vjp,
    kind="other",
    raises=True,  # its body may (an index check)
    replay=loop_replay,
    doc="A loop whose body is a graph: scan, fori_loop, while_loop and map lower to it.",
)


# -- cond ---------------------------------------------------------------------------------------
def cond_abstract_eval(index, *operands, branches):
    index = aval_of(index)
    if index.shape != () or index.dtype != INDEX_DTYPE:
        raise op_error("cond", f"the branch index must be an int32 scalar, got {index.short()}")
    avals = [aval_of(x) for x in operands]
    outs = None
    for k, branch in enumerate(branches):
        if [v.aval for v in branch.inputs] != avals:
            raise op_error("cond", f"branch {k} takes other inputs than the operands")
        branch_outs = [v.aval for v in branch.outputs]
        if outs is not None and branch_outs != outs:
            raise op_error("cond", f"branch {k} gives other outputs than branch 0")
        outs = branch_outs
    return TupleAVal(tuple(outs))


def branch_number(index, n: int) -> int:
    """`index` clamped to [0, n), as jax.lax.switch clamps it."""
    return min(max(int(index), 0), n - 1)


def cond_impl(index, *operands, branches):
    branch = branches[branch_number(index, len(branches))]
    return tuple(run_graph(branch, *operands))


def cond_replay(index, *operands, branches):
    branch = branches[branch_number(index._value, len(branches))]
    return tuple(replay(branch, *operands))


cond_p = defop(
    "cond",
    abstract_eval=cond_abstract_eval,
    impl=cond_impl,
    vjp=cond_vjp,
    kind="other",
    raises=True,
    replay=cond_replay,
    doc="Run one of several branch graphs, chosen by an int32 index: cond and switch.",
)


# -- tuple_get ----------------------------------------------------------------------------------
def tuple_get_abstract_eval(t, *, index):
    avals = aval_of(t)
    if not isinstance(avals, TupleAVal) or not 0 <= index < len(avals.avals):
        raise op_error("tuple_get", f"no element {index} in {avals.short()}")
    return avals.avals[index]


def tuple_get_vjp(g, out, t, *, index):
    """The cotangent of a tuple: `g` at `index`, nothing elsewhere (backprop adds tuples)."""
    n = len(aval_of(t).avals)
    return (tuple(g if k == index else None for k in range(n)),)


tuple_get_p = defop(
    "tuple_get",
    abstract_eval=tuple_get_abstract_eval,
    impl=lambda t, *, index: t[index],
    vjp=tuple_get_vjp,
    kind="other",
    replay=lambda t, *, index: t[index],
    doc="Element `index` of a control-flow primitive's results.",
)
