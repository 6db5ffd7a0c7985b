"""Convolution: one primitive, `conv`, and TensorFlow's functions over it (conv1d, conv2d,
depthwise_conv2d, conv2d_transpose).

    conv[strides, padding, lhs_dilation, rhs_dilation, groups](x, w) -> y

in channels-last layouts whatever the user's `data_format`: x is (N, *spatial, C_in), w is
(*window, C_in / groups, C_out) (TensorFlow's HWIO) and y is (N, *out_spatial, C_out), with

    y[n, o, g * (C_out / groups) + j] = sum over k, c of
        x_padded_dilated[n, o * strides + k * rhs_dilation, g * (C_in / groups) + c]
        * w[k, c, g * (C_out / groups) + j]

where `x_padded_dilated` is x with `lhs_dilation - 1` zeros inserted between its elements,
then padded by `padding` (pairs per spatial axis, negative pairs crop). It is XLA's
conv_general_dilated with feature groups. Its gradient with respect to x is a `conv` of the
cotangent with the window flipped (`lhs_dilation` = strides); the one with respect to w is

    conv_filters[window, strides, padding, lhs_dilation, rhs_dilation, groups](x, g) -> dw
    dw[k, c, q * (C_out / groups) + j] = sum over n, o of
        x_padded_dilated[n, o * strides + k * rhs_dilation, q * (C_in / groups) + c]
        * g[n, o, q * (C_out / groups) + j]

(dw has w's shape; the groups are one primitive, not one per group: a depthwise conv of 40
channels unrolled into 40 filter gradients and their concatenation took 131 s to compile),
whose own gradients are a `conv` (w.r.t. g) and a conv's input gradient
(w.r.t. x), so that second derivatives are convolutions too. It is a `conv` of x and g with
the batch and channel axes swapped, which is how it was computed before; as a primitive of its
own it needs no transposes of x and g, and compiles to a loop nest that reads both in NHWC
(conv_filters.conv2_filters): W10's filter gradients ran 0.33 against 0.78 ms and 0.35 against
0.61 ms for the transposes plus the swapped conv.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import defop
from jitgrad.ops import shape as sh
from jitgrad.ops.base import as_value


def _dilated(size: int, dilation: int) -> int:
    return 0 if size == 0 else (size - 1) * dilation + 1


def out_spatial(in_shape, window, strides, padding, lhs_dilation, rhs_dilation) -> tuple:
    out = []
    for n, k, s, (lo, hi), dl, dr in zip(
        in_shape, window, strides, padding, lhs_dilation, rhs_dilation
    ):
        span = _dilated(n, dl) + lo + hi - _dilated(k, dr)
        out.append(max(span // s + 1, 0) if span >= 0 else 0)
    return tuple(out)


def _check_operands(op: str, x, other, other_name: str, rank: int) -> None:
    """x and the conv's other operand (filters, or a filter gradient's cotangent): ranks of
    1 or 2 spatial dimensions, floats of one dtype."""
    if rank not in (1, 2):
        raise op_error(op, f"{rank} spatial dimensions: conv takes 1 or 2")
    if x.ndim != rank + 2 or other.ndim != rank + 2:
        raise op_error(
            op,
            f"input {x.shape} and {other_name} {other.shape} need rank {rank + 2} for {rank} "
            "spatial dimensions",
        )
    if x.dtype != other.dtype or x.dtype.kind != "f":
        raise op_error(
            op,
            f"input and {other_name} must be floats of one dtype, got {x.dtype.name} and "
            f"{other.dtype.name}",
            TypeError,
        )


def _conv_eval(x, w, *, strides, padding, lhs_dilation, rhs_dilation, groups):
    rank = len(strides)
    _check_operands("conv", x, w, "filters", rank)
    c_in, c_out = x.shape[-1], w.shape[-1]
    if c_in % groups or c_out % groups or w.shape[-2] * groups != c_in:
        raise op_error(
            "conv",
            f"input {x.shape} has {c_in} channels but filters {w.shape} take "
            f"{w.shape[-2]}" + (f" per group of {groups}" if groups > 1 else ""),
        )
    spatial = out_spatial(x.shape[1:-1], w.shape[:-2], strides, padding, lhs_dilation, rhs_dilation)
    return AVal((x.shape[0], *spatial, c_out), x.dtype)


def _prepared(x, padding, lhs_dilation):
    """x with zeros inserted between its elements and padded (negative pads crop)."""
    if any(d > 1 for d in lhs_dilation):
        shape = (x.shape[0], *[_dilated(n, d) for n, d in zip(x.shape[1:-1], lhs_dilation)])
        dilated = np.zeros(shape + x.shape[-1:], x.dtype)
        dilated[(slice(None), *[slice(None, None, d) for d in lhs_dilation])] = x
        x = dilated
    pads = [(0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding] + [(0, 0)]
    x = np.pad(x, pads)
    crop = tuple(
        slice(max(-lo, 0), x.shape[1 + d] - max(-hi, 0)) for d, (lo, hi) in enumerate(padding)
    )
    return x[(slice(None), *crop)]


def _patches(x, window, spatial, strides, padding, lhs_dilation, rhs_dilation):
    """x's windows, (N, *out spatial, C_in, *window): a strided view of x dilated and padded
    (im2col without a copy) whose taps are every rhs_dilation and outputs every stride."""
    rank = len(strides)
    xp = _prepared(x, padding, lhs_dilation)
    extents = [_dilated(k, d) for k, d in zip(window, rhs_dilation)]
    views = np.lib.stride_tricks.sliding_window_view(xp, extents, axis=tuple(range(1, rank + 1)))
    index = (
        slice(None),
        *[slice(None, s * (o - 1) + 1, s) for s, o in zip(strides, spatial)],
        slice(None),
        *[slice(None, None, d) for d in rhs_dilation],
    )
    return views[index]


def _conv_impl(x, w, *, strides, padding, lhs_dilation, rhs_dilation, groups):
    """im2col by a strided window view, then one (batched per group) matrix product."""
    rank = len(strides)
    window = w.shape[:rank]
    spatial = out_spatial(x.shape[1:-1], window, strides, padding, lhs_dilation, rhs_dilation)
    n, c_in, c_out = x.shape[0], x.shape[-1], w.shape[-1]
    if 0 in spatial or n == 0:
        return np.zeros((n, *spatial, c_out), x.dtype)
    patches = _patches(x, window, spatial, strides, padding, lhs_dilation, rhs_dilation)
    cg, og = c_in // groups, c_out // groups
    patches = patches.reshape((n, *spatial, groups, cg) + tuple(window))
    kernel = w.reshape(tuple(window) + (cg, groups, og))
    letters = "abcdefgh"[:rank]
    out = np.einsum(
        f"n{letters.upper()}gc{letters},{letters}cgo->n{letters.upper()}go",
        patches,
        kernel,
        optimize=True,
    )
    return np.ascontiguousarray(out.reshape((n, *spatial, c_out)), dtype=x.dtype)


def _lhs_padding(in_shape, window, strides, out_shape, padding, lhs_dilation, rhs_dilation):
    """The padding of the convolution that maps the output's cotangent back to the input."""
    pads = []
    for n, k, s, o, (lo, _), dl, dr in zip(
        in_shape, window, strides, out_shape, padding, lhs_dilation, rhs_dilation
    ):
        before = _dilated(k, dr) - lo - 1
        after = _dilated(n, dl) + _dilated(k, dr) - 1 - _dilated(o, s) - before
        pads.append((before, after))
    return tuple(pads)


def _flip_window(w, rank: int):
    """w reversed along its window axes."""
    index = tuple(slice(None, None, -1) for _ in range(rank)) + (slice(None),) * 2
    return sh.strided_slice(w, index)


def input_gradient(g, w, in_spatial, strides, padding, lhs_dilation, rhs_dilation, groups):
    """The cotangent of a conv's input (spatial shape `in_spatial`) for the cotangent `g` of
    its output: a conv of `g` with the window flipped and, per group, the channels swapped.
    It is also conv2d_transpose."""
    rank = len(strides)
    window = w.shape[:rank]
    cg, og = w.shape[-2], w.shape[-1] // groups
    k = sh.reshape(_flip_window(w, rank), tuple(window) + (cg, groups, og))
    k = sh.transpose(k, (*range(rank), rank + 2, rank + 1, rank))
    k = sh.reshape(k, tuple(window) + (og, groups * cg))
    pads = _lhs_padding(
        in_spatial, window, strides, g.shape[1:-1], padding, lhs_dilation, rhs_dilation
    )
    return bind(
        conv_p,
        g,
        k,
        strides=tuple(lhs_dilation),
        padding=pads,
        lhs_dilation=tuple(strides),
        rhs_dilation=tuple(rhs_dilation),
        groups=groups,
    )


def _conv_vjp(g, out, x, w, *, strides, padding, lhs_dilation, rhs_dilation, groups):
    rank = len(strides)
    window = w.shape[:rank]
    in_spatial = x.shape[1:-1]

    def wrt_input():
        return input_gradient(
            g, w, in_spatial, strides, padding, lhs_dilation, rhs_dilation, groups
        )

    def wrt_filters():
        params = dict(
            window=tuple(window),
            strides=tuple(strides),
            padding=tuple(padding),
            lhs_dilation=tuple(lhs_dilation),
            rhs_dilation=tuple(rhs_dilation),
        )
        return bind(conv_filters_p, x, g, groups=groups, **params)

    return (wrt_input, wrt_filters)


def _filters_eval(x, g, *, window, strides, padding, lhs_dilation, rhs_dilation, groups):
    rank = len(strides)
    if len(window) != rank:
        raise op_error("conv_filters", f"a {len(window)}-d window for {rank}-d strides")
    _check_operands("conv_filters", x, g, "cotangent", rank)
    if groups < 1 or x.shape[-1] % groups or g.shape[-1] % groups:
        raise op_error(
            "conv_filters",
            f"{groups} groups do not divide the input's {x.shape[-1]} channels and the "
            f"cotangent's {g.shape[-1]}",
        )
    spatial = out_spatial(x.shape[1:-1], window, strides, padding, lhs_dilation, rhs_dilation)
    if g.shape[0] != x.shape[0] or tuple(g.shape[1:-1]) != spatial:
        raise op_error(
            "conv_filters",
            f"cotangent {g.shape} for an output of shape {(x.shape[0], *spatial)} + channels",
        )
    return AVal((*window, x.shape[-1] // groups, g.shape[-1]), x.dtype)


def _filters_impl(x, g, *, window, strides, padding, lhs_dilation, rhs_dilation, groups):
    """x's windows (im2col by a strided view) contracted with g over the batch and the output
    positions: one matrix product per group (a depthwise conv of 64 channels: 15-18 ms by 64
    products against 33 ms by one einsum over the groups)."""
    rank = len(strides)
    spatial = g.shape[1:-1]
    c_in, c_out = x.shape[-1], g.shape[-1]
    cg, og = c_in // groups, c_out // groups
    if 0 in spatial or x.shape[0] == 0:
        return np.zeros((*window, cg, c_out), x.dtype)
    geometry = (window, spatial, strides, padding, lhs_dilation, rhs_dilation)
    parts = []
    for group in range(groups):
        patches = _patches(x[..., group * cg : (group + 1) * cg], *geometry)
        axes = list(range(rank + 1))
        dw = np.tensordot(patches, g[..., group * og : (group + 1) * og], axes=(axes, axes))
        parts.append(np.moveaxis(dw, 0, rank))  # (C_in, *window, C_out) -> (*window, C_in, C_out)
    dw = parts[0] if groups == 1 else np.concatenate(parts, axis=-1)
    return np.ascontiguousarray(dw, dtype=x.dtype)


def _filters_vjp(ct, out, x, g, *, window, strides, padding, lhs_dilation, rhs_dilation, groups):
    """<ct, conv_filters(x, g)> = <g, conv(x, ct)>: w.r.t. g a conv of x with ct as filters
    (with the same groups), w.r.t. x that conv's input gradient for the cotangent g."""

    def wrt_input():
        return input_gradient(
            g, ct, x.shape[1:-1], strides, padding, lhs_dilation, rhs_dilation, groups
        )

    def wrt_cotangent():
        return bind(
            conv_p,
            x,
            ct,
            strides=tuple(strides),
            padding=tuple(padding),
            lhs_dilation=tuple(lhs_dilation),
            rhs_dilation=tuple(rhs_dilation),
            groups=groups,
        )

    return (wrt_input, wrt_cotangent)


conv_p = defop(
    "conv",
    abstract_eval=_conv_eval,
    impl=_conv_impl,
    vjp=_conv_vjp,
    kind="linalg",
    doc="N-d convolution, channels last, with strides, padding, dilations and groups.",
)
conv_filters_p = defop(
    "conv_filters",
    abstract_eval=_filters_eval,
    impl=_filters_impl,
    vjp=_filters_vjp,
    kind="linalg",
    doc="A conv's gradient with respect to its filters, for x and its cotangent.",
)


def conv_general(x, w, strides, padding, lhs_dilation=None, rhs_dilation=None, groups=1):
    """`conv` with checked, normalised params (tuples of ints per spatial axis)."""
    x, w = as_value(x, op="conv"), as_value(w, op="conv")
    rank = x.ndim - 2
    ones = (1,) * rank
    return bind(
        conv_p,
        x,
        w,
        strides=tuple(int(s) for s in strides),
        padding=tuple((int(lo), int(hi)) for lo, hi in padding),
        lhs_dilation=tuple(int(d) for d in (lhs_dilation or ones)),
        rhs_dilation=tuple(int(d) for d in (rhs_dilation or ones)),
        groups=int(groups),
    )


# -- TensorFlow's functions -----------------------------------------------------------------------
def _per_axis(name: str, what: str, value, rank: int, channels_last: bool) -> tuple:
    """strides/dilations as one int per spatial axis: an int, `rank` ints, or TensorFlow's
    full form with 1 for the batch and channel axes."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    items = [int(v) for v in value]
    if len(items) == rank:
        return tuple(items)
    if len(items) == rank + 2:
        spatial = items[1:-1] if channels_last else items[2:]
        rest = [items[0], items[-1]] if channels_last else items[:2]
        if rest != [1, 1]:
            raise op_error(name, f"{what} {list(value)} must be 1 on the batch and channel axes")
        return tuple(spatial)
    raise op_error(name, f"{what} must be an int or {rank} or {rank + 2} ints, got {value!r}")


def _padding(name, padding, in_spatial, window, strides, dilations, channels_last):
    """TensorFlow's padding ("SAME", "VALID" or explicit pairs in the data format's axis
    order) as one (lo, hi) pair per spatial axis. SAME pads to ceil(in / stride) outputs,
    the odd element at the end, as TensorFlow does."""
    rank = len(in_spatial)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * rank
        if mode == "SAME":
            pads = []
            for n, k, s, d in zip(in_spatial, window, strides, dilations):
                total = max((-(-n // s) - 1) * s + _dilated(k, d) - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise op_error(name, f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
    pairs = [tuple(int(v) for v in pair) for pair in padding]
    if len(pairs) == rank + 2:
        ends = [pairs[0], pairs[-1]] if channels_last else pairs[:2]
        if any(p != (0, 0) for p in ends):
            raise op_error(name, f"explicit padding {padding} pads the batch or channel axis")
        pairs = pairs[1:-1] if channels_last else pairs[2:]
    if len(pairs) != rank or any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise op_error(name, f"padding {padding!r} needs {rank} non-negative (lo, hi) pairs")
    return tuple(pairs)


def _layout(name: str, data_format: str, rank: int) -> bool:
    """Whether `data_format` is channels-last (NWC/NHWC) or channels-first (NCW/NCHW)."""
    last, first = ("NWC", "NCW") if rank == 1 else ("NHWC", "NCHW")
    if data_format == last:
        return True
    if data_format == first:
        return False
    raise op_error(name, f"data_format must be {last!r} or {first!r}, got {data_format!r}")


def _to_channels_last(x, channels_last: bool):
    return x if channels_last else sh.transpose(x, (0, *range(2, x.ndim), 1))


def _from_channels_last(y, channels_last: bool):
    return y if channels_last else sh.transpose(y, (0, y.ndim - 1, *range(1, y.ndim - 1)))


def _convolve(name, images, filters, strides, padding, data_format, dilations, rank, groups):
    x, w = as_value(images, op=name), as_value(filters, op=name)
    if x.ndim != rank + 2 or w.ndim != rank + 2:
        raise op_error(
            name, f"input {x.shape} and filters {w.shape} must both have rank {rank + 2}"
        )
    channels_last = _layout(name, data_format, rank)
    x = _to_channels_last(x, channels_last)
    strides = _per_axis(name, "strides", strides, rank, channels_last)
    dilations = _per_axis(
        name, "dilations", 1 if dilations is None else dilations, rank, channels_last
    )
    pads = _padding(name, padding, x.shape[1:-1], w.shape[:rank], strides, dilations, channels_last)
    if x.shape[-1] != w.shape[-2] * groups:
        raise op_error(
            name,
            f"input {tuple(as_value(images).shape)} has {x.shape[-1]} channels but filters "
            f"{w.shape} take {w.shape[-2] * groups}",
        )
    y = conv_general(x, w, strides, pads, None, dilations, groups)
    return _from_channels_last(y, channels_last)


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, name=None):  # noqa: A002
    """TensorFlow's `tf.nn.conv2d`: input (N, H, W, C_in), filters (KH, KW, C_in, C_out);
    `padding` "SAME", "VALID" or explicit pairs; `data_format` "NHWC" or "NCHW"."""
    return _convolve("conv2d", input, filters, strides, padding, data_format, dilations, 2, 1)


def conv1d(input, filters, stride, padding, data_format="NWC", dilations=None, name=None):  # noqa: A002
    """TensorFlow's `tf.nn.conv1d`: input (N, W, C_in), filters (KW, C_in, C_out)."""
    return _convolve("conv1d", input, filters, stride, padding, data_format, dilations, 1, 1)


def depthwise_conv2d(
    input,  # noqa: A002 - TensorFlow's argument names
    filter,  # noqa: A002
    strides,
    padding,
    data_format="NHWC",
    dilations=None,  # noqa: A002
    name=None,
):
    """TensorFlow's `tf.nn.depthwise_conv2d`: filter (KH, KW, C_in, M) convolves each input
    channel c with its own M filters; output channel c * M + m."""
    w = as_value(filter, op="depthwise_conv2d")
    if w.ndim != 4:
        raise op_error("depthwise_conv2d", f"filter {w.shape} must be (KH, KW, C_in, M)")
    kh, kw, c, m = w.shape
    x = as_value(input, op="depthwise_conv2d")
    channels = (
        x.shape[-1 if _layout("depthwise_conv2d", data_format, 2) else 1] if x.ndim == 4 else c
    )
    if channels != c:
        raise op_error(
            "depthwise_conv2d",
            f"input {x.shape} has {channels} channels but filter {w.shape} is for {c}",
        )
    grouped = sh.reshape(w, (kh, kw, 1, c * m))
    return _convolve("depthwise_conv2d", x, grouped, strides, padding, data_format, dilations, 2, c)


def conv2d_transpose(
    input,  # noqa: A002 - TensorFlow's argument name
    filters,
    output_shape,
    strides,
    padding="SAME",  # noqa: A002
    data_format="NHWC",
    dilations=None,
    name=None,
):
    """TensorFlow's `tf.nn.conv2d_transpose`: the gradient of conv2d with respect to its input,
    for filters (KH, KW, C_out, C_in) and an input of `output_shape`."""
    name_ = "conv2d_transpose"
    g, w = as_value(input, op=name_), as_value(filters, op=name_)
    channels_last = _layout(name_, data_format, 2)
    shape = [int(d) for d in np.asarray(output_shape).reshape(-1)]
    if len(shape) != 4:
        raise op_error(name_, f"output_shape {output_shape} must have 4 entries")
    out = shape if channels_last else [shape[0], shape[2], shape[3], shape[1]]
    g = _to_channels_last(g, channels_last)
    strides = _per_axis(name_, "strides", strides, 2, channels_last)
    dilations = _per_axis(
        name_, "dilations", 1 if dilations is None else dilations, 2, channels_last
    )
    pads = _padding(name_, padding, out[1:3], w.shape[:2], strides, dilations, channels_last)
    expected = out_spatial(out[1:3], w.shape[:2], strides, pads, (1, 1), dilations)
    if w.shape[-2] != out[-1] or w.shape[-1] != g.shape[-1] or g.shape[1:3] != expected:
        raise op_error(
            name_, f"input {g.shape} and filters {w.shape} do not fit output_shape {shape}"
        )
    y = input_gradient(g, w, out[1:3], strides, pads, (1, 1), dilations, 1)
    return _from_channels_last(y, channels_last)
