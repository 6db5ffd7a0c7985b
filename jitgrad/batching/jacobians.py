"""JAX's vjp, linearize, jacrev, jacfwd and hessian.

A Jacobian is a stack of vector-Jacobian products (reverse: one per output element) or of
Jacobian-vector products (forward: one per input element). Both are computed as ONE vmap
over the identity basis, not a Python loop of products, so `jit(jacrev(f))` traces one
batched backward pass and compiles to one kernel whatever the number of outputs.

Results follow JAX's layout: for an output leaf of shape S and an input leaf of shape T the
block has shape S + T, nested as the output's structure of the inputs' structure.
"""

from __future__ import annotations

import functools

import numpy as np

from jitgrad.autodiff.tape import GradientTape
from jitgrad.autodiff.transforms import _argnums_tuple, _require_float_leaves, _split_aux, jvp
from jitgrad.batching.vmap import vmap
from jitgrad.core import pytree
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor
from jitgrad.ops.base import as_value
from jitgrad.ops.shape import reshape, transpose


def vjp(fun, *primals, has_aux=False):
    """(fun(*primals), pullback[, aux]): `pullback(cotangent)` (a cotangent shaped like the
    output) returns a tuple with the cotangent of each primal. The forward runs once; the
    pullback can be called any number of times (and under vmap or jit).

    >>> y, pull = jitgrad.vjp(jitgrad.sin, 0.0)
    >>> pull(2.0)
    (<jitgrad.Tensor: shape=(), dtype=float32, numpy=2.0>,)
    """
    leaves, tree = pytree.flatten(primals)
    leaves = [as_value(x, op="vjp") for x in leaves]
    trace = current_trace.get()
    if trace is not None:  # a tape under a trace records the traced values, not constants
        leaves = [trace.lift(x) for x in leaves]
    with GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(leaves)
        out, aux = _split_aux(fun(*pytree.unflatten(tree, leaves)), has_aux, fun)
    out_leaves, out_tree = pytree.flatten(out)
    out_leaves = [as_value(y) for y in out_leaves]
    out = pytree.unflatten(out_tree, out_leaves)
    name = getattr(fun, "__name__", "function")

    def pullback(cotangent):
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        if ct_tree != out_tree:
            raise ValueError(
                with_location(
                    f"vjp of {name}: the cotangent {pytree.describe(ct_tree)} must have the "
                    f"structure of the output {pytree.describe(out_tree)}"
                )
            )
        cts = []
        for y, ct in zip(out_leaves, ct_leaves):
            ct = as_value(ct, dtype=y.dtype, op="vjp")
            if ct.shape != y.shape:
                raise ValueError(
                    with_location(
                        f"vjp of {name}: a cotangent of shape {ct.shape} for an output of "
                        f"shape {y.shape}"
                    )
                )
            cts.append(ct)
        grads = tape.gradient(
            out_leaves, leaves, output_gradients=cts, unconnected_gradients="zero"
        )
        return tuple(pytree.unflatten(tree, grads))

    return (out, pullback, aux) if has_aux else (out, pullback)


def linearize(fun, *primals):
    """(fun(*primals), f_jvp): `f_jvp(*tangents)` is the Jacobian-vector product at `primals`,
    reusable for any number of tangents."""
    out = fun(*primals)

    def f_jvp(*tangents):
        return jvp(fun, primals, tangents)[1]

    return out, f_jvp


def _partial(fun, args, kwargs, nums):
    """`fun` as a function of the arguments numbered `nums` only."""

    def partial(*diff_args):
        full = list(args)
        for i, a in zip(nums, diff_args):
            full[i] = a
        return fun(*full, **kwargs)

    return partial


def _basis(leaves) -> tuple[list, int]:
    """Rows of the identity over all elements of `leaves`, split per leaf: leaf k gets an
    array (total, *leaf.shape) in its dtype."""
    sizes = [int(np.prod(x.shape, dtype=np.int64)) for x in leaves]
    total = sum(sizes)
    eye = np.eye(total)
    parts, start = [], 0
    for x, n in zip(leaves, sizes):
        block = eye[:, start : start + n].reshape((total,) + tuple(x.shape))
        parts.append(Tensor(np.ascontiguousarray(block, dtype=x.dtype)))
        start += n
    return parts, total


def _differentiated(fun, args, argnums):
    """(argument numbers, `args` with the differentiated ones as trees of float tensors)."""
    nums = _argnums_tuple(argnums, len(args), fun)
    args = list(args)
    for i in nums:
        leaves, tree = pytree.flatten(args[i])
        args[i] = pytree.unflatten(tree, [as_value(x) for x in leaves])
        _require_float_leaves(args[i], i, fun)
    return nums, args


def jacrev(fun, argnums=0, has_aux=False):
    """The Jacobian of `fun` with respect to argument(s) `argnums`, by reverse mode: one vmap
    of the pullback over the rows of the identity (cheap when outputs are few)."""

    @functools.wraps(fun)
    def jacobian(*args, **kwargs):
        nums, args = _differentiated(fun, args, argnums)
        result = vjp(_partial(fun, args, kwargs, nums), *[args[i] for i in nums], has_aux=has_aux)
        out, pullback = result[0], result[1]
        out_leaves, out_tree = pytree.flatten(out)
        basis, _ = _basis(out_leaves)
        rows = vmap(pullback)(pytree.unflatten(out_tree, basis))  # per primal: (M, *x.shape)
        in_leaves, in_tree = pytree.flatten(rows if not isinstance(argnums, int) else rows[0])
        blocks, start = [], 0
        for y in out_leaves:
            n = int(np.prod(y.shape, dtype=np.int64))
            per_input = [
                reshape(g[start : start + n], tuple(y.shape) + tuple(g.shape[1:]))
                for g in in_leaves
            ]
            blocks.append(pytree.unflatten(in_tree, per_input))
            start += n
        jac = pytree.unflatten(out_tree, blocks)
        return (jac, result[2]) if has_aux else jac

    return jacobian


def jacfwd(fun, argnums=0, has_aux=False):
    """The Jacobian of `fun` with respect to argument(s) `argnums`, by forward mode: one vmap
    of the Jacobian-vector product over the columns of the identity (cheap when inputs are
    few)."""

    @functools.wraps(fun)
    def jacobian(*args, **kwargs):
        nums, args = _differentiated(fun, args, argnums)
        partial = _partial(fun, args, kwargs, nums)
        primals = tuple(args[i] for i in nums)
        in_leaves, in_tree = pytree.flatten(primals)
        basis, total = _basis(in_leaves)

        def push(*tangent_leaves):
            tangents = pytree.unflatten(in_tree, list(tangent_leaves))
            out, tangent_out = jvp(partial, primals, tangents)
            if has_aux:
                return tangent_out[0], out[1]
            return tangent_out, None

        columns, aux = vmap(push, out_axes=(0, None))(*basis)  # per output: (N, *y.shape)
        out_leaves, out_tree = pytree.flatten(columns)
        sizes = [int(np.prod(x.shape, dtype=np.int64)) for x in in_leaves]
        blocks = []
        for col in out_leaves:
            y_shape = tuple(col.shape[1:])
            moved = transpose(col, tuple(range(1, col.ndim)) + (0,)) if col.ndim > 1 else col
            per_input, start = [], 0
            for x, n in zip(in_leaves, sizes):
                part = moved[..., start : start + n]
                per_input.append(reshape(part, y_shape + tuple(x.shape)))
                start += n
            tree = pytree.unflatten(in_tree, per_input)
            blocks.append(tree[0] if isinstance(argnums, int) else tree)
        jac = pytree.unflatten(out_tree, blocks)
        return (jac, aux) if has_aux else jac

    return jacobian


def hessian(fun, argnums=0, has_aux=False):
    """The full Hessian of `fun` (any output shape S, input shape T: S + T + T), as the
    Jacobian of the Jacobian, both by reverse mode (jitgrad's forward mode is itself two
    reverse passes, so reverse-over-reverse is the cheaper order here)."""
    return jacrev(jacrev(fun, argnums, has_aux=has_aux), argnums, has_aux=has_aux)
