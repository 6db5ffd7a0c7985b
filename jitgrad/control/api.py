"""Loops and branches that compile: JAX's `lax` forms and TensorFlow's functional forms.

Eagerly each is a Python loop or branch over jitgrad's ops (a tape records every op, so tape
gradients and nested tapes work). Under a trace (`jit`, `jit_grad`, graph transforms) the body
is traced ONCE into a graph held by a `loop` or `cond` primitive (primitives.py), so that the
graph's size, and its compile time, never depend on the trip count.

Where JAX and TensorFlow share a name with different meanings (`scan`, `while_loop`), the
top-level `jitgrad.<name>` is TensorFlow's and `jitgrad.lax.<name>` is JAX's. `cond` serves
both: `cond(pred, true_fn, false_fn)` (TensorFlow's keywords) and `cond(pred, true_fun,
false_fun, *operands)` (JAX's; a 4th positional argument that is a str is TensorFlow's `name`).
"""

from __future__ import annotations

import numpy as np

from jitgrad.control.primitives import INDEX_DTYPE, cond_p, loop_p, tuple_get_p
from jitgrad.control.tracing import trace_function, union_by_identity, with_inputs
from jitgrad.core import pytree
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind, current_trace
from jitgrad.core.errors import op_error, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.weak import WEAK_TYPES, as_weak
from jitgrad.ops.base import as_value
from jitgrad.ops.elementwise import cast, maximum, minimum, not_equal
from jitgrad.ops.shape import stack


# -- helpers ------------------------------------------------------------------------------------
def values_of(tree, name: str) -> tuple[list, object]:
    leaves, treedef = pytree.flatten(tree)
    return [as_value(x, op=name) for x in leaves], treedef


def python_floats(tree) -> list[bool]:
    """Which leaves of an initial carry are Python floats. Like JAX's weakly typed values, each
    takes the float dtype the body gives it (`scan(f, 0.0, float64 xs)` carries float64, where
    the float32 of TensorFlow's rule for a Python float would not match); every other leaf
    must keep its dtype."""
    return [type(leaf) is float for leaf in pytree.flatten(tree)[0]]


def _adopted(init: list, loose: list, out_avals: list) -> list:
    """`init` with each loose leaf (python_floats) cast to the float dtype the body returned
    for it; the very list when nothing changes."""
    changed = [
        k
        for k, (leaf, out) in enumerate(zip(init, out_avals))
        if loose[k]
        and out.dtype != leaf.dtype
        and out.dtype.kind == "f"
        and tuple(out.shape) == tuple(leaf.shape)
    ]
    if not changed:
        return init
    return [cast(leaf, out_avals[k].dtype) if k in changed else leaf for k, leaf in enumerate(init)]


def _traced(*leaves) -> bool:
    """Whether the loop must become a primitive: under a trace (its body may close over traced
    values), or when a value is a tracer."""
    return current_trace.get() is not None or any(type(x) is Tracer for x in leaves)


def _describe(tree, avals) -> str:
    """A structure with each leaf's type: `(f32[3], {'h': f64[]})`."""
    return repr(pytree.unflatten(tree, [_Short(a) for a in avals]))


class _Short:
    def __init__(self, aval):
        self.text = aval.short()

    def __repr__(self) -> str:
        return self.text


def _leaf_count(tree) -> int:
    """How many leaves a pytree structure holds."""
    if tree == pytree.LEAF:
        return 1
    if tree is None:
        return 0
    return sum(_leaf_count(child) for child in tree[2])


def _check_carry(name: str, what: str, tree_in, avals_in, tree_out, avals_out) -> None:
    if tree_in != tree_out or list(avals_in) != list(avals_out):
        raise TypeError(
            with_location(
                f"{name}: the body's {what} output {_describe(tree_out, avals_out)} differs "
                f"from its input {_describe(tree_in, avals_in)} (structure, shapes and dtypes "
                "must match)"
            )
        )


def _avals(values) -> list[AVal]:
    return [AVal(tuple(v.shape), v.dtype) for v in values]


def _index(i: int):
    return Tensor(np.asarray(i, INDEX_DTYPE))


def _leaf_like(value, like, name: str):
    """A body's output leaf as a tensor of its carry's dtype when it is a Python scalar."""
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        return as_value(value, like.dtype, op=name)
    return as_value(value, op=name)


def _unpack(t, count: int) -> list:
    if isinstance(t, tuple):  # eager: the primitive's replay returned its results
        return list(t)
    return [bind(tuple_get_p, t, index=k) for k in range(count)]


# -- the general loop ---------------------------------------------------------------------------
def _scan(step, init, init_tree, xs, length, reverse, name, remat=False, loose=None):
    """(carry leaves, ys leaves, ys tree) of `step(i, carry leaves, x leaves) -> (carry tree,
    y tree)` run over `length` iterations, `i` backwards if `reverse`; `remat`: see
    `scan`; `loose`: python_floats of the carry."""
    loose = loose or [False] * len(init)
    if not _traced(*init, *xs):
        return _scan_eager(step, init, init_tree, xs, length, reverse, name, loose)
    n_carry = len(init)

    def body(i, *rest):
        out = step(i, list(rest[:n_carry]), list(rest[n_carry:]))
        return _pair(out, name)

    for _ in range(2):  # a second trace when a loose leaf takes the body's dtype
        in_avals = [AVal((), INDEX_DTYPE), *_avals(init)]
        in_avals += [AVal(x.shape[1:], x.dtype) for x in xs]
        traced = trace_function(
            body, in_avals, lambda ts: ts, f"{name} body", out_dtypes=[c.dtype for c in init]
        )
        carry_tree, y_tree = _split_pair_tree(traced.out_tree)
        outs = traced.graph.outputs
        n_out = _leaf_count(carry_tree)
        adopted = _adopted(init, loose, [v.aval for v in outs[:n_out]])
        if adopted is init or carry_tree != init_tree:
            break
        init = adopted
    _check_carry(name, "carry", init_tree, _avals(init), carry_tree, [v.aval for v in outs[:n_out]])
    consts = traced.captured
    graph = with_inputs(traced.graph, len(in_avals), consts, consts, at=1)
    n_ys = len(outs) - n_carry
    result = bind(
        loop_p,
        *consts,
        *init,
        *xs,
        body=graph,
        cond=None,
        n_consts=len(consts),
        n_carry=n_carry,
        length=length,
        max_trips=None,
        reverse=reverse,
        remat=remat,
        extends=None,
    )
    values = _unpack(result, 1 + n_carry + n_ys)
    return _weak_like(init, values[1 : 1 + n_carry]), values[1 + n_carry :], y_tree


def _weak_like(init: list, carry: list) -> list:
    """The final carry, weak where its initial value was weak (a Python float argument of
    jit/grad, core/weak.py): it runs in float64 inside the loop and, like any weak value,
    becomes float32 when it leaves the function, as the eager loop's float32 carry."""
    return [
        as_weak(c) if type(i) in WEAK_TYPES and c.dtype == np.float64 else c
        for i, c in zip(init, carry)
    ]


def _scan_eager(step, init, init_tree, xs, length, reverse, name, loose):
    carry = list(init)
    slices, y_tree = [], None
    order = range(length - 1, -1, -1) if reverse else range(length)
    for i in order:
        carry_out, y = _pair(step(_index(i), carry, [x[i] for x in xs]), name)
        leaves, tree = pytree.flatten(carry_out)
        new = [_leaf_like(v, c, name) for v, c in zip(leaves, carry)] if tree == init_tree else []
        carry = _adopted(carry, loose, _avals(new))
        _check_carry(name, "carry", init_tree, _avals(carry), tree, _avals(new or leaves))
        carry = new
        y_leaves, y_tree = pytree.flatten(y)
        slices.append([as_value(v, op=name) for v in y_leaves])
    if length == 0:  # the ys' types come from the body, traced once
        return carry, *_empty_ys(step, init, xs, name)
    if reverse:
        slices.reverse()
    ys = [stack([s[k] for s in slices]) for k in range(len(slices[0]))]
    return carry, ys, y_tree


def _empty_ys(step, init, xs, name):
    n_carry = len(init)
    in_avals = [AVal((), INDEX_DTYPE), *_avals(init), *[AVal(x.shape[1:], x.dtype) for x in xs]]
    traced = trace_function(
        lambda i, *rest: _pair(step(i, list(rest[:n_carry]), list(rest[n_carry:])), name),
        in_avals,
        lambda ts: ts,
        f"{name} body",
    )
    _, y_tree = _split_pair_tree(traced.out_tree)
    ys = [
        Tensor(np.zeros((0, *v.aval.shape), v.aval.dtype)) for v in traced.graph.outputs[n_carry:]
    ]
    return ys, y_tree


def _pair(out, name: str):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
            with_location(
                f"{name}: the body must return a pair (carry, y), got {type(out).__name__}"
            )
        )
    return tuple(out)


def _split_pair_tree(tree):
    """(carry tree, y tree) of the tree of a `(carry, y)` pair."""
    _, _, (carry_tree, y_tree) = tree
    return carry_tree, y_tree


def _scan_length(name: str, xs, length) -> int:
    lengths = {int(x.shape[0]) for x in xs if x.ndim}
    if any(x.ndim == 0 for x in xs):
        raise op_error(name, "every scanned input needs a leading axis; got a scalar")
    if length is not None:
        if not isinstance(length, (int, np.integer)) or length < 0:
            raise op_error(name, f"length must be a non-negative int, got {length!r}", TypeError)
        lengths.add(int(length))
    if len(lengths) > 1:
        raise op_error(name, f"scanned inputs have different leading sizes {sorted(lengths)}")
    if not lengths:
        raise op_error(name, "needs xs or a length")
    return lengths.pop()


def _while(cond_step, body_step, init, init_tree, max_trips, name, loose=None):
    """Carry leaves after `body_step(carry leaves) -> carry tree` ran while `cond_step(carry
    leaves)` holds, at most `max_trips` times (None: no bound); `loose`: python_floats of the
    carry."""
    loose = loose or [False] * len(init)
    if max_trips is not None:
        if not isinstance(max_trips, (int, np.integer)) or max_trips < 0:
            raise op_error(
                name, f"maximum_iterations must be a non-negative int, got {max_trips!r}", TypeError
            )
        max_trips = int(max_trips)
    if not _traced(*init):
        return _while_eager(cond_step, body_step, init, init_tree, max_trips, name, loose)
    for _ in range(2):  # a second trace when a loose leaf takes the body's dtype
        in_avals = [AVal((), INDEX_DTYPE), *_avals(init)]
        body_traced = trace_function(
            lambda i, *carry: body_step(list(carry)),
            in_avals,
            lambda ts: ts,
            f"{name} body",
            out_dtypes=[c.dtype for c in init],
        )
        adopted = _adopted(init, loose, [v.aval for v in body_traced.graph.outputs])
        if adopted is init or body_traced.out_tree != init_tree:
            break
        init = adopted
    cond_traced = trace_function(
        lambda i, *carry: _predicate(cond_step(list(carry)), name),
        in_avals,
        lambda ts: ts,
        f"{name} condition",
    )
    _check_carry(
        name,
        "loop variables",
        init_tree,
        _avals(init),
        body_traced.out_tree,
        [v.aval for v in body_traced.graph.outputs],
    )
    consts = union_by_identity(cond_traced.captured, body_traced.captured)
    cond_graph = with_inputs(cond_traced.graph, len(in_avals), cond_traced.captured, consts, 1)
    body_graph = with_inputs(body_traced.graph, len(in_avals), body_traced.captured, consts, 1)
    result = bind(
        loop_p,
        *consts,
        *init,
        body=body_graph,
        cond=cond_graph,
        n_consts=len(consts),
        n_carry=len(init),
        length=None,
        max_trips=max_trips,
        reverse=False,
        remat=False,
        extends=None,
    )
    return _weak_like(init, _unpack(result, 1 + len(init))[1:])


def _while_eager(cond_step, body_step, init, init_tree, max_trips, name, loose):
    carry, trips = list(init), 0
    while (max_trips is None or trips < max_trips) and bool(
        _predicate(cond_step(carry), name)._value
    ):
        leaves, tree = pytree.flatten(body_step(carry))
        new = [_leaf_like(v, c, name) for v, c in zip(leaves, carry)] if tree == init_tree else []
        carry = _adopted(carry, loose, _avals(new))
        _check_carry(name, "loop variables", init_tree, _avals(carry), tree, _avals(new or leaves))
        carry, trips = new, trips + 1
    return carry


def _predicate(value, name: str):
    """A loop condition's or branch predicate's value as a bool scalar, or a clear error."""
    value = as_value(value, op=name)
    if value.shape != ():
        raise op_error(
            name,
            f"the predicate must be a scalar, got shape {value.shape}; for an elementwise "
            "choice use jitgrad.where",
            TypeError,
        )
    return value if value.dtype == np.bool_ else not_equal(value, 0)


def _switch(index, branches, operands, name):
    """The outputs of `branches[index](*operands)`; only that branch runs."""
    if not branches:
        raise op_error(name, "needs at least one branch")
    leaves, tree = values_of(operands, name)
    if not _traced(index, *leaves) or (
        not isinstance(index, Tracer) and current_trace.get() is not None
    ):
        # A known index (a Python value or a constant) picks its branch now.
        k = int(np.asarray(index._value if isinstance(index, Tensor) else index))
        return branches[min(max(k, 0), len(branches) - 1)](*operands)
    avals = _avals(leaves)
    traced = [
        trace_function(
            lambda *ts, b=b: b(*pytree.unflatten(tree, list(ts))),
            avals,
            lambda ts: ts,
            f"{name} branch {k}",
        )
        for k, b in enumerate(branches)
    ]
    first = traced[0]
    for k, t in enumerate(traced[1:], 1):
        _check_branch(name, k, first, t)
    consts = union_by_identity(*[t.captured for t in traced])
    graphs = tuple(with_inputs(t.graph, len(avals), t.captured, consts, len(avals)) for t in traced)
    index = cast(minimum(maximum(cast(index, INDEX_DTYPE), 0), len(branches) - 1), INDEX_DTYPE)
    result = bind(cond_p, index, *leaves, *consts, branches=graphs)
    outs = _unpack(result, len(first.graph.outputs))
    return pytree.unflatten(first.out_tree, outs)


def _check_branch(name: str, k: int, first, other) -> None:
    a = [v.aval for v in first.graph.outputs]
    b = [v.aval for v in other.graph.outputs]
    if first.out_tree != other.out_tree or a != b:
        raise TypeError(
            with_location(
                f"{name}: branch {k} returns {_describe(other.out_tree, b)} but branch 0 "
                f"returns {_describe(first.out_tree, a)}; every branch must return the same "
                "structure, shapes and dtypes"
            )
        )


# -- JAX's forms (jitgrad.lax) ------------------------------------------------------------------
def scan(f, init, xs=None, length=None, reverse=False, unroll=1, remat=False):
    """JAX's `lax.scan`: `f(carry, x) -> (carry, y)` over the leading axis of `xs` (any pytree);
    returns `(final carry, stacked ys)`. `unroll` is accepted for JAX's signature (the compiled
    loop is a native loop whose unrolling LLVM decides). The gradient stores, per iteration,
    what the body's backward pass reads except what cheap arithmetic recomputes from the carry;
    `remat=True` stores the carry only and recomputes the body in the backward pass (JAX's
    `scan(jax.checkpoint(f))`): memory of one carry per step, for long loops.

    >>> jitgrad.lax.scan(lambda c, x: (c + x, c * x), 0.0, jitgrad.constant([1.0, 2.0, 3.0]))[0]
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=6.0>
    """
    del unroll
    init_leaves, init_tree = values_of(init, "scan")
    xs_leaves, xs_tree = values_of(xs, "scan")
    n = _scan_length("scan", xs_leaves, length)

    def step(i, carry, x):
        return f(pytree.unflatten(init_tree, carry), pytree.unflatten(xs_tree, x))

    carry, ys, y_tree = _scan(
        step,
        init_leaves,
        init_tree,
        xs_leaves,
        n,
        reverse,
        "scan",
        remat=bool(remat),
        loose=python_floats(init),
    )
    return pytree.unflatten(init_tree, carry), pytree.unflatten(y_tree, ys)


def fori_loop(lower, upper, body_fun, init_val):
    """JAX's `lax.fori_loop`: `val = body_fun(i, val)` for i in [lower, upper). Known bounds make
    a scan (differentiable, fixed trip count); traced bounds a while loop.

    >>> float(jitgrad.fori_loop(0, 4, lambda i, v: v * 2.0, 1.0))
    16.0
    """
    init_leaves, init_tree = values_of(init_val, "fori_loop")
    if not isinstance(lower, Tracer) and not isinstance(upper, Tracer):
        lo, hi = _int_bound(lower), _int_bound(upper)

        def step(i, carry, x):
            index = i if lo == 0 else i + lo
            return body_fun(index, pytree.unflatten(init_tree, carry)), ()

        trips, loose = max(hi - lo, 0), python_floats(init_val)
        carry, _, _ = _scan(
            step, init_leaves, init_tree, [], trips, False, "fori_loop", loose=loose
        )
        return pytree.unflatten(init_tree, carry)
    lo, hi = as_value(lower, op="fori_loop"), as_value(upper, op="fori_loop")
    lo, hi = cast(lo, INDEX_DTYPE), cast(hi, INDEX_DTYPE)
    start = [lo, *init_leaves]

    def cond_step(carry):
        return carry[0] < hi

    def body_step(carry):
        value = body_fun(carry[0], pytree.unflatten(init_tree, carry[1:]))
        return [carry[0] + 1, *pytree.flatten(value)[0]]

    loose = [False, *python_floats(init_val)]
    out = _while(cond_step, body_step, start, pytree.flatten(start)[1], None, "fori_loop", loose)
    return pytree.unflatten(init_tree, out[1:])


def _int_bound(value) -> int:
    array = np.asarray(value._value if isinstance(value, Tensor) else value)
    if array.shape != () or array.dtype.kind not in "iub":
        raise op_error("fori_loop", f"bounds must be integer scalars, got {value!r}", TypeError)
    return int(array)


def while_loop(cond_fun, body_fun, init_val, maximum_iterations=None):
    """JAX's `lax.while_loop`: `val = body_fun(val)` while `cond_fun(val)`; at most
    `maximum_iterations` times if given. Unlike JAX's, it is differentiable in reverse mode (as
    TensorFlow's is): the gradient stores each iteration's carry in a stack sized by
    `maximum_iterations`, or grown geometrically.

    >>> float(jitgrad.lax.while_loop(lambda v: v < 10.0, lambda v: v * 2.0, 1.0))
    16.0
    """
    leaves, tree = values_of(init_val, "while_loop")
    out = _while(
        lambda carry: cond_fun(pytree.unflatten(tree, carry)),
        lambda carry: body_fun(pytree.unflatten(tree, carry)),
        leaves,
        tree,
        maximum_iterations,
        "while_loop",
        python_floats(init_val),
    )
    return pytree.unflatten(tree, out)


def switch(index, branches, *operands):
    """JAX's `lax.switch`: `branches[index](*operands)`, index clamped to the branches; only
    that branch runs."""
    if isinstance(index, Tracer) and index.shape != ():
        raise op_error("switch", f"the index must be a scalar, got shape {index.shape}", TypeError)
    return _switch(index, list(branches), operands, "switch")


def cond(pred, true_fun, false_fun, *operands):
    """JAX's `lax.cond`: `true_fun(*operands)` if `pred` else `false_fun(*operands)`; only the
    taken branch runs. For an elementwise choice use `jitgrad.where`."""
    if isinstance(pred, Tracer):
        pred = _predicate(pred, "cond")
    elif not isinstance(pred, Tensor) or current_trace.get() is not None:
        return (true_fun if _concrete_truth(pred) else false_fun)(*operands)
    else:
        pred = _predicate(pred, "cond")
        return (true_fun if bool(pred._value) else false_fun)(*operands)
    return _switch(cast(pred, INDEX_DTYPE), [false_fun, true_fun], operands, "cond")


def _concrete_truth(pred) -> bool:
    array = np.asarray(pred._value if isinstance(pred, Tensor) else pred)
    if array.shape != ():
        raise op_error(
            "cond",
            f"the predicate must be a scalar, got shape {array.shape}; for an elementwise "
            "choice use jitgrad.where",
            TypeError,
        )
    return bool(array)


def map(f, xs):  # noqa: A001 - JAX's name
    """JAX's `lax.map`: `f` applied to each slice of `xs` along its leading axis, stacked."""
    _, ys = scan(lambda c, x: ((), f(x)), (), xs)
    return ys
