"""Pooling: max pooling as three primitives, average pooling as a composite of convolutions.

    max_pool[window, strides, padding](x) -> y            y = the max of each window
    max_pool_scatter[...](x, g) -> dx                      g added at each window's maximum
    max_pool_gather[...](x, h) -> z                        h read at each window's maximum

in channels-last layout (x: (N, *spatial, C)), with `padding` pairs that read as -inf. A
window's maximum is its first one in row-major window order when several are equal, as
TensorFlow routes a tie's gradient. The gradient of max_pool is max_pool_scatter, and
max_pool_scatter and max_pool_gather are each other's transpose in their second argument
(their first one only picks positions: a piecewise-constant dependence, no gradient), so every
derivative order stays in these three primitives.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.ops import conv
from jitgrad.ops.base import as_value


def _pool_eval(x, *, window, strides, padding):
    rank = len(window)
    if rank not in (1, 2) or x.ndim != rank + 2:
        raise op_error("max_pool", f"input {x.shape} needs rank {rank + 2} for a {rank}-d window")
    if x.dtype.kind != "f":
        raise op_error("max_pool", f"expects a float tensor, got {x.dtype.name}", TypeError)
    spatial = conv.out_spatial(x.shape[1:-1], window, strides, padding, (1,) * rank, (1,) * rank)
    return AVal((x.shape[0], *spatial, x.shape[-1]), x.dtype)


def _windows(x, window, strides, padding, fill=-np.inf):
    """(the windows of x padded with `fill`: (N, *out, C, prod(window)), the out spatial
    shape)."""
    rank = len(window)
    pads = [(0, 0), *padding, (0, 0)]
    xp = np.pad(x, pads, constant_values=fill)
    spatial = conv.out_spatial(x.shape[1:-1], window, strides, padding, (1,) * rank, (1,) * rank)
    if 0 in spatial:  # no window fits (numpy would refuse the view): an empty result, as compiled
        taps = int(np.prod(window))
        return np.full((x.shape[0], *spatial, x.shape[-1], taps), fill, x.dtype), spatial
    views = np.lib.stride_tricks.sliding_window_view(xp, window, axis=tuple(range(1, rank + 1)))
    index = (slice(None), *[slice(None, s * (o - 1) + 1, s) for s, o in zip(strides, spatial)])
    views = views[index]
    return views.reshape(views.shape[: rank + 2] + (-1,)), spatial


def _argmax_positions(x, window, strides, padding):
    """Per window, the flat index in x (N * ... * C) of its first maximum among the taps
    inside x; -1 for a window wholly in the padding (its cotangent goes nowhere), as the
    compiled helpers (runtime._pooled_row) do."""
    rank = len(window)
    views, spatial = _windows(x, window, strides, padding)
    inside, _ = _windows(np.ones(x.shape, bool), window, strides, padding, fill=False)
    first = np.argmax(views, axis=-1)  # first maximum, row-major in the window
    # A padded tap (-inf) comes first only when the window's maximum is -inf: then the
    # first tap inside is a first maximum too.
    padded = ~np.take_along_axis(inside, first[..., None], axis=-1)[..., 0]
    first = np.where(padded, np.argmax(inside, axis=-1), first)
    taps = np.unravel_index(first, window)
    grids = np.meshgrid(*[np.arange(n) for n in views.shape[:-1]], indexing="ij")
    coords = [grids[0]]
    for d in range(rank):
        coords.append(grids[1 + d] * strides[d] + taps[d] - padding[d][0])
    coords.append(grids[-1])
    reaches = inside.any(axis=-1)
    coords = [np.where(reaches, c, 0) for c in coords]
    return np.where(reaches, np.ravel_multi_index(coords, x.shape), -1)


def _max_pool_impl(x, *, window, strides, padding):
    views, spatial = _windows(x, window, strides, padding)
    if views.shape[-1] == 0 or 0 in views.shape[:-1]:
        return np.zeros(views.shape[:-1], x.dtype)
    return views.max(axis=-1).astype(x.dtype)


def _scatter_impl(x, g, *, window, strides, padding):
    out = np.zeros(x.size, g.dtype)
    if g.size:
        positions = _argmax_positions(x, window, strides, padding).ravel()
        reaches = positions >= 0
        np.add.at(out, positions[reaches], g.ravel()[reaches])
    return out.reshape(x.shape)


def _gather_impl(x, h, *, window, strides, padding):
    positions = _argmax_positions(x, window, strides, padding)
    if not h.size:
        return np.zeros(positions.shape, h.dtype)
    return np.where(positions >= 0, h.reshape(-1)[np.maximum(positions, 0)], 0).astype(h.dtype)


def _max_pool_vjp(g, out, x, **params):
    return (lambda: bind(max_pool_scatter_p, x, g, **params),)


def _scatter_eval(x, g, *, window, strides, padding):
    expected = _pool_eval(x, window=window, strides=strides, padding=padding)
    if (g.shape, g.dtype) != (expected.shape, expected.dtype):
        raise op_error("max_pool_scatter", f"cotangent {g.shape} for pooled {expected.shape}")
    return AVal(x.shape, x.dtype)


def _gather_eval(x, h, *, window, strides, padding):
    if (h.shape, h.dtype) != (x.shape, x.dtype):
        raise op_error("max_pool_gather", f"values {h.shape} for an input of shape {x.shape}")
    return _pool_eval(x, window=window, strides=strides, padding=padding)


def _scatter_vjp(ct, out, x, g, **params):
    return (None, lambda: bind(max_pool_gather_p, x, ct, **params))


def _gather_vjp(ct, out, x, h, **params):
    return (None, lambda: bind(max_pool_scatter_p, x, ct, **params))


max_pool_p = defop(
    "max_pool",
    abstract_eval=_pool_eval,
    impl=_max_pool_impl,
    vjp=_max_pool_vjp,
    kind="other",
    doc="The maximum of each window (channels last; padding reads as -inf).",
)
max_pool_scatter_p = defop(
    "max_pool_scatter",
    abstract_eval=_scatter_eval,
    impl=_scatter_impl,
    vjp=_scatter_vjp,
    kind="other",
    doc="max_pool's gradient: each window's cotangent added at its first maximum.",
)
max_pool_gather_p = defop(
    "max_pool_gather",
    abstract_eval=_gather_eval,
    impl=_gather_impl,
    vjp=_gather_vjp,
    kind="other",
    doc="The transpose of max_pool_scatter in its cotangent: values at each window's maximum.",
)


# -- TensorFlow's functions -----------------------------------------------------------------------
def _pool_params(name, x, ksize, strides, padding, data_format, rank):
    channels_last = conv._layout(name, data_format, rank)
    window = conv._per_axis(name, "ksize", ksize, rank, channels_last)
    strides = conv._per_axis(name, "strides", strides, rank, channels_last)
    x = conv._to_channels_last(x, channels_last)
    if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
        raise op_error(name, f"padding must be 'SAME' or 'VALID', got {padding!r}")
    pads = conv._padding(name, padding, x.shape[1:-1], window, strides, (1,) * rank, channels_last)
    return x, window, strides, pads, channels_last


def _max_pool(name, input, ksize, strides, padding, data_format, rank):  # noqa: A002
    x = as_value(input, op=name)
    if x.ndim != rank + 2:
        raise op_error(name, f"input {x.shape} must have rank {rank + 2}")
    x, window, strides, pads, channels_last = _pool_params(
        name, x, ksize, strides, padding, data_format, rank
    )
    y = bind(max_pool_p, x, window=window, strides=strides, padding=pads)
    return conv._from_channels_last(y, channels_last)


def _avg_pool(name, input, ksize, strides, padding, data_format, rank):  # noqa: A002
    """The window sums (a depthwise convolution with ones) divided by the number of the
    window's elements inside the input (TensorFlow's SAME average excludes the padding)."""
    x = as_value(input, op=name)
    if x.ndim != rank + 2:
        raise op_error(name, f"input {x.shape} must have rank {rank + 2}")
    if x.dtype.kind != "f":
        raise op_error(name, f"expects a float tensor, got {x.dtype.name}", TypeError)
    x, window, strides, pads, channels_last = _pool_params(
        name, x, ksize, strides, padding, data_format, rank
    )
    c = x.shape[-1]
    ones = np.ones(tuple(window) + (1, c), x.dtype)
    sums = conv.conv_general(x, ones, strides, pads, None, None, c)
    counts = conv._conv_impl(
        np.ones((1, *x.shape[1:-1], 1), x.dtype),
        np.ones(tuple(window) + (1, 1), x.dtype),
        strides=tuple(strides),
        padding=tuple(pads),
        lhs_dilation=(1,) * rank,
        rhs_dilation=(1,) * rank,
        groups=1,
    )
    y = sums / np.maximum(counts, 1)
    return conv._from_channels_last(y, channels_last)


def max_pool2d(input, ksize, strides, padding, data_format="NHWC", name=None):  # noqa: A002
    """TensorFlow's `tf.nn.max_pool2d`: the maximum of each (KH, KW) window; a tie's gradient
    goes to its first maximum."""
    return _max_pool("max_pool2d", input, ksize, strides, padding, data_format, 2)


def max_pool1d(input, ksize, strides, padding, data_format="NWC", name=None):  # noqa: A002
    """TensorFlow's `tf.nn.max_pool1d`."""
    return _max_pool("max_pool1d", input, ksize, strides, padding, data_format, 1)


def avg_pool2d(input, ksize, strides, padding, data_format="NHWC", name=None):  # noqa: A002
    """TensorFlow's `tf.nn.avg_pool2d`: the mean of each window's elements inside the input."""
    return _avg_pool("avg_pool2d", input, ksize, strides, padding, data_format, 2)


def avg_pool1d(input, ksize, strides, padding, data_format="NWC", name=None):  # noqa: A002
    """TensorFlow's `tf.nn.avg_pool1d`."""
    return _avg_pool("avg_pool1d", input, ksize, strides, padding, data_format, 1)


def max_pool(input, ksize, strides, padding, data_format=None, name=None):  # noqa: A002
    """TensorFlow's `tf.nn.max_pool`: 1-d or 2-d by the input's rank."""
    rank = as_value(input, op="max_pool").ndim - 2
    fmt = data_format or ("NWC" if rank == 1 else "NHWC")
    return _max_pool("max_pool", input, ksize, strides, padding, fmt, rank)


def avg_pool(input, ksize, strides, padding, data_format=None, name=None):  # noqa: A002
    """TensorFlow's `tf.nn.avg_pool`: 1-d or 2-d by the input's rank."""
    rank = as_value(input, op="avg_pool").ndim - 2
    fmt = data_format or ("NWC" if rank == 1 else "NHWC")
    return _avg_pool("avg_pool", input, ksize, strides, padding, fmt, rank)
