"""Convolutions (issue 14): `jitgrad.nn.conv2d`, `conv1d`, `depthwise_conv2d` and
`conv2d_transpose` (TensorFlow's names, layouts and padding rules) against a float64 reference
written as plain loops over output positions, kernel taps and channels.

* The reference is checked first: TF's SAME rule on hand-worked sizes; its forward loop against
  scipy.signal.correlate and an einsum over sliding windows; its transposed loops (the VJPs
  w.r.t. input and filters) against the dense Jacobian of its forward loop; depthwise against a
  block-diagonal conv; values TensorFlow printed (and TensorFlow itself, `-m slow`).
* Values, eager, float32 and float64: strides (1, 2) x paddings (SAME, VALID, explicit) x
  dilations (1, 2) x both data formats x batch/channel sizes including 1; the argument forms
  (int, 2-list, 4-list, None); conv2d_transpose = the reference's transposed loop = the tape's
  VJP of conv2d w.r.t. its input, and its output_shape picks between input sizes.
* Gradients w.r.t. input and filters: the tape's equal the reference's transposed loops;
  `check_grads` (finite differences, first and second order) through the tape and through graph
  autodiff; compiled (`jit(grad(f))`, `jit_grad`, second order, new shapes) = eager.
* Hypothesis-drawn small conv2d shapes; errors (channel mismatch, bad padding).

Every test of jitgrad skips while `jitgrad.nn.conv2d` does not exist; the reference's own checks
always run. Compile-heavy parametrizations beyond a representative few are `slow`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitgrad as jg
from jitgrad.testing import check_grads, graph_vjp_fn

needs_conv = pytest.mark.skipif(
    not hasattr(jg.nn, "conv2d"), reason="jitgrad.nn.conv2d is not implemented yet (issue 14)"
)

# ---------------------------------------------------------------------------------------------
# The float64 reference: loops over output positions, kernel taps and channels, channels-last.
# Spatial arguments are per spatial dimension: strides, dilations, and pads as (before, after).


def same_pads(size, k, stride, dilation):
    """TF's SAME: the output has ceil(size / stride) positions; the total padding
    max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0) is split with the extra element at
    the end (bottom / right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def output_size(size, k, stride, dilation, pads):
    return (size + pads[0] + pads[1] - (k - 1) * dilation - 1) // stride + 1


def taps(in_sizes, kernel, strides, dilations, pads):
    """(output position, kernel tap, input position) for every tap that lands in the input: output
    position p reads input p * stride + tap * dilation - pad_before (outside it: a zero)."""
    out_sizes = [output_size(*a) for a in zip(in_sizes, kernel, strides, dilations, pads)]
    for pos in np.ndindex(*out_sizes):
        for tap in np.ndindex(*kernel):
            src = tuple(
                p * s + t * d - b[0] for p, t, s, d, b in zip(pos, tap, strides, dilations, pads)
            )
            if all(0 <= i < n for i, n in zip(src, in_sizes)):
                yield pos, tap, src


def conv_ref(x, w, strides, dilations, pads):
    """y[n, p, o] = sum over taps t and input channels c of x[n, p*s + t*d - pad, c] w[t, c, o]:
    x (N, *spatial, C), w (*kernel, C, O), any number of spatial dimensions."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n_batch, *in_sizes, channels = x.shape
    *kernel, w_channels, out_channels = w.shape
    assert w_channels == channels
    out_sizes = [output_size(*a) for a in zip(in_sizes, kernel, strides, dilations, pads)]
    y = np.zeros((n_batch, *out_sizes, out_channels))
    for n in range(n_batch):
        for pos, tap, src in taps(in_sizes, kernel, strides, dilations, pads):
            for c in range(channels):
                for o in range(out_channels):
                    y[(n, *pos, o)] += x[(n, *src, c)] * w[(*tap, c, o)]
    return y


def conv_input_vjp_ref(dy, w, x_shape, strides, dilations, pads):
    """The forward loop transposed: every product x[src] w[tap] that made y[pos] sends
    dy[pos] w[tap] back to x[src]. This is conv2d_transpose."""
    dy, w = np.asarray(dy, np.float64), np.asarray(w, np.float64)
    n_batch, *in_sizes, channels = x_shape
    *kernel, _, out_channels = w.shape
    dx = np.zeros(x_shape)
    for n in range(n_batch):
        for pos, tap, src in taps(in_sizes, kernel, strides, dilations, pads):
            for c in range(channels):
                for o in range(out_channels):
                    dx[(n, *src, c)] += dy[(n, *pos, o)] * w[(*tap, c, o)]
    return dx


def conv_filter_vjp_ref(x, dy, w_shape, strides, dilations, pads):
    """The forward loop transposed w.r.t. the filters: dw[tap, c, o] += x[src, c] dy[pos, o]."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n_batch, *in_sizes, channels = x.shape
    *kernel, _, out_channels = w_shape
    dw = np.zeros(w_shape)
    for n in range(n_batch):
        for pos, tap, src in taps(in_sizes, kernel, strides, dilations, pads):
            for c in range(channels):
                for o in range(out_channels):
                    dw[(*tap, c, o)] += x[(n, *src, c)] * dy[(n, *pos, o)]
    return dw


def depthwise_ref(x, f, strides, dilations, pads):
    """y[n, p, c * M + m] = sum over taps t of x[n, p*s + t*d - pad, c] f[t, c, m] (TF's channel
    order): f (*kernel, C, M)."""
    x, f = np.asarray(x, np.float64), np.asarray(f, np.float64)
    n_batch, *in_sizes, channels = x.shape
    *kernel, f_channels, multiplier = f.shape
    assert f_channels == channels
    out_sizes = [output_size(*a) for a in zip(in_sizes, kernel, strides, dilations, pads)]
    y = np.zeros((n_batch, *out_sizes, channels * multiplier))
    for n in range(n_batch):
        for pos, tap, src in taps(in_sizes, kernel, strides, dilations, pads):
            for c in range(channels):
                for m in range(multiplier):
                    y[(n, *pos, c * multiplier + m)] += x[(n, *src, c)] * f[(*tap, c, m)]
    return y


# ---------------------------------------------------------------------------------------------
# A convolution's configuration: TF-style arguments for jitgrad, resolved ones for the reference


def _per_dim(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


@dataclasses.dataclass(frozen=True)
class Conv:
    """One convolution. Shapes are channels-last whatever `channels_first` says (the arrays given
    to jitgrad are moved to the data format): x (N, *spatial, C_in), w (*kernel, C_in, C_out)
    (depthwise: (*kernel, C_in, multiplier)). `padding` "EXPLICIT" means the pairs `explicit`."""

    x_shape: tuple
    w_shape: tuple
    strides: int | tuple = 1
    padding: str = "VALID"
    dilations: int | tuple = 1
    channels_first: bool = False
    explicit: tuple = ((1, 2), (0, 1))

    @property
    def nd(self):
        return len(self.x_shape) - 2

    @property
    def data_format(self):
        return {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW")}[self.nd][self.channels_first]

    @property
    def s(self):
        return _per_dim(self.strides, self.nd)

    @property
    def d(self):
        return _per_dim(self.dilations, self.nd)

    @property
    def pads(self):
        sizes, kernel = self.x_shape[1:-1], self.w_shape[: self.nd]
        if self.padding == "VALID":
            return ((0, 0),) * self.nd
        if self.padding == "SAME":
            return tuple(same_pads(*a) for a in zip(sizes, kernel, self.s, self.d))
        return self.explicit[: self.nd]

    def full(self, spatial, fill):
        """A per-spatial-dimension list as TF's full-rank list in this data format."""
        spatial = list(spatial)
        return [fill, fill, *spatial] if self.channels_first else [fill, *spatial, fill]

    @property
    def tf_padding(self):
        if self.padding != "EXPLICIT":
            return self.padding
        return self.full([list(p) for p in self.pads], [0, 0])

    def to_format(self, a):
        return np.moveaxis(a, -1, 1) if self.channels_first else a

    def from_format(self, a):
        return np.moveaxis(a, 1, -1) if self.channels_first else a

    def shape_in_format(self, shape):
        return tuple(self.to_format(np.empty(shape)).shape)

    @property
    def y_shape(self):
        """The conv's output shape, channels-last."""
        sizes = [
            output_size(*a)
            for a in zip(self.x_shape[1:-1], self.w_shape, self.s, self.d, self.pads)
        ]
        return (self.x_shape[0], *sizes, self.w_shape[-1])

    def arrays(self, dtype=np.float64, seed=0, depthwise=False):
        """x (in the data format), w and a cotangent dy for the output (in the data format)."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, self.x_shape)
        w = rng.uniform(-1, 1, self.w_shape)
        y_shape = self.y_shape
        if depthwise:
            y_shape = (*y_shape[:-1], self.w_shape[-2] * self.w_shape[-1])
        dy = rng.uniform(-1, 1, y_shape)
        return tuple(np.asarray(a, dtype) for a in (self.to_format(x), w, self.to_format(dy)))

    # jitgrad's calls, TF's argument forms

    def conv2d(self, x, w):
        s, d = self.full(self.s, 1), self.full(self.d, 1)
        return jg.nn.conv2d(x, w, s, self.tf_padding, data_format=self.data_format, dilations=d)

    def conv1d(self, x, w):
        (s,), (d,) = self.s, self.d
        return jg.nn.conv1d(x, w, s, self.padding, data_format=self.data_format, dilations=d)

    def depthwise_conv2d(self, x, f):
        s = self.full(self.s, 1)  # TF: strides of size 4, dilations of size 2
        return jg.nn.depthwise_conv2d(
            x, f, s, self.tf_padding, data_format=self.data_format, dilations=list(self.d)
        )

    def conv2d_transpose(self, dy, w):
        return jg.nn.conv2d_transpose(
            dy,
            w,
            list(self.shape_in_format(self.x_shape)),
            self.full(self.s, 1),
            self.tf_padding,
            data_format=self.data_format,
            dilations=self.full(self.d, 1),
        )

    def call(self, op):
        return getattr(self, op)

    # the reference, on arrays in the data format

    def ref(self, x, w):
        y = conv_ref(self.from_format(np.asarray(x)), w, self.s, self.d, self.pads)
        return self.to_format(y)

    def ref_depthwise(self, x, f):
        return self.to_format(
            depthwise_ref(self.from_format(np.asarray(x)), f, self.s, self.d, self.pads)
        )

    def ref_input_vjp(self, dy, w):
        dy = self.from_format(np.asarray(dy))
        return self.to_format(conv_input_vjp_ref(dy, w, self.x_shape, self.s, self.d, self.pads))

    def ref_filter_vjp(self, x, dy):
        x, dy = self.from_format(np.asarray(x)), self.from_format(np.asarray(dy))
        return conv_filter_vjp_ref(x, dy, self.w_shape, self.s, self.d, self.pads)

    def __str__(self):
        kind = self.padding if self.padding != "EXPLICIT" else f"explicit{list(self.pads)}"
        return (
            f"x{list(self.x_shape)}-w{list(self.w_shape)}-s{self.strides}-{kind}"
            f"-d{self.dilations}-{self.data_format}"
        )


def tolerances(dtype):
    return (
        dict(rtol=1e-12, atol=1e-12)
        if np.dtype(dtype) == np.float64
        else dict(rtol=2e-5, atol=2e-5)
    )


def assert_close(got, want, dtype, what=""):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, want {np.dtype(dtype)}"
    np.testing.assert_allclose(got, want, err_msg=what, **tolerances(dtype))


# Shapes (channels-last): the main one (batch 2, 3 -> 4 channels, a non-square 3x2 kernel on a
# 5x6 image), and batch 1 with one channel in and out.
MAIN_2D = ((2, 5, 6, 3), (3, 2, 3, 4))
ONES_2D = ((1, 4, 5, 1), (2, 3, 1, 1))
MAIN_1D = ((2, 7, 3), (3, 3, 2))
ONES_1D = ((1, 6, 1), (2, 1, 1))

STRIDES, DILATIONS, PADDINGS = (1, 2), (1, 2), ("SAME", "VALID", "EXPLICIT")
DTYPES = [np.float64, np.float32]


def grid_2d(shapes=(MAIN_2D, ONES_2D), strides_dilations=None):
    combos = strides_dilations or list(itertools.product(STRIDES, DILATIONS))
    for (x_shape, w_shape), (s, d), padding, cf in itertools.product(
        shapes, combos, PADDINGS, (False, True)
    ):
        yield Conv(x_shape, w_shape, s, padding, d, cf)


CONV2D_GRID = list(grid_2d())
CONV1D_GRID = [
    Conv(x_shape, w_shape, s, padding, d, cf)
    for (x_shape, w_shape), s, d, padding, cf in itertools.product(
        (MAIN_1D, ONES_1D), STRIDES, DILATIONS, ("SAME", "VALID"), (False, True)
    )
]
# TF: a depthwise conv with dilations > 1 must have strides 1. Multiplier 2 and multiplier 1.
DEPTHWISE_GRID = list(
    grid_2d(
        shapes=(((2, 5, 6, 3), (3, 2, 3, 2)), ((1, 4, 5, 1), (2, 3, 1, 1))),
        strides_dilations=[(1, 1), (2, 1), (1, 2)],
    )
)
TRANSPOSE_GRID = list(grid_2d(shapes=(MAIN_2D, ((1, 6, 5, 1), (3, 2, 1, 2)))))

# ---------------------------------------------------------------------------------------------
# The reference, checked


@pytest.mark.parametrize(
    "size, k, stride, dilation, pads, out",
    [
        (5, 3, 1, 1, (1, 1), 5),
        (5, 3, 2, 1, (1, 1), 3),
        (6, 3, 2, 1, (0, 1), 3),  # odd total: the extra row at the bottom
        (4, 2, 1, 1, (0, 1), 4),
        (4, 1, 2, 1, (0, 0), 2),
        (5, 3, 1, 2, (2, 2), 5),  # effective kernel 5
        (6, 3, 2, 2, (1, 2), 3),
        (7, 4, 3, 1, (1, 2), 3),
        (2, 5, 1, 1, (2, 2), 2),  # a kernel larger than the input
        (3, 1, 3, 1, (0, 0), 1),
    ],
)
def test_same_padding_rule_on_hand_worked_sizes(size, k, stride, dilation, pads, out):
    assert same_pads(size, k, stride, dilation) == pads
    assert output_size(size, k, stride, dilation, pads) == out == -(-size // stride)


def correlate_ref(x, w, pads):
    """Stride 1, dilation 1: scipy.signal.correlate of the zero-padded input, summed over input
    channels."""
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    outs = [
        [
            sum(
                scipy.signal.correlate(xp[(n, ..., c)], w[(..., c, o)], mode="valid")
                for c in range(x.shape[-1])
            )
            for o in range(w.shape[-1])
        ]
        for n in range(x.shape[0])
    ]
    return np.moveaxis(np.array(outs), 1, -1)


def einsum_ref(x, w, strides, dilations, pads):
    """Any strides and dilations: an einsum over np.lib.stride_tricks.sliding_window_view of the
    zero-padded input, the windows' starts strided and their elements dilated."""
    nd = x.ndim - 2
    kernel = w.shape[:nd]
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    win = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=tuple(range(1, nd + 1)))
    # win: (N, *starts, C, *extent)
    index = (slice(None), *(slice(None, None, s) for s in strides), slice(None))
    win = win[index + tuple(slice(None, None, d) for d in dilations)]
    sp, kt = "ijk"[:nd], "abc"[:nd]
    return np.einsum(f"n{sp}z{kt},{kt}zo->n{sp}o", win, w)


REF_CASES_2D = [
    Conv(MAIN_2D[0], MAIN_2D[1], s, padding, d)
    for s, d, padding in itertools.product((1, 2, 3), (1, 2), PADDINGS)
] + [
    Conv((1, 7, 6, 2), (2, 3, 2, 3), (2, 1), "SAME", (1, 2)),
    Conv((1, 7, 6, 2), (2, 3, 2, 3), (1, 3), "EXPLICIT", (2, 1), explicit=((3, 0), (0, 4))),
    Conv((2, 3, 3, 1), (3, 3, 1, 1), 1, "SAME", 1),
    Conv((1, 2, 2, 1), (3, 3, 1, 2), 2, "SAME", 2),  # the kernel is wider than the image
]
REF_CASES_1D = [
    Conv(MAIN_1D[0], MAIN_1D[1], s, padding, d, explicit=((2, 1),))
    for s, d, padding in itertools.product((1, 2), (1, 2), PADDINGS)
]


@pytest.mark.parametrize(
    "conv",
    [c for c in REF_CASES_2D + REF_CASES_1D if c.s == (1,) * c.nd and c.d == (1,) * c.nd],
    ids=str,
)
def test_reference_matches_scipy_correlate(conv):
    x, w, _ = conv.arrays()
    np.testing.assert_allclose(
        conv.ref(x, w), correlate_ref(x, w, conv.pads), rtol=1e-13, atol=1e-13
    )


@pytest.mark.parametrize("conv", REF_CASES_2D + REF_CASES_1D, ids=str)
def test_reference_matches_einsum_over_sliding_windows(conv):
    x, w, _ = conv.arrays()
    want = einsum_ref(x, w, conv.s, conv.d, conv.pads)
    assert want.shape == conv.y_shape
    np.testing.assert_allclose(conv.ref(x, w), want, rtol=1e-13, atol=1e-13)


def dense_jacobian(f, a):
    """d f(a) / d a, one column per element of a (f is linear: columns are f of basis vectors)."""
    cols = []
    for j in range(a.size):
        e = np.zeros(a.size)
        e[j] = 1
        cols.append(f(e.reshape(a.shape)).reshape(-1))
    return np.stack(cols, 1)


@pytest.mark.parametrize(
    "conv",
    [
        Conv((2, 5, 4, 2), (3, 2, 2, 3), 2, "SAME", 1),
        Conv((1, 6, 5, 2), (2, 2, 2, 2), 2, "VALID", 2),  # the last row and column are unread
        Conv((1, 5, 5, 1), (3, 3, 1, 2), (1, 2), "EXPLICIT", (2, 1), explicit=((3, 0), (1, 2))),
        Conv((2, 7, 2), (3, 2, 2), 2, "SAME", 2),
    ],
    ids=str,
)
def test_reference_transposed_loops_are_the_vjps_of_the_forward_loop(conv):
    x, w, dy = conv.arrays()
    jac_x = dense_jacobian(lambda e: conv.ref(e, w), x)
    jac_w = dense_jacobian(lambda e: conv.ref(x, e), w)
    np.testing.assert_allclose(
        conv.ref_input_vjp(dy, w).reshape(-1), jac_x.T @ dy.reshape(-1), rtol=1e-13, atol=1e-13
    )
    np.testing.assert_allclose(
        conv.ref_filter_vjp(x, dy).reshape(-1), jac_w.T @ dy.reshape(-1), rtol=1e-13, atol=1e-13
    )


@pytest.mark.parametrize("conv", DEPTHWISE_GRID[::5], ids=str)
def test_depthwise_reference_is_a_block_diagonal_conv(conv):
    x, f, _ = conv.arrays()
    *kernel, channels, multiplier = f.shape
    full = np.zeros((*kernel, channels, channels * multiplier))
    for c in range(channels):
        full[..., c, c * multiplier : (c + 1) * multiplier] = f[..., c, :]
    np.testing.assert_allclose(conv.ref_depthwise(x, f), conv.ref(x, full), rtol=1e-13, atol=1e-13)


# Values TensorFlow 2.21 printed (small integers: exact in float32). Each entry: jitgrad's op,
# its two array arguments, its other arguments, the reference's value, TF's value.
X44 = np.arange(1.0, 17.0).reshape(1, 4, 4, 1)
W33 = np.arange(1.0, 10.0).reshape(3, 3, 1, 1)
DY22 = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
X51 = np.arange(1.0, 6.0).reshape(1, 5, 1)
K2, K3 = np.array([1.0, 10.0]).reshape(2, 1, 1), np.array([1.0, 10.0, 100.0]).reshape(3, 1, 1)
XD = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).reshape(1, 3, 2, 1)
KD = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 1, 1, 2)
TF_VALUES = {
    # SAME, stride 2 on a 4x4 image: one padding row and column, both at the end
    "conv2d SAME stride 2": (
        "conv2d",
        (X44, W33),
        (2, "SAME"),
        {},
        lambda: conv_ref(X44, W33, (2, 2), (1, 1), ((0, 1), (0, 1))),
        np.array([[348.0, 252.0], [274.0, 175.0]]).reshape(1, 2, 2, 1),
    ),
    "conv2d_transpose SAME stride 2": (
        "conv2d_transpose",
        (DY22, W33),
        ([1, 4, 4, 1], 2, "SAME"),
        {},
        lambda: conv_input_vjp_ref(DY22, W33, (1, 4, 4, 1), (2, 2), (1, 1), ((0, 1), (0, 1))),
        np.array(
            [[1, 2, 5, 4], [4, 5, 14, 10], [10, 14, 36, 24], [12, 15, 34, 20]], np.float64
        ).reshape(1, 4, 4, 1),
    ),
    "conv1d SAME kernel 2": (
        "conv1d",
        (X51, K2),
        (1, "SAME"),
        {},
        lambda: conv_ref(X51, K2, (1,), (1,), ((0, 1),)),
        np.array([21.0, 32.0, 43.0, 54.0, 5.0]).reshape(1, 5, 1),
    ),
    "conv1d SAME dilation 2": (
        "conv1d",
        (X51, K3),
        (1, "SAME"),
        {"dilations": 2},
        lambda: conv_ref(X51, K3, (1,), (2,), ((2, 2),)),
        np.array([310.0, 420.0, 531.0, 42.0, 53.0]).reshape(1, 5, 1),
    ),
    # tf.nn.depthwise_conv2d's docstring examples
    "depthwise VALID": (
        "depthwise_conv2d",
        (XD, KD),
        ([1, 1, 1, 1], "VALID"),
        {},
        lambda: depthwise_ref(XD, KD, (1, 1), (1, 1), ((0, 0), (0, 0))),
        np.array([[[[10.0, 14.0], [14.0, 20.0]], [[18.0, 26.0], [22.0, 32.0]]]]),
    ),
    "depthwise explicit": (
        "depthwise_conv2d",
        (XD, KD),
        ([1, 1, 1, 1], [[0, 0], [1, 0], [1, 0], [0, 0]]),
        {},
        lambda: depthwise_ref(XD, KD, (1, 1), (1, 1), ((1, 0), (1, 0))),
        np.array(
            [
                [
                    [[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]],
                    [[0.0, 0.0], [10.0, 14.0], [14.0, 20.0]],
                    [[0.0, 0.0], [18.0, 26.0], [22.0, 32.0]],
                ]
            ]
        ),
    ),
}


@pytest.mark.parametrize("name", list(TF_VALUES))
def test_reference_matches_values_printed_by_tensorflow(name):
    *_, ref, want = TF_VALUES[name]
    np.testing.assert_array_equal(ref(), want)


@pytest.mark.slow
def test_reference_matches_tensorflow():
    """The reference against TensorFlow itself (when installed): values of every op and the
    filter gradient, over the grids below (TF's CPU kernels take channels-last only)."""
    tf = pytest.importorskip("tensorflow")

    def close(want, got, conv):
        np.testing.assert_allclose(want, got, rtol=1e-12, atol=1e-12, err_msg=str(conv))

    checked = 0
    for conv in REF_CASES_2D + [c for c in CONV2D_GRID if not c.channels_first]:
        x, w, dy = conv.arrays()
        xt, wt = tf.Variable(x), tf.Variable(w)
        strides, dilations = conv.full(conv.s, 1), conv.full(conv.d, 1)
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(xt, wt, strides, conv.tf_padding, dilations=dilations)
        close(conv.ref(x, w), y.numpy(), conv)
        try:
            dx, dw = tape.gradient(y, [xt, wt], output_gradients=tf.constant(dy))
            dx_transpose = tf.nn.conv2d_transpose(
                dy, w, list(x.shape), strides, conv.tf_padding, dilations=dilations
            )
        except tf.errors.InvalidArgumentError:  # no dilated backprop on TF's CPU
            assert conv.d != (1, 1)
            continue
        close(conv.ref_input_vjp(dy, w), dx.numpy(), conv)
        close(conv.ref_input_vjp(dy, w), dx_transpose.numpy(), conv)
        close(conv.ref_filter_vjp(x, dy), dw.numpy(), conv)
        checked += 1
    assert checked >= 20
    for conv in [
        c for c in CONV1D_GRID + REF_CASES_1D if not c.channels_first and c.padding != "EXPLICIT"
    ]:
        x, w, _ = conv.arrays()
        y = tf.nn.conv1d(x, w, conv.s[0], conv.padding, dilations=conv.d[0])
        close(conv.ref(x, w), y.numpy(), conv)
    for conv in [c for c in DEPTHWISE_GRID if not c.channels_first]:
        x, f, _ = conv.arrays(depthwise=True)
        strides = conv.full(conv.s, 1)
        y = tf.nn.depthwise_conv2d(x, f, strides, conv.tf_padding, dilations=list(conv.d))
        close(conv.ref_depthwise(x, f), y.numpy(), conv)


# ---------------------------------------------------------------------------------------------
# Values, eager


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("conv", CONV2D_GRID, ids=str)
def test_conv2d_value(conv, dtype):
    x, w, _ = conv.arrays(dtype)
    assert_close(conv.conv2d(x, w), conv.ref(x, w), dtype, str(conv))


@needs_conv
@pytest.mark.parametrize("channels_first", [False, True], ids=["NHWC", "NCHW"])
def test_conv2d_argument_forms(channels_first):
    """strides and dilations as an int, a pair, TF's full-rank list (in the data format) or None
    (dilations); a different stride and dilation per spatial dimension."""
    conv = Conv((2, 7, 6, 2), (2, 3, 2, 3), (2, 1), "SAME", (1, 2), channels_first)
    x, w, _ = conv.arrays()
    want = conv.ref(x, w)
    fmt = conv.data_format
    for s, d in [((2, 1), (1, 2)), ([2, 1], [1, 2]), (conv.full((2, 1), 1), conv.full((1, 2), 1))]:
        got = jg.nn.conv2d(x, w, s, "SAME", data_format=fmt, dilations=d)
        assert_close(got, want, np.float64, f"strides={s} dilations={d}")
    plain = dataclasses.replace(conv, strides=2, dilations=1)
    want = plain.ref(x, w)
    for s in (2, [2, 2], plain.full((2, 2), 1)):
        for d in (None, 1, [1, 1], plain.full((1, 1), 1)):
            got = jg.nn.conv2d(x, w, s, "SAME", data_format=fmt, dilations=d)
            assert_close(got, want, np.float64, f"strides={s} dilations={d}")
    if not channels_first:  # the defaults: NHWC, no dilation
        assert_close(jg.nn.conv2d(x, w, 2, "SAME"), want, np.float64, "defaults")
        assert_close(jg.nn.conv2d(x, w, strides=2, padding="SAME"), want, np.float64, "keywords")


@needs_conv
@pytest.mark.parametrize("conv", [c for c in CONV2D_GRID if c.padding == "SAME"][::3], ids=str)
def test_conv2d_accepts_tensors_and_keeps_float32(conv):
    x, w, _ = conv.arrays(np.float32)
    got = conv.conv2d(jg.constant(x), jg.Variable(w))
    assert isinstance(got, jg.Tensor)
    assert_close(got, conv.ref(x, w), np.float32, str(conv))


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("conv", CONV1D_GRID, ids=str)
def test_conv1d_value(conv, dtype):
    x, w, _ = conv.arrays(dtype)
    assert_close(conv.conv1d(x, w), conv.ref(x, w), dtype, str(conv))


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("conv", DEPTHWISE_GRID, ids=str)
def test_depthwise_conv2d_value(conv, dtype):
    """Output channel c * multiplier + m is input channel c through filter [..., c, m]."""
    x, f, _ = conv.arrays(dtype, depthwise=True)
    assert_close(conv.depthwise_conv2d(x, f), conv.ref_depthwise(x, f), dtype, str(conv))


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("conv", TRANSPOSE_GRID, ids=str)
def test_conv2d_transpose_is_the_input_vjp_of_conv2d(conv, dtype):
    """conv2d_transpose(dy, w, x.shape) equals the reference's transposed loop and the tape's
    VJP of conv2d w.r.t. its input at the cotangent dy."""
    x, w, dy = conv.arrays(dtype)
    want = conv.ref_input_vjp(dy, w)
    assert_close(conv.conv2d_transpose(dy, w), want, dtype, f"conv2d_transpose {conv}")
    if dtype == np.float64:
        xt = jg.constant(x)
        with jg.GradientTape() as tape:
            tape.watch(xt)
            y = conv.conv2d(xt, w)
        got = tape.gradient(y, xt, output_gradients=jg.constant(dy))
        assert_close(got, want, dtype, f"VJP of conv2d {conv}")


@needs_conv
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv2d_transpose_output_shape_picks_the_input_size(padding):
    """With stride 2, inputs of height 5 and 6 give a conv2d output of the same height:
    output_shape says which one conv2d_transpose returns."""
    for height in (5, 6):
        conv = Conv((1, height, 4, 2), (3, 2, 2, 3), 2, padding)
        x, w, dy = conv.arrays()
        assert dy.shape[1] == (2 if padding == "VALID" else 3)
        got = conv.conv2d_transpose(dy, w)
        assert_close(got, conv.ref_input_vjp(dy, w), np.float64, f"height {height}")


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(TF_VALUES))
def test_values_printed_by_tensorflow(name, dtype):
    op, arrays, args, kwargs, _, want = TF_VALUES[name]
    got = getattr(jg.nn, op)(*(a.astype(dtype) for a in arrays), *args, **kwargs)
    assert_close(got, want, dtype, name)


# ---------------------------------------------------------------------------------------------
# Gradients, eager


@pytest.fixture(autouse=True)
def _eager_tape(monkeypatch):
    """The tape compiles the backward of a structure it records twice; here its backward stays
    eager (the op-by-op VJP rules are under test), except in the test of the compiled backward."""
    monkeypatch.setattr(jg.config, "compile_tape_backward", False)


def tape_vjps(conv, x, w, dy, op="conv2d"):
    """The tape's gradients of <dy, op(x, w)> w.r.t. x (watched) and w (a Variable)."""
    xt, wv = jg.constant(x), jg.Variable(w)
    with jg.GradientTape() as tape:
        tape.watch(xt)
        y = conv.call(op)(xt, wv)
    return tape.gradient(y, [xt, wv], output_gradients=jg.constant(dy))


@needs_conv
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("conv", CONV2D_GRID, ids=str)
def test_conv2d_tape_gradients_are_the_reference_transposed_loops(conv, dtype):
    x, w, dy = conv.arrays(dtype)
    dx, dw = tape_vjps(conv, x, w, dy)
    assert_close(dx, conv.ref_input_vjp(dy, w), dtype, f"d/dinput {conv}")
    assert_close(dw, conv.ref_filter_vjp(x, dy), dtype, f"d/dfilters {conv}")


@needs_conv
@pytest.mark.parametrize("conv", CONV2D_GRID, ids=str)
def test_conv2d_check_grads_second_order(conv):
    """Finite differences against the tape w.r.t. input and filters, first and second order
    (the second differentiates the input and filter VJPs: double backward through conv)."""
    check_grads(conv.conv2d, conv.arrays()[:2], order=2)


@needs_conv
@pytest.mark.parametrize("conv", CONV2D_GRID[::4], ids=str)
def test_conv2d_check_grads_through_graph_autodiff(conv):
    check_grads(conv.conv2d, conv.arrays()[:2], order=2, grad_fn=graph_vjp_fn)


def tanh_of_conv(conv):
    def f(x, w):
        return jg.tanh(conv.conv2d(x, w) * 0.5)

    return f


@needs_conv
@pytest.mark.parametrize("conv", CONV2D_GRID[::5], ids=str)
@pytest.mark.parametrize("grad_fn", [None, graph_vjp_fn], ids=["tape", "graph"])
def test_check_grads_of_tanh_of_conv2d(conv, grad_fn):
    """Nonlinear in x and w together: the second derivative has every term."""
    check_grads(tanh_of_conv(conv), conv.arrays()[:2], order=2, grad_fn=grad_fn)


@needs_conv
@pytest.mark.parametrize("conv", CONV1D_GRID, ids=str)
def test_conv1d_check_grads_second_order(conv):
    check_grads(conv.conv1d, conv.arrays()[:2], order=2)


@needs_conv
@pytest.mark.parametrize("conv", DEPTHWISE_GRID, ids=str)
def test_depthwise_conv2d_check_grads_second_order(conv):
    check_grads(conv.depthwise_conv2d, conv.arrays(depthwise=True)[:2], order=2)


@needs_conv
@pytest.mark.parametrize("conv", TRANSPOSE_GRID[::2], ids=str)
def test_conv2d_transpose_check_grads_second_order(conv):
    _, w, dy = conv.arrays()
    check_grads(conv.conv2d_transpose, [dy, w], order=2)


@needs_conv
def test_tape_compiled_backward_of_conv2d(monkeypatch):
    """A tape that records the same structure again runs a compiled backward for it."""
    monkeypatch.setattr(jg.config, "compile_tape_backward", True)
    conv = Conv(MAIN_2D[0], MAIN_2D[1], 2, "SAME", 1)
    x, w, dy = conv.arrays()
    for _ in range(3):  # eager, then compiled (config.tape_compile_after), then reused
        dx, dw = tape_vjps(conv, x, w, dy)
        assert_close(dx, conv.ref_input_vjp(dy, w), np.float64, "d/dinput")
        assert_close(dw, conv.ref_filter_vjp(x, dy), np.float64, "d/dfilters")


# ---------------------------------------------------------------------------------------------
# Compiled = eager. A representative few run by default; the rest of the grid is `slow`.

COMPILED_2D = [
    Conv(MAIN_2D[0], MAIN_2D[1], 2, "SAME", 1),
    Conv(MAIN_2D[0], MAIN_2D[1], 1, "EXPLICIT", 2, channels_first=True),
    Conv(ONES_2D[0], ONES_2D[1], 2, "VALID", 2),
]


def compiled_params(grid, representative):
    return [
        pytest.param(c, id=str(c), marks=[] if c in representative else [pytest.mark.slow])
        for c in dict.fromkeys([*representative, *grid])
    ]


def assert_compiled_close(got, want, what):
    """Compiled and eager may sum in another order (BLAS): equal to float64 rounding."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=what)


def weighted_loss(op, conv, dy):
    """<dy, tanh(op(x, w))>: nonlinear, so that second derivatives have every term."""

    def loss(x, w):
        return jg.reduce_sum(jg.tanh(conv.call(op)(x, w)) * dy)

    loss.__name__ = f"loss_{op}"
    return loss


@needs_conv
@pytest.mark.parametrize("conv", compiled_params(CONV2D_GRID, COMPILED_2D[:2]))
def test_compiled_conv2d_value_and_gradients_equal_eager(conv):
    x, w, dy = conv.arrays()
    assert_compiled_close(jg.jit(conv.conv2d)(x, w), conv.conv2d(x, w), "jit(conv2d)")
    loss = weighted_loss("conv2d", conv, dy)
    want = jg.grad(loss, argnums=(0, 1))(x, w)
    for g, e, name in zip(jg.jit(jg.grad(loss, argnums=(0, 1)))(x, w), want, "xw"):
        assert_compiled_close(g, e, f"jit(grad) d/d{name}")
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert_compiled_close(value, loss(x, w), "jit_grad value")
    for g, e, name in zip(grads, want, "xw"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")


# Few output channels (and one input channel, or five): the kernel convolves by register
# tiles (conv_tiles.conv2_tiles) instead of im2col and GEMM; with 40, by GEMM.
FEW_OUTPUT_CHANNELS = list(
    grid_2d(shapes=(((2, 5, 36, 1), (3, 2, 1, 3)), ((2, 6, 11, 5), (3, 3, 5, 25))))
)
FEW_OUTPUT_CHANNELS = [c for c in FEW_OUTPUT_CHANNELS if not c.channels_first]


@needs_conv
@pytest.mark.parametrize(
    "conv",
    compiled_params(FEW_OUTPUT_CHANNELS, [FEW_OUTPUT_CHANNELS[0], FEW_OUTPUT_CHANNELS[-1]]),
)
def test_few_output_channels_conv_by_tiles_equals_eager(conv):
    x, w, dy = conv.arrays()
    by_tiles = np.prod(np.shape(dy)[1:-1]) <= np.prod(x.shape[1:-1])  # else by columns
    assert ("conv2_tiles(" in jg.jit(conv.conv2d).lower(x, w).source) == by_tiles
    assert_compiled_close(jg.jit(conv.conv2d)(x, w), conv.conv2d(x, w), "jit(conv2d)")
    loss = weighted_loss("conv2d", conv, dy)
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert_compiled_close(value, loss(x, w), "jit_grad value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1))(x, w), "xw"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")


@pytest.mark.parametrize("c_in, helper", [(8, "conv2_scatter"), (40, "conv2_col2im")])
def test_input_gradient_by_input_positions_equals_eager(c_in, helper):
    """The input gradient (a conv with more output positions than input ones) by register
    tiles with up to 32 of its output channels (the forward's input channels), else by a
    product into columns and a scatter."""
    rng = np.random.default_rng(c_in)
    x = rng.standard_normal((2, 11, 10, c_in))
    w = rng.standard_normal((3, 3, c_in, 4))

    def loss(x, w):
        return jg.reduce_sum(jg.nn.conv2d(x, w, 2, "SAME") ** 2)

    assert f"{helper}(" in jg.jit_grad(loss, wrt=(0, 1)).lower(x, w).source
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert_compiled_close(value, loss(x, w), "jit_grad value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1))(x, w), "xw"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")


@pytest.mark.parametrize(
    "strides, padding", [(1, "VALID"), (2, "SAME"), (3, [[0, 0], [2, 1], [0, 0]])]
)
def test_conv1d_by_tiles_of_height_one_equals_eager(strides, padding):
    """A 1-D conv with few output channels runs as a 2-D one of height 1: its value by
    conv2_tiles (with the bias after it as the epilogue; the relu's mask is read by the
    gradient, so the relu stays in the loop), its input gradient by conv2_scatter, its filter
    gradient by conv2_filters."""
    rng = np.random.default_rng(strides)
    x, w = rng.standard_normal((3, 17, 5)), rng.standard_normal((4, 5, 6))
    b = rng.standard_normal(6)

    def loss(x, w, b):
        return jg.reduce_sum(jg.nn.relu(jg.nn.conv1d(x, w, strides, padding) + b) ** 2)

    source = jg.jit_grad(loss, wrt=(0, 1, 2)).lower(x, w, b).source
    assert "conv2_tiles(" in source and "conv2_filters(" in source
    assert "conv2_scatter(" in source and "# and its epilogue: + bias (" in source
    value, grads = jg.jit_grad(loss, wrt=(0, 1, 2))(x, w, b)
    assert_compiled_close(value, loss(x, w, b), "jit_grad value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1, 2))(x, w, b), "xwb"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")


def test_many_output_channels_conv_by_gemm():
    x = np.ones((1, 6, 6, 2), np.float32)
    w = np.ones((3, 3, 2, 40), np.float32)
    source = jg.jit(lambda x, w: jg.nn.conv2d(x, w, 1, "VALID")).lower(x, w).source
    assert "conv2_gemm(" in source and "conv2_tiles(" not in source


@needs_conv
@pytest.mark.parametrize(
    "conv, helper",
    [
        # Its filter gradient is conv_filters, read from x and g in NHWC (conv2_filters).
        (Conv((16, 12, 12, 1), (5, 5, 1, 3)), "conv2_filters"),
        # Itself shaped like a filter gradient: 5 x 5 outputs, windows of 2,592.
        (Conv((2, 40, 40, 2), (36, 36, 2, 2)), "conv2_windows"),
    ],
    ids=str,
)
def test_filter_gradients_and_convs_shaped_like_them_equal_eager(conv, helper):
    """A conv with few output positions and large windows runs by dot products over window
    rows (conv_filters.conv2_windows), not im2col; a filter gradient by conv2_filters."""
    from jitgrad.backend.numba.precompile import helper as helper_named
    from jitgrad.backend.numba.precompile import helper_signatures

    x, w, dy = conv.arrays()
    loss = weighted_loss("conv2d", conv, dy)
    assert f"{helper}(" in jg.jit_grad(loss, wrt=(0, 1)).lower(x, w).source
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert_compiled_close(value, loss(x, w), "jit_grad value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1))(x, w), "xw"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")
    function = helper_named(helper)
    precompiled = {tuple(sig) for h, sig in helper_signatures() if h is function}
    assert set(map(tuple, function.signatures)) <= precompiled


@needs_conv
@pytest.mark.parametrize("conv", compiled_params(CONV2D_GRID[::6], COMPILED_2D[:1]))
def test_compiled_second_order_equals_eager(conv):
    """jit(grad(<v, grad(loss)>)): double backward through conv, compiled."""
    x, w, dy = conv.arrays()
    loss = weighted_loss("conv2d", conv, dy)
    vx, vw = np.random.default_rng(1).uniform(-1, 1, x.shape), conv.arrays(seed=2)[1]

    def directional(x, w):
        gx, gw = jg.grad(loss, argnums=(0, 1))(x, w)
        return jg.reduce_sum(gx * vx) + jg.reduce_sum(gw * vw)

    want = jg.grad(directional, argnums=(0, 1))(x, w)
    got = jg.jit(jg.grad(directional, argnums=(0, 1)))(x, w)
    for g, e, name in zip(got, want, "xw"):
        assert_compiled_close(g, e, f"d/d{name}")


@needs_conv
def test_compiled_float32_gradients():
    conv = COMPILED_2D[0]
    x, w, dy = conv.arrays(np.float32)
    loss = weighted_loss("conv2d", conv, dy)
    want = jg.grad(loss, argnums=(0, 1))(*conv.arrays()[:2])  # float64, eager
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert np.asarray(value).dtype == np.float32
    for g, e in zip(grads, want):
        assert np.asarray(g).dtype == np.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-5)


OTHER_OPS = {
    "conv1d": (CONV1D_GRID, CONV1D_GRID[2]),
    "depthwise_conv2d": (DEPTHWISE_GRID, DEPTHWISE_GRID[8]),
    "conv2d_transpose": (TRANSPOSE_GRID, TRANSPOSE_GRID[6]),
}


def other_op_params():
    for op, (grid, representative) in OTHER_OPS.items():
        for c in dict.fromkeys([representative, *grid[::3]]):
            marks = [] if c == representative else [pytest.mark.slow]
            yield pytest.param(op, c, id=f"{op}-{c}", marks=marks)


@needs_conv
@pytest.mark.parametrize("op, conv", list(other_op_params()))
def test_compiled_other_ops_equal_eager(op, conv):
    x, w, dy = conv.arrays(depthwise=op == "depthwise_conv2d")
    if op == "conv2d_transpose":  # its input is a conv2d output, its output a conv2d input
        x, dy = dy, x
    fn = conv.call(op)
    assert_compiled_close(jg.jit(fn)(x, w), fn(x, w), f"jit({op})")
    loss = weighted_loss(op, conv, dy)
    value, grads = jg.jit_grad(loss, wrt=(0, 1))(x, w)
    assert_compiled_close(value, loss(x, w), "jit_grad value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1))(x, w), "xw"):
        assert_compiled_close(g, e, f"jit_grad d/d{name}")


@needs_conv
def test_compiled_conv_bias_relu_layer_equals_eager():
    """conv2d + bias_add + relu, then a mean: the epilogue the compiler fuses."""
    conv = Conv(MAIN_2D[0], MAIN_2D[1], 1, "SAME", 1)
    x, w, _ = conv.arrays()
    b = np.array([0.1, -0.2, 0.3, 0.0])

    def loss(x, w, b):
        y = jg.nn.relu(jg.nn.bias_add(jg.nn.conv2d(x, w, 1, "SAME"), b))
        return jg.reduce_mean(y * y)

    value, grads = jg.jit_grad(loss, wrt=(0, 1, 2))(x, w, b)
    assert_compiled_close(value, loss(x, w, b), "value")
    for g, e, name in zip(grads, jg.grad(loss, argnums=(0, 1, 2))(x, w, b), "xwb"):
        assert_compiled_close(g, e, f"d/d{name}")
    check_grads(loss, [x, w, b], order=1)


@needs_conv
@pytest.mark.slow  # four compiles (~5 s); the polymorphic kernel is covered by tests/test_jit.py
def test_compiled_gradient_on_new_shapes():
    """The second shape of a function is served by a shape-polymorphic kernel: conv sizes (and
    SAME padding, which depends on them) must come from the arrays, not the first trace."""
    conv = COMPILED_2D[0]
    loss = lambda x, w: jg.reduce_sum(jg.tanh(jg.nn.conv2d(x, w, 2, "SAME")))
    compiled = jg.jit(jg.grad(loss, argnums=(0, 1)))
    rng = np.random.default_rng(3)
    w = conv.arrays()[1]
    for shape in [(2, 5, 6, 3), (1, 7, 4, 3), (3, 6, 6, 3), (1, 1, 2, 3)]:
        x = rng.uniform(-1, 1, shape)
        for g, e, name in zip(compiled(x, w), jg.grad(loss, argnums=(0, 1))(x, w), "xw"):
            assert_compiled_close(g, e, f"{shape} d/d{name}")


# ---------------------------------------------------------------------------------------------
# Hypothesis: small conv2d shapes, eager values and gradients


@st.composite
def small_convs(draw):
    nd_kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    strides = tuple(draw(st.integers(1, 3)) for _ in range(2))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = draw(st.sampled_from(PADDINGS))
    extent = [(k - 1) * d + 1 for k, d in zip(nd_kernel, dilations)]
    explicit = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    # VALID (and explicit) need the padded input at least as large as the dilated kernel
    low = [e if padding == "VALID" else max(1, e - p[0] - p[1]) for e, p in zip(extent, explicit)]
    if padding == "SAME":
        low = [1, 1]
    sizes = [draw(st.integers(lo, lo + 4)) for lo in low]
    n, c_in, c_out = (draw(st.integers(1, 3)) for _ in range(3))
    return Conv(
        (n, *sizes, c_in),
        (*nd_kernel, c_in, c_out),
        strides,
        padding,
        dilations,
        draw(st.booleans()),
        explicit,
    )


@needs_conv
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=small_convs(), seed=st.integers(0, 2**16))
def test_conv2d_small_shapes(conv, seed):
    x, w, dy = conv.arrays(seed=seed)
    assert_close(conv.conv2d(x, w), conv.ref(x, w), np.float64, str(conv))
    dx, dw = tape_vjps(conv, x, w, dy)
    assert_close(dx, conv.ref_input_vjp(dy, w), np.float64, f"d/dinput {conv}")
    assert_close(dw, conv.ref_filter_vjp(x, dy), np.float64, f"d/dfilters {conv}")
    check_grads(conv.conv2d, [x, w], order=2, seed=seed)


def test_small_convs_strategy_draws_valid_configurations():
    """The strategy above only draws convolutions with a non-empty output."""

    @settings(max_examples=200, deadline=None)
    @given(conv=small_convs())
    def check(conv):
        assert all(s > 0 for s in conv.y_shape[1:-1]), conv

    check()


# ---------------------------------------------------------------------------------------------
# Errors


def shape_pattern(shape):
    """A shape as the message may print it: (2, 5, 6, 3) or [2, 5, 6, 3]."""
    return r"[\[(]" + re.escape(", ".join(map(str, shape))) + r"[\])]"


def raises_naming(op, *shapes_or_words):
    pattern = "".join(
        f"(?=.*{shape_pattern(s) if isinstance(s, tuple) else re.escape(s)})"
        for s in shapes_or_words
    )
    return pytest.raises(ValueError, match=f"(?s)(?=.*{op}){pattern}")


X4, W4 = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 1))


CHANNEL_MISMATCH = {
    "conv2d": lambda x, w: jg.nn.conv2d(x, w, 1, "SAME"),
    "conv2d NCHW": lambda x, w: jg.nn.conv2d(x, w, 1, "SAME", data_format="NCHW"),
    "conv1d": lambda x, w: jg.nn.conv1d(x, w, 1, "VALID"),
    "depthwise_conv2d": lambda x, w: jg.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME"),
    "conv2d_transpose": lambda x, w: jg.nn.conv2d_transpose(x, w, [2, 5, 6, 3], 1, "SAME"),
}
MISMATCHED_SHAPES = {
    "conv2d": ((2, 5, 6, 3), (3, 3, 4, 2)),
    "conv2d NCHW": ((2, 3, 5, 6), (3, 3, 4, 2)),
    "conv1d": ((2, 5, 3), (3, 4, 2)),
    "depthwise_conv2d": ((2, 5, 6, 3), (3, 3, 2, 2)),
    # the input's 4 channels are not the filters' in_channels (2; their out_channels is 3)
    "conv2d_transpose": ((2, 5, 6, 4), (3, 3, 3, 2)),
}


@needs_conv
@pytest.mark.parametrize("case", list(CHANNEL_MISMATCH))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_channel_mismatch_names_the_op_and_the_shapes(case, compiled):
    x_shape, w_shape = MISMATCHED_SHAPES[case]
    fn = CHANNEL_MISMATCH[case]
    with raises_naming(case.split()[0], x_shape, w_shape):
        (jg.jit(fn) if compiled else fn)(np.ones(x_shape), np.ones(w_shape))


BAD_PADDING = {
    "conv2d": lambda p: jg.nn.conv2d(X4, W4, 1, p),
    "conv1d": lambda p: jg.nn.conv1d(X4[:, 0], W4[0], 1, p),
    "depthwise_conv2d": lambda p: jg.nn.depthwise_conv2d(X4, W4, [1, 1, 1, 1], p),
    "conv2d_transpose": lambda p: jg.nn.conv2d_transpose(X4[..., :1], W4, [1, 4, 4, 2], 1, p),
}


@needs_conv
@pytest.mark.parametrize("padding", ["FULL", "same_ish"])
@pytest.mark.parametrize("op", list(BAD_PADDING))
def test_bad_padding_string_names_the_op_and_the_value(op, padding):
    with raises_naming(op, padding):
        BAD_PADDING[op](padding)


def test_a_grouped_filter_gradient_is_one_op_whatever_the_groups():
    """A depthwise conv of 48 channels: its filter gradient is one conv_filters of 48 groups
    (one helper call in the kernel), not one per group and their concatenation: unrolled,
    a CNN with a 40-channel depthwise conv took 131 s to compile."""
    rng = np.random.default_rng(0)
    x, f = rng.standard_normal((2, 6, 7, 48)), rng.standard_normal((3, 3, 48, 2))

    def loss(f, x):
        return jg.reduce_sum(jg.nn.depthwise_conv2d(x, f, (1, 1, 1, 1), "SAME") ** 2)

    lowered = jg.jit_grad(loss, wrt=0).lower(f, x)
    assert lowered.source.count("conv2_filters(") == 1
    assert "concat" not in lowered.graph
    value, grad = jg.jit_grad(loss, wrt=0)(f, x)
    assert_compiled_close(value, loss(f, x), "jit_grad value")
    assert_compiled_close(grad, jg.grad(loss)(f, x), "jit_grad d/df")


@pytest.mark.parametrize("pool", [jg.nn.max_pool2d, jg.nn.avg_pool2d])
@pytest.mark.parametrize(
    "shape, window, want", [((1, 2, 2, 1), 3, (1, 0, 0, 1)), ((1, 0, 3, 2), (1, 3), (1, 0, 1, 2))]
)
def test_a_window_that_fits_nowhere_pools_to_an_empty_result(pool, shape, window, want):
    """A 3x3 VALID window on a 2x2 input, or an input with an empty spatial axis: an empty
    result, eagerly as compiled (eager max_pool raised numpy's "window shape cannot be larger
    than input array shape"), and zero gradients."""
    x = np.ones(shape, np.float32)

    def loss(x):
        return jg.reduce_sum(pool(x, window, 1, "VALID"))

    assert pool(x, window, 1, "VALID").shape == want
    assert jg.jit(lambda x: pool(x, window, 1, "VALID"))(x).shape == want
    assert not np.asarray(jg.grad(loss)(x)).any()
    assert not np.asarray(jg.jit_grad(loss)(x)[1]).any()
