"""Batching rules: how each primitive runs on a batch of examples at once.

`vmap` traces the user's function on ONE example into a graph, then replays the graph with
every value either *batched* (it has a leading batch axis of size B that the example did not
have) or *unbatched* (the same for every example). A rule receives the op's inputs with that
flag each and returns the batched result, written with jitgrad's own ops (`bind` and the
public functions), so that it runs eagerly, under a trace (`jit(vmap(f))` is one kernel) and
on a tape (`grad(vmap(f))`), exactly as VJP rules do.

The batch axis is always axis 0 inside the replay (`vmap` moves the user's `in_axes` there
and the results to `out_axes`), which keeps each rule to an axis shift.

Rules are grouped by family rather than stored on each OpDef (DESIGN.md's "one op, one
place"): most ops need none of their own. Every elementwise op (the special functions and
any new one included) is batched by one rule, reductions and shape ops by an axis shift, and
an op without a rule (control flow, conv's filter-batched case, decompositions) falls back to
`lax.map` over the examples: still one native loop inside the kernel, never an error.
"""

from __future__ import annotations

import numpy as np

from jitgrad.control.api import map as lax_map
from jitgrad.core.aval import TupleAVal
from jitgrad.core.dispatch import bind
from jitgrad.core.opdef import REGISTRY
from jitgrad.core.tensor import Tensor
from jitgrad.ops import index as ix
from jitgrad.ops.elementwise import add, less, multiply, where
from jitgrad.ops.linalg import matmul_p
from jitgrad.ops.structural import broadcast_value, reshape_value

RULES: dict = {}  # op name -> rule(size, values, batched, **params) -> batched value


def batched_like(x, size: int):
    """`x` (unbatched) repeated over a leading batch axis of `size`."""
    return broadcast_value(x, (size,) + tuple(x.shape))


def _all_batched(size: int, values, batched) -> list:
    return [v if b else batched_like(v, size) for v, b in zip(values, batched)]


def apply_rule(op, size: int, values: list, batched: list[bool], params: dict):
    """`op` on `values` (each batched along axis 0 or not, per `batched`), batched: the op's
    rule if it has one, else a loop over the examples. For ops without batched inputs the
    caller binds the op as it is."""
    rule = RULES.get(op.name)
    if rule is None and op.kind == "elementwise":
        rule = _elementwise
    if rule is None:
        return _map_fallback(op, size, values, batched, params)
    return rule(op, size, values, batched, **params)


def _map_fallback(op, size, values, batched, params):
    """The op once per example, in a loop (`lax.map`): one native loop when compiled. Results
    that are tuples (control flow) come back as a tuple of batched parts."""
    positions = [k for k, b in enumerate(batched) if b]

    def one_example(slices):
        args = list(values)
        for k, s in zip(positions, slices):
            args[k] = s
        out = bind(op, *args, **params)
        if isinstance(out, tuple):
            return out
        if isinstance(getattr(out, "aval", None), TupleAVal):
            tuple_get = REGISTRY["tuple_get"]
            return tuple(bind(tuple_get, out, index=i) for i in range(len(out.aval.avals)))
        return out

    return lax_map(one_example, [values[k] for k in positions])


def _elementwise(op, size, values, batched, **params):
    # Broadcasting is explicit in the IR: operands of a binary op have equal shapes, so the
    # unbatched ones are repeated over the batch (a broadcast the fuser turns into an index).
    return bind(op, *_all_batched(size, values, batched), **params)


def _rule(*names):
    def register(fn):
        for name in names:
            RULES[name] = fn
        return fn

    return register


@_rule("broadcast_to")
def _broadcast_to(op, size, values, batched, *, shape):
    (x,) = values
    lead = len(shape) - (x.ndim - 1)
    x = reshape_value(x, (size,) + (1,) * lead + tuple(x.shape[1:]))
    return broadcast_value(x, (size,) + tuple(shape))


@_rule("reshape")
def _reshape(op, size, values, batched, *, shape):
    return reshape_value(values[0], (size,) + tuple(shape))


@_rule("transpose")
def _transpose(op, size, values, batched, *, perm):
    return bind(op, values[0], perm=(0,) + tuple(p + 1 for p in perm))


@_rule("reduce_sum", "reduce_max", "reduce_prod")
def _reduce(op, size, values, batched, *, axes):
    return bind(op, values[0], axes=tuple(a + 1 for a in axes))


@_rule("argmax", "argmin")
def _arg_reduce(op, size, values, batched, *, axis):
    return bind(op, values[0], axis=axis + 1)


@_rule("argsort")
def _argsort(op, size, values, batched, *, axis, descending):
    return bind(op, values[0], axis=axis + 1, descending=descending)


@_rule("slice")
def _slice(op, size, values, batched, *, index):
    return bind(op, values[0], index=((0, size, 1),) + tuple(index))


@_rule("unslice")
def _unslice(op, size, values, batched, *, index, shape):
    return bind(op, values[0], index=((0, size, 1),) + tuple(index), shape=(size,) + tuple(shape))


@_rule("concat")
def _concat(op, size, values, batched, *, axis):
    return bind(op, *_all_batched(size, values, batched), axis=axis + 1)


@_rule("pad")
def _pad(op, size, values, batched, *, paddings, constant):
    return bind(op, values[0], paddings=((0, 0),) + tuple(paddings), constant=constant)


@_rule("check_index")
def _check_index(op, size, values, batched, **params):
    return bind(op, values[0], **params)  # a check per entry: the batch axis is more entries


@_rule("tuple_get")
def _tuple_get(op, size, values, batched, *, index):
    return values[0][index]  # the batched parts of a tuple-valued op (see _map_fallback)


# ---------------------------------------------------------------------------------------------
# matmul: fold the batch into the rows when only the left side is batched (the common case of
# x @ W), into the columns when only the right side is, else a batched matmul.


@_rule("matmul")
def _matmul(op, size, values, batched, **params):
    a, b = values
    a_batched, b_batched = batched
    if a_batched and not b_batched and b.ndim <= 2:
        # Every example's rows times the same b: one (B * rows, k) @ b.
        rows = reshape_value(a, (int(np.prod(a.shape[:-1])), a.shape[-1]))
        out = bind(matmul_p, rows, b)
        return reshape_value(out, tuple(a.shape[:-1]) + tuple(b.shape[1:]))
    if b_batched and not a_batched and a.ndim <= 2 and b.ndim == 3:
        # The same a times every example's (k, n): a @ (k, B * n), then the batch to the front.
        k, n = b.shape[1], b.shape[2]
        columns = reshape_value(bind(REGISTRY["transpose"], b, perm=(1, 0, 2)), (k, size * n))
        out = bind(matmul_p, a, columns)
        lead = tuple(a.shape[:-1])
        out = reshape_value(out, lead + (size, n))
        perm = (len(lead),) + tuple(range(len(lead))) + (len(lead) + 1,)
        return bind(REGISTRY["transpose"], out, perm=perm)
    if b_batched and not a_batched and a.ndim == 2 and b.ndim == 2:
        # The same matrix times every example's vector: the vectors as rows, times a^T.
        return bind(matmul_p, b, bind(REGISTRY["transpose"], a, perm=(1, 0)))
    a, b = _all_batched(size, values, batched)
    a_vector, b_vector = a.ndim == 2, b.ndim == 2  # vectors of the example
    if a.shape[-1] == 1 and not a_vector and not b_vector:
        # A contraction over one element is an outer product: an elementwise multiply, which
        # fuses with its neighbours (per-example weight gradients are all of this form).
        shape = tuple(a.shape[:-1]) + tuple(b.shape[-1:])
        return multiply(broadcast_value(a, shape), broadcast_value(b, shape))
    if a_vector:
        a = reshape_value(a, (size, 1, a.shape[1]))
    if b_vector:
        b = reshape_value(b, (size, b.shape[1], 1))
    out = bind(matmul_p, a, b)
    keep = [d for i, d in enumerate(out.shape) if not (a_vector and i == out.ndim - 2)]
    keep = keep[:-1] if b_vector else keep
    return reshape_value(out, tuple(keep))


# ---------------------------------------------------------------------------------------------
# gather / scatter_add: an unbatched index shifts the axis; a batched index addresses each
# example's own rows, through one gather over the examples' rows laid end to end.


def _move_axis(x, source: int, dest: int):
    if source == dest:
        return x
    perm = [i for i in range(x.ndim) if i != source]
    perm.insert(dest, source)
    return bind(REGISTRY["transpose"], x, perm=tuple(perm))


def _example_offsets(idx, size: int, rows: int):
    """Batched indices (B, ...) of each example's rows (size `rows`) checked and shifted into
    the rows of all examples laid end to end (B * rows)."""
    idx = ix.check_index(idx, (rows,), "gather", negative=True)
    idx = where(less(idx, 0), add(idx, np.asarray(rows, idx.dtype)), idx)
    offsets = np.arange(size, dtype=idx.dtype).reshape((size,) + (1,) * (idx.ndim - 1)) * rows
    return add(idx, broadcast_value(_constant_like(offsets, idx), tuple(idx.shape)))


def _constant_like(array, like):
    return Tensor(np.asarray(array, like.dtype))


@_rule("gather")
def _gather(op, size, values, batched, *, axis):
    x, idx = values
    x_batched, idx_batched = batched
    if not idx_batched:
        return bind(op, x, idx, axis=axis + 1)
    if not x_batched:  # every example's indices into the same x: the batch lands at `axis`
        return _move_axis(bind(op, x, idx, axis=axis), axis, 0)
    rows = x.shape[axis + 1]
    stacked = _move_axis(x, axis + 1, 1)  # (B, rows, *pre, *post)
    stacked = reshape_value(stacked, (size * rows,) + tuple(stacked.shape[2:]))
    out = bind(op, stacked, _example_offsets(idx, size, rows), axis=0)  # (B, *i, *pre, *post)
    # The example's result is pre + i + post: move pre's axes in front of the index axes.
    i_rank = idx.ndim - 1
    perm = (0,) + tuple(range(1 + i_rank, 1 + i_rank + axis)) + tuple(range(1, 1 + i_rank))
    perm += tuple(range(1 + i_rank + axis, out.ndim))
    return bind(REGISTRY["transpose"], out, perm=perm)


@_rule("scatter_extreme")
def _scatter_extreme(op, size, values, batched, *, mode):
    """Every example's rows laid end to end: (B * rows, n), its updates (B * k, n), and its row
    indices shifted into its own rows."""
    x, updates, rows = (v if b else batched_like(v, size) for v, b in zip(values, batched))
    n_rows, width = x.shape[1:]
    k = rows.shape[1]
    offsets = np.arange(size, dtype=rows.dtype).reshape(size, 1) * n_rows
    shifted = add(rows, broadcast_value(_constant_like(offsets, rows), tuple(rows.shape)))
    out = bind(
        op,
        reshape_value(x, (size * n_rows, width)),
        reshape_value(updates, (size * k, width)),
        reshape_value(shifted, (size * k,)),
        mode=mode,
    )
    return reshape_value(out, (size, n_rows, width))


@_rule("scatter_add")
def _scatter_add(op, size, values, batched, *, axis, shape):
    g, idx = values
    g_batched, idx_batched = batched
    if not idx_batched:
        return bind(op, g, idx, axis=axis + 1, shape=(size,) + tuple(shape))
    g = g if g_batched else batched_like(g, size)
    rows = shape[axis]
    i_rank = idx.ndim - 1
    # g of an example is pre + i + post; bring i first: (B, *i, *pre, *post).
    perm = (0,) + tuple(range(1 + axis, 1 + axis + i_rank)) + tuple(range(1, 1 + axis))
    perm += tuple(range(1 + axis + i_rank, g.ndim))
    g = bind(REGISTRY["transpose"], g, perm=perm)
    rest = tuple(shape[:axis]) + tuple(shape[axis + 1 :])
    out = bind(op, g, _example_offsets(idx, size, rows), axis=0, shape=(size * rows,) + rest)
    out = reshape_value(out, (size, rows) + rest)
    return _move_axis(out, 1, axis + 1)


# ---------------------------------------------------------------------------------------------
# conv and pooling: examples of a batch of images are more images (the batch is folded into
# the images' own leading axis). Batched filters (per-example weights) loop.


def _fold(x, size):
    return reshape_value(x, (size * x.shape[1],) + tuple(x.shape[2:]))


def _unfold(y, size):
    return reshape_value(y, (size, y.shape[0] // size) + tuple(y.shape[1:]))


@_rule("conv")
def _conv(op, size, values, batched, **params):
    x, w = values
    if batched[1]:
        return _map_fallback(op, size, values, batched, params)
    return _unfold(bind(op, _fold(x, size), w, **params), size)


@_rule("conv_filters")
def _conv_filters(op, size, values, batched, **params):
    # A filter gradient per example: folding the examples into the batch would sum them.
    return _map_fallback(op, size, values, batched, params)


@_rule("max_pool", "max_pool_scatter", "max_pool_gather")
def _pool(op, size, values, batched, **params):
    folded = [_fold(v, size) for v in _all_batched(size, values, batched)]
    return _unfold(bind(op, *folded, **params), size)
