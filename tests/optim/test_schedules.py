"""Learning-rate schedules: values against their formulas, for Python, numpy and traced steps."""

import math

import numpy as np
import pytest

import jitgrad as jg
from jitgrad import optim

STEPS = [0, 1, 4, 5, 9, 10, 11, 25, 100]


def cosine_ref(step, lr0, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    if warmup_target is None:
        s = min(step, decay_steps)
        return lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / decay_steps)) + alpha)
    s = min(step, decay_steps + warmup_steps)
    if s < warmup_steps:
        return lr0 + (warmup_target - lr0) * s / warmup_steps
    s -= warmup_steps
    return warmup_target * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / decay_steps)) + alpha)


SCHEDULES = {
    "constant": (optim.constant(0.1), lambda s: 0.1),
    "exponential": (optim.exponential_decay(0.1, 10, 0.5), lambda s: 0.1 * 0.5 ** (s / 10)),
    "step": (optim.exponential_decay(0.1, 5, 0.5, staircase=True), lambda s: 0.1 * 0.5 ** (s // 5)),
    "piecewise": (
        optim.piecewise_constant([4, 10], [1.0, 0.5, 0.1]),
        lambda s: 1.0 if s <= 4 else 0.5 if s <= 10 else 0.1,
    ),
    "cosine": (optim.cosine_decay(0.1, 20, alpha=0.1), lambda s: cosine_ref(s, 0.1, 20, 0.1)),
    "cosine_warmup": (
        optim.cosine_decay(0.0, 20, warmup_target=0.1, warmup_steps=5),
        lambda s: cosine_ref(s, 0.0, 20, warmup_target=0.1, warmup_steps=5),
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_values(name):
    schedule, reference = SCHEDULES[name]
    for step in STEPS:
        for as_given in (step, np.int32(step), np.asarray(step, np.int32)):
            value = schedule(as_given)
            assert value.dtype == np.float32 and value.shape == ()
            assert float(value) == pytest.approx(reference(step), rel=1e-6, abs=1e-9)


def test_schedules_compile_with_a_traced_step():
    schedules = [s for s, _ in SCHEDULES.values()]
    compiled = jg.jit(lambda step: [s(step) for s in schedules])
    for step in STEPS:
        values = compiled(np.asarray(step, np.int32))
        for value, (_, reference) in zip(values, SCHEDULES.values()):
            assert float(value) == pytest.approx(reference(step), rel=1e-6, abs=1e-9)
    assert compiled.cache_info().versions == 1


def test_piecewise_needs_one_more_value_than_boundaries():
    with pytest.raises(ValueError, match="2 boundaries need 3 values"):
        optim.piecewise_constant([1, 2], [1.0, 0.5])
