"""Function transforms built on the tape: grad, value_and_grad, jvp, hvp and the
tfe-style gradients_function. They work on eager tensors and on tracers alike, so they
compose with each other and with `jit` in any order."""

from __future__ import annotations

import functools
import inspect
import itertools

from jitgrad.autodiff.tape import GradientTape, _check_target
from jitgrad.autodiff.vjp import append_backward
from jitgrad.core import pytree
from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.core.weak import WEAK_TYPES, as_weak, weak_constant
from jitgrad.ir.trace import Trace, tracing
from jitgrad.ops.base import as_value, settle_weak
from jitgrad.ops.elementwise import cast, zeros_like_value

_VALUES = (Tensor, Tracer)
VARIABLES = "variables"  # `wrt` of `_value_and_grads`: the trainable Variables read


def _as_tree_of_values(tree):
    """Tensors for the leaves of a differentiated argument; a Python float is weak (in
    float64, core/weak.py), so f computes with the 1.7 it would get in an eager call."""
    leaves, treedef = pytree.flatten(tree)
    return pytree.unflatten(
        treedef, [weak_constant(x) if type(x) is float else as_value(x) for x in leaves]
    )


def _settled(value, args, wrt, grads):
    """(value, grads) as they leave the transform: a weak value becomes float32, and the
    gradient for a weak argument (a Python float) takes the value's dtype: float64 where f
    computes in float64, float32 as TensorFlow's Python floats otherwise."""
    value = settle_weak(value)
    if wrt == VARIABLES:
        return value, grads
    settled = []
    for i, g in zip(wrt, grads):
        sources = pytree.flatten(args[i])[0]
        leaves, tree = pytree.flatten(g)
        leaves = [
            cast(x, value.dtype) if type(s) in WEAK_TYPES and x is not None else x
            for s, x in zip(sources, leaves)
        ]
        settled.append(pytree.unflatten(tree, leaves))
    return value, settled


def _argnums_tuple(argnums, nargs: int, fn) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not isinstance(i, int) or not -nargs <= i < nargs:
            raise ValueError(
                with_location(
                    f"argnums {argnums!r} of {getattr(fn, '__name__', fn)}: the function was "
                    f"called with {nargs} positional arguments"
                )
            )
    return tuple(i % nargs for i in nums)


def _require_float_leaves(tree, argnum: int, fn) -> None:
    """grad(f)(3) would otherwise silently return 0: the Python int 3 is an int32 tensor,
    which has no gradient. JAX refuses integer inputs to grad for the same reason."""
    for leaf in pytree.flatten(tree)[0]:
        if leaf.dtype.kind != "f":
            raise TypeError(
                with_location(
                    f"{getattr(fn, '__name__', 'function')}: argument {argnum} is differentiated "
                    f"but holds a {leaf.dtype.name} value of shape {leaf.shape}; gradients need "
                    "float inputs (write 3.0, not 3, or cast it)"
                )
            )


def _split_aux(out, has_aux: bool, f):
    """(value, aux) of `f`'s output."""
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            with_location(
                f"{f.__name__} was differentiated with has_aux=True, so it must return a pair "
                "(value, aux)"
            )
        )
    return out[0], out[1]


def _target(value, f):
    """`f`'s differentiated output as a tensor, or a TypeError that says what `f` returned:
    as_value's own message for a tuple is numpy's about a ragged nested list."""
    if value is None or isinstance(value, (tuple, list, dict)):
        what = "None" if value is None else f"a {type(value).__name__} of {len(value)}"
        raise TypeError(
            with_location(
                f"{getattr(f, '__name__', 'function')} returned {what}, but a gradient is of "
                "one value: return a scalar (or a tensor: its sum is differentiated), or pass "
                "has_aux=True and return (value, aux)"
            )
        )
    return as_value(value)


def _watched_args(f, args, nums, require_float: bool) -> list:
    """`args` with the differentiated ones as trees of tensors (or tracers)."""
    args = list(args)
    for i in nums:
        args[i] = _as_tree_of_values(args[i])
        if require_float:
            _require_float_leaves(args[i], i, f)
    return args


def _value_and_grads(f, args, kwargs, wrt, has_aux, unconnected="zero"):
    """(value, aux, gradients of value w.r.t. `wrt`): the one "watch, run, gradient" helper.

    `wrt` is a tuple of argument numbers (each gradient has its argument's structure) or
    VARIABLES (a list: one per trainable Variable `f` reads, in first-read order). Eagerly
    the tape records `f`; under a trace (jit_grad, jit_train_step, jit(grad(f))) `f` is
    traced into a graph and its joint graph appended, so the compiler gets a plain graph."""
    if current_trace.get() is not None:
        return _traced_value_and_grads(f, args, kwargs, wrt, has_aux, unconnected)
    variables = wrt == VARIABLES
    with GradientTape(watch_accessed_variables=variables) as tape:
        if not variables:
            tape.watch([args[i] for i in wrt])
        value, aux = _split_aux(f(*args, **kwargs), has_aux, f)
    value = _target(value, f)
    if value.dtype.kind != "f":
        # JAX's rule for its transforms (the tape, as TensorFlow's, would warn and give None).
        raise TypeError(
            with_location(
                f"{getattr(f, '__name__', 'function')} returns a {value.dtype.name} value of "
                f"shape {value.shape}: only float targets can be differentiated (cast it first)"
            )
        )
    sources = list(tape.watched_variables()) if variables else [args[i] for i in wrt]
    return value, aux, tape.gradient(value, sources, unconnected_gradients=unconnected)


def _traced_value_and_grads(f, args, kwargs, wrt, has_aux, unconnected):
    """`_value_and_grads` under a trace: `f` is traced in a nested trace (its inputs the
    differentiated leaves; everything else it uses is captured), then `append_backward`
    adds the graph and its backward to the current trace."""
    sub = Trace(getattr(f, "__name__", "f"), parent=current_trace.get())
    # A state that `f` advances (a random Generator) is also an output of its graph, and its
    # new value the enclosing trace's, if that one returns states.
    sub.states = None if sub.parent.states is None else {}
    variables = wrt == VARIABLES
    leaves, trees = zip(*[pytree.flatten(args[i]) for i in wrt]) if not variables else ((), ())
    flat = [x for arg_leaves in leaves for x in arg_leaves]
    ends = list(itertools.accumulate(map(len, leaves)))
    token = tape_stack.set(())  # the enclosing tapes see the replay, not the nested trace
    try:
        with tracing(sub):
            inner = [sub.new_input(AVal(x.shape, x.dtype)) for x in flat]
            inner = [as_weak(t) if type(x) in WEAK_TYPES else t for x, t in zip(flat, inner)]
            sub_args = list(args)
            for k, i in enumerate(() if variables else wrt):
                sub_args[i] = pytree.unflatten(trees[k], inner[ends[k] - len(leaves[k]) : ends[k]])
            value, aux = _split_aux(f(*sub_args, **kwargs), has_aux, f)
            value = settle_weak(_target(value, f))  # here: weakness does not outlive `sub`
            _check_target(value)
            aux_leaves, aux_tree = pytree.flatten(aux)
            traced_aux = [k for k, x in enumerate(aux_leaves) if isinstance(x, _VALUES)]
            states = list(sub.states.values()) if sub.states else []
            graph = sub.to_graph(
                [value] + [aux_leaves[k] for k in traced_aux] + [new for _, new in states]
            )
    finally:
        tape_stack.reset(token)
    sources = _variables_read(sub, graph) if variables else graph.inputs[: len(flat)]
    values = flat + [v for v, _ in sub.captured]
    outs, grads = append_backward(graph, values, [graph.outputs[0]], sources)
    for (variable, _), new in zip(states, outs[len(outs) - len(states) :]):
        sub.parent.write_state(variable, new)
    for k, out in zip(traced_aux, outs[1:]):
        aux_leaves[k] = out
    if unconnected == "zero":
        by_var = dict(zip(graph.inputs, values))
        grads = [zeros_like_value(by_var[x]) if g is None else g for x, g in zip(sources, grads)]
    if not variables:
        grads = [
            pytree.unflatten(tree, grads[end - len(part) : end])
            for tree, part, end in zip(trees, leaves, ends)
        ]
    return outs[0], pytree.unflatten(aux_tree, aux_leaves) if has_aux else None, grads


def _variables_read(trace: Trace, graph) -> list:
    """The inputs of `graph` for the trainable Variables it reads, in the order of their
    first read by a differentiable op (the order in which a tape starts watching them)."""
    of_variable = {t.var for v, t in trace.captured if isinstance(v, Variable) and v.trainable}
    read = {}
    for e in graph.eqns:
        custom = graph.custom_vjps.get(e.out)
        for node in (e, custom) if custom is not None else (e,):
            if node.op.differentiable:
                read.update((x, None) for x in node.inputs if x in of_variable)
    return list(read)


def value_and_grad(f, argnums=0, has_aux=False):
    """`f` -> a function returning (value, gradient of the sum of value w.r.t. argument(s)
    `argnums`); arguments may be nested dicts/lists/tuples of arrays and Python scalars.

    >>> jitgrad.value_and_grad(lambda x: x * x)(3.0)[1]
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=6.0>
    """

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        nums = _argnums_tuple(argnums, len(args), f)
        args = _watched_args(f, args, nums, require_float=True)
        value, aux, grads = _value_and_grads(f, args, kwargs, nums, has_aux)
        value, grads = _settled(value, args, nums, grads)
        grads = grads[0] if isinstance(argnums, int) else tuple(grads)
        return ((value, aux) if has_aux else value), grads

    return wrapped


def value_and_variable_grads(f, has_aux=False):
    """`f` -> a function returning (value, [gradient per trainable Variable `f` reads, in
    first-read order; zeros for those the value does not depend on]): jit_grad's
    wrt='variables'."""

    @functools.wraps(f)
    def wrapped(*args):
        value, aux, grads = _value_and_grads(f, args, {}, VARIABLES, has_aux)
        value = settle_weak(value)
        return ((value, aux) if has_aux else value), grads

    return wrapped


def grad(f, argnums=0, has_aux=False):
    """`f` -> its gradient function (of the sum of its output), JAX-style.

    >>> jitgrad.grad(jitgrad.sin)(0.0)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=1.0>
    """
    vg = value_and_grad(f, argnums, has_aux)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        (value, g) = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapped


def gradients_function(f, params=None):
    """tfe.gradients_function: `f` -> a function returning the list of derivatives of `f`
    w.r.t. all its positional arguments (or those numbered in `params`). Non-float arguments
    get None, like the tape.

    >>> jitgrad.gradients_function(lambda x, y: x * y)(3.0, 2.0)
    [<jitgrad.Tensor: ...numpy=2.0>, <jitgrad.Tensor: ...numpy=3.0>]
    """
    vgf = value_and_gradients_function(f, params)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        return vgf(*args, **kwargs)[1]

    return wrapped


def value_and_gradients_function(f, params=None):
    """tfe.value_and_gradients_function: returns (value, list of derivatives)."""

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        nums = tuple(range(len(args))) if params is None else _param_nums(f, params, len(args))
        args = _watched_args(f, args, nums, require_float=False)
        value, _, grads = _value_and_grads(f, args, kwargs, nums, False, unconnected="none")
        return _settled(value, args, nums, grads)

    return wrapped


def _param_nums(f, params, nargs):
    names = list(inspect.signature(f).parameters)
    nums = []
    for p in params:
        nums.append(names.index(p) if isinstance(p, str) else int(p))
    return tuple(_argnums_tuple(tuple(nums), nargs, f))


def jvp(f, primals, tangents):
    """Forward-mode product J(primals) @ tangents, computed as a VJP of a VJP (the VJP is
    linear in its cotangent u, so differentiating it w.r.t. u transposes it back).
    Primals and tangents are sequences of arguments with the same (possibly nested)
    structure; returns (f(*primals), jvp_out), jvp_out with the structure of f's output.

    >>> jitgrad.jvp(lambda x: x * x, (3.0,), (1.0,))[1]
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=6.0>
    """
    p_leaves, p_tree = pytree.flatten(tuple(primals))
    t_leaves, t_tree = pytree.flatten(tuple(tangents))
    if p_tree != t_tree:
        raise ValueError(
            with_location(
                f"jvp: primals {pytree.describe(p_tree)} and tangents {pytree.describe(t_tree)} "
                "must have the same structure"
            )
        )
    p_leaves = [as_value(p) for p in p_leaves]
    trace = current_trace.get()
    if trace is not None:  # a tape under a trace records the traced values, not constants
        p_leaves = [trace.lift(p) for p in p_leaves]
    t_leaves = [as_value(t, dtype=p.dtype) for p, t in zip(p_leaves, t_leaves)]
    for p, t in zip(p_leaves, t_leaves):
        if p.shape != t.shape:
            raise ValueError(
                with_location(f"jvp: a tangent of shape {t.shape} for a primal of shape {p.shape}")
            )
    with GradientTape(persistent=True, watch_accessed_variables=False) as outer:
        with GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(p_leaves)
            out = f(*pytree.unflatten(p_tree, p_leaves))
        y_leaves, y_tree = pytree.flatten(out)
        y_leaves = [as_value(y) for y in y_leaves]
        us = [zeros_like_value(y) for y in y_leaves]
        if trace is not None:  # the tape records the traced constant that stands for u
            us = [trace.lift(u) for u in us]
        outer.watch(us)
        float_ys = [(y, u) for y, u in zip(y_leaves, us) if y.dtype.kind == "f"]
        pullback = (
            inner.gradient(
                [y for y, _ in float_ys], p_leaves, output_gradients=[u for _, u in float_ys]
            )
            if float_ys
            else [None] * len(p_leaves)
        )
    connected = [(g, t) for g, t in zip(pullback, t_leaves) if g is not None]
    if connected:
        outs = outer.gradient(
            [g for g, _ in connected],
            us,
            output_gradients=[t for _, t in connected],
            unconnected_gradients="zero",
        )
    else:
        outs = [zeros_like_value(y) for y in y_leaves]
    return pytree.unflatten(y_tree, y_leaves), pytree.unflatten(y_tree, outs)


def hvp(f, x, v):
    """Hessian-vector product H(x) v of a scalar function of one array, without forming H."""
    return jvp(grad(f), (x,), (v,))[1]
