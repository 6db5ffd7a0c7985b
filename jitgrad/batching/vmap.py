"""vmap: a function of one example -> the same function over a batch, without a Python loop.

How: the function is traced ONCE on one example (the batched arguments with their batch axis
removed) into a graph, and the graph is replayed through `bind` with each value marked
batched or not, every op through its batching rule (`rules.py`). The replay is made of
ordinary ops, so `vmap` composes with everything else in any order: under `jit` the batched
ops are traced into the caller's graph (`jit(vmap(grad(loss)))` is ONE kernel), under a tape
they are recorded (`grad` of a vmapped function), and eagerly they run as numpy.

Arguments a function closes over (tensors, Variables, an enclosing trace's values) are inputs
of the example graph, not constants, so that gradients flow to them in the replay.
"""

from __future__ import annotations

import functools

from jitgrad.batching.rules import apply_rule, batched_like
from jitgrad.control.api import map as lax_map
from jitgrad.core import pytree
from jitgrad.core.aval import DYNAMIC, AVal, TupleAVal
from jitgrad.core.dispatch import bind, current_trace, tape_stack
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.base import as_value
from jitgrad.ops.shape import transpose

_ARRAYS = (Tensor, Tracer, Variable)


class _ExampleTrace(Trace):
    """The trace of one example: tensors the function uses become inputs (fed with the
    tensors themselves in the replay), so a tape recording the replay sees them."""

    def lift(self, value):
        if type(value) is Tensor:
            return self._capture(value, None)
        return super().lift(value)


def vmap(fun, in_axes=0, out_axes=0, axis_name=None, axis_size=None):
    """JAX's vmap: `fun` mapped over axis `in_axes` of its arguments, results stacked along
    `out_axes`.

    `in_axes` is an int, None (not mapped: the same value for every example), or a tuple with
    one entry per positional argument, each an int, None or a structure matching that
    argument (lists, tuples, dicts) with ints/None at the leaves. Keyword arguments are
    mapped over their axis 0, as in JAX. `out_axes` likewise for the result's structure.
    `axis_size` gives the batch size when no argument is mapped.

    >>> jitgrad.vmap(lambda x: x @ x)(jitgrad.ones((3, 2)))
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([2., 2., 2.], dtype=float32)>
    """
    if axis_name is not None:
        raise ValueError(
            with_location(
                "vmap: axis_name is for collectives over the mapped axis (psum, ...), which "
                "jitgrad does not have; reduce over the stacked result instead"
            )
        )
    name = getattr(fun, "__name__", "function")

    @functools.wraps(fun)
    def batched_fun(*args, **kwargs):
        return _vmap_call(fun, name, in_axes, out_axes, axis_size, args, kwargs)

    return batched_fun


def _vmap_call(fun, name, in_axes, out_axes, axis_size, args, kwargs):
    specs = _arg_specs(name, in_axes, len(args))
    arg_leaves, arg_tree = pytree.flatten((tuple(args), kwargs))
    leaf_axes = []
    for arg, spec in zip(args, specs):
        leaf_axes += _leaf_axes(name, "in_axes", spec, arg)
    leaf_axes += [0] * (len(arg_leaves) - len(leaf_axes))  # keyword arguments: axis 0
    leaves, batched, size = _batch_leaves(name, arg_leaves, leaf_axes, axis_size)

    graph, out_tree, example_trace = _trace_example(fun, name, leaves, batched, arg_tree)
    if _loops_over_examples(graph):
        return _per_example(fun, arg_tree, leaves, batched, out_axes, name)
    values = [(x, b) for x, b in zip(leaves, batched) if _is_array(x)]
    values += [(v, False) for v, _ in example_trace.captured]
    outs = _replay_batched(graph, values, size)
    return _place_outputs(name, out_tree, outs, out_axes, size)


def _arg_specs(name: str, in_axes, nargs: int) -> list:
    if in_axes is None or isinstance(in_axes, int):
        return [in_axes] * nargs
    if isinstance(in_axes, (tuple, list)) and len(in_axes) == nargs:
        return list(in_axes)
    raise ValueError(
        with_location(
            f"vmap of {name}: in_axes {in_axes!r} must be an int, None, or a tuple with one "
            f"entry per positional argument ({nargs} given)"
        )
    )


def _leaf_axes(name: str, what: str, spec, tree) -> list:
    """The axis of every leaf of `tree` (pytree order), from `spec`: an int or None for a whole
    subtree, or a container shaped like `tree`."""
    if spec is None or isinstance(spec, int):
        return [spec] * len(pytree.flatten(tree)[0])
    if isinstance(spec, dict) and isinstance(tree, dict) and set(spec) == set(tree):
        return [
            a for k in pytree.sorted_keys(tree) for a in _leaf_axes(name, what, spec[k], tree[k])
        ]
    if (
        isinstance(spec, (list, tuple))
        and isinstance(tree, (list, tuple))
        and len(spec) == len(tree)
    ):
        return [a for s, t in zip(spec, tree) for a in _leaf_axes(name, what, s, t)]
    raise ValueError(
        with_location(
            f"vmap of {name}: {what} entry {spec!r} does not match the structure of "
            f"{pytree.describe(pytree.flatten(tree)[1])}"
        )
    )


def _is_array(x) -> bool:
    return isinstance(x, _ARRAYS)


def _batch_leaves(name, leaves, axes, axis_size):
    """(leaves with batched ones moved to axis 0, batched flags, batch size). Arrays stay as
    tensors; other unmapped leaves (Python scalars, strings) pass through unchanged."""
    out, batched, sizes = [], [], []
    for k, (x, axis) in enumerate(zip(leaves, axes)):
        if axis is None:
            if _is_array(x) or hasattr(x, "__array__") and not isinstance(x, (int, float)):
                x = as_value(x, op="vmap")
            out.append(x)
            batched.append(False)
            continue
        x = as_value(x, op="vmap")
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(
                with_location(
                    f"vmap of {name}: in_axes {axis} for an argument of shape {x.shape} "
                    f"(leaf {k}); a mapped argument needs that axis"
                )
            )
        axis %= x.ndim
        sizes.append((x.shape[axis], x.shape, axis))
        out.append(_to_front(x, axis))
        batched.append(True)
    distinct = {n for n, _, _ in sizes}
    if len(distinct) > 1:
        listed = ", ".join(f"axis {a} of {s} (size {n})" for n, s, a in sizes)
        raise ValueError(
            with_location(f"vmap of {name}: the mapped axes have different sizes: {listed}")
        )
    if not sizes:
        if axis_size is None:
            raise ValueError(
                with_location(
                    f"vmap of {name}: no argument is mapped (in_axes are all None); give "
                    "axis_size to say how many copies to make"
                )
            )
        return out, batched, int(axis_size)
    (size,) = distinct
    if axis_size is not None and int(axis_size) != size:
        raise ValueError(
            with_location(f"vmap of {name}: axis_size {axis_size} but the mapped axes have {size}")
        )
    return out, batched, size


def _to_front(x, axis: int):
    if axis == 0:
        return x
    perm = (axis,) + tuple(i for i in range(x.ndim) if i != axis)
    return transpose(x, perm)


def _from_front(x, axis: int):
    if axis == 0:
        return x
    perm = tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, x.ndim))
    return transpose(x, perm)


def _trace_example(fun, name, leaves, batched, arg_tree):
    """(graph of `fun` on one example, the structure of its result, the trace)."""
    trace = _ExampleTrace(f"vmap of {name}", parent=current_trace.get())
    token = tape_stack.set(())  # enclosing tapes record the batched replay, not this trace
    try:
        with tracing(trace):
            example = [
                trace.new_input(AVal(tuple(x.shape[1:] if b else x.shape), x.dtype))
                if _is_array(x)
                else x
                for x, b in zip(leaves, batched)
            ]
            args, kwargs = pytree.unflatten(arg_tree, example)
            result = fun(*args, **kwargs)
            out_leaves, out_tree = pytree.flatten(result)
            graph = trace.to_graph(out_leaves)
    finally:
        tape_stack.reset(token)
    return graph, out_tree, trace


def _loops_over_examples(graph) -> bool:
    """Whether `graph` is run per example rather than replayed batched: a custom gradient's
    rule is Python over one example, and the run-time-length stacks a while loop's gradient
    passes between its loops (`DYNAMIC` length) cannot be broadcast over a batch."""
    if graph.custom_vjps:
        return True
    for e in graph.eqns:
        avals = e.out.aval.avals if isinstance(e.out.aval, TupleAVal) else (e.out.aval,)
        if any(DYNAMIC in a.shape for a in avals):
            return True
    return False


def _replay_batched(graph, values, size: int) -> list:
    """`graph` replayed on (value, batched) pairs: (value, batched) per output."""
    env = {v: (Tensor(c), False) for v, c in graph.consts.items()}
    env.update(zip(graph.inputs, values))
    trace = current_trace.get()
    saved = trace.source if trace is not None else None
    try:
        for e in graph.eqns:
            if trace is not None:
                trace.source = e.source or saved
            inputs = [env[v] for v in e.inputs]
            xs = [x for x, _ in inputs]
            flags = [b for _, b in inputs]
            if any(flags):
                env[e.out] = (apply_rule(e.op, size, xs, flags, e.params), True)
            else:
                env[e.out] = (bind(e.op, *xs, **e.params), False)
    finally:
        if trace is not None:
            trace.source = saved
    return [env[v] for v in graph.outputs]


def _place_outputs(name, out_tree, outs, out_axes, size):
    out_leaves = [x for x, _ in outs]
    axes = _leaf_axes(name, "out_axes", out_axes, pytree.unflatten(out_tree, out_leaves))
    placed = []
    for (x, b), axis in zip(outs, axes):
        if axis is None:
            if b:
                raise ValueError(
                    with_location(
                        f"vmap of {name}: out_axes None for a result of shape {x.shape[1:]} "
                        "that differs between examples"
                    )
                )
            placed.append(x)
            continue
        x = x if b else batched_like(x, size)
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(
                with_location(
                    f"vmap of {name}: out_axes {axis} for a result of shape {x.shape[1:]}"
                )
            )
        placed.append(_from_front(x, axis % x.ndim))
    return pytree.unflatten(out_tree, placed)


def _per_example(fun, arg_tree, leaves, batched, out_axes, name):
    """`fun` on each example in a loop (`lax.map`), for functions whose graph a batching rule
    cannot replay (a custom_gradient's Python rule)."""
    positions = [k for k, b in enumerate(batched) if b]

    def one(slices):
        example = list(leaves)
        for k, s in zip(positions, slices):
            example[k] = s
        args, kwargs = pytree.unflatten(arg_tree, example)
        return fun(*args, **kwargs)

    stacked = lax_map(one, [leaves[k] for k in positions])
    out_leaves, out_tree = pytree.flatten(stacked)
    return _place_outputs(name, out_tree, [(x, True) for x in out_leaves], out_axes, None)
