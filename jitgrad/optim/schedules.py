"""Learning-rate schedules: callables `step -> learning rate` written with jitgrad ops.

`step` is the number of updates already applied (0 for the first update), a Python number or
a 0-d tensor; under `jit` it is traced, so a schedule compiles into the update kernel. The
formulas are Keras' (keras.optimizers.schedules).

>>> lr = cosine_decay(1e-3, decay_steps=1000)
>>> lr(1000)
<jitgrad.Tensor: shape=(), dtype=float32, numpy=0.0>
"""

from __future__ import annotations

import math

import numpy as np

from jitgrad import ops
from jitgrad.ops.base import as_value


def _float_step(step):
    step = as_value(step)
    return ops.cast(step, np.float32)


def constant(learning_rate: float):
    """The same rate at every step.

    >>> constant(0.1)(5)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.1>
    """
    value = np.float32(learning_rate)

    def schedule(step):
        return ops.convert_to_tensor(value)

    return schedule


def exponential_decay(
    initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False
):
    """lr0 * decay_rate ^ (step / decay_steps); with `staircase`, the exponent is floored, so
    the rate drops by `decay_rate` every `decay_steps` steps (step decay).

    >>> exponential_decay(1.0, 10, 0.5, staircase=True)(25)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.25>
    """

    def schedule(step):
        p = _float_step(step) / float(decay_steps)
        if staircase:
            p = ops.floor(p)
        return ops.pow(np.float32(decay_rate), p) * initial_learning_rate

    return schedule


def piecewise_constant(boundaries, values):
    """values[0] while step <= boundaries[0], values[1] while step <= boundaries[1], ...,
    values[-1] after the last boundary (TensorFlow's PiecewiseConstantDecay).

    >>> piecewise_constant([100, 200], [1.0, 0.5, 0.1])(150)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.5>
    """
    boundaries, values = list(boundaries), [float(v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"piecewise_constant: {len(boundaries)} boundaries need "
            f"{len(boundaries) + 1} values, got {len(values)}"
        )

    def schedule(step):
        step = as_value(step)
        lr = ops.convert_to_tensor(np.float32(values[-1]))
        for boundary, value in zip(reversed(boundaries), reversed(values[:-1])):
            lr = ops.where(step <= boundary, np.float32(value), lr)
        return lr

    return schedule


def cosine_decay(
    initial_learning_rate: float,
    decay_steps: int,
    alpha: float = 0.0,
    warmup_target: float | None = None,
    warmup_steps: int = 0,
):
    """Cosine decay from the peak rate to alpha * peak over `decay_steps`, then flat. With
    `warmup_target`, the rate first rises linearly from `initial_learning_rate` to
    `warmup_target` over `warmup_steps` and the cosine starts from `warmup_target` (Keras 3).

    >>> lr = cosine_decay(0.0, 100, warmup_target=1e-3, warmup_steps=10)
    >>> lr(10)
    <jitgrad.Tensor: shape=(), dtype=float32, numpy=0.001>
    """
    peak = initial_learning_rate if warmup_target is None else warmup_target
    warmup = warmup_target is not None and warmup_steps > 0

    def decayed(s):
        cosine = (ops.cos(s * (math.pi / decay_steps)) + 1.0) * 0.5
        return (cosine * (1.0 - alpha) + alpha) * peak

    def schedule(step):
        s = _float_step(step)
        if not warmup:
            return decayed(ops.minimum(s, float(decay_steps)))
        s = ops.minimum(s, float(decay_steps + warmup_steps))
        rising = (
            s * ((warmup_target - initial_learning_rate) / warmup_steps) + initial_learning_rate
        )
        return ops.where(s < warmup_steps, rising, decayed(s - float(warmup_steps)))

    return schedule
