"""TensorFlow's functional control flow: `while_loop`, `cond`, `scan`, `foldl`, `foldr` and
`map_fn`, with TensorFlow's calling conventions, over the same primitives as `jitgrad.lax`."""

from __future__ import annotations

from jitgrad.control import api
from jitgrad.core import pytree
from jitgrad.core.errors import op_error


def cond(pred, true_fn=None, false_fn=None, *operands, name=None):
    """TensorFlow's `tf.cond(pred, true_fn, false_fn)`, and JAX's `lax.cond(pred, true_fun,
    false_fun, *operands)`: a single 4th positional argument that is a str is TensorFlow's
    `name`. Only the taken branch runs.

    >>> float(jitgrad.cond(jitgrad.constant(True), lambda: 1.0, lambda: 0.0))
    1.0
    """
    del name
    if len(operands) == 1 and isinstance(operands[0], str):
        operands = ()
    if true_fn is None or false_fn is None:
        raise op_error("cond", "needs both true_fn and false_fn", TypeError)
    return api.cond(pred, true_fn, false_fn, *operands)


def while_loop(
    cond,
    body,
    loop_vars,
    shape_invariants=None,
    parallel_iterations=10,
    back_prop=True,
    swap_memory=False,
    maximum_iterations=None,
    name=None,
):
    """TensorFlow's `tf.while_loop`: `loop_vars = body(*loop_vars)` while `cond(*loop_vars)`,
    at most `maximum_iterations` times. `loop_vars` is a list or tuple (or one tensor); the
    result has its structure. Differentiable in reverse mode, as TensorFlow's is.

    >>> i, x = jitgrad.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, x * 2.0), [0, 1.0])
    >>> float(x)
    8.0
    """
    del shape_invariants, parallel_iterations, back_prop, swap_memory, name
    single = not isinstance(loop_vars, (list, tuple))
    packed = [loop_vars] if single else list(loop_vars)

    def body_fun(values):
        out = body(*values)
        if single or (len(values) == 1 and not isinstance(out, (list, tuple))):
            out = [out]
        return list(out)

    out = api.while_loop(lambda v: cond(*v), body_fun, packed, maximum_iterations)
    if single:
        return out[0]
    if hasattr(loop_vars, "_fields"):
        return type(loop_vars)(*out)
    return type(loop_vars)(out)


def scan(
    fn,
    elems,
    initializer=None,
    parallel_iterations=10,
    back_prop=True,
    swap_memory=False,
    infer_shape=True,
    reverse=False,
    name=None,
):
    """TensorFlow's `tf.scan`: `acc = fn(acc, x)` over the leading axis of `elems` (a pytree),
    returning every `acc`, stacked. Without `initializer` the first element starts the
    accumulator (and is the first result).

    >>> jitgrad.scan(lambda a, x: a + x, jitgrad.constant([1.0, 2.0, 3.0])).numpy()
    array([1., 3., 6.], dtype=float32)
    """
    del parallel_iterations, back_prop, swap_memory, infer_shape, name
    first, rest = _split_first(elems, initializer, reverse, "scan")
    init = first if initializer is None else initializer

    def step(acc, x):
        out = fn(acc, x)
        return out, out

    _, accs = api.scan(step, init, rest, reverse=reverse)
    if initializer is not None:
        return accs
    # The first element is the first accumulator (the last one, when reversed).
    return pytree.unflatten(
        pytree.flatten(accs)[1],
        [_join(f, a, reverse) for f, a in zip(pytree.flatten(first)[0], pytree.flatten(accs)[0])],
    )


def foldl(
    fn,
    elems,
    initializer=None,
    parallel_iterations=10,
    back_prop=True,
    swap_memory=False,
    name=None,
):
    """TensorFlow's `tf.foldl`: the last `acc = fn(acc, x)` over `elems`, left to right.

    >>> float(jitgrad.foldl(lambda a, x: a * x, jitgrad.constant([1.0, 2.0, 3.0, 4.0])))
    24.0
    """
    del parallel_iterations, back_prop, swap_memory, name
    return _fold(fn, elems, initializer, reverse=False, name="foldl")


def foldr(
    fn,
    elems,
    initializer=None,
    parallel_iterations=10,
    back_prop=True,
    swap_memory=False,
    name=None,
):
    """TensorFlow's `tf.foldr`: as `foldl`, from right to left."""
    del parallel_iterations, back_prop, swap_memory, name
    return _fold(fn, elems, initializer, reverse=True, name="foldr")


def _fold(fn, elems, initializer, reverse, name):
    first, rest = _split_first(elems, initializer, reverse, name)
    init = first if initializer is None else initializer
    acc, _ = api.scan(lambda a, x: (fn(a, x), ()), init, rest, reverse=reverse)
    return acc


def map_fn(
    fn,
    elems,
    dtype=None,
    parallel_iterations=None,
    back_prop=True,
    swap_memory=False,
    infer_shape=True,
    name=None,
    fn_output_signature=None,
):
    """TensorFlow's `tf.map_fn`: `fn` on each slice of `elems` along its leading axis,
    stacked; a loop, not a vectorisation.

    >>> jitgrad.map_fn(lambda x: x * x, jitgrad.constant([1.0, 2.0])).numpy()
    array([1., 4.], dtype=float32)
    """
    del dtype, parallel_iterations, back_prop, swap_memory, infer_shape, name
    del fn_output_signature
    return api.map(fn, elems)


def _split_first(elems, initializer, reverse, name):
    """(the element that starts the accumulator, the elements scanned): without an
    initializer, the first element (the last one when `reverse`) starts it."""
    leaves, tree = api.values_of(elems, name)
    if initializer is not None:
        return None, elems
    if not leaves or any(x.ndim == 0 or x.shape[0] == 0 for x in leaves):
        raise op_error(name, "without an initializer, elems needs at least one element", ValueError)
    if reverse:
        first = [x[-1] for x in leaves]
        rest = [x[:-1] for x in leaves]
    else:
        first = [x[0] for x in leaves]
        rest = [x[1:] for x in leaves]
    return pytree.unflatten(tree, first), pytree.unflatten(tree, rest)


def _join(first, accs, reverse):
    from jitgrad.ops.shape import concat, expand_dims

    head = expand_dims(first, 0)
    return concat([accs, head], 0) if reverse else concat([head, accs], 0)
