"""Optimizers: several steps against hand-written float64 numpy references (Keras 3's rules),
the TensorFlow-style interface against the functional one, global-norm clipping, purity, and
`jit(update)` == eager (one kernel for all optimizers)."""

import pickle
import re

import numpy as np
import pytest

import jitgrad as jg
from jitgrad import optim

rng = np.random.default_rng(0)
PARAMS = {
    "w": rng.normal(size=(3, 2)).astype(np.float32),
    "b": [rng.normal(size=(2,)).astype(np.float32)],
}
GRADS = [
    {
        "w": rng.normal(size=(3, 2)).astype(np.float32),
        "b": [rng.normal(size=(2,)).astype(np.float32)],
    }
    for _ in range(5)
]


def _leaves(tree):
    return [np.asarray(tree["w"]), np.asarray(tree["b"][0])]


# -- float64 references, one leaf at a time: p, g, slots (dict), t (1-based) -> p ------------------


def sgd_ref(lr, momentum=0.0, nesterov=False):
    def step(p, g, s, t):
        if not momentum:
            return p - lr * g
        s["m"] = momentum * s.get("m", 0.0) - lr * g
        return p + (momentum * s["m"] - lr * g if nesterov else s["m"])

    return step


def adam_ref(lr, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0):
    def step(p, g, s, t):
        p = p - p * weight_decay * lr
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return p - alpha * s["m"] / (np.sqrt(s["v"]) + eps)

    return step


def rmsprop_ref(lr, rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    def step(p, g, s, t):
        s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
        denominator = s["v"]
        if centered:
            s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g
            denominator = denominator - s["a"] ** 2
        increment = lr * g / np.sqrt(denominator + eps)
        if momentum:
            s["mom"] = momentum * s.get("mom", 0.0) + increment
            increment = s["mom"]
        return p - increment

    return step


CASES = {
    "sgd": (lambda: optim.SGD(0.1), sgd_ref(0.1)),
    "momentum": (lambda: optim.SGD(0.1, momentum=0.9), sgd_ref(0.1, 0.9)),
    "nesterov": (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True), sgd_ref(0.1, 0.9, True)),
    "adam": (lambda: optim.Adam(0.01), adam_ref(0.01)),
    "adamw": (lambda: optim.AdamW(0.01, weight_decay=0.1), adam_ref(0.01, weight_decay=0.1)),
    "rmsprop": (lambda: optim.RMSprop(0.01), rmsprop_ref(0.01)),
    "rmsprop_centered_momentum": (
        lambda: optim.RMSprop(0.01, momentum=0.5, centered=True),
        rmsprop_ref(0.01, momentum=0.5, centered=True),
    ),
}


def _functional(opt, grads=GRADS):
    params, state = PARAMS, opt.init(PARAMS)
    for g in grads:
        params, state = opt.update(params, g, state)
    return params, state


@pytest.mark.parametrize("name", list(CASES))
def test_update_matches_numpy_reference_over_several_steps(name):
    make, reference = CASES[name]
    params, state = _functional(make())
    expected = [leaf.astype(np.float64) for leaf in _leaves(PARAMS)]
    slots = [{}, {}]
    for t, g in enumerate(GRADS, start=1):
        for i, gi in enumerate(_leaves(g)):
            expected[i] = reference(expected[i], gi.astype(np.float64), slots[i], t)
    for ours, ref in zip(_leaves(params), expected):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-6)
    assert int(state["step"]) == len(GRADS) and state["step"].dtype == np.int64


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With a zero gradient Adam does nothing and AdamW only shrinks: p (1 - lr wd)^t."""
    zero = [{"w": np.zeros((3, 2), np.float32), "b": [np.zeros(2, np.float32)]}] * 3
    adam, _ = _functional(optim.Adam(0.01), zero)
    adamw, _ = _functional(optim.AdamW(0.01, weight_decay=0.5), zero)
    np.testing.assert_array_equal(_leaves(adam)[0], PARAMS["w"])
    np.testing.assert_allclose(_leaves(adamw)[0], PARAMS["w"] * (1 - 0.005) ** 3, rtol=1e-6)


@pytest.mark.parametrize("name", ["nesterov", "adamw", "rmsprop_centered_momentum"])
def test_apply_gradients_on_variables_equals_the_functional_update(name):
    make = CASES[name][0]
    opt = make()
    variables = [jg.Variable(PARAMS["w"], name="w"), jg.Variable(PARAMS["b"][0], name="b")]
    for g in GRADS:
        opt.apply_gradients(zip(_leaves(g), variables))
    params, state = _functional(make())
    for v, leaf in zip(variables, _leaves(params)):
        np.testing.assert_array_equal(v.numpy(), leaf)
    assert int(opt.iterations) == len(GRADS) and opt.iterations.dtype == np.int64
    slot = opt.slots[0]
    np.testing.assert_array_equal(
        np.asarray(opt.get_slot(variables[0], slot)), np.asarray(state[slot]["w"])
    )


def test_apply_gradients_skips_none_and_rejects_all_none():
    opt = optim.SGD(0.5, momentum=0.9)
    a, b = jg.Variable(np.ones(2, np.float32)), jg.Variable(np.ones(2, np.float32))
    opt.apply_gradients([(None, a), (np.ones(2, np.float32), b)])
    np.testing.assert_array_equal(a.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.numpy(), [0.5, 0.5])
    with pytest.raises(ValueError, match="no gradient"):
        opt.apply_gradients([(None, a)])


def test_init_state_and_purity():
    opt = optim.Adam()
    state = opt.init(PARAMS)
    assert set(state) == {"step", "m", "v"}
    assert state["step"].shape == () and state["step"].dtype == np.int64
    assert isinstance(state["m"]["b"], list) and state["m"]["w"].dtype == np.float32
    before = {k: np.copy(v) for k, v in [("w", PARAMS["w"]), ("b", PARAMS["b"][0])]}
    opt.update(PARAMS, GRADS[0], state)
    np.testing.assert_array_equal(PARAMS["w"], before["w"])
    np.testing.assert_array_equal(PARAMS["b"][0], before["b"])
    assert int(state["step"]) == 0 and not state["m"]["w"].any()
    with pytest.raises(ValueError, match="do not match"):
        opt.update(PARAMS, {"w": GRADS[0]["w"]}, state)


def test_clip_by_global_norm_matches_numpy():
    grads = _leaves(GRADS[0])
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    clipped, got_norm = optim.clip_by_global_norm(GRADS[0], 1.0)
    assert float(got_norm) == pytest.approx(norm, rel=1e-6)
    for c, g in zip(_leaves(clipped), grads):
        np.testing.assert_allclose(c, g / norm, rtol=1e-6)
    unchanged, _ = optim.clip_by_global_norm(GRADS[0], 2 * norm)
    for c, g in zip(_leaves(unchanged), grads):
        np.testing.assert_allclose(c, g, rtol=1e-6)
    zeros, zero_norm = optim.clip_by_global_norm([np.zeros(3, np.float32)], 1.0)
    assert float(zero_norm) == 0.0 and not np.asarray(zeros[0]).any()


def test_global_clipnorm_clips_before_the_update():
    clipped = [optim.clip_by_global_norm(g, 0.5)[0] for g in GRADS]
    with_option, _ = _functional(optim.Adam(0.01, global_clipnorm=0.5))
    pre_clipped, _ = _functional(optim.Adam(0.01), clipped)
    for a, b in zip(_leaves(with_option), _leaves(pre_clipped)):
        np.testing.assert_array_equal(a, b)
    # the bound method compiles as it is
    sgd = optim.SGD(1.0, global_clipnorm=0.5)
    compiled, _ = jg.jit(sgd.update)(PARAMS, GRADS[0], sgd.init(PARAMS))
    for p, c, g in zip(_leaves(compiled), _leaves(clipped[0]), _leaves(PARAMS)):
        np.testing.assert_allclose(p, g - c, rtol=1e-6)


def test_learning_rate_schedule_is_evaluated_at_the_step_count():
    lr = optim.piecewise_constant([1], [0.5, 0.25])  # 0.5 at steps 0 and 1, then 0.25
    params, state = {"w": np.zeros(1, np.float32)}, None
    opt = optim.SGD(lr)
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(params, {"w": np.ones(1, np.float32)}, state)
    assert float(params["w"][0]) == -(0.5 + 0.5 + 0.25)


def test_jit_update_equals_eager_for_every_optimizer():
    """All optimizers (with a schedule and clipping) in ONE compiled update, 3 steps."""
    opts = [
        optim.SGD(0.1, momentum=0.9, nesterov=True),
        optim.Adam(
            optim.cosine_decay(0.01, 10, warmup_target=0.1, warmup_steps=2), global_clipnorm=1.0
        ),
        optim.AdamW(optim.exponential_decay(0.01, 2, 0.5, staircase=True), weight_decay=0.1),
        optim.RMSprop(0.01, momentum=0.5, centered=True),
    ]

    def update_all(params, grads, states):
        return [opt.update(p, grads, s) for opt, p, s in zip(opts, params, states)]

    compiled = jg.jit(update_all)
    eager_params = compiled_params = [PARAMS] * len(opts)
    eager_states = compiled_states = [opt.init(PARAMS) for opt in opts]
    for g in GRADS[:3]:
        eager = update_all(eager_params, g, eager_states)
        eager_params, eager_states = [e[0] for e in eager], [e[1] for e in eager]
        out = compiled(compiled_params, g, compiled_states)
        compiled_params, compiled_states = [o[0] for o in out], [o[1] for o in out]
    for a, b in zip(compiled_params, eager_params):
        for x, y in zip(_leaves(a), _leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert [int(s["step"]) for s in compiled_states] == [3] * len(opts)
    assert compiled.cache_info().versions == 1


def test_jit_update_reads_changed_hyperparameters_at_every_call():
    """Numbers are kernel inputs (Variables), not constants frozen at the first trace."""
    opt = optim.Adam(0.01)
    update = jg.jit(opt.update)
    state = opt.init(PARAMS)
    update(PARAMS, GRADS[0], state)
    opt.learning_rate, opt.beta_1, opt.epsilon = 0.5, 0.2, 0.1
    compiled, _ = update(PARAMS, GRADS[0], state)
    eager, _ = opt.update(PARAMS, GRADS[0], state)
    for a, b in zip(_leaves(compiled), _leaves(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert (opt.learning_rate, opt.beta_1, opt.epsilon) == (0.5, 0.2, 0.1)
    assert update.cache_info().versions == 1
    assert pickle.loads(pickle.dumps(opt)).beta_1 == 0.2


def test_update_names_the_state_it_expected():
    opt = optim.RMSprop(0.01, centered=True)
    state = opt.init(PARAMS)
    del state["average_gradient"]
    with pytest.raises(
        ValueError,
        match=r"RMSprop.update: opt_state has the structure "
        r"\{'step': array, 'velocity': .*\}, but "
        r"RMSprop.init\(params\) makes \{'average_gradient'",
    ):
        opt.update(PARAMS, GRADS[0], state)
    state = opt.init(PARAMS)
    state["velocity"]["w"] = np.zeros((1, 2), np.float32)  # would broadcast silently
    with pytest.raises(
        TypeError,
        match=r"opt_state\['velocity'\]\['w'\] is float32\[1, 2\], "
        r"but init\(params\) makes float32\[3, 2\]",
    ):
        opt.update(PARAMS, GRADS[0], state)


def test_momentum_turned_on_later_needs_a_state_with_its_slot():
    opt = optim.SGD(0.1)
    state = opt.init(PARAMS)
    opt.momentum = 0.9
    assert opt.slots == ("momentum",)
    with pytest.raises(ValueError, match=r"makes \{'momentum': "):
        opt.update(PARAMS, GRADS[0], state)
    opt.update(PARAMS, GRADS[0], opt.init(PARAMS))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: jg.optim.SGD(-0.1), ValueError, "SGD: learning_rate must be >= 0, got -0.1"),
        (lambda: jg.optim.SGD(float("nan")), ValueError, "learning_rate must be >= 0, got nan"),
        (lambda: jg.optim.SGD("0.1"), TypeError, "learning_rate must be a number, or a schedule"),
        (lambda: jg.optim.SGD(None), TypeError, "got NoneType None"),
        (lambda: jg.optim.SGD(0.1, momentum=-0.5), ValueError, "momentum must be >= 0"),
        (lambda: jg.optim.Adam(0.1, beta_1=1.5), ValueError, "beta_1 must be in [0, 1), got 1.5"),
        (lambda: jg.optim.Adam(0.1, beta_2=1.0), ValueError, "beta_2 must be in [0, 1), got 1.0"),
        (lambda: jg.optim.Adam(0.1, epsilon=-1e-7), ValueError, "epsilon must be >= 0"),
        (lambda: jg.optim.Adam(0.1, global_clipnorm=0), ValueError, "global_clipnorm must be > 0"),
        (lambda: jg.optim.AdamW(0.1, weight_decay=-1), ValueError, "weight_decay must be >= 0"),
        (lambda: jg.optim.RMSprop(0.1, rho=1.2), ValueError, "rho must be in [0, 1], got 1.2"),
    ],
)
def test_settings_out_of_range_are_refused_when_set(make, error, message):
    """PyTorch's checks: a beta of 1.5 or a negative epsilon trained to nonsense, and a string
    learning rate failed in the first update's multiply."""
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_settings_are_checked_when_changed_too_and_keep_their_other_forms():
    opt = jg.optim.Adam(0.1, global_clipnorm=None)  # None: no clipping
    with pytest.raises(TypeError, match="Adam: learning_rate must be a number"):
        opt.learning_rate = "1e-3"
    with pytest.raises(ValueError, match="Adam: beta_1 must be in"):
        opt.beta_1 = -0.1
    assert opt.learning_rate == 0.1 and opt.beta_1 == 0.9  # unchanged by the refusals
    opt.learning_rate = lambda step: 0.1 / (1.0 + step)  # a schedule
    opt.learning_rate = jg.Variable(0.05)  # TensorFlow's Variable learning rate
    opt.beta_1 = np.float32(0.8)
    assert opt.beta_1 == np.float32(0.8)
