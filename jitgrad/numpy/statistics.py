"""numpy's statistics that ignore NaNs or weigh values: the nan-reductions (nansum, nanmean,
nanmax, ..., nanquantile), average, cov, corrcoef and ptp. Imported into `jitgrad.numpy`.

The nan-reductions treat a NaN as absent: a `where` replaces it by the reduction's neutral
value (0 for sums, 1 for products, -inf for maxima) before any arithmetic, so its gradient is
zero, never NaN * 0, and the means divide by the count of the other values (a traced count
under `jit`, divided through a safe denominator). A slice with nothing left gives NaN, as
numpy's does (numpy also warns; these do not). numpy's errors that depend on the values (an
all-NaN slice for nanargmax, weights summing to zero, cov's negative or fractional weights)
are raised eagerly, when the values exist; under `jit` those results follow JAX instead (each
docstring says how).
"""

from __future__ import annotations

import math

import numpy as np

from jitgrad import ops
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tracer
from jitgrad.numpy.arrays import diagonal
from jitgrad.numpy.conversion import _NO_VALUE, _accumulator, _float, _unsupported, asarray
from jitgrad.ops.base import normalize_axes, normalize_axis
from jitgrad.ops.sort import take_along_axis

__all__ = [
    "average",
    "corrcoef",
    "cov",
    "nanargmax",
    "nanargmin",
    "nancumprod",
    "nancumsum",
    "nanmax",
    "nanmean",
    "nanmedian",
    "nanmin",
    "nanpercentile",
    "nanprod",
    "nanquantile",
    "nanstd",
    "nansum",
    "nanvar",
    "ptp",
]


# ---------------------------------------------------------------------------------------------
# Helpers


def _without_nans(x, fill):
    """(x with its NaNs replaced by `fill`, where x is NaN)."""
    nan = ops.not_equal(x, x)
    return ops.where(nan, ops.cast(fill, x.dtype), x), nan


def _inexact(name: str, x, dtype):
    """x in `dtype`, which must be a float type, or as a float (float64 for integers)."""
    if dtype is None:
        return _float(x)
    if np.dtype(dtype).kind != "f":
        raise op_error(name, f"dtype must be a float type, got {np.dtype(dtype).name}", TypeError)
    return ops.cast(x, dtype)


def _nonempty(name: str, x, axes) -> None:
    """numpy's maxima and minima of nothing raise: no identity to return."""
    for axis in axes:
        if x.shape[axis] == 0:
            raise op_error(
                name, f"axis {axis} of shape {x.shape} is empty: it has no maximum or minimum"
            )


def _known(x):
    """x's value, when it exists (eagerly; while jit traces, None)."""
    return None if isinstance(x, Tracer) else np.asarray(x)


def _divide_counted(total, count, bad):
    """total / count, NaN where `bad`; the division's denominator is 1 there, so that the
    gradient stays finite elsewhere."""
    safe = ops.where(bad, ops.ones_like(count), count)
    return ops.where(bad, ops.cast(np.nan, total.dtype), total / safe)


def _count(nan, axes, keepdims: bool, dtype):
    """How many entries over `axes` are not NaN, as `dtype` (counted in int64)."""
    valid = ops.cast(ops.logical_not(nan), np.int64)
    return ops.cast(ops.reduce_sum(valid, axes, keepdims), dtype)


# ---------------------------------------------------------------------------------------------
# Sums, products, means and moments


def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
    """The sum over `axis` (None: all; an int or a tuple) with NaNs counted as 0; numpy's
    dtype (int64 for narrower integers and bools)."""
    _unsupported("nansum", out=(out, None), initial=(initial, _NO_VALUE), where=(where, True))
    x = asarray(a)
    axes = list(normalize_axes("nansum", axis, x.ndim))
    values, _ = _without_nans(x, 0)
    return ops.reduce_sum(_accumulator(values, dtype), axes, bool(keepdims))


def nanprod(a, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
    """The product over `axis` with NaNs counted as 1; numpy's dtype, as nansum's."""
    _unsupported("nanprod", out=(out, None), initial=(initial, _NO_VALUE), where=(where, True))
    x = asarray(a)
    axes = list(normalize_axes("nanprod", axis, x.ndim))
    values, _ = _without_nans(x, 1)
    return ops.reduce_prod(_accumulator(values, dtype), axes, bool(keepdims))


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
    """The mean of the values that are not NaN over `axis` (float64 for integers); NaN where
    there are none."""
    _unsupported("nanmean", out=(out, None), where=(where, True))
    x = _inexact("nanmean", asarray(a), dtype)
    axes = list(normalize_axes("nanmean", axis, x.ndim))
    values, nan = _without_nans(x, 0)
    count = _count(nan, axes, bool(keepdims), x.dtype)
    total = ops.reduce_sum(values, axes, bool(keepdims))
    return _divide_counted(total, count, ops.equal(count, ops.cast(0, x.dtype)))


def _nan_variance(name: str, a, axis, dtype, ddof, keepdims, correction):
    if correction is not _NO_VALUE:
        if ddof != 0:
            raise op_error(name, "give ddof or correction, not both")
        ddof = correction
    x = _inexact(name, asarray(a), dtype)
    axes = list(normalize_axes(name, axis, x.ndim))
    values, nan = _without_nans(x, 0)
    count = _count(nan, axes, True, x.dtype)
    zero = ops.cast(0, x.dtype)
    none = ops.equal(count, zero)  # an all-NaN slice: centred on 0, not on NaN
    centre = ops.reduce_sum(values, axes, True) / ops.where(none, ops.ones_like(count), count)
    deviation = ops.where(nan, zero, values - centre)
    squares = ops.reduce_sum(deviation * deviation, axes, bool(keepdims))
    dof = ops.reshape(count, squares.shape) - ops.cast(ddof, x.dtype)
    return _divide_counted(squares, dof, ops.less_equal(dof, zero))


def nanvar(
    a,
    axis=None,
    dtype=None,
    out=None,
    ddof=0,
    keepdims=False,
    *,
    where=True,
    mean=_NO_VALUE,
    correction=_NO_VALUE,
):
    """The variance of the values that are not NaN over `axis`, divided by their count minus
    `ddof` (or `correction`, its Array API name); NaN where that is not positive."""
    _unsupported("nanvar", out=(out, None), where=(where, True), mean=(mean, _NO_VALUE))
    return _nan_variance("nanvar", a, axis, dtype, ddof, keepdims, correction)


def nanstd(
    a,
    axis=None,
    dtype=None,
    out=None,
    ddof=0,
    keepdims=False,
    *,
    where=True,
    mean=_NO_VALUE,
    correction=_NO_VALUE,
):
    """sqrt(nanvar). Where the variance is 0 (the values all equal), std is not
    differentiable; its gradient there is 0, not NaN."""
    _unsupported("nanstd", out=(out, None), where=(where, True), mean=(mean, _NO_VALUE))
    var = _nan_variance("nanstd", a, axis, dtype, ddof, keepdims, correction)
    positive = ops.greater(var, ops.cast(0, var.dtype))
    root = ops.sqrt(ops.where(positive, var, ops.ones_like(var)))
    return ops.where(positive, root, var)


# ---------------------------------------------------------------------------------------------
# Maxima, minima and their positions


def _nan_extreme(name: str, largest: bool):
    def extreme(a, axis=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported(name, out=(out, None), initial=(initial, _NO_VALUE), where=(where, True))
        x = asarray(a)
        axes = list(normalize_axes(name, axis, x.ndim))
        _nonempty(name, x, axes)
        keep = bool(keepdims)
        if x.dtype == np.bool_:
            return (ops.reduce_any if largest else ops.reduce_all)(x, axes, keep)
        reduce = ops.reduce_max if largest else ops.reduce_min
        if x.dtype.kind != "f":
            return reduce(x, axes, keep)
        values, nan = _without_nans(x, -np.inf if largest else np.inf)
        return ops.where(
            ops.reduce_all(nan, axes, keep), ops.cast(np.nan, x.dtype), reduce(values, axes, keep)
        )

    extreme.__name__ = extreme.__qualname__ = name
    extreme.__doc__ = (
        f"The {'largest' if largest else 'smallest'} value that is not NaN over `axis` (None: "
        "all; an int or a tuple); NaN where there is none. Its gradient goes to that value "
        "(shared among ties)."
    )
    return extreme


nanmax = _nan_extreme("nanmax", largest=True)
nanmin = _nan_extreme("nanmin", largest=False)


def _nan_arg(name: str, largest: bool):
    def arg(a, axis=None, out=None, *, keepdims=False):
        _unsupported(name, out=(out, None))
        x = asarray(a)
        rank, flat = x.ndim, axis is None
        if flat:
            x, axis = ops.reshape(x, (-1,)), 0
        axis = normalize_axis(name, axis, x.ndim)
        if x.shape[axis] == 0:
            raise op_error(name, f"axis {axis} of shape {x.shape} is empty")
        pick = ops.argmax if largest else ops.argmin
        if x.dtype.kind != "f":
            index = pick(ops.cast(x, np.int32) if x.dtype == np.bool_ else x, axis)
        else:
            values, nan = _without_nans(x, -np.inf if largest else np.inf)
            everywhere_nan = ops.reduce_all(nan, [axis])
            known = _known(everywhere_nan)
            if known is not None and known.any():
                raise op_error(
                    name,
                    f"All-NaN slice encountered along axis {axis} of shape {x.shape} (under "
                    "jit its index is -1, as in JAX)",
                )
            index = ops.where(everywhere_nan, ops.cast(-1, np.int64), pick(values, axis))
        if not keepdims:
            return index
        return ops.reshape(index, (1,) * rank) if flat else ops.expand_dims(index, axis)

    arg.__name__ = arg.__qualname__ = name
    arg.__doc__ = (
        f"The position (int64) of the {'largest' if largest else 'smallest'} value that is not "
        "NaN along `axis` (None: flattened), the first of ties (NaNs count as "
        f"{'-inf' if largest else 'inf'}, as in numpy). An all-NaN slice raises "
        "numpy's ValueError eagerly; under jit, whose values are unknown while tracing, its "
        "position is -1, as JAX's."
    )
    return arg


nanargmax = _nan_arg("nanargmax", largest=True)
nanargmin = _nan_arg("nanargmin", largest=False)


def ptp(a, axis=None, out=None, keepdims=False):
    """max - min over `axis` (None: all; an int or a tuple), in `a`'s dtype (integers wrap,
    as numpy's). A NaN in a slice gives NaN."""
    _unsupported("ptp", out=(out, None))
    x = asarray(a)
    if x.dtype == np.bool_:
        raise op_error("ptp", "booleans cannot be subtracted (numpy refuses too)", TypeError)
    axes = list(normalize_axes("ptp", axis, x.ndim))
    _nonempty("ptp", x, axes)
    keep = bool(keepdims)
    return ops.reduce_max(x, axes, keep) - ops.reduce_min(x, axes, keep)


# ---------------------------------------------------------------------------------------------
# Running sums and products


def _nan_running(name: str, fill: int, fn):
    def running(a, axis=None, dtype=None, out=None):
        _unsupported(name, out=(out, None))
        x = asarray(a)
        if axis is None:
            x, axis = ops.reshape(x, (-1,)), 0
        axis = normalize_axis(name, axis, x.ndim)
        values, _ = _without_nans(x, fill)
        return fn(_accumulator(values, dtype), axis)

    running.__name__ = running.__qualname__ = name
    running.__doc__ = (
        f"numpy's {name} along `axis` (flattened for None): NaNs count as {fill}, so the "
        "running value carries over them; numpy's dtype, as nansum's."
    )
    return running


nancumsum = _nan_running("nancumsum", 0, ops.cumsum)
nancumprod = _nan_running("nancumprod", 1, ops.cumprod)


# ---------------------------------------------------------------------------------------------
# Order statistics


def _levels(name: str, q, scale: float):
    """(q / scale as a float64 array, whether numpy promotes the result weakly (a Python
    number q), q's dtype). q picks the sorted positions, so it must be known when tracing."""
    if isinstance(q, Tracer):
        q._concrete(f"{name}'s q (it picks the sorted positions) taken from the value")
    weak = type(q) in (int, float)
    given = np.asarray(q.numpy() if hasattr(q, "numpy") else q)
    levels = np.true_divide(given, scale)
    if not ((levels >= 0) & (levels <= 1)).all():
        bound = "[0, 1]" if scale == 1 else f"[0, {scale:g}]"
        raise op_error(name, f"q must be numbers in {bound}, got {given.tolist()}")
    return levels.astype(np.float64), weak, levels.dtype


def _nan_order_statistic(name: str, a, q, axis, keepdims, scale: float):
    levels, weak, q_dtype = _levels(name, q, scale)
    x = asarray(a)
    base = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    dtype = base if weak else np.result_type(base, q_dtype)
    axes = normalize_axes(name, axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    kept_shape = tuple(x.shape[i] for i in kept)
    shape = tuple(1 if i in axes else x.shape[i] for i in range(x.ndim)) if keepdims else kept_shape
    shape = levels.shape + shape
    if x.size == 0:  # numpy: the mean of nothing, NaN
        return ops.fill(shape, np.asarray(np.nan, dtype))
    if kept + list(axes) != list(range(x.ndim)):
        x = ops.transpose(x, kept + list(axes))
    rows = ops.reshape(x, kept_shape + (math.prod(x.shape[len(kept) :]),))
    last = rows.ndim - 1
    values, nan = _without_nans(ops.sort(rows, last), 0)  # the NaNs sorted last, now 0
    count = ops.reduce_sum(ops.cast(ops.logical_not(nan), np.int64), [last], keepdims=True)
    top = ops.cast(ops.maximum(count - 1, ops.cast(0, np.int64)), np.float64)
    positions = top * levels.reshape(-1)  # numpy's "linear": q (count - 1), per slice and level
    low, high = ops.floor(positions), ops.ceil(positions)
    below = take_along_axis(values, ops.cast(low, np.int64), last)
    above = take_along_axis(values, ops.cast(high, np.int64), last)
    # numpy's arithmetic, to the rounding: the gap in a's dtype, then from the nearer end; on
    # a value (t = 0), that value, even an infinite one (where numpy's gives inf * 0 = NaN).
    gap = ops.cast(above - below, dtype)
    below, above = ops.cast(below, dtype), ops.cast(above, dtype)
    t = ops.cast(positions - low, dtype)
    picks = ops.where(ops.greater_equal(t, 0.5), above - gap * (1 - t), below + gap * t)
    picks = ops.where(ops.equal(t, 0), below, picks)
    picks = ops.where(ops.equal(count, 0), ops.cast(np.nan, dtype), picks)
    picks = ops.transpose(picks, [last] + list(range(last)))  # the levels first
    return ops.reshape(picks, shape)


def nanquantile(
    a,
    q,
    axis=None,
    out=None,
    overwrite_input=False,
    method="linear",
    keepdims=False,
    *,
    weights=None,
):
    """The `q`-quantiles of the values that are not NaN over `axis` (None: all; an int or a
    tuple), numpy's "linear" method: between the sorted values at floor and ceil of
    q (count - 1), a count that may be traced; NaN where no value is left. `q` (any shape, in
    [0, 1]) must be known when tracing; the result has its shape first. Differentiable (a
    gather of a sort)."""
    _unsupported("nanquantile", out=(out, None), method=(method, "linear"), weights=(weights, None))
    return _nan_order_statistic("nanquantile", a, q, axis, keepdims, 1.0)


def nanpercentile(
    a,
    q,
    axis=None,
    out=None,
    overwrite_input=False,
    method="linear",
    keepdims=False,
    *,
    weights=None,
):
    """nanquantile at q / 100 (`q` in [0, 100])."""
    _unsupported(
        "nanpercentile", out=(out, None), method=(method, "linear"), weights=(weights, None)
    )
    return _nan_order_statistic("nanpercentile", a, q, axis, keepdims, 100.0)


def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The median of the values that are not NaN over `axis` (the mean of the two middle
    ones for an even count); NaN where no value is left."""
    _unsupported("nanmedian", out=(out, None))
    return _nan_order_statistic("nanmedian", a, 0.5, axis, keepdims, 1.0)


# ---------------------------------------------------------------------------------------------
# Weighted averages, covariance and correlation


def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """sum(a * weights) / sum(weights) over `axis` (None: all; an int or a tuple); the mean
    without weights. `weights` has a's shape, or the shape of a's axes in `axis`, in that
    order. `returned`: also the sum of the weights (the count without weights), broadcast to
    the average's shape. Weights summing to zero raise numpy's ZeroDivisionError eagerly;
    under jit they give inf or NaN there."""
    x = asarray(a)
    axes = list(normalize_axes("average", axis, x.ndim))
    keep = bool(keepdims)
    if weights is None:
        avg = ops.reduce_mean(_float(x), axes, keep)
        total = ops.fill(avg.shape, np.asarray(x.size / max(avg.size, 1), avg.dtype))
        return (avg, total) if returned else avg
    w = asarray(weights)
    if w.shape != x.shape:
        if axis is None:
            raise op_error(
                "average",
                f"weights of shape {w.shape} differ from a's shape {x.shape}: give the axis "
                "they weigh",
                TypeError,
            )
        given = [normalize_axis("average", i, x.ndim) for i in np.atleast_1d(axis).tolist()]
        if w.shape != tuple(x.shape[i] for i in given):
            raise op_error(
                "average",
                f"weights of shape {w.shape} do not fit axis {axis} of a's shape {x.shape}",
            )
        w = ops.transpose(w, np.argsort(given).tolist()) if w.ndim > 1 else w
        w = ops.reshape(w, tuple(n if i in given else 1 for i, n in enumerate(x.shape)))
    dtype = np.result_type(x.dtype, w.dtype, *([np.float64] if x.dtype.kind in "biu" else []))
    w = ops.cast(w, dtype)
    total = ops.reduce_sum(w, axes, keep)
    known = _known(total)
    if known is not None and (known == 0).any():
        raise op_error(
            "average", "weights sum to zero, so they cannot be normalized", ZeroDivisionError
        )
    avg = ops.reduce_sum(ops.cast(x, dtype) * w, axes, keep) / total
    return (avg, ops.broadcast_to(total, avg.shape)) if returned else avg


def _observation_weights(kind: str, weights, n: int):
    """cov's fweights or aweights: float64 (as numpy converts them), one per observation,
    not negative and, for fweights, whole numbers (checked when the values are known)."""
    w = ops.cast(asarray(weights), np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise op_error(
            "cov",
            f"{kind} must be 1-d, one per observation ({n}), got shape {w.shape}",
            RuntimeError,  # numpy's
        )
    known = _known(w)
    if known is not None:
        if kind == "fweights" and not np.all(known == np.around(known)):
            raise op_error("cov", "fweights must be integers", TypeError)
        if (known < 0).any():
            raise op_error("cov", f"{kind} cannot be negative")
    return w


def _two_d(name: str, x, dtype):
    """x as a 2-d array in `dtype` (a 1-d one as a row), and x's own rank."""
    if x.ndim > 2:
        raise op_error("cov", f"{name} has more than 2 dimensions: shape {x.shape}")
    return ops.reshape(ops.cast(x, dtype), (1,) * (2 - x.ndim) + x.shape), x.ndim


def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *, dtype=None):
    """The covariance matrix of the variables in `m`'s rows (columns if not `rowvar`) and
    `y`'s, numpy's formula: divided by N - 1, or N if `bias`, or N - `ddof`; `fweights` repeat
    observations, `aweights` weigh them (checked, as numpy does, only when their values are
    known: not under jit). A single variable gives a 0-d result. Fewer degrees of freedom
    than 1 give inf and NaN, as numpy's (which warns)."""
    if ddof is not None and ddof != int(ddof):
        raise op_error("cov", f"ddof must be an integer, got {ddof!r}")
    values = [asarray(v) for v in (m, y) if v is not None]
    if dtype is None:
        dtype = np.result_type(*(v.dtype for v in values), np.float64)
    x, rank = _two_d("m", values[0], dtype)
    if not rowvar and rank != 1:
        x = ops.transpose(x)
    if x.shape[0] == 0:
        return ops.fill((0, 0), np.float64(0))
    if y is not None:
        more, _ = _two_d("y", values[1], dtype)
        x = ops.concat([x, ops.transpose(more) if not rowvar and more.shape[0] != 1 else more], 0)
    n = x.shape[1]
    ddof = (0 if bias else 1) if ddof is None else int(ddof)
    f = None if fweights is None else _observation_weights("fweights", fweights, n)
    aw = None if aweights is None else _observation_weights("aweights", aweights, n)
    w = aw if f is None else f if aw is None else f * aw
    avg, total = average(x, axis=1, weights=w, returned=True)
    x = ops.cast(x - ops.expand_dims(avg, 1), x.dtype)  # numpy subtracts in place
    if w is None:
        scale = np.asarray(1.0 / (n - ddof) if n > ddof else np.inf, dtype)
        return ops.squeeze(ops.matmul(x, ops.transpose(x)) * scale)
    total = total[0]
    if ddof == 0:
        fact = total
    elif aw is None:
        fact = total - ddof
    else:
        fact = total - ddof * ops.reduce_sum(w * aw) / total
    zero = ops.cast(0, fact.dtype)
    fact = ops.where(ops.less_equal(fact, zero), zero, fact)  # numpy: then 1 / 0 = inf
    weighted = x * w
    c = ops.matmul(ops.cast(x, weighted.dtype), ops.transpose(weighted))
    return ops.squeeze(c * (1.0 / fact))


def corrcoef(x, y=None, rowvar=True, *, dtype=None):
    """Pearson's correlation coefficients: cov(x, y) / sqrt(var_i var_j), clipped to
    [-1, 1] as numpy does (for rounding). A single variable gives 1 (NaN if its variance is 0
    or not finite)."""
    c = cov(x, y, rowvar, dtype=dtype)
    if c.ndim == 0:
        return c / c
    deviations = ops.sqrt(diagonal(c))
    c = c / ops.expand_dims(deviations, 1) / ops.expand_dims(deviations, 0)
    one = ops.cast(1, c.dtype)
    return ops.minimum(ops.maximum(c, -one), one)
