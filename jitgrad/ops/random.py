"""`jitgrad.random`: random numbers that stay random under `jit`, in both conventions.

Every draw is the `philox` primitive (ops/philox.py): a counter-based generator, so the same
key and position give the same numbers eagerly, in the graph interpreter and in compiled
kernels, bit for bit.

JAX's explicit keys. A key is a uint32 tensor of shape (2,); a draw is a pure function of it,
so a key passed to a jitted function as an argument gives new numbers when the caller passes a
new key:

>>> key = jitgrad.random.key(0)
>>> key, sub = jitgrad.random.split(key)
>>> x = jitgrad.random.normal(sub, (3,))

TensorFlow's stateful generators. `Generator.from_seed(seed)` holds its state in a Variable
(int64[3]: a draw counter and the two key words); each draw reads the counter and advances it.
Under `jit`, `jit_grad` and `jit_train_step` that state is an input of the kernel and its
advanced value an output written back after each call, so every call draws new numbers, the
same sequence an eager run of the same Generator draws:

>>> g = jitgrad.random.Generator.from_seed(1)
>>> noise = g.normal((3,))

`normal`, `uniform` and `truncated_normal` called with a shape first are TensorFlow's
`tf.random` functions: they draw from the global Generator (`set_seed` reseeds it), threaded
through kernels the same way; with `seed=` they draw from that seed alone, the same numbers
every time. Called with a key first they are JAX's `jax.random` functions.

The stream changed from earlier versions of jitgrad (numpy's PCG64): seeded draws give
other numbers than before.
"""

from __future__ import annotations

import os

import numpy as np

from jitgrad.core import dtypes
from jitgrad.core.dispatch import bind, current_trace
from jitgrad.core.errors import op_error
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.ops.base import as_value
from jitgrad.ops.creation import _shape
from jitgrad.ops.elementwise import cast, floor, floordiv, less, log, minimum, mod
from jitgrad.ops.philox import MASK, philox_p, uint32
from jitgrad.ops.reduce import argmax
from jitgrad.ops.shape import expand_dims, stack, transpose

# Offsets (the Philox counter's high 64 bits) of what a key draws: its numbers from 0, the
# keys `split` makes at all ones, and `fold_in`'s keys at 2**62 + data, apart from both.
# A Generator's draws use its counter, from 0: `Generator.from_seed(s)`'s first draw equals
# the same draw from `key(s)`.
_SPLIT = -1
_FOLD_IN = 1 << 62
_ZERO = Tensor(np.zeros((), np.int64))
_ADVANCE = Tensor(np.array([1, 0, 0], np.int64))  # a Generator's state after one draw
_BELOW_ONE_F16 = Tensor(np.float16(1 - 2**-11))  # float16's largest value below 1


def _seed_words(seed) -> np.ndarray:
    """A Python/numpy integer's 64 bits as two uint32 words (high, low), as JAX's PRNGKey."""
    s = int(seed) & ((1 << 64) - 1)
    return np.array([s >> 32, s & MASK], np.uint32)


def key(seed) -> Tensor:
    """A key for the JAX-style draws: uint32[2] holding the seed's 64 bits (as
    `jax.random.PRNGKey`). A traced integer seed gives a traced key.

    >>> jitgrad.random.key(42).numpy()
    array([ 0, 42], dtype=uint32)
    """
    traced = isinstance(seed, Tracer)
    value = seed if traced else np.asarray(seed.numpy() if isinstance(seed, Tensor) else seed)
    if value.shape != () or value.dtype.kind not in "iu":
        raise op_error(
            "random.key", f"a seed is an integer scalar, got {value.dtype}{value.shape}", TypeError
        )
    if traced:  # the words of its 64 bits, by integer ops (floor division and modulo)
        s = cast(seed, dtypes.int64)
        return cast(stack([mod(floordiv(s, 1 << 32), 1 << 32), mod(s, 1 << 32)]), uint32)
    return Tensor(_seed_words(value))


PRNGKey = key


def _as_key(k, op: str):
    k = as_value(k, op=op)
    if k.dtype != uint32 or k.shape != (2,):
        raise op_error(
            op,
            f"expects a key (jitgrad.random.key(seed)): a uint32 array of shape (2,), got "
            f"{k.dtype.name} of shape {k.shape}",
            TypeError,
        )
    return k


def _is_key(x) -> bool:
    return getattr(x, "dtype", None) == uint32


def _philox(key, offset, shape, dtype, distribution: str):
    """The primitive's draw; float16 ones are float32 draws rounded (as TensorFlow allows
    float16 draws; the generator itself makes float32 and float64)."""
    dtype = dtypes.as_dtype(dtype)
    wide = dtypes.float32 if dtype == dtypes.float16 else dtype
    out = bind(philox_p, key, offset, shape=_shape(shape), dtype=wide, distribution=distribution)
    if wide == dtype:
        return out
    if distribution == "uniform":  # float32 values within 2**-12 of 1 would round up to 1
        return minimum(cast(out, dtype), _BELOW_ONE_F16)
    return cast(out, dtype)


def _draw_with_key(k, shape, dtype, distribution: str, op: str, offset=_ZERO):
    return _philox(_as_key(k, op), offset, shape, dtype, distribution)


def split(key, num: int = 2):
    """`num` new keys (uint32[num, 2]) from `key`, independent of it and of each other.

    >>> k1, k2 = jitgrad.random.split(jitgrad.random.key(0))
    """
    return _draw_with_key(
        key, (int(num), 2), uint32, "bits", "random.split", Tensor(np.int64(_SPLIT))
    )


def fold_in(key, data):
    """A new key from `key` and an integer `data` (a step number, a device index), which
    may be traced: `fold_in(key, step)` inside a jitted training step gives each step its key."""
    traced = isinstance(data, Tracer)
    d = data if traced else np.asarray(data.numpy() if isinstance(data, Tensor) else data)
    if d.shape != () or d.dtype.kind not in "iu":
        raise op_error(
            "random.fold_in", f"data is an integer scalar, got {d.dtype}{d.shape}", TypeError
        )
    if traced:  # its low 32 bits, as for a concrete one
        offset = mod(cast(data, dtypes.int64), 1 << 32) + _FOLD_IN
    else:
        offset = Tensor(np.int64(_FOLD_IN + (int(d) & MASK)))
    return _draw_with_key(key, (2,), uint32, "bits", "random.fold_in", offset)


def bits(key, shape=(), dtype=uint32):
    """Random uint32 words (the generator's raw output)."""
    return _draw_with_key(key, shape, dtype, "bits", "random.bits")


def _scaled(draw, scale, shift):
    """draw * scale + shift, skipping the identity (which would cost ops under jit)."""
    if not (isinstance(scale, (int, float)) and scale == 1):
        draw = draw * scale
    if not (isinstance(shift, (int, float)) and shift == 0):
        draw = draw + shift
    return draw


def _integers(u64, minval, maxval, dtype, op: str):
    """Integers uniform over [minval, maxval) from float64 uniforms in [0, 1): floor(u * span)
    is below span (u <= 1 - 2**-53), and its bias is below span * 2**-53."""
    lo = as_value(minval, dtype, op)
    hi = as_value(maxval, dtype, op)
    span = cast(hi - lo, dtypes.float64)
    return cast(floor(u64 * span), dtype) + lo


def _uniform(draw, shape, minval, maxval, dtype):
    """TensorFlow's uniform over [minval, maxval) by `draw(shape, dtype, distribution)`:
    floats (maxval 1 by default) or integers (maxval required)."""
    dtype = dtypes.as_dtype(dtype)
    if dtype.kind in "iu":
        if maxval is None:
            raise op_error("random.uniform", "integer dtypes need maxval", TypeError)
        u = draw(shape, dtypes.float64, "uniform")
        return _integers(u, minval, maxval, dtype, "random.uniform")
    u = draw(shape, dtype, "uniform")
    maxval = 1.0 if maxval is None else maxval
    if isinstance(minval, (int, float)) and isinstance(maxval, (int, float)):
        return _scaled(u, maxval - minval, minval)
    lo = as_value(minval, dtype, "random.uniform")
    return u * (as_value(maxval, dtype, "random.uniform") - lo) + lo


def _key_normal(key, shape=(), dtype=dtypes.float32):
    return _draw_with_key(key, shape, dtype, "normal", "random.normal")


def _key_uniform(key, shape=(), dtype=dtypes.float32, minval=0.0, maxval=1.0):
    dtype = dtypes.as_dtype(dtype)
    if dtype.kind != "f":
        raise op_error("random.uniform", f"draws floats, not {dtype.name} (use randint)", TypeError)

    def draw(shape, dtype, distribution):
        return _draw_with_key(key, shape, dtype, distribution, "random.uniform")

    return _uniform(draw, shape, minval, maxval, dtype)


def randint(key, shape, minval, maxval, dtype=dtypes.int32):
    """Integers uniform over [minval, maxval) (JAX's `jax.random.randint`)."""
    dtype = dtypes.as_dtype(dtype)
    if dtype.kind not in "iu":
        raise op_error("random.randint", f"draws integers, not {dtype.name}", TypeError)
    u = _draw_with_key(key, shape, dtypes.float64, "uniform", "random.randint")
    return _integers(u, minval, maxval, dtype, "random.randint")


def bernoulli(key, p=0.5, shape=None):
    """True with probability `p` (broadcast to `shape`; p's shape by default)."""
    p = as_value(p, op="random.bernoulli")
    if p.dtype.kind != "f":
        p = cast(p, dtypes.float32)
    u = _draw_with_key(
        key, p.shape if shape is None else shape, p.dtype, "uniform", "random.bernoulli"
    )
    return less(u, p)


def _gumbel_argmax(draw, logits, axis: int, prefix: tuple, op: str):
    """Samples of the categorical distributions `softmax(logits)` along `axis`, by the
    Gumbel-max trick: argmax(logits + g), g = -log(-log u) for uniform u (u = 0 gives
    g = -inf, a class never chosen). `prefix`: leading sample dimensions. The logs are
    jitgrad's log op, so a compiled sample can differ from the eager one where two classes'
    scores tie to the last bit."""
    logits = as_value(logits, op=op)
    if logits.dtype.kind != "f" or logits.ndim == 0:
        raise op_error(
            op, f"logits must be float and at least 1-d, got {logits.dtype}{logits.shape}"
        )
    axis = axis % logits.ndim
    if axis != logits.ndim - 1:  # the classes last
        perm = [d for d in range(logits.ndim) if d != axis] + [axis]
        logits = transpose(logits, perm)
    u = draw((*prefix, *logits.shape), logits.dtype, "uniform")
    for _ in prefix:
        logits = expand_dims(logits, 0)
    return argmax(logits - log(-log(u)), axis=-1)


def categorical(*args, **kwargs):
    """Class samples from logits: `categorical(key, logits, axis=-1, shape=None)` (JAX: the
    batch shape of `logits`, or `shape` ending with it) or
    `categorical(logits, num_samples, dtype=int64, seed=None)` (TensorFlow: logits
    [batch, classes] -> samples [batch, num_samples]). By the Gumbel-max trick."""
    if _is_key(args[0] if args else kwargs.get("key")):
        return _key_categorical(*args, **kwargs)
    return _tf_categorical(*args, **kwargs)


def _key_categorical(key, logits, axis=-1, shape=None):
    logits = as_value(logits, op="random.categorical")
    batch = tuple(d for i, d in enumerate(logits.shape) if i != axis % max(logits.ndim, 1))
    shape = batch if shape is None else _shape(shape)
    if shape[len(shape) - len(batch) :] != batch:
        raise op_error("random.categorical", f"shape {shape} must end with the batch shape {batch}")

    def draw(shape, dtype, distribution):
        return _draw_with_key(key, shape, dtype, distribution, "random.categorical")

    return _gumbel_argmax(
        draw, logits, axis, shape[: len(shape) - len(batch)], "random.categorical"
    )


def _tf_categorical(logits, num_samples, dtype=None, seed=None, name=None):
    logits = as_value(logits, op="random.categorical")
    if logits.ndim != 2:
        raise op_error("random.categorical", f"logits are [batch, classes], got {logits.shape}")
    draw = _seeded_or_global(seed, "random.categorical")
    # Noise [num_samples, batch, classes] -> samples [num_samples, batch] -> [batch, samples].
    samples = _gumbel_argmax(draw, logits, -1, (int(num_samples),), "random.categorical")
    samples = transpose(samples, [1, 0])
    return samples if dtype is None else cast(samples, dtype)


class Generator:
    """TensorFlow's `tf.random.Generator`: a stateful Philox generator, deterministic given
    its seed, whose state a jitted function reads and advances at every call.

    >>> g = jitgrad.random.Generator.from_seed(1234)
    >>> g.normal((2, 3)).shape
    (2, 3)

    `state` is a Variable of int64[3]: [draws made, key word 0, key word 1] (TensorFlow's
    Philox state has the same size but another layout). Each draw takes the counter as its
    offset and adds one. A Generator used inside a jitted function is an implicit input and
    output of the kernel (see jitgrad.compiler.function); inside a loop body or a branch it
    cannot advance (an error says so): draw before the loop, or use keys. Like a Variable, a
    Generator is not locked: threads drawing from one at once may draw the same numbers.
    """

    def __init__(self, state, alg=None):
        state = np.asarray(state.numpy() if isinstance(state, Tensor) else state)
        if state.shape != (3,) or state.dtype.kind not in "iu":
            raise op_error(
                "random.Generator", f"a state is 3 integers, got {state.dtype}{state.shape}"
            )
        self._state = Variable(
            state.astype(np.int64), name="random_generator_state", trainable=False
        )

    @classmethod
    def from_seed(cls, seed, alg=None) -> Generator:
        """A Generator whose draws are determined by the integer `seed`."""
        return cls(np.concatenate([[0], _seed_words(seed).astype(np.int64)]))

    @classmethod
    def from_key(cls, key) -> Generator:
        """A Generator keyed by a JAX-style key (uint32[2])."""
        words = np.asarray(_as_key(key, "random.Generator.from_key").numpy(), np.int64)
        return cls(np.concatenate([[0], words]))

    @classmethod
    def from_non_deterministic_state(cls, alg=None) -> Generator:
        """A Generator seeded from the operating system's entropy."""
        return cls.from_seed(int.from_bytes(os.urandom(8), "little"))

    @property
    def state(self) -> Variable:
        return self._state

    @property
    def algorithm(self) -> str:
        return "philox"

    def reset_from_seed(self, seed) -> None:
        """Start over as `Generator.from_seed(seed)` (the same state Variable, so jitted
        functions that use this Generator follow)."""
        self._state.assign(np.concatenate([[0], _seed_words(seed).astype(np.int64)]))

    def _draw(self, shape, dtype, distribution: str):
        """One draw at the current counter; the counter advances (in the trace, if any)."""
        trace = current_trace.get()
        state = self._state.read_value() if trace is None else trace.read_state(self._state)
        out = _philox(cast(state[1:], uint32), state[0], shape, dtype, distribution)
        if trace is None:
            self._state.assign(state + _ADVANCE)
        else:
            trace.write_state(self._state, state + _ADVANCE)
        return out

    def normal(self, shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, name=None):
        """Normal draws of `shape` (mean and stddev may be tensors)."""
        return _scaled(self._draw(shape, dtype, "normal"), stddev, mean)

    def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, name=None):
        """Normal draws within two standard deviations of the mean (redrawn until they are)."""
        return _scaled(self._draw(shape, dtype, "truncated_normal"), stddev, mean)

    def uniform(self, shape, minval=0, maxval=None, dtype=dtypes.float32, name=None):
        """Uniform draws over [minval, maxval): floats (maxval 1 by default) or integers
        (maxval required)."""
        return _uniform(self._draw, shape, minval, maxval, dtype)

    def split(self, count: int = 1) -> list[Generator]:
        """`count` new Generators, independent of this one and of each other (this one
        advances by one draw). Eager only: a Generator holds a Variable, which a traced
        function cannot create."""
        if current_trace.get() is not None:
            raise op_error(
                "random.Generator.split",
                "makes new Generators (Variables), which a traced function cannot create: "
                "split before calling the jitted function",
                TypeError,
            )
        keys = self._draw((int(count), 2), uint32, "bits").numpy()
        return [Generator.from_key(k) for k in keys]

    def __repr__(self) -> str:
        return f"<jitgrad.random.Generator state={self._state.numpy().tolist()}>"


_global_generator = Generator.from_non_deterministic_state()


def get_global_generator() -> Generator:
    """The Generator that `normal(shape)` & co. draw from."""
    return _global_generator


def set_global_generator(generator: Generator) -> None:
    """Replace the global Generator. Functions already traced keep the one they read (as in
    TensorFlow); `set_seed` reseeds the current one in place instead."""
    global _global_generator
    if not isinstance(generator, Generator):
        raise TypeError(
            f"set_global_generator: expects a Generator, got {type(generator).__name__}"
        )
    _global_generator = generator


def set_seed(seed: int) -> None:
    """Reseed the global Generator: later draws (eager and in jitted functions) repeat."""
    _global_generator.reset_from_seed(seed)


def _seeded_or_global(seed, op: str):
    """A draw function: from `seed` alone (a stateless key draw, the same every call), or from
    the global Generator."""
    if seed is None:
        return _global_generator._draw
    k = key(seed)
    return lambda shape, dtype, distribution: _draw_with_key(k, shape, dtype, distribution, op)


def normal(*args, **kwargs):
    """Normal draws: `normal(key, shape=(), dtype=float32)` (JAX) or
    `normal(shape, mean=0.0, stddev=1.0, dtype=float32, seed=None)` (TensorFlow: the global
    Generator, or the `seed` alone)."""
    if _is_key(args[0] if args else kwargs.get("key")):
        return _key_normal(*args, **kwargs)
    return _tf_normal(*args, **kwargs)


def _tf_normal(shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, seed=None, name=None):
    draw = _seeded_or_global(seed, "random.normal")(shape, dtype, "normal")
    return _scaled(draw, stddev, mean)


def uniform(*args, **kwargs):
    """Uniform draws: `uniform(key, shape=(), dtype=float32, minval=0.0, maxval=1.0)` (JAX)
    or `uniform(shape, minval=0, maxval=None, dtype=float32, seed=None)` (TensorFlow; integer
    dtypes need maxval)."""
    if _is_key(args[0] if args else kwargs.get("key")):
        return _key_uniform(*args, **kwargs)
    return _tf_uniform(*args, **kwargs)


def _tf_uniform(shape, minval=0, maxval=None, dtype=dtypes.float32, seed=None, name=None):
    draw = _seeded_or_global(seed, "random.uniform")
    return _uniform(draw, shape, minval, maxval, dtype)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, seed=None, name=None):
    """TensorFlow's truncated normal: draws within two standard deviations of the mean."""
    if _is_key(shape):
        raise op_error(
            "random.truncated_normal",
            "takes a shape first (TensorFlow's form); with keys use "
            "Generator.from_key(key).truncated_normal(shape)",
            TypeError,
        )
    draw = _seeded_or_global(seed, "random.truncated_normal")(shape, dtype, "truncated_normal")
    return _scaled(draw, stddev, mean)


def stateless_normal(shape, seed, mean=0.0, stddev=1.0, dtype=dtypes.float32, name=None):
    """TensorFlow's stateless normal: `seed` is two integers, used as the key's words."""
    return _scaled(_key_normal(_stateless_key(seed), shape, dtype), stddev, mean)


def stateless_uniform(shape, seed, minval=0, maxval=None, dtype=dtypes.float32, name=None):
    """TensorFlow's stateless uniform (`seed`: two integers, the key's words)."""
    k = _stateless_key(seed)

    def draw(shape, dtype, distribution):
        return _draw_with_key(k, shape, dtype, distribution, "random.stateless_uniform")

    return _uniform(draw, shape, minval, maxval, dtype)


def _stateless_key(seed):
    if isinstance(seed, Tracer):
        return cast(mod(cast(seed, dtypes.int64), 1 << 32), uint32)
    words = np.asarray(seed.numpy() if isinstance(seed, Tensor) else seed)
    if words.shape != (2,) or words.dtype.kind not in "iu":
        raise op_error("random.stateless", f"a seed is 2 integers, got {words.dtype}{words.shape}")
    return Tensor((words.astype(np.int64) & MASK).astype(np.uint32))


__all__ = [
    "Generator",
    "PRNGKey",
    "bernoulli",
    "bits",
    "categorical",
    "fold_in",
    "get_global_generator",
    "key",
    "normal",
    "randint",
    "set_global_generator",
    "set_seed",
    "split",
    "stateless_normal",
    "stateless_uniform",
    "truncated_normal",
    "uniform",
]
