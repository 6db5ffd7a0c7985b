"""Shape primitives (broadcast_to, reshape, transpose, concat, pad, strided slices) and the
composites built from them (expand_dims, squeeze, stack, unstack, split, tile)."""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.dtypes import promote
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.ops.base import as_value, normalize_axes, normalize_axis
from jitgrad.ops.elementwise import cast
from jitgrad.ops.structural import (
    broadcast_value,
    reshape_value,
)

_py_slice = builtins.slice  # this module defines TensorFlow's `slice`

# ---------------------------------------------------------------------------------------------
# broadcast_to: the one place where un-broadcasting (a sum) lives.


def broadcast_to(input, shape, name=None):  # noqa: A002 - TensorFlow's argument name
    """`input` broadcast to `shape` (numpy rules)."""
    x = as_value(input, op="broadcast_to")
    shape = tuple(int(d) for d in shape)
    return broadcast_value(x, shape)


# ---------------------------------------------------------------------------------------------
# reshape / transpose


def _resolve_shape(shape, size: int, from_shape) -> tuple[int, ...]:
    shape = [int(d) for d in (shape if isinstance(shape, (tuple, list)) else [shape])]
    if min(shape, default=0) >= 0:
        return tuple(shape)  # the common case: nothing to infer
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise op_error("reshape", f"invalid target shape {tuple(shape)}")
    if unknown:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise op_error(
                "reshape", f"cannot reshape a tensor of shape {from_shape} into {tuple(shape)}"
            )
        shape[unknown[0]] = size // known
    return tuple(shape)


def reshape(tensor, shape, name=None):
    """`tensor` with a new shape of the same size; one dimension may be -1."""
    x = as_value(tensor, op="reshape")
    if not isinstance(shape, (tuple, list, int)):
        shape = np.asarray(shape).tolist()
    return reshape_value(x, _resolve_shape(shape, x.size, x.shape))


def _transpose_eval(x, *, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise op_error(
            "transpose",
            f"perm {perm} is not a permutation of the {x.ndim} axes of a tensor of shape {x.shape}",
        )
    return AVal(tuple(x.shape[p] for p in perm), x.dtype)


def _transpose_vjp(g, out, x, *, perm):
    return (transpose(g, tuple(int(i) for i in np.argsort(perm))),)


transpose_p = defop(
    "transpose",
    abstract_eval=_transpose_eval,
    impl=lambda x, *, perm: np.transpose(x, perm),
    vjp=_transpose_vjp,
    kind="shape",
)


def transpose(a, perm=None, conjugate=False, name=None):
    """Permute the axes of `a` (reverse them when `perm` is None)."""
    x = as_value(a, op="transpose")
    perm = (
        tuple(range(x.ndim))[::-1]
        if perm is None
        else tuple(normalize_axis("transpose", p, x.ndim) for p in perm)
    )
    return x if perm == tuple(range(x.ndim)) else bind(transpose_p, x, perm=perm)


def matrix_transpose(a, name=None):
    """Swap the last two axes."""
    x = as_value(a, op="matrix_transpose")
    if x.ndim < 2:
        raise op_error("matrix_transpose", f"needs rank >= 2, got shape {x.shape}")
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return transpose(x, perm)


def expand_dims(input, axis, name=None):  # noqa: A002
    """Insert a size-1 axis at `axis` (negative counts from the end of the result)."""
    x = as_value(input, op="expand_dims")
    axis = normalize_axis("expand_dims", axis, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(input, axis=None, name=None):  # noqa: A002
    """Remove size-1 axes (all of them, or those in `axis`)."""
    x = as_value(input, op="squeeze")
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = normalize_axes("squeeze", axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise op_error(
                "squeeze", f"axis {bad[0]} of shape {x.shape} has size {x.shape[bad[0]]}, not 1"
            )
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


# ---------------------------------------------------------------------------------------------
# Strided slices: `slice` reads a box, `unslice` writes a cotangent back into zeros.


def _slice_shape(index) -> tuple[int, ...]:
    return tuple(len(range(start, stop, step)) for start, stop, step in index)


def _as_slices(index):
    """Python slices selecting exactly range(start, stop, step) on each axis. The normalized
    triples of slice.indices() cannot be used as they are: with a negative step, -1 there
    means "before the first element", but -1 in a slice means the last one."""
    out = []
    for start, stop, step in index:
        picked = range(start, stop, step)
        if not picked:
            out.append(_py_slice(0, 0))
            continue
        end = picked[-1] + (1 if step > 0 else -1)
        out.append(_py_slice(picked[0], None if end < 0 else end, step))
    return tuple(out)


def _slice_eval(x, *, index):
    if len(index) != x.ndim:
        raise op_error("slice", f"index of rank {len(index)} for a tensor of shape {x.shape}")
    return AVal(_slice_shape(index), x.dtype)


def _unslice_impl(g, *, index, shape):
    out = np.zeros(shape, g.dtype)
    out[_as_slices(index)] = g
    return out


slice_p = defop(
    "slice",
    abstract_eval=_slice_eval,
    impl=lambda x, *, index: x[_as_slices(index)],
    vjp=lambda g, out, x, *, index: (bind(unslice_p, g, index=index, shape=x.shape),),
    kind="shape",
)
unslice_p = defop(
    "unslice",
    abstract_eval=lambda g, *, index, shape: AVal(shape, g.dtype),
    impl=_unslice_impl,
    vjp=lambda g, out, x, *, index, shape: (bind(slice_p, g, index=index),),
    kind="shape",
    doc="Zeros of `shape` with `g` written at `index` (slice's VJP).",
)


def strided_slice(x, index: tuple[slice, ...]):
    """x[index] for a tuple of Python slices, one per axis."""
    x = as_value(x, op="slice")
    normalized = tuple(s.indices(d) for s, d in zip(index, x.shape))
    if all(n == (0, d, 1) for n, d in zip(normalized, x.shape)):
        return x
    return bind(slice_p, x, index=normalized)


def slice(input_, begin, size, name=None):  # noqa: A001 - TensorFlow's name
    """TensorFlow's slice: `size[i] == -1` takes everything from `begin[i]` on."""
    x = as_value(input_, op="slice")
    index = tuple(_py_slice(b, d if s == -1 else b + s) for b, s, d in zip(begin, size, x.shape))
    return strided_slice(x, index)


# ---------------------------------------------------------------------------------------------
# concat / pad


def _concat_eval(*xs, axis):
    first = xs[0]
    for x in xs[1:]:
        if (
            x.ndim != first.ndim
            or x.dtype != first.dtype
            or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis)
        ):
            listed = ", ".join(f"{y.dtype.name}{list(y.shape)}" for y in xs)
            raise op_error("concat", f"shapes {listed} differ outside axis {axis}")
    size = sum(x.shape[axis] for x in xs)
    return AVal(first.shape[:axis] + (size,) + first.shape[axis + 1 :], first.dtype)


def _concat_vjp(g, out, *xs, axis):
    cts, start = [], 0
    for x in xs:
        stop = start + x.shape[axis]
        index = tuple((start, stop, 1) if i == axis else (0, d, 1) for i, d in enumerate(g.shape))
        cts.append(bind(slice_p, g, index=index))
        start = stop
    return tuple(cts)


concat_p = defop(
    "concat",
    abstract_eval=_concat_eval,
    impl=lambda *xs, axis: np.concatenate(xs, axis=axis),
    vjp=_concat_vjp,
    kind="shape",
)


def concat(values, axis, name=None):
    """Join tensors along an existing axis."""
    xs = [as_value(v, op="concat") for v in values]
    if not xs:
        raise op_error("concat", "needs at least one tensor")
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = promote(dt, x.dtype)
    xs = [cast(x, dt) for x in xs]
    if xs[0].ndim == 0:
        raise op_error("concat", "cannot concatenate 0-d tensors (use stack)")
    axis = normalize_axis("concat", axis, xs[0].ndim)
    return xs[0] if len(xs) == 1 else bind(concat_p, *xs, axis=axis)


def _pad_eval(x, *, paddings, constant):
    if len(paddings) != x.ndim or any(lo < 0 or hi < 0 for lo, hi in paddings):
        raise op_error("pad", f"paddings {paddings} do not fit a tensor of shape {x.shape}")
    return AVal(tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, paddings)), x.dtype)


def _pad_vjp(g, out, x, *, paddings, constant):
    index = tuple((lo, lo + d, 1) for d, (lo, _) in zip(x.shape, paddings))
    return (bind(slice_p, g, index=index),)


def _pad_impl(x, *, paddings, constant):
    if not paddings:  # a 0-d tensor: np.pad refuses an empty pad_width
        return x.copy()
    return np.pad(x, paddings, constant_values=constant)


pad_p = defop("pad", abstract_eval=_pad_eval, impl=_pad_impl, vjp=_pad_vjp, kind="shape")


def pad(tensor, paddings, mode="CONSTANT", constant_values=0, name=None):
    """Pad with a constant; `paddings` is [[before, after], ...] per axis."""
    if str(mode).upper() != "CONSTANT":
        raise op_error("pad", f"mode {mode!r} is not supported (only 'CONSTANT')")
    x = as_value(tensor, op="pad")
    paddings = tuple((int(lo), int(hi)) for lo, hi in np.asarray(paddings).reshape(-1, 2))
    return bind(
        pad_p,
        x,
        paddings=paddings,
        constant=float(constant_values) if x.dtype.kind == "f" else int(constant_values),
    )


# ---------------------------------------------------------------------------------------------
# Composites


def stack(values, axis=0, name=None):
    """Join tensors along a new axis."""
    xs = [as_value(v, op="stack") for v in values]
    if not xs:
        raise op_error("stack", "needs at least one tensor")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise op_error("stack", f"all tensors must have the same shape, got {sorted(shapes)}")
    axis = normalize_axis("stack", axis, xs[0].ndim + 1)
    return concat([expand_dims(x, axis) for x in xs], axis)


def unstack(value, num=None, axis=0, name=None):
    """The slices of `value` along `axis`, as a list."""
    x = as_value(value, op="unstack")
    axis = normalize_axis("unstack", axis, x.ndim)
    out = []
    for i in range(x.shape[axis]):
        index = tuple(_py_slice(i, i + 1) if a == axis else _py_slice(None) for a in range(x.ndim))
        out.append(squeeze(strided_slice(x, index), axis))
    return out


def split(value, num_or_size_splits, axis=0, num=None, name=None):
    """Split along `axis` into equal parts (an int) or parts of the given sizes."""
    x = as_value(value, op="split")
    axis = normalize_axis("split", axis, x.ndim)
    n = x.shape[axis]
    if isinstance(num_or_size_splits, (int, np.integer)):
        if n % num_or_size_splits:
            raise op_error(
                "split",
                f"axis {axis} of size {n} does not split into {num_or_size_splits} equal parts",
            )
        sizes = [n // num_or_size_splits] * int(num_or_size_splits)
    else:
        sizes = [int(s) for s in num_or_size_splits]
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = n - (sum(sizes) + 1)
        if sum(sizes) != n:
            raise op_error("split", f"sizes {sizes} do not add up to {n} (axis {axis})")
    out, start = [], 0
    for s in sizes:
        index = tuple(
            _py_slice(start, start + s) if a == axis else _py_slice(None) for a in range(x.ndim)
        )
        out.append(strided_slice(x, index))
        start += s
    return out


def tile(input, multiples, name=None):  # noqa: A002
    """Repeat `input` `multiples[i]` times along axis i (a broadcast between two reshapes)."""
    x = as_value(input, op="tile")
    multiples = [int(m) for m in np.asarray(multiples).reshape(-1)]
    if len(multiples) != x.ndim:
        raise op_error("tile", f"multiples {multiples} do not match the rank of shape {x.shape}")
    interleaved = tuple(v for d in x.shape for v in (1, d))
    target = tuple(v for m, d in zip(multiples, x.shape) for v in (m, d))
    tiled = broadcast_to(reshape(x, interleaved), target)
    return reshape(tiled, tuple(m * d for m, d in zip(multiples, x.shape)))
