"""Passes over control flow: merge a loop with its gradient's forward loop, drop what a loop
computes for nobody, optimise the bodies, and hoist loop-invariant work out of loops.

They know the loop's layout (jitgrad/control/primitives.py) through its params only:
`loop[body, cond, n_consts, n_carry, length, max_trips, reverse, remat, extends](*consts, *init,
*xs)
-> (trips, *carry, *ys)`, with body `(i, *consts, *carry, *x slices) -> (*carry, *y slices)`
and cond `(i, *consts, *carry) -> bool`.
"""

from __future__ import annotations

from collections.abc import Callable

from jitgrad.core.aval import DYNAMIC, AVal, TupleAVal
from jitgrad.core.opdef import REGISTRY
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.ir.subgraphs import map_subgraphs
from jitgrad.passes.dce import dce

_SAME_LOOP = ("cond", "n_consts", "n_carry", "length", "max_trips", "reverse", "remat")


def merge_loops(graph: Graph) -> Graph:
    """A gradient's forward loop B (`extends` = the body of loop A, over A's inputs) stores
    residuals besides computing everything A does; its results are A's followed by the
    residuals. B takes A's place and A's readers read B: the forward runs once. A chain
    (the forward loop of a second derivative extends B) merges into the same place; a second
    loop extending the same body runs apart. Runs before any pass rewrites a body
    (`extends` compares bodies by identity); clears `extends`."""
    eqns = list(graph.eqns)
    slot: dict = {}  # (id of body, inputs) -> where the loop with that body is now
    for k, e in enumerate(eqns):
        if e.op.name == "loop":
            slot.setdefault((id(e.params["body"]), e.inputs), k)
    renamed: dict[Var, Var] = {}
    dropped = set()
    extended = set()  # ids of bodies a merged loop extended
    for k, e in enumerate(eqns):
        if e.op.name != "loop" or e.params["extends"] is None:
            continue
        cleared = Eqn(e.op, e.inputs, {**e.params, "extends": None}, e.out, e.source)
        base = e.params["extends"]
        a = slot.get((id(base), e.inputs))
        if a is not None and a < k and id(base) not in extended and _same_loop(eqns[a], e):
            renamed[eqns[a].out] = e.out
            eqns[a] = cleared
            dropped.add(k)
            extended.add(id(base))
            slot[(id(e.params["body"]), e.inputs)] = a
        else:
            eqns[k] = cleared
    if renamed or dropped:
        eqns = [_renamed(e, renamed) for k, e in enumerate(eqns) if k not in dropped]
    elif all(a is b for a, b in zip(eqns, graph.eqns)):
        eqns = graph.eqns
    eqns = [map_subgraphs(e, merge_loops) for e in eqns]
    outputs = tuple(_final(v, renamed) for v in graph.outputs)
    return Graph(graph.inputs, tuple(eqns), outputs, graph.consts, graph.custom_vjps)


def _final(v: Var, renamed: dict) -> Var:
    """Where a renamed value's readers read it now (renames chain: A -> B -> C)."""
    while v in renamed:
        v = renamed[v]
    return v


def _same_loop(a: Eqn, b: Eqn) -> bool:
    return all(
        a.params[key] is b.params[key] or a.params[key] == b.params[key] for key in _SAME_LOOP
    )


def _renamed(e: Eqn, renamed: dict) -> Eqn:
    if not any(v in renamed for v in e.inputs):
        return e
    inputs = tuple(_final(v, renamed) for v in e.inputs)
    return Eqn(e.op, inputs, e.params, e.out, e.source)


def optimize_bodies(graph: Graph, optimize: Callable[[Graph], Graph]) -> Graph:
    """`graph` with `optimize` applied to every loop body, condition and branch."""
    eqns = tuple(map_subgraphs(e, optimize) for e in graph.eqns)
    return Graph(graph.inputs, eqns, graph.outputs, graph.consts, graph.custom_vjps)


# -- dropping what nobody reads ------------------------------------------------------------------
def prune_loops(graph: Graph) -> Graph:
    """Loops lose the ys nobody reads, the carries no read result depends on, and the consts
    and xs their remaining work does not read; the `tuple_get`s follow the new positions."""
    read: dict[Var, set] = {}
    for e in graph.eqns:
        if e.op.name == "tuple_get":
            read.setdefault(e.inputs[0], set()).add(e.params["index"])
    renumber: dict[Var, tuple] = {}  # old tuple -> (new tuple, old index -> new index)
    eqns = []
    for e in graph.eqns:
        if e.op.name == "loop":
            pruned = _prune_loop(e, read.get(e.out, set()))
            if pruned is not None:
                new, positions = pruned
                renumber[e.out] = (new.out, positions)
                e = new
        elif e.op.name == "tuple_get" and e.inputs[0] in renumber:
            new_tuple, positions = renumber[e.inputs[0]]
            e = Eqn(e.op, (new_tuple,), {"index": positions[e.params["index"]]}, e.out, e.source)
        eqns.append(e)
    if not renumber:
        return graph
    return Graph(graph.inputs, tuple(eqns), graph.outputs, graph.consts, graph.custom_vjps)


def _depends(graph: Graph) -> dict[Var, frozenset]:
    """Each value of `graph` -> the positions of the inputs it depends on."""
    deps: dict[Var, frozenset] = {v: frozenset((k,)) for k, v in enumerate(graph.inputs)}
    empty = frozenset()
    for e in graph.eqns:
        found = empty
        for v in e.inputs:
            found = found | deps.get(v, empty)
        deps[e.out] = found
    return deps


def _prune_loop(e: Eqn, read: set):
    p = e.params
    body, cond = p["body"], p["cond"]
    n_consts, n_carry = p["n_consts"], p["n_carry"]
    n_xs = len(e.inputs) - n_consts - n_carry
    n_ys = len(body.outputs) - n_carry
    deps = _depends(body)
    cond_deps = (
        _depends(cond).get(cond.outputs[0], frozenset()) if cond is not None else frozenset()
    )
    carry_start, x_start = 1 + n_consts, 1 + n_consts + n_carry
    ys = [k for k in range(n_ys) if 1 + n_carry + k in read]
    carries = {k for k in range(n_carry) if 1 + k in read}
    carries |= {k - carry_start for k in cond_deps if carry_start <= k < x_start}
    while True:
        needed_inputs = set(cond_deps)
        for k in sorted(carries):
            needed_inputs |= deps.get(body.outputs[k], frozenset())
        for k in ys:
            needed_inputs |= deps.get(body.outputs[n_carry + k], frozenset())
        more = {k - carry_start for k in needed_inputs if carry_start <= k < x_start}
        if more <= carries:
            break
        carries |= more
    carries = sorted(carries)
    consts = [k for k in range(n_consts) if 1 + k in needed_inputs]
    xs = [k for k in range(n_xs) if x_start + k in needed_inputs]
    if p["length"] is None and cond is None and not xs:
        xs = [0]  # the trip count is the xs' run-time length
    if len(carries) == n_carry and len(ys) == n_ys and len(consts) == n_consts and len(xs) == n_xs:
        return None
    keep = [0, *[1 + k for k in consts], *[carry_start + k for k in carries]]
    new_body = _reduced(
        body,
        keep + [x_start + k for k in xs],
        [body.outputs[k] for k in carries] + [body.outputs[n_carry + k] for k in ys],
    )
    new_cond = _reduced(cond, keep, list(cond.outputs)) if cond is not None else None
    inputs = (
        [e.inputs[k] for k in consts]
        + [e.inputs[n_consts + k] for k in carries]
        + [e.inputs[n_consts + n_carry + k] for k in xs]
    )
    params = {**p, "body": new_body, "cond": new_cond, "n_consts": len(consts)}
    params["n_carry"] = len(carries)
    old = e.out.aval.avals
    out = Var(
        TupleAVal((old[0], *[old[1 + k] for k in carries], *[old[1 + n_carry + k] for k in ys]))
    )
    positions = {0: 0}
    positions.update({1 + k: 1 + j for j, k in enumerate(carries)})
    positions.update({1 + n_carry + k: 1 + len(carries) + j for j, k in enumerate(ys)})
    return Eqn(e.op, tuple(inputs), params, out, e.source), positions


def _reduced(graph: Graph, keep: list[int], outputs: list) -> Graph:
    """`graph` computing only `outputs`, taking only its inputs at positions `keep` (the
    others must be unread by what remains)."""
    smaller = dce(Graph(graph.inputs, graph.eqns, tuple(outputs), graph.consts))
    return Graph(
        tuple(graph.inputs[k] for k in keep), smaller.eqns, smaller.outputs, smaller.consts
    )


# -- scanned broadcasts ---------------------------------------------------------------------------
def unstack_broadcasts(graph: Graph) -> Graph:
    """A scanned input that is a broadcast along the scanned axis (the same slice at every
    iteration: a gradient's seed of ones, a zero cotangent) becomes a const of the loop, and
    the body broadcasts it to the slice's shape (an index map of its fused loops): no stack of
    copies is made, and none is read."""
    producer = {e.out: e for e in graph.eqns}
    eqns = []
    changed = False
    for e in graph.eqns:
        if e.op.name == "loop":
            new = _unstack_from(e, producer)
            changed |= new is not e
            e = new
        eqns.append(e)
    if not changed:
        return graph
    return Graph(graph.inputs, tuple(eqns), graph.outputs, graph.consts, graph.custom_vjps)


def _unstack_from(e: Eqn, producer: dict) -> Eqn:
    p = e.params
    n_consts, n_carry = p["n_consts"], p["n_carry"]
    xs = e.inputs[n_consts + n_carry :]
    moved = []  # (position among xs, the broadcast's source)
    for k, x in enumerate(xs):
        b = producer.get(x)
        if b is None or b.op.name != "broadcast_to" or DYNAMIC in x.aval.shape:
            continue
        src = b.inputs[0]
        if src.aval.ndim < x.aval.ndim:  # numpy aligns on the right: the scanned axis is new
            moved.append((k, src))
    if not moved or (p["length"] is None and len(moved) == len(xs)):
        return e  # (a run-time-length loop keeps a stack for its trip count)
    body = p["body"]
    x_start = 1 + n_consts + n_carry
    moved_at = dict(moved)
    const_inputs = [Var(src.aval) for _, src in moved]
    replace = {}
    new_eqns = []
    for (k, src), const in zip(moved, const_inputs):
        slice_var = body.inputs[x_start + k]
        if slice_var.aval.shape == src.aval.shape:
            replace[slice_var] = const
        else:
            out = Var(slice_var.aval)
            new_eqns.append(
                Eqn(REGISTRY["broadcast_to"], (const,), {"shape": slice_var.aval.shape}, out)
            )
            replace[slice_var] = out
    kept_x = [body.inputs[x_start + k] for k in range(len(xs)) if k not in moved_at]
    new_body = Graph(
        body.inputs[: 1 + n_consts]
        + tuple(const_inputs)
        + body.inputs[1 + n_consts : x_start]
        + tuple(kept_x),
        tuple(new_eqns)
        + tuple(
            Eqn(b.op, tuple(replace.get(v, v) for v in b.inputs), b.params, b.out, b.source)
            for b in body.eqns
        ),
        tuple(replace.get(v, v) for v in body.outputs),
        body.consts,
    )
    cond = p["cond"]
    if cond is not None:
        extra = tuple(Var(src.aval) for _, src in moved)
        cond = Graph(
            cond.inputs[: 1 + n_consts] + extra + cond.inputs[1 + n_consts :],
            cond.eqns,
            cond.outputs,
            cond.consts,
        )
    inputs = (
        *e.inputs[:n_consts],
        *[src for _, src in moved],
        *e.inputs[n_consts : n_consts + n_carry],
        *[x for k, x in enumerate(xs) if k not in moved_at],
    )
    params = {**p, "body": new_body, "cond": cond, "n_consts": n_consts + len(moved)}
    return Eqn(e.op, inputs, params, e.out, e.source)


# -- hoisting ------------------------------------------------------------------------------------
def hoist_invariants(graph: Graph) -> Graph:
    """Work in a loop body that depends only on the loop's consts (a transposed weight, a
    product of parameters) is computed once before the loop and passed in as a const. Not
    hoisted: what may raise (an index check would fire even for zero iterations), broadcasts
    (fused loops read them as index maps, for free) and results larger than their inputs
    (a hoisted outer product would cost memory traffic at every iteration instead)."""
    eqns = []
    consts = dict(graph.consts)
    for e in graph.eqns:
        if e.op.name == "loop":
            hoisted, e = _hoist_from(e, consts)
            eqns.extend(hoisted)
        eqns.append(e)
    if len(eqns) == len(graph.eqns):
        return graph
    return Graph(graph.inputs, tuple(eqns), graph.outputs, consts, graph.custom_vjps)


def _hoistable(e: Eqn) -> bool:
    if e.op.raises or e.op.name == "broadcast_to" or isinstance(e.out.aval, TupleAVal):
        return False
    return e.out.aval.size <= sum(v.aval.size for v in e.inputs if isinstance(v.aval, AVal))


def _hoist_from(e: Eqn, consts: dict):
    """(the equations hoisted out of loop `e`, as outer equations; `e` taking their results as
    new consts). Body constants they read become constants of the outer graph (`consts`)."""
    p = e.params
    body, n_consts = p["body"], p["n_consts"]
    const_inputs = body.inputs[1 : 1 + n_consts]
    outer = dict(zip(const_inputs, e.inputs[:n_consts]))
    invariant = set(const_inputs) | set(body.consts)
    moved = []
    for b in body.eqns:
        if all(v in invariant for v in b.inputs) and b.inputs and _hoistable(b):
            invariant.add(b.out)
            moved.append(b)
    # Only what the rest of the body reads needs to come in; the others are dropped with it.
    moved_outs = {b.out for b in moved}
    stays = [b for b in body.eqns if b.out not in moved_outs]
    crossing = []
    for v in [*[x for b in stays for x in b.inputs], *body.outputs]:
        if v in moved_outs and v not in crossing:
            crossing.append(v)
    if not crossing:
        return [], e
    outer_eqns = []
    for b in moved:
        inputs = []
        for v in b.inputs:
            if v in body.consts and v not in outer:
                outer[v] = Var(v.aval)
                consts[outer[v]] = body.consts[v]
            inputs.append(outer[v])
        out = Var(b.out.aval)
        outer[b.out] = out
        outer_eqns.append(Eqn(b.op, tuple(inputs), b.params, out, b.source))
    new_inputs = [Var(v.aval) for v in crossing]
    replace = dict(zip(crossing, new_inputs))
    body_eqns = tuple(
        Eqn(b.op, tuple(replace.get(v, v) for v in b.inputs), b.params, b.out, b.source)
        for b in stays
    )
    body_outputs = tuple(replace.get(v, v) for v in body.outputs)
    new_body = Graph(
        body.inputs[: 1 + n_consts] + tuple(new_inputs) + body.inputs[1 + n_consts :],
        body_eqns,
        body_outputs,
        body.consts,
    )
    cond = p["cond"]
    if cond is not None:
        extra = tuple(Var(v.aval) for v in crossing)
        cond = Graph(
            cond.inputs[: 1 + n_consts] + extra + cond.inputs[1 + n_consts :],
            cond.eqns,
            cond.outputs,
            cond.consts,
        )
    inputs = (*e.inputs[:n_consts], *[outer[v] for v in crossing], *e.inputs[n_consts:])
    params = {**p, "body": new_body, "cond": cond, "n_consts": n_consts + len(crossing)}
    return outer_eqns, Eqn(e.op, inputs, params, e.out, e.source)
