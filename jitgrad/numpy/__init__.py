"""`jitgrad.numpy`: numpy's names and signatures over jitgrad's ops, so that code written for
numpy, HIPS autograd or `jax.numpy` ports by changing one import.

>>> import jitgrad.numpy as jnp
>>> jnp.sum(jnp.ones((2, 3)), axis=0)
<jitgrad.Tensor: shape=(3,), dtype=float64, numpy=array([2., 2., 2.])>

Everything returns jitgrad tensors (tracers under `jit`), recorded by tapes and differentiable.
Dtypes follow numpy, not TensorFlow: Python floats and lists of them are float64 and Python
ints int64 (`jnp.ones(3)`, `jnp.array([1.0])`, `jnp.arange(3.0)` are float64, unlike
`jitgrad.ones`), except that a Python scalar next to a tensor is weak (`x32 * 2.0` stays
float32), as in numpy 2 (NEP 50) and in jitgrad. numpy's extra arguments are accepted at their
default values (`out=None`, `where=True`, `order="C"`, ...); any other value raises a TypeError
naming the function and the argument, never a silently different result.

`Tensor.__array_function__` and `__array_ufunc__` send numpy's own functions here when a tensor
is an argument (`np.mean(t, axis=0)`, `np.exp(t)`): see `dispatch` for the functions this
module does not define.
"""

from __future__ import annotations

import builtins
import math
import sys
import types
import warnings

import numpy as np  # the real numpy: this package is `jitgrad.numpy`, imports are absolute

from jitgrad import linalg, ops
from jitgrad.core import dtypes as _dtypes
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.errors import TracerError, op_error, with_location
from jitgrad.core.tensor import ArrayMethods, Tensor, Tracer, bind_numpy_namespace
from jitgrad.core.variable import Variable
from jitgrad.numpy.conversion import (
    _NO_VALUE,
    _VALUES,
    _accumulator,
    _binary,
    _float,
    _operand,
    _operands,
    _ufunc_args,
    _unary,
    _unsupported,
    asarray,
)
from jitgrad.numpy.conversion import array as array  # numpy's name, this module's
from jitgrad.ops.base import as_value, binary_operands, normalize_axes, normalize_axis
from jitgrad.ops.elementwise import zeros_like_value
from jitgrad.ops.index import check_index
from jitgrad.ops.sort import sorting_positions
from jitgrad.ops.sort import take_along_axis as _take_along

# `jnp.linalg` is jitgrad.linalg (numpy's names are among its aliases); registered as the
# submodule too, so that `import jitgrad.numpy.linalg` works.
sys.modules[__name__ + ".linalg"] = linalg

# numpy's dtypes and constants (jitgrad's dtypes are numpy dtypes).
float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64, uint8, bool_ = np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_
pi, e, inf, nan, newaxis = np.pi, np.e, np.inf, np.nan, None
ndarray = ArrayMethods  # isinstance(x, jnp.ndarray) holds for tensors and tracers, as in JAX


# ---------------------------------------------------------------------------------------------
# Conversion and numpy's


def _logaddexp(x, y):
    """log(exp(x) + exp(y)) = max + log1p(exp(-|x - y|)): no overflow; the wheres keep it
    finite (and its gradient NaN-free) where the maximum is infinite."""
    x, y = (_float(v) for v in binary_operands("logaddexp", x, y))
    m = ops.maximum(x, y)
    finite = ops.less(ops.abs(m), np.inf)
    zero = zeros_like_value(m)
    d = ops.where(finite, x, zero) - ops.where(finite, y, zero)
    return m + ops.where(finite, ops.log1p(ops.exp(-ops.abs(d))), zero)


exp = _unary("exp", lambda x: ops.exp(_float(x)))
exp2 = _unary("exp2", lambda x: ops.exp(_float(x) * math.log(2.0)))
log = _unary("log", lambda x: ops.log(_float(x)))
log2 = _unary("log2", lambda x: ops.log(_float(x)) / math.log(2.0))
log10 = _unary("log10", lambda x: ops.log(_float(x)) / math.log(10.0))
log1p = _unary("log1p", lambda x: ops.log1p(_float(x)))
expm1 = _unary("expm1", lambda x: ops.expm1(_float(x)))
sqrt = _unary("sqrt", lambda x: ops.sqrt(_float(x)))
square = _unary("square", ops.square)
reciprocal = _unary("reciprocal", lambda x: 1.0 / x)
sin = _unary("sin", lambda x: ops.sin(_float(x)))
cos = _unary("cos", lambda x: ops.cos(_float(x)))
tan = _unary("tan", lambda x: ops.tan(_float(x)))
sinh = _unary("sinh", lambda x: ops.sinh(_float(x)))
cosh = _unary("cosh", lambda x: ops.cosh(_float(x)))
tanh = _unary("tanh", lambda x: ops.tanh(_float(x)))
arcsin = _unary("arcsin", lambda x: ops.arcsin(_float(x)))
arccos = _unary("arccos", lambda x: ops.arccos(_float(x)))
arctan = _unary("arctan", lambda x: ops.arctan(_float(x)))
abs = _unary("abs", ops.abs)  # noqa: A001 - numpy's name
absolute = abs
fabs = _unary("fabs", lambda x: ops.abs(_float(x)))
sign = _unary("sign", ops.sign)
negative = _unary("negative", ops.negative)
positive = _unary("positive", lambda x: x)
floor = _unary("floor", lambda x: ops.floor(_float(x)))
ceil = _unary("ceil", lambda x: ops.ceil(_float(x)))
rint = _unary("rint", lambda x: ops.round(_float(x)))
logical_not = _unary("logical_not", lambda x: ops.logical_not(ops.cast(x, np.bool_)))
isnan = _unary("isnan", lambda x: ops.not_equal(x, x))
isinf = _unary("isinf", lambda x: ops.equal(ops.abs(x), np.inf))
isfinite = _unary("isfinite", lambda x: ops.less(ops.abs(x), np.inf))

add = _binary("add", ops.add)
subtract = _binary("subtract", ops.subtract)
multiply = _binary("multiply", ops.multiply)
divide = _binary("divide", ops.divide)
true_divide = divide
floor_divide = _binary("floor_divide", ops.floordiv)
mod = _binary("mod", ops.mod)
remainder = mod
power = _binary("power", ops.pow)
maximum = _binary("maximum", ops.maximum)
minimum = _binary("minimum", ops.minimum)
equal = _binary("equal", ops.equal)
not_equal = _binary("not_equal", ops.not_equal)
less = _binary("less", ops.less)
less_equal = _binary("less_equal", ops.less_equal)
greater = _binary("greater", ops.greater)
greater_equal = _binary("greater_equal", ops.greater_equal)
logical_and = _binary("logical_and", ops.logical_and)
logical_or = _binary("logical_or", ops.logical_or)
logaddexp = _binary("logaddexp", _logaddexp)
hypot = _binary("hypot", lambda x, y: ops.sqrt(x * x + y * y))


def around(a, decimals=0, out=None):
    """Round to `decimals` places (halves to even, as numpy)."""
    _unsupported("around", out=(out, None))
    x = _float(asarray(a))
    if decimals == 0:
        return ops.round(x)
    scale = 10.0**decimals
    return ops.round(x * scale) / scale


round = around  # noqa: A001 - numpy's name


def where(condition, x=_NO_VALUE, y=_NO_VALUE, /, *, size=None, fill_value=None):
    """Elementwise `x if condition else y` (the gradient flows to the chosen side); with
    `condition` alone, `nonzero(condition, size=size, fill_value=fill_value)`."""
    if x is _NO_VALUE and y is _NO_VALUE:
        return nonzero(condition, size=size, fill_value=fill_value)  # noqa: F821 - selection.py
    if x is _NO_VALUE or y is _NO_VALUE:
        raise TypeError(with_location("jitgrad.numpy.where: give both x and y, or neither"))
    if size is not None or fill_value is not None:
        raise TypeError(
            with_location(
                "jitgrad.numpy.where: size and fill_value belong to the one-argument form, "
                "where(condition)"
            )
        )
    x, y = _operands(x, y)
    return ops.where(asarray(condition), x, y)


def clip(a, a_min=None, a_max=None, out=None, **kwargs):
    """min(max(a, a_min), a_max); either bound may be None. numpy 2's `min=`/`max=` names are
    accepted too."""
    _unsupported("clip", out=(out, None))
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    if kwargs:
        raise TypeError(with_location(f"jitgrad.numpy.clip: unexpected arguments {list(kwargs)}"))
    x = asarray(a)
    if a_min is not None:
        x = ops.maximum(x, _operand(a_min))
    if a_max is not None:
        x = ops.minimum(x, _operand(a_max))
    return x


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol |b|, elementwise (numpy's asymmetric rule)."""
    a, b = _operands(a, b)
    close = ops.less_equal(ops.abs(a - b), atol + rtol * ops.abs(b))
    if equal_nan:
        close = ops.logical_or(close, ops.logical_and(isnan(a), isnan(b)))
    return ops.logical_or(close, ops.equal(a, b))  # equal infinities


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    """A Python bool, so it needs concrete values (a TracerError under `jit`)."""
    return bool(np.all(np.asarray(isclose(a, b, rtol, atol, equal_nan))))


# ---------------------------------------------------------------------------------------------
# Reductions


def _reduction(name: str, fn, *, float_ints: bool = False, accumulates: bool = False):
    def reduction(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        _unsupported(
            name,
            out=(out, None),
            initial=(kwargs.pop("initial", _NO_VALUE), _NO_VALUE),
            where=(kwargs.pop("where", True), True),
        )
        if kwargs:
            raise TypeError(
                with_location(f"jitgrad.numpy.{name}: unexpected arguments {list(kwargs)}")
            )
        x = asarray(a)
        if accumulates:  # numpy sums bools and narrow integers in int64
            x = _accumulator(x, dtype)
        elif dtype is not None:
            x = ops.cast(x, dtype)
        elif float_ints:
            x = _float(x)
        return fn(x, axis=_axis(axis), keepdims=bool(keepdims))

    reduction.__name__ = reduction.__qualname__ = name
    reduction.__doc__ = f"numpy's {name}: over `axis` (None: all; an int or a tuple)."
    return reduction


def _axis(axis):
    return list(axis) if isinstance(axis, tuple) else axis


sum = _reduction("sum", ops.reduce_sum, accumulates=True)  # noqa: A001 - numpy's name
prod = _reduction("prod", ops.reduce_prod, accumulates=True)
mean = _reduction("mean", ops.reduce_mean, float_ints=True)
max = _reduction("max", ops.reduce_max)  # noqa: A001 - numpy's name
min = _reduction("min", ops.reduce_min)  # noqa: A001 - numpy's name
amax, amin = max, min


def _moment(name: str, root: bool):
    def moment(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, **kw):
        _unsupported(name, out=(out, None), where=(where, True))
        if kw:
            raise TypeError(with_location(f"jitgrad.numpy.{name}: unexpected arguments {list(kw)}"))
        x = _float(asarray(a)) if dtype is None else ops.cast(asarray(a), dtype)
        axes = normalize_axes(name, _axis(axis), x.ndim)
        count = math.prod(x.shape[i] for i in axes)
        centered = x - ops.reduce_mean(x, list(axes), keepdims=True)
        total = ops.reduce_sum(centered * centered, list(axes), keepdims=bool(keepdims))
        var = total / float(count - ddof)
        return ops.sqrt(var) if root else var

    moment.__name__ = moment.__qualname__ = name
    moment.__doc__ = f"numpy's {name}, with `ddof` (the divisor is N - ddof)."
    return moment


var = _moment("var", root=False)
std = _moment("std", root=True)


def _arg_reduction(name: str, fn):
    def arg(a, axis=None, out=None, *, keepdims=False):
        _unsupported(name, out=(out, None))
        x = asarray(a)
        if axis is None:
            y = fn(ops.reshape(x, (-1,)), axis=0)
            return ops.reshape(y, (1,) * x.ndim) if keepdims else y
        axis = normalize_axis(name, axis, x.ndim)
        y = fn(x, axis=axis)
        return ops.expand_dims(y, axis) if keepdims else y

    arg.__name__ = arg.__qualname__ = name
    arg.__doc__ = f"numpy's {name} (int64 indices; over the flattened array for axis=None)."
    return arg


argmax = _arg_reduction("argmax", ops.argmax)
argmin = _arg_reduction("argmin", ops.argmin)


def _running(name: str, fn):
    def running(a, axis=None, dtype=None, out=None):
        _unsupported(name, out=(out, None))
        x = _accumulator(asarray(a), dtype)
        if axis is None:
            x, axis = ops.reshape(x, (-1,)), 0
        return fn(x, axis)

    running.__name__ = running.__qualname__ = name
    running.__doc__ = f"numpy's {name} along `axis` (flattened for None): jitgrad's log-step scan."
    return running


cumsum = _running("cumsum", ops.cumsum)
cumprod = _running("cumprod", ops.cumprod)


# ---------------------------------------------------------------------------------------------
# Products


def dot(a, b, out=None):
    """numpy's dot: a product for scalars, matmul for matrices and vectors, and otherwise the
    last axis of a with the second-to-last of b."""
    _unsupported("dot", out=(out, None))
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return ops.multiply(a, b)
    if a.ndim <= 2 and b.ndim <= 2:
        return ops.matmul(a, b)
    return ops.tensordot(a, b, [[a.ndim - 1], [builtins.max(b.ndim - 2, 0)]])


def matmul(x1, x2, /, out=None, **kwargs):
    """numpy's matmul (batch dimensions broadcast)."""
    _ufunc_args("matmul", out, True, kwargs)
    return ops.matmul(asarray(x1), asarray(x2))


def vdot(a, b, /):
    """The dot product of the flattened arrays."""
    return ops.reduce_sum(ravel(a) * ravel(b))


def inner(a, b, /):
    """Contraction of the last axes of a and b."""
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return ops.multiply(a, b)
    return ops.tensordot(a, b, [[a.ndim - 1], [b.ndim - 1]])


def outer(a, b, out=None):
    """outer(a, b)[i, j] = ravel(a)[i] * ravel(b)[j]."""
    _unsupported("outer", out=(out, None))
    return ops.multiply(ops.expand_dims(ravel(a), 1), ops.expand_dims(ravel(b), 0))


def tensordot(a, b, axes=2):
    return ops.tensordot(asarray(a), asarray(b), axes)


def einsum(subscripts, *operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    """numpy's einsum (`optimize` only chooses an order of contraction: ignored)."""
    _unsupported("einsum", out=(out, None), order=(order, "K"), casting=(casting, "safe"))
    y = ops.einsum(subscripts, *[asarray(x) for x in operands])
    return y if dtype is None else ops.cast(y, dtype)


# ---------------------------------------------------------------------------------------------
# Shapes


def reshape(a, /, shape=None, order="C", *, newshape=None, copy=None):
    """numpy's reshape (`newshape` is numpy's older name of `shape`)."""
    _unsupported("reshape", order=(order, "C"))
    shape = newshape if shape is None else shape
    if shape is None:
        raise TypeError(with_location("jitgrad.numpy.reshape: missing the shape"))
    return ops.reshape(asarray(a), (shape,) if isinstance(shape, (int, np.integer)) else shape)


def ravel(a, order="C"):
    _unsupported("ravel", order=(order, "C"))
    return ops.reshape(asarray(a), (-1,))


def transpose(a, axes=None):
    return ops.transpose(asarray(a), None if axes is None else list(axes))


def swapaxes(a, axis1, axis2):
    x = asarray(a)
    perm = list(range(x.ndim))
    i, j = normalize_axis("swapaxes", axis1, x.ndim), normalize_axis("swapaxes", axis2, x.ndim)
    perm[i], perm[j] = perm[j], perm[i]
    return ops.transpose(x, perm)


def moveaxis(a, source, destination):
    x = asarray(a)
    src = [normalize_axis("moveaxis", s, x.ndim) for s in np.atleast_1d(source).tolist()]
    dst = [normalize_axis("moveaxis", d, x.ndim) for d in np.atleast_1d(destination).tolist()]
    if len(src) != len(dst):
        raise op_error(
            "moveaxis", f"source {source} and destination {destination} differ in length"
        )
    order = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return ops.transpose(x, order)


def expand_dims(a, axis):
    x = asarray(a)
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    ndim = x.ndim + len(axes)
    axes = sorted(normalize_axis("expand_dims", i, ndim) for i in axes)
    shape = list(x.shape)
    for i in axes:
        shape.insert(i, 1)
    return ops.reshape(x, tuple(shape))


def squeeze(a, axis=None):
    return ops.squeeze(asarray(a), _axis(axis))


def broadcast_to(array, shape):  # noqa: A002 - numpy's name
    return ops.broadcast_to(asarray(array), (shape,) if isinstance(shape, int) else shape)


def atleast_1d(a):
    x = asarray(a)
    return ops.reshape(x, (1,)) if x.ndim == 0 else x


def atleast_2d(a):
    x = asarray(a)
    return ops.reshape(x, (1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def concatenate(arrays, /, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """Join along an existing axis (None: flatten first)."""
    _unsupported("concatenate", out=(out, None), casting=(casting, "same_kind"))
    xs = [asarray(x) for x in arrays]
    if axis is None:
        xs, axis = [ravel(x) for x in xs], 0
    y = ops.concat(xs, axis)
    return y if dtype is None else ops.cast(y, dtype)


def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _unsupported("stack", out=(out, None), casting=(casting, "same_kind"))
    y = ops.stack([asarray(x) for x in arrays], axis)
    return y if dtype is None else ops.cast(y, dtype)


def hstack(tup, *, dtype=None, casting="same_kind"):
    """Along axis 1, or 0 for 1-d arrays."""
    xs = [atleast_1d(x) for x in tup]
    return concatenate(xs, 0 if xs[0].ndim == 1 else 1, dtype=dtype, casting=casting)


def vstack(tup, *, dtype=None, casting="same_kind"):
    """Along axis 0 after making 1-d arrays rows."""
    return concatenate([atleast_2d(x) for x in tup], 0, dtype=dtype, casting=casting)


def roll(a, shift, axis=None):
    """Elements shifted by `shift` along `axis` (wrapping around); flattened for None."""
    x = asarray(a)
    if axis is None:
        return ops.reshape(roll(ravel(x), shift, 0), x.shape)
    shifts = np.broadcast_to(shift, np.shape(axis)).tolist() if np.ndim(axis) else [shift]
    for s, ax in zip(shifts, np.atleast_1d(axis).tolist()):
        ax = normalize_axis("roll", ax, x.ndim)
        n = x.shape[ax]
        if n == 0 or int(s) % n == 0:
            continue
        cut = n - int(s) % n
        head = [builtins.slice(None)] * ax + [builtins.slice(cut, None)]
        tail = [builtins.slice(None)] * ax + [builtins.slice(None, cut)]
        x = ops.concat([x[tuple(head)], x[tuple(tail)]], ax)
    return x


def repeat(a, repeats, axis=None):
    """Each element repeated `repeats` times (an int, or one count per element, concrete)."""
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    axis = normalize_axis("repeat", axis, x.ndim)
    n = x.shape[axis]
    if np.ndim(repeats) == 0:
        r = int(repeats)
        spread = ops.broadcast_to(
            ops.expand_dims(x, axis + 1), x.shape[: axis + 1] + (r,) + x.shape[axis + 1 :]
        )
        return ops.reshape(spread, x.shape[:axis] + (n * r,) + x.shape[axis + 1 :])
    counts = np.asarray(repeats)
    if counts.shape != (n,):
        raise op_error("repeat", f"{counts.shape[0]} repeats for an axis of length {n}")
    return ops.gather(x, np.repeat(np.arange(n), counts), axis=axis)


def tile(A, reps):  # noqa: N803 - numpy's name
    x = asarray(A)
    reps = [int(r) for r in np.atleast_1d(reps)]
    ndim = builtins.max(x.ndim, len(reps))
    x = ops.reshape(x, (1,) * (ndim - x.ndim) + x.shape)
    return ops.tile(x, [1] * (ndim - len(reps)) + reps)


def take(a, indices, axis=None, out=None, mode=None):
    _unsupported("take", out=(out, None), mode=(mode, None))
    return ops.take(asarray(a), asarray(indices), axis)


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """`a` sorted along `axis` (None: flattened), stably whatever `kind` says;
    differentiable."""
    _unsupported("sort", order=(order, None))
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    return ops.sort(x, axis)


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """The positions (int64) that sort `a` along `axis` (None: flattened), stably."""
    _unsupported("argsort", order=(order, None))
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    return sorting_positions(x, axis)


def take_along_axis(arr, indices, axis):
    """out[..., j, ...] = arr[..., indices[..., j, ...], ...] along `axis` (None: flattened),
    as one gather on the flattened array; the indices may be traced."""
    x = asarray(arr)
    idx = asarray(indices)
    if idx.dtype.kind not in "iu":
        raise op_error("take_along_axis", f"indices must be integers, got {idx.dtype}", TypeError)
    if axis is None:
        x, idx, axis = ravel(x), ravel(idx), 0
    if idx.ndim != x.ndim:
        raise op_error(
            "take_along_axis",
            f"indices of shape {idx.shape} need the rank of the array's shape {x.shape}",
        )
    axis = normalize_axis("take_along_axis", axis, x.ndim)
    x, idx = moveaxis(x, axis, -1), moveaxis(idx, axis, -1)
    n = x.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-1], idx.shape[:-1])
    x = ops.broadcast_to(x, lead + (n,))
    idx = check_index(ops.cast(idx, np.int64), [n], "take_along_axis", negative=True)
    idx = ops.broadcast_to(idx, lead + idx.shape[-1:])
    idx = ops.where(ops.less(idx, 0), idx + n, idx)
    return moveaxis(_take_along(x, idx, x.ndim - 1), -1, axis)


def diag(v, k=0):
    """The k-th diagonal of a matrix, or a matrix with the vector `v` on its k-th diagonal;
    both one gather (its gradient a scatter)."""
    x = asarray(v)
    if x.ndim == 1:
        n = x.shape[0] + builtins.abs(k)
        rows, cols = np.indices((n, n))
        on = cols - rows == k
        pick = np.where(on, np.minimum(rows, cols), x.shape[0])  # index n of x0: the zero
        return ops.gather(ops.concat([x, ops.zeros((1,), x.dtype)], 0), pick)
    if x.ndim == 2:
        rows, cols = x.shape
        i = np.arange(builtins.max(0, -k), builtins.min(rows, cols - k))
        return ops.gather(ravel(x), i * cols + i + k)
    raise op_error("diag", f"needs a 1-d or 2-d array, got shape {x.shape}")


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """The sum of a matrix's `offset` diagonal."""
    _unsupported("trace", out=(out, None), axis1=(axis1, 0), axis2=(axis2, 1))
    return sum(diag(a, offset), dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Creation (numpy's default dtype: float64)


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in np.atleast_1d(shape))


def _float64_unless(dtype) -> np.dtype:
    return _dtypes.float64 if dtype is None else _dtypes.as_dtype(dtype)


def zeros(shape, dtype=None, order="C", *, like=None):
    _unsupported("zeros", order=(order, "C"), like=(like, None))
    return Tensor(np.zeros(_shape(shape), _float64_unless(dtype)))


def ones(shape, dtype=None, order="C", *, like=None):
    _unsupported("ones", order=(order, "C"), like=(like, None))
    return Tensor(np.ones(_shape(shape), _float64_unless(dtype)))


def full(shape, fill_value, dtype=None, order="C", *, like=None):
    """`shape` filled with `fill_value` (a tensor fill value is broadcast, differentiably)."""
    _unsupported("full", order=(order, "C"), like=(like, None))
    value = asarray(fill_value, dtype)
    return ops.broadcast_to(value, _shape(shape))


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """`a`'s shape (or `shape`) filled with `fill_value`, of `a`'s dtype unless `dtype`."""
    _unsupported("full_like", order=(order, "K"))
    x = asarray(a)
    dtype = x.dtype if dtype is None else dtype
    return full(x.shape if shape is None else shape, fill_value, dtype)


def zeros_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    return full_like(a, 0, dtype, order, subok, shape)


def ones_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    return full_like(a, 1, dtype, order, subok, shape)


def eye(N, M=None, k=0, dtype=None, order="C", *, like=None):  # noqa: N803 - numpy's names
    _unsupported("eye", order=(order, "C"), like=(like, None))
    return Tensor(np.eye(N, M, k, dtype=_float64_unless(dtype)))


def identity(n, dtype=None, *, like=None):
    return eye(n, dtype=dtype, like=like)


def arange(start, stop=None, step=None, dtype=None, *, like=None):
    """numpy's arange: int64 for ints, float64 for floats."""
    _unsupported("arange", like=(like, None))
    args = [v for v in (start, stop, step) if v is not None]
    return as_value(np.arange(*args, dtype=dtype), op="jitgrad.numpy.arange")


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    values = np.linspace(np.asarray(start), np.asarray(stop), num, endpoint, retstep, dtype, axis)
    if retstep:
        return as_value(values[0]), values[1]
    return as_value(values, op="jitgrad.numpy.linspace")


def shape(a):
    return asarray(a).shape


def ndim(a):
    return asarray(a).ndim


def size(a, axis=None):
    x = asarray(a)
    return x.size if axis is None else x.shape[axis]


def result_type(*arrays_and_dtypes):
    """numpy's result_type of the arrays' dtypes."""
    return np.result_type(*[x.dtype if isinstance(x, _VALUES) else x for x in arrays_and_dtypes])


# ---------------------------------------------------------------------------------------------
# numpy calls with tensors: Tensor.__array_function__ / __array_ufunc__ land here


def _numpy_functions() -> dict:
    """numpy function -> the function here of the same name, for every numpy function this
    module defines (dtypes and constants are not functions)."""
    table = {}
    for name, fn in globals().items():
        target = getattr(np, name, None)
        if (
            not name.startswith("_")
            and isinstance(fn, types.FunctionType)
            and callable(target)
            and not isinstance(target, type)
        ):
            table[target] = fn
    return table


_FUNCTIONS: dict = {}


def _values_in(args):
    """The tensors and tracers among `args` (nested in lists, tuples and dicts)."""
    stack, found = [args], []
    while stack:
        item = stack.pop()
        if isinstance(item, _VALUES):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return found


def _concrete(item):
    if isinstance(item, Tensor):
        return np.asarray(item)
    if isinstance(item, (list, tuple)):
        return type(item)(_concrete(i) for i in item)
    if isinstance(item, dict):
        return {k: _concrete(v) for k, v in item.items()}
    return item


def _watched(values) -> bool:
    """Whether a recording tape would differentiate through one of `values`."""
    for tape in tape_stack.get():
        if not tape._recording:
            continue
        for v in values:
            var = v if isinstance(v, Variable) else v.variable
            if id(v) in tape._tracked or (
                var is not None
                and (id(var) in tape._tracked or (tape._watch_accessed and var.trainable))
            ):
                return True
    return False


def dispatch(func, args, kwargs, name: str | None = None):
    """numpy's `func` called with tensors among its arguments.

    A function this module defines runs here (recorded by tapes, traced by `jit`). Any other
    runs in numpy on the concrete values and returns numpy's result, as before tensors knew
    numpy's protocols, with two exceptions that would otherwise lose a gradient silently:
    under a trace (a tracer among the arguments) it raises a TracerError naming the function;
    on a tensor a recording tape differentiates it warns (RuntimeWarning) that no gradient
    flows through its result."""
    if not _FUNCTIONS:
        _FUNCTIONS.update(_numpy_functions())
    fn = _FUNCTIONS.get(func)
    if fn is None:
        fn = _linalg_function(func)
    if fn is not None:
        return fn(*args, **kwargs)
    name = name or f"np.{getattr(func, '__name__', func)}"
    values = _values_in((args, kwargs))
    if current_trace.get() is not None or builtins.any(isinstance(v, Tracer) for v in values):
        raise TracerError(
            with_location(
                f"{name} is not implemented by jitgrad.numpy, so it cannot be traced: "
                "numpy would need the traced value's data, which exists only when the "
                "compiled function runs. Write it with jitgrad.numpy's functions"
            )
        )
    if _watched(values):
        warnings.warn(
            with_location(
                f"{name} is not implemented by jitgrad.numpy: it runs in numpy on a tensor the "
                "GradientTape differentiates, and no gradient flows through its result"
            ),
            RuntimeWarning,
            stacklevel=4,
        )
    return func(*_concrete(args), **_concrete(kwargs))


def _linalg_function(func):
    """jitgrad.linalg's function for numpy.linalg's `func`, if it has one."""
    if getattr(func, "__module__", "") != "numpy.linalg":
        return None
    return linalg.NUMPY_MEANINGS.get(func.__name__) or getattr(linalg, func.__name__, None)


def dispatch_ufunc(ufunc, method, inputs, kwargs):
    """numpy's `ufunc` called with a tensor operand (`np.exp(t)`, `ndarray * t`): the function
    of the same name here, or as in `dispatch` for ufuncs and methods (reduce, outer, ...)
    it does not define."""
    fn = globals().get(ufunc.__name__) if method == "__call__" else None
    if not isinstance(fn, types.FunctionType):
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        return dispatch(getattr(ufunc, method), inputs, kwargs, name)
    out = kwargs.pop("out", None)
    if out is not None and builtins.any(o is not None for o in out):
        raise TypeError(
            with_location(
                f"np.{ufunc.__name__}(..., out=...) cannot write a jitgrad result into a numpy "
                "array (tensors are immutable): assign the result instead (`x = x + t`, not "
                "`x += t` on a numpy x)"
            )
        )
    return fn(*inputs, **kwargs)


# numpy's functions composed from the ones above (each module's docstring says which).
from jitgrad.numpy import arrays as _arrays  # noqa: E402 - they use this module's functions
from jitgrad.numpy import numeric as _numeric  # noqa: E402
from jitgrad.numpy import selection as _selection  # noqa: E402
from jitgrad.numpy import shaping as _shaping  # noqa: E402
from jitgrad.numpy import statistics as _statistics  # noqa: E402
from jitgrad.numpy import ufuncs as _ufuncs  # noqa: E402

for _module in (_arrays, _numeric, _selection, _shaping, _statistics, _ufuncs):
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)

bind_numpy_namespace(dispatch, dispatch_ufunc)

# numpy's names: the functions defined here (not the protocol hooks) and the names bound above.
__all__ = sorted(
    name
    for name, value in globals().items()
    if not name.startswith("_")
    and name not in ("dispatch", "dispatch_ufunc")
    and (
        isinstance(value, types.FunctionType)
        and value.__module__.startswith(__name__)
        or name in ("linalg", "ndarray", "pi", "e", "euler_gamma", "inf", "nan", "newaxis")
        or name in ("mgrid", "ogrid", "finfo", "iinfo", "promote_types", "can_cast", "dtype")
        or isinstance(value, type)
        and issubclass(value, np.generic)
    )
)
