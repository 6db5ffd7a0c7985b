"""TensorFlow's ops over an axis as a sequence, and its shape queries: `cumsum`, `cumprod`,
`unsorted_segment_sum` / `_mean` / `_max` / `_min`, `segment_sum` / `_mean` / `_max` / `_min`,
`boolean_mask`, `where` (its one-argument form), and `shape`, `size`, `rank`.

All are compositions of existing primitives, so they run eagerly, trace, differentiate and
compile: the running sums are Hillis and Steele's log-step scan (ceil(log2 n) shifted adds,
any dtype, integers included, each step one fused elementwise loop when compiled), the segment
sums a scatter_add (gather's transpose), and a boolean mask an integer gather. The shape
queries give constants: shapes are known when a function is traced.
"""

from __future__ import annotations

import builtins

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ops import elementwise as ew
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value, normalize_axis
from jitgrad.ops.creation import constant
from jitgrad.ops.index import check_index, getitem, scatter_add_p
from jitgrad.ops.scatter import scatter_extreme_p


def cumsum(x, axis=0, exclusive=False, reverse=False, name=None):
    """Running sums along `axis` (TensorFlow's tf.cumsum): `exclusive` leaves each element out
    of its own sum, `reverse` sums from the end.

    >>> jitgrad.cumsum([1.0, 2.0, 3.0], exclusive=True)
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([0., 1., 3.], dtype=float32)>
    """
    return _running("cumsum", x, axis, exclusive, reverse, ew.add, 0)


def cumprod(x, axis=0, exclusive=False, reverse=False, name=None):
    """Running products along `axis` (TensorFlow's tf.math.cumprod)."""
    return _running("cumprod", x, axis, exclusive, reverse, ew.multiply, 1)


def _running(op: str, x, axis, exclusive: bool, reverse: bool, combine, identity):
    x = as_value(x, op=op)
    if x.ndim == 0:
        raise op_error(op, "needs a tensor of at least one dimension, got a scalar")
    axis = normalize_axis(op, axis, x.ndim)
    if reverse:
        x = _flip(x, axis)
    n, shift = x.shape[axis], 1
    if exclusive:
        x = _shifted(x, axis, 1, identity)
    while shift < n:  # after this step, each element combines the 2 * shift before it
        x = combine(x, _shifted(x, axis, shift, identity))
        shift *= 2
    return _flip(x, axis) if reverse else x


def _shifted(x, axis: int, by: int, identity):
    """`x` moved `by` places forward along `axis`, the first `by` places `identity`."""
    n = x.shape[axis]
    keep = [builtins.slice(None)] * x.ndim
    keep[axis] = builtins.slice(0, max(n - by, 0))
    paddings = [(0, 0)] * x.ndim
    paddings[axis] = (min(by, n), 0)
    return sh.pad(sh.strided_slice(x, tuple(keep)), paddings, constant_values=identity)


def _flip(x, axis: int):
    index = [builtins.slice(None)] * x.ndim
    index[axis] = builtins.slice(None, None, -1)
    return sh.strided_slice(x, tuple(index))


def unsorted_segment_sum(data, segment_ids, num_segments, name=None):
    """The sums of the slices of `data` that share a segment id (TensorFlow's rule: the ids'
    shape is a prefix of data's; a negative id drops its slice; an id >= `num_segments` is an
    IndexError). The gradient is a gather.

    >>> jitgrad.math.unsorted_segment_sum([1.0, 2.0, 4.0], [0, 0, 2], 3)
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([3., 0., 4.], dtype=float32)>
    """
    x = as_value(data, op="unsorted_segment_sum")
    ids = as_value(segment_ids, op="unsorted_segment_sum")
    rows, inner, count, rows_to = _segment_rows("unsorted_segment_sum", x, ids, num_segments)
    flat = sh.reshape(x, (rows, *inner))
    sums = bind(scatter_add_p, flat, rows_to, axis=0, shape=(count + 1, *inner))
    return sh.strided_slice(
        sums, (builtins.slice(0, count),) + (builtins.slice(None),) * len(inner)
    )


def _segment_rows(op: str, x, ids, num_segments):
    """(data's rows, the shape of a row, the segment count, each row's segment as int64 with
    the dropped rows (negative ids) sent to one extra segment, `count`): TensorFlow's rules,
    the ids' shape a prefix of data's, an id >= num_segments an IndexError."""
    if ids.dtype.kind not in "iu":
        raise op_error(op, f"segment_ids must be integers, got {ids.dtype.name}", TypeError)
    if tuple(x.shape[: ids.ndim]) != tuple(ids.shape):
        raise op_error(op, f"segment_ids of shape {ids.shape} are not a prefix of data's {x.shape}")
    if isinstance(num_segments, Tracer):
        num_segments._concrete("num_segments taken from the value")
    count = int(num_segments)
    if count < 0:
        raise op_error(op, f"num_segments must be >= 0, got {count}")
    rows, inner = int(np.prod(ids.shape, dtype=np.int64)), tuple(x.shape[ids.ndim :])
    ids = sh.reshape(ew.cast(ids, dtypes.int64), (rows,))
    # Checked before the dropped ids are sent to the extra segment, which is then cut off.
    kept = check_index(ew.maximum(ids, 0), (count,), op, what="segment id")
    return rows, inner, count, ew.where(ew.less(ids, 0), count, kept)


def segment_sum(data, segment_ids, name=None):
    """unsorted_segment_sum with sorted ids and as many segments as the largest id + 1
    (TensorFlow's tf.math.segment_sum). The ids must be known: under jit, traced ids would give
    a shape that depends on data; use unsorted_segment_sum with num_segments there."""
    known = _sorted_ids("segment_sum", segment_ids)
    return unsorted_segment_sum(data, known, int(known[-1]) + 1 if known.size else 0)


def unsorted_segment_mean(data, segment_ids, num_segments, name=None):
    """The means of the slices of `data` that share a segment id (tf.math.unsorted_segment_mean:
    an empty segment's mean is 0)."""
    x = as_value(data, op="unsorted_segment_mean")
    if x.dtype.kind != "f":
        raise op_error("unsorted_segment_mean", f"needs float data, got {x.dtype.name}", TypeError)
    ids = as_value(segment_ids, op="unsorted_segment_mean")
    sums = unsorted_segment_sum(x, ids, num_segments)
    ones = sh.broadcast_to(np.ones((), x.dtype), ids.shape)
    counts = unsorted_segment_sum(ones, ids, num_segments)
    counts = sh.reshape(counts, counts.shape + (1,) * (sums.ndim - 1))
    return sums / ew.maximum(counts, np.ones((), x.dtype))


def unsorted_segment_max(data, segment_ids, num_segments, name=None):
    """The maxima of the slices of `data` that share a segment id (tf.math.unsorted_segment_max:
    an empty segment holds the dtype's lowest value)."""
    return _segment_extreme("unsorted_segment_max", data, segment_ids, num_segments, "max")


def unsorted_segment_min(data, segment_ids, num_segments, name=None):
    """The minima of the slices of `data` that share a segment id (an empty segment holds the
    dtype's highest value)."""
    return _segment_extreme("unsorted_segment_min", data, segment_ids, num_segments, "min")


def segment_max(data, segment_ids, name=None):
    """unsorted_segment_max with sorted, known ids (tf.math.segment_max)."""
    known = _sorted_ids("segment_max", segment_ids)
    return unsorted_segment_max(data, known, int(known[-1]) + 1 if known.size else 0)


def segment_min(data, segment_ids, name=None):
    """unsorted_segment_min with sorted, known ids (tf.math.segment_min)."""
    known = _sorted_ids("segment_min", segment_ids)
    return unsorted_segment_min(data, known, int(known[-1]) + 1 if known.size else 0)


def _segment_extreme(op: str, data, segment_ids, num_segments, mode: str):
    """scatter_extreme of the rows into one row per segment (and one for the dropped rows)
    that starts at TensorFlow's value for an empty segment: the dtype's lowest (max) or
    highest (min) finite value."""
    x = as_value(data, op=op)
    ids = as_value(segment_ids, op=op)
    rows, inner, count, rows_to = _segment_rows(op, x, ids, num_segments)
    limits = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    empty = np.asarray(limits.min if mode == "max" else limits.max, x.dtype)
    width = int(np.prod(inner, dtype=np.int64))
    start = sh.broadcast_to(empty, (count + 1, width))
    out = bind(scatter_extreme_p, start, sh.reshape(x, (rows, width)), rows_to, mode=mode)
    out = sh.strided_slice(out, (builtins.slice(0, count), builtins.slice(None)))
    return sh.reshape(out, (count, *inner))


def segment_mean(data, segment_ids, name=None):
    """unsorted_segment_mean with sorted ids and as many segments as the largest id + 1
    (tf.math.segment_mean); the ids must be known, as segment_sum's."""
    known = _sorted_ids("segment_mean", segment_ids)
    return unsorted_segment_mean(data, known, int(known[-1]) + 1 if known.size else 0)


def _sorted_ids(op: str, segment_ids) -> np.ndarray:
    """The segment ids as a known, sorted, non-negative 1-d numpy array, or the error."""
    ids = as_value(segment_ids, op=op)
    if isinstance(ids, Tracer):
        ids._concrete(f"{op}'s segment_ids (they set the result's shape) taken from the value")
    known = np.asarray(ids.numpy())
    if known.ndim != 1:
        raise op_error(op, f"segment_ids must be 1-d, got shape {known.shape}")
    if known.size and (np.any(np.diff(known) < 0) or known[0] < 0):
        raise op_error(op, "segment_ids must be sorted and non-negative")
    return known


def boolean_mask(tensor, mask, axis=None, name=None):
    """The elements (or slices) of `tensor` where `mask` is True, flattened over the mask's
    axes (TensorFlow's tf.boolean_mask; numpy's `x[mask]`). The result's size depends on the
    mask's values, so under jit the mask must be known (a constant), not traced."""
    x = as_value(tensor, op="boolean_mask")
    m = as_value(mask, op="boolean_mask")
    if m.dtype != dtypes.bool_:
        raise op_error("boolean_mask", f"mask must be bool, got {m.dtype.name}", TypeError)
    axis = 0 if axis is None else normalize_axis("boolean_mask", axis, x.ndim)
    if m.ndim == 0 or tuple(x.shape[axis : axis + m.ndim]) != tuple(m.shape):
        raise op_error(
            "boolean_mask",
            f"mask of shape {m.shape} does not match tensor {x.shape} from axis {axis}",
        )
    return getitem(x, (builtins.slice(None),) * axis + (m,))


def where(condition, x=None, y=None, name=None):
    """TensorFlow's tf.where: elementwise `x if condition else y`, broadcasting (the gradient
    flows to the chosen side); with only `condition`, the coordinates of its true (nonzero)
    entries, int64 of shape (count, rank), in row-major order. That count depends on the
    values, so the one-argument form runs eagerly only: under jit, jitgrad.numpy.argwhere
    takes JAX's size=."""
    if x is not None or y is not None:
        return ew.where(condition, x, y)
    c = as_value(condition, op="where")
    if isinstance(c, Tracer):
        raise op_error(
            "where",
            "with only a condition, the result has a row per true entry, a number that depends "
            "on the values, which do not exist while jit traces: use "
            "jitgrad.numpy.argwhere(condition, size=n, fill_value=...)",
            TypeError,
        )
    return constant(np.argwhere(c.numpy()).astype(np.int64))


def shape(input, out_type=dtypes.int32, name=None):  # noqa: A002 - TensorFlow's names
    """The shape of `input` as a 1-d integer tensor (TensorFlow's tf.shape)."""
    return constant(np.array(_shape_of("shape", input), _index_type("shape", out_type)))


def size(input, out_type=dtypes.int32, name=None):  # noqa: A002
    """The number of elements of `input` as an integer scalar (TensorFlow's tf.size)."""
    count = int(np.prod(_shape_of("size", input), dtype=np.int64))
    return constant(np.array(count, _index_type("size", out_type)))


def rank(input, name=None):  # noqa: A002
    """The number of dimensions of `input` as an int32 scalar (TensorFlow's tf.rank)."""
    return constant(np.array(len(_shape_of("rank", input)), np.int32))


def _shape_of(op: str, value) -> tuple:
    if isinstance(value, (Tensor, Tracer, np.ndarray)):
        return tuple(value.shape)
    return tuple(as_value(value, op=op).shape)


def _index_type(op: str, out_type):
    dtype = np.dtype(dtypes.as_dtype(out_type))
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise op_error(op, f"out_type must be int32 or int64, got {dtype.name}", TypeError)
    return dtype
