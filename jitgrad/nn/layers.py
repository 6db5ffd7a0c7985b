"""Model building blocks, usable functionally (JAX style) or holding Variables (Keras style).

Functional: `params = model.init(seed, input_shape)` returns an ordinary nested dict of numpy
arrays, and `model.apply(params, x, training=False, key=None)` is a pure function of it written
with jitgrad ops only, so it runs eagerly, under the tape, and under `jit` / `jit_grad`:

>>> model = nn.Sequential([nn.Dense(32, activation="relu"), nn.Dense(10)])
>>> params = model.init(0, (None, 784))          # {'dense': {'kernel', 'bias'}, 'dense_1': ...}
>>> logits = model.apply(params, x)

TensorFlow style: `model.build(input_shape)`, or the first `model(x)`, stores
`init(model.seed, input_shape)` in Variables (`model.params`, same structure), which
`model.trainable_variables` lists in Keras order (layer by layer, kernel before bias):

>>> logits = model(x); [v.name for v in model.trainable_variables]
['sequential/dense/kernel:0', 'sequential/dense/bias:0', 'sequential/dense_1/kernel:0', ...]

Randomness is explicit. Dropout in training mode needs `key`: a Python int or a 0-d integer
array (traced under jit; feed a new one each step, the step counter will do). The mask is a
counter-based hash of (key, element index) computed with jitgrad integer ops, so eager and
compiled runs draw the same mask; `Sequential` gives each stochastic layer its own key with
`fold_in(key, layer_index)`.

`input_shape` is a whole input's shape; the batch dimension may be None (only feature
dimensions size the parameters).
"""

from __future__ import annotations

import math
import re

import numpy as np

from jitgrad import ops
from jitgrad.core.module import Module
from jitgrad.core.variable import Variable
from jitgrad.nn import initializers
from jitgrad.ops import conv as ops_conv
from jitgrad.ops import pool as ops_pool
from jitgrad.ops.base import as_value

# -- activations ---------------------------------------------------------------------------------

_ACTIVATIONS = {
    "elu": ops.elu,
    "gelu": ops.gelu,
    "leaky_relu": ops.leaky_relu,
    "log_softmax": ops.log_softmax,
    "relu": ops.relu,
    "relu6": ops.relu6,
    "selu": ops.selu,
    "sigmoid": ops.sigmoid,
    "silu": ops.silu,
    "softmax": ops.softmax,
    "softplus": ops.softplus,
    "softsign": ops.softsign,
    "swish": ops.swish,
    "tanh": ops.tanh,
}


def _identity(x):
    return x


def get_activation(activation):
    """An activation function from its name ("relu"), a callable, or None / "linear" (identity).

    >>> get_activation("relu") is jitgrad.nn.relu
    True
    """
    if activation is None or activation == "linear":
        return _identity
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation]


# -- keyed randomness ------------------------------------------------------------------------------
# A MiMC-style permutation of the integers modulo the Mersenne prime P = 2^31 - 1: rounds of
# x -> (x + k + c_r)^5 mod P. x^5 permutes the field because gcd(5, P - 1) = 1. Three rounds
# pass the mean, pair, lag and key-to-key tests that matter for dropout masks (two already do);
# each round is ~20 scalar ops, which compile time pays for. All arithmetic is exact int64
# (products < 2^62), so numpy and the compiled kernel agree bit for bit. Reduction mod P uses
# 2^31 = 1 (mod P): x = hi 2^31 + lo -> hi + lo, then one conditional subtraction; far cheaper
# than an integer division in the kernel.

_P = 2**31 - 1
_ROUND_CONSTANTS = (1013904223, 1664525, 22695477)


def _reduce_mod_p(x):
    """x mod P for 0 <= x < 2^62."""
    y = x % 2**31 + x // 2**31
    return ops.where(y >= _P, y - _P, y)


def _permute(x, k):
    for c in _ROUND_CONSTANTS:
        x = _reduce_mod_p(x + k + c)
        x2 = _reduce_mod_p(x * x)
        x = _reduce_mod_p(_reduce_mod_p(x2 * x2) * x)
    return x


def _as_key(key):
    """A key (int or integer array) as an int64 value in [0, P)."""
    key = as_value(key)
    if key.dtype.kind not in "iu":
        raise TypeError(f"a random key must be an int or an integer array, got {key.dtype}")
    if key.shape != ():
        raise ValueError(f"a random key must be 0-d, got shape {key.shape}")
    return ops.cast(key, np.int64) % _P


def fold_in(key, data: int):
    """A new key derived from `key` and the integer `data` (JAX's fold_in): independent streams
    for different `data`, e.g. one per layer or per step.

    >>> k1, k2 = fold_in(0, 1), fold_in(0, 2)   # 0-d int64 tensors

    An affine map mod P, key * 48271 + h(data), is enough: the keyed permutation that draws
    the bits does the mixing, and distinct (key, data) pairs collide only ~1e9 keys apart.
    """
    return _reduce_mod_p(_as_key(key) * 48271 + (int(data) * 1013904223 + 12345) % _P)


def _random_bits(key, shape: tuple[int, ...]):
    """Uniform integers in [0, P) of `shape`, a hash of (key, flat element index)."""
    if math.prod(shape) >= _P:
        raise ValueError(f"random bits for shape {shape}: at most {_P - 1} elements")
    # The flat index as a sum of one small constant per axis (i * stride broadcast along that
    # axis), so a compiled kernel computes it instead of reading a constant of `shape`.
    index = ops.convert_to_tensor(np.zeros((), np.int64))
    stride = 1
    for axis in reversed(range(len(shape))):
        along = np.arange(shape[axis], dtype=np.int64) * stride
        index = index + along.reshape((-1,) + (1,) * (len(shape) - 1 - axis))
        stride *= shape[axis]
    return _permute(index, _as_key(key))


def dropout(x, rate: float, key):
    """Zero each element with probability `rate`, scale the rest by 1 / (1 - rate).

    >>> y = dropout(x, 0.5, key=step)      # key: an int or a 0-d integer array

    The keep probability is exact to 1 / (2^31 - 1). Traceable: the mask is computed from `key`
    with jitgrad ops, and the gradient is the same mask times 1 / (1 - rate).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    x = as_value(x)
    if rate == 0.0:
        return x
    if key is None:
        raise ValueError(
            "dropout with training=True needs key= (an int or a 0-d integer "
            "array, a new one per step) so that the mask is reproducible and "
            "can be compiled"
        )
    keep = _random_bits(key, x.shape) >= round(rate * _P)
    return ops.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


# -- layers ----------------------------------------------------------------------------------------


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _ordered_leaves(tree) -> list:
    """Leaves in insertion order (Keras order), unlike pytree's sorted-key order."""
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _ordered_leaves(v)]
    return [tree]


def _to_variables(tree, prefix: str):
    if isinstance(tree, dict):
        return {k: _to_variables(v, f"{prefix}/{k}") for k, v in tree.items()}
    return Variable(tree, name=prefix)


class Layer(Module):
    """The base class: `init` makes parameters, `apply` is the pure forward pass.

    Subclasses override `init(seed, input_shape) -> dict` (default: no parameters),
    `apply(params, x, training=False, key=None)` and, when the shape changes,
    `output_shape(input_shape)`. `seed` only seeds `build` (TF style): `init` uses its
    argument.

    A Layer is a `jitgrad.Module` (as Keras layers are tf.Modules): `submodules` finds the
    layers of a Sequential, and `variables` / `trainable_variables` list the built Variables
    in Keras order (layer by layer, kernel before bias), then any others the Module walk finds.
    """

    stochastic = False  # whether `apply` draws from `key` (Sequential folds keys only for these)

    def __init__(self, name: str | None = None, seed=None, dtype=np.float32):
        # Keras' names need not be Python identifiers: Module's check is not applied.
        self._set_name(name or _snake_case(type(self).__name__))
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.params = None  # the Variables, once built

    def init(self, seed, input_shape) -> dict:
        return {}

    def apply(self, params, x, training: bool = False, key=None):
        raise NotImplementedError

    def output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def build(self, input_shape) -> None:
        """Create the Variables (`self.params`) from `init(self.seed, input_shape)`."""
        self.params = _to_variables(self.init(self.seed, input_shape), self.name)

    def __call__(self, x, training: bool = False, key=None):
        """The forward pass on the layer's Variables, building them on the first call."""
        if self.params is None:
            self.build(x.shape if hasattr(x, "shape") else np.shape(x))
        return self.apply(self.params, x, training=training, key=key)

    @property
    def variables(self) -> list:
        """The Variables, layer by layer in creation order (empty before `build`), then those
        of the Module walk not listed yet (sub-layers built on their own, user attributes).
        A list, as Keras gives (a Module's are a tuple)."""
        ordered = _ordered_leaves(self.params) if self.params is not None else []
        listed = {id(v) for v in ordered}
        return ordered + [v for v in super().variables if id(v) not in listed]

    @property
    def trainable_variables(self) -> list:
        return [v for v in self.variables if v.trainable]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Dense(Layer):
    """activation(x @ kernel + bias) on the last axis.

    >>> layer = Dense(3, activation="relu"); params = layer.init(0, (None, 4))
    >>> layer.apply(params, np.ones((2, 4), np.float32)).shape
    (2, 3)
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        name=None,
        dtype=np.float32,
    ):
        super().__init__(name, seed, dtype)
        self.units = int(units)
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def init(self, seed, input_shape) -> dict:
        rng = np.random.default_rng(seed)
        params = {
            "kernel": self.kernel_initializer((input_shape[-1], self.units), self.dtype, seed=rng)
        }
        if self.use_bias:
            params["bias"] = self.bias_initializer((self.units,), self.dtype, seed=rng)
        return params

    def apply(self, params, x, training=False, key=None):
        x = as_value(x)
        if x.ndim == 2:
            y = ops.matmul(x, params["kernel"])
        else:  # one matmul over the flattened leading axes
            flat = ops.reshape(x, (-1, x.shape[-1]))
            y = ops.reshape(ops.matmul(flat, params["kernel"]), x.shape[:-1] + (self.units,))
        if self.use_bias:
            y = y + params["bias"]
        return self.activation(y)

    def output_shape(self, input_shape) -> tuple:
        return tuple(input_shape[:-1]) + (self.units,)


class Conv2D(Layer):
    """activation(conv2d(x, kernel) + bias) on NHWC images, kernel (KH, KW, C_in, filters):
    Keras' Conv2D (`padding` "valid" or "same", `strides`, `dilation_rate` ints or pairs).

    >>> layer = Conv2D(8, 5, activation="relu"); params = layer.init(0, (None, 28, 28, 1))
    >>> layer.output_shape((None, 28, 28, 1))
    (None, 24, 24, 8)
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        name=None,
        dtype=np.float32,
    ):
        super().__init__(name or "conv2d", seed, dtype)  # Keras' name
        self.filters = int(filters)
        self.kernel_size = _pair("Conv2D", "kernel_size", kernel_size)
        self.strides = _pair("Conv2D", "strides", strides)
        self.dilation_rate = _pair("Conv2D", "dilation_rate", dilation_rate)
        self.padding = _padding_mode("Conv2D", padding)
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def init(self, seed, input_shape) -> dict:
        rng = np.random.default_rng(seed)
        shape = (*self.kernel_size, input_shape[-1], self.filters)
        params = {"kernel": self.kernel_initializer(shape, self.dtype, seed=rng)}
        if self.use_bias:
            params["bias"] = self.bias_initializer((self.filters,), self.dtype, seed=rng)
        return params

    def apply(self, params, x, training=False, key=None):
        y = ops_conv.conv2d(
            x, params["kernel"], self.strides, self.padding, dilations=self.dilation_rate
        )
        if self.use_bias:
            y = y + params["bias"]
        return self.activation(y)

    def output_shape(self, input_shape) -> tuple:
        window = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate)]
        spatial = [
            _pooled_size(n, w, s, self.padding)
            for n, w, s in zip(input_shape[1:3], window, self.strides)
        ]
        return (input_shape[0], *spatial, self.filters)


class MaxPool2D(Layer):
    """The maximum of each `pool_size` window of NHWC images (Keras' MaxPool2D: strides
    default to the pool size, padding "valid").

    >>> MaxPool2D(2).output_shape((None, 24, 24, 8))
    (None, 12, 12, 8)
    """

    pool = staticmethod(ops_pool.max_pool2d)
    keras_name = "max_pooling2d"

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", name=None):
        super().__init__(name or self.keras_name)
        self.pool_size = _pair(type(self).__name__, "pool_size", pool_size)
        self.strides = _pair(type(self).__name__, "strides", strides or self.pool_size)
        self.padding = _padding_mode(type(self).__name__, padding)

    def apply(self, params, x, training=False, key=None):
        return self.pool(x, self.pool_size, self.strides, self.padding)

    def output_shape(self, input_shape) -> tuple:
        spatial = [
            _pooled_size(n, w, s, self.padding)
            for n, w, s in zip(input_shape[1:3], self.pool_size, self.strides)
        ]
        return (input_shape[0], *spatial, input_shape[3])


class AvgPool2D(MaxPool2D):
    """The mean of each `pool_size` window (its elements inside the image), Keras' AvgPool2D."""

    pool = staticmethod(ops_pool.avg_pool2d)
    keras_name = "average_pooling2d"


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)) in row-major (NHWC) order, as Keras' Flatten."""

    def apply(self, params, x, training=False, key=None):
        x = as_value(x)
        return ops.reshape(x, (x.shape[0], -1))

    def output_shape(self, input_shape) -> tuple:
        return (input_shape[0], math.prod(input_shape[1:]))


def _pair(layer: str, what: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"{layer}: {what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _padding_mode(layer: str, padding: str) -> str:
    mode = str(padding).upper()
    if mode not in ("SAME", "VALID"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {padding!r}")
    return mode


def _pooled_size(n, window: int, stride: int, padding: str):
    """The output size of a window sliding over n (None: unknown) positions."""
    if n is None:
        return None
    if padding == "SAME":
        return -(-n // stride)
    return max((n - window) // stride + 1, 0)


class Dropout(Layer):
    """`dropout(x, rate, key)` when `training`, the identity otherwise.

    >>> Dropout(0.5).apply({}, x, training=True, key=7)
    """

    stochastic = True

    def __init__(self, rate: float, name=None):
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def apply(self, params, x, training=False, key=None):
        return dropout(x, self.rate, key) if training else x


class LayerNorm(Layer):
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta over `axis` (int or tuple).

    >>> LayerNorm().init(0, (None, 8))["gamma"].shape
    (8,)
    """

    def __init__(self, axis=-1, epsilon: float = 1e-5, name=None, dtype=np.float32):
        super().__init__(name, None, dtype)
        self.axis = axis
        self.epsilon = float(epsilon)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = self.axis if isinstance(self.axis, (tuple, list)) else (self.axis,)
        return tuple(sorted(a % ndim for a in axes))

    def init(self, seed, input_shape) -> dict:
        shape = tuple(input_shape[a] for a in self._axes(len(input_shape)))
        return {
            "gamma": initializers.ones(shape, self.dtype),
            "beta": initializers.zeros(shape, self.dtype),
        }

    def apply(self, params, x, training=False, key=None):
        x = as_value(x)
        axes = self._axes(x.ndim)
        mean, variance = ops.moments(x, axes, keepdims=True)
        y = (x - mean) * ops.rsqrt(variance + self.epsilon)
        along = tuple(d if i in axes else 1 for i, d in enumerate(x.shape))
        return y * ops.reshape(params["gamma"], along) + ops.reshape(params["beta"], along)


class BatchNorm(Layer):
    """Batch normalization (Keras' BatchNormalization): over the batch (every axis but `axis`),
    (x - mean) / sqrt(variance + epsilon) * gamma + beta.

    `training=True` normalizes with the batch's own mean and (biased) variance and moves the
    running statistics towards them: `moving = momentum * moving + (1 - momentum) * batch`.
    `training=False` normalizes with the running statistics. `gamma` and `beta` are parameters
    (in `params`); the running statistics are state, not parameters: the non-trainable
    Variables `moving_mean` and `moving_variance` of the layer, (re)made by `init`, so that
    `jit_train_step` updates them in place at every step (an `assign` under a trace is an
    output of the kernel written back after the call) and no optimizer ever touches them.

    >>> bn = BatchNorm(); params = bn.init(0, (None, 3))
    >>> bn.apply(params, np.ones((4, 3), np.float32), training=True).shape
    (4, 3)
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        name=None,
        dtype=np.float32,
    ):
        super().__init__(name, None, dtype)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center, self.scale = center, scale
        self.moving_mean = self.moving_variance = None

    def init(self, seed, input_shape) -> dict:
        channels = (input_shape[self.axis],)
        self.moving_mean = Variable(
            initializers.zeros(channels, self.dtype), trainable=False, name="moving_mean"
        )
        self.moving_variance = Variable(
            initializers.ones(channels, self.dtype), trainable=False, name="moving_variance"
        )
        params = {}
        if self.scale:
            params["gamma"] = initializers.ones(channels, self.dtype)
        if self.center:
            params["beta"] = initializers.zeros(channels, self.dtype)
        return params

    def apply(self, params, x, training=False, key=None):
        if self.moving_mean is None:
            raise ValueError(
                f"{self.name}: call init (or build) before apply: the running statistics are "
                "made there"
            )
        x = as_value(x)
        axis = self.axis % x.ndim
        along = tuple(d if i == axis else 1 for i, d in enumerate(x.shape))
        if training:
            reduced = tuple(i for i in range(x.ndim) if i != axis)
            mean, variance = ops.moments(x, reduced)
            keep = self.momentum
            self.moving_mean.assign(
                keep * self.moving_mean + (1.0 - keep) * ops.stop_gradient(mean)
            )
            self.moving_variance.assign(
                keep * self.moving_variance + (1.0 - keep) * ops.stop_gradient(variance)
            )
        else:
            mean, variance = self.moving_mean.value(), self.moving_variance.value()
        factor = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            factor = factor * params["gamma"]
        y = (x - ops.reshape(mean, along)) * ops.reshape(factor, along)
        return y + ops.reshape(params["beta"], along) if self.center else y


BatchNormalization = BatchNorm  # Keras' name


class Embedding(Layer):
    """Rows of an (input_dim, output_dim) table at integer ids: ids.shape + (output_dim,).

    >>> Embedding(100, 16).init(0, (None, 5))["embeddings"].shape
    (100, 16)
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer="random_uniform",
        seed=None,
        name=None,
        dtype=np.float32,
    ):
        super().__init__(name, seed, dtype)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)

    def init(self, seed, input_shape) -> dict:
        shape = (self.input_dim, self.output_dim)
        return {"embeddings": self.embeddings_initializer(shape, self.dtype, seed=seed)}

    def apply(self, params, x, training=False, key=None):
        ids = as_value(x)
        if ids.dtype.kind not in "iu":
            ids = ops.cast(ids, np.int32)
        return ops.gather(params["embeddings"], ids)

    def output_shape(self, input_shape) -> tuple:
        return tuple(input_shape) + (self.output_dim,)


def _unique_names(names: list[str]) -> list[str]:
    """Keras' naming: dense, dense_1, dense_2, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out


class Sequential(Layer):
    """Layers applied in order. Parameters: {layer name: that layer's parameters}, for the
    layers that have any; repeated names get Keras' suffixes (dense, dense_1, ...).

    >>> model = Sequential([Dense(16, activation="relu"), Dropout(0.1), Dense(2)], seed=0)
    >>> model.apply(model.init(0, (None, 4)), x, training=True, key=step)
    """

    def __init__(self, layers, name=None, seed=None):
        super().__init__(name, seed)
        self.layers = list(layers)
        self.names = _unique_names([layer.name for layer in self.layers])
        self.stochastic = any(layer.stochastic for layer in self.layers)

    def init(self, seed, input_shape) -> dict:
        rng = np.random.default_rng(seed)  # one stream, threaded through the layers in order
        params = {}
        shape = tuple(input_shape)
        for name, layer in zip(self.names, self.layers):
            layer_params = layer.init(rng, shape)
            if layer_params:
                params[name] = layer_params
            shape = layer.output_shape(shape)
        return params

    def apply(self, params, x, training=False, key=None):
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            stochastic = training and layer.stochastic and key is not None
            layer_key = fold_in(key, i) if stochastic else None
            x = layer.apply(params.get(name, {}), x, training=training, key=layer_key)
        return x

    def output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape


class MLP(Sequential):
    """Dense layers of widths `sizes`: `activation` after each but the last, which gets
    `output_activation`.

    >>> mlp = MLP([64, 64, 10], activation="relu")   # logits out
    >>> params = mlp.init(0, (None, 784))
    """

    def __init__(
        self,
        sizes,
        activation="relu",
        output_activation=None,
        kernel_initializer="glorot_uniform",
        name=None,
        seed=None,
    ):
        sizes = list(sizes)
        layers = [
            Dense(
                units,
                activation if i < len(sizes) - 1 else output_activation,
                kernel_initializer=kernel_initializer,
            )
            for i, units in enumerate(sizes)
        ]
        super().__init__(layers, name, seed)
