"""jit_train_step: one kernel for forward, backward, clipping and the optimizer update, writing
the parameters and optimizer state in place."""

import numpy as np
import pytest

import jitgrad as jg

rng = np.random.default_rng(0)
X = rng.standard_normal((32, 6)).astype(np.float32)
Y = rng.integers(0, 3, 32).astype(np.int32)


def init_params(seed=0):
    r = np.random.default_rng(seed)
    return {
        "w1": (r.standard_normal((6, 8)) * 0.3).astype(np.float32),
        "b1": np.zeros(8, np.float32),
        "w2": (r.standard_normal((8, 3)) * 0.3).astype(np.float32),
        "b2": np.zeros(3, np.float32),
    }


def loss_fn(p, x, y):
    h = jg.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    return jg.reduce_mean(jg.nn.sparse_softmax_cross_entropy_with_logits(y, logits))


def loss_with_aux(p, x, y):
    loss = loss_fn(p, x, y)
    return loss, {"double": loss * 2.0}


OPTIMIZERS = {
    "sgd": lambda: jg.optim.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: jg.optim.Adam(0.01),
    "adamw_clipped": lambda: jg.optim.AdamW(0.01, weight_decay=0.01, global_clipnorm=0.5),
}


def reference_steps(opt, params, state, n):
    """jit_grad for the gradients, then the optimizer's update eagerly."""
    grad = jg.jit_grad(loss_fn)
    losses = []
    for _ in range(n):
        loss, grads = grad(params, X, Y)
        params, state = opt.update(params, grads, state)
        params = {k: np.asarray(v) for k, v in params.items()}
        state = jg.core.pytree.unflatten(
            jg.core.pytree.flatten(state)[1],
            [np.asarray(v) for v in jg.core.pytree.flatten(state)[0]],
        )
        losses.append(float(loss))
    return losses, params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_step_matches_jit_grad_plus_update(name):
    opt = OPTIMIZERS[name]()
    params, state = init_params(), opt.init(init_params())
    step = jg.jit_train_step(loss_fn, opt)
    arrays = {k: id(v) for k, v in params.items()}
    losses = [float(step(params, state, X, Y)) for _ in range(5)]
    assert {k: id(v) for k, v in params.items()} == arrays  # the same arrays, updated in place
    assert int(state["step"]) == 5
    ref_losses, ref_params, _ = reference_steps(opt, init_params(), opt.init(init_params()), 5)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0]


def test_train_step_has_aux():
    opt = jg.optim.SGD(0.1)
    params, state = init_params(), opt.init(init_params())
    step = jg.jit_train_step(loss_with_aux, opt, has_aux=True)
    loss, aux = step(params, state, X, Y)
    assert float(aux["double"]) == pytest.approx(2 * float(loss))


def _read_only(array):
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    "replace, reason",
    [
        (lambda w: w.T.copy().T, "an array that is not C-contiguous"),
        (_read_only, "a read-only array"),
        (jg.Variable, "a Variable \\(train Variables with a GradientTape inside"),
        (lambda w: 0.5, "float"),
    ],
    ids=["strided", "read-only", "Variable", "float"],
)
def test_train_step_refuses_leaves_it_cannot_update_in_place(replace, reason):
    """The error names the leaf and why (and, for a Variable, the way to train it)."""
    opt = jg.optim.SGD(0.1)
    params = init_params()
    state = opt.init(params)
    params["w1"] = replace(params["w1"])
    with pytest.raises(TypeError, match=r"params\['w1'\] must be a writeable .* got " + reason):
        jg.jit_train_step(loss_fn, opt)(params, state, X, Y)


def test_training_resumes_bit_identically_from_a_checkpoint(tmp_path):
    opt = jg.optim.Adam(0.01)
    step = jg.jit_train_step(loss_fn, opt)
    straight, straight_state = init_params(), opt.init(init_params())
    for _ in range(6):
        step(straight, straight_state, X, Y)
    params, state = init_params(), opt.init(init_params())
    for _ in range(3):
        step(params, state, X, Y)
    path = jg.checkpoint.save(tmp_path / "ckpt", params, state)
    params, state, _ = jg.checkpoint.load(path)
    for _ in range(3):
        step(params, state, X, Y)
    for k in params:
        np.testing.assert_array_equal(params[k], straight[k])
    for a, b in zip(jg.core.pytree.flatten(state)[0], jg.core.pytree.flatten(straight_state)[0]):
        np.testing.assert_array_equal(a, b)


def test_train_step_is_one_kernel():
    opt = jg.optim.Adam(0.01)
    params, state = init_params(), opt.init(init_params())
    lowered = jg.jit_train_step(loss_fn, opt).lower(params, state, X, Y)
    assert lowered.source.count("def kernel") == 1
    assert "matmul" in lowered.source and "vtanh" in lowered.source


# -- hyperparameters are read at every call --------------------------------------------------------


def eager_step(opt, params, state):
    """One reference step: jit_grad for the gradients, the optimizer's eager update."""
    _, grads = jg.jit_grad(loss_fn)(params, X, Y)
    params, state = opt.update(params, grads, state)
    leaves, treedef = jg.core.pytree.flatten(state)
    return (
        {k: np.asarray(v) for k, v in params.items()},
        jg.core.pytree.unflatten(treedef, [np.asarray(v) for v in leaves]),
    )


CHANGES = {
    "sgd_learning_rate": (lambda: jg.optim.SGD(0.1), "learning_rate", 0.0),
    "sgd_momentum": (lambda: jg.optim.SGD(0.1, momentum=0.9), "momentum", 0.1),
    "adam_learning_rate": (lambda: jg.optim.Adam(0.01), "learning_rate", 0.05),
    "adam_beta_1": (lambda: jg.optim.Adam(0.01), "beta_1", 0.5),
    "adam_beta_2": (lambda: jg.optim.Adam(0.01), "beta_2", 0.9),
    "adam_epsilon": (lambda: jg.optim.Adam(0.01), "epsilon", 0.5),
    "adamw_weight_decay": (lambda: jg.optim.AdamW(0.01, weight_decay=0.01), "weight_decay", 0.5),
    "rmsprop_rho": (lambda: jg.optim.RMSprop(0.01, momentum=0.5), "rho", 0.5),
    "clipnorm": (lambda: jg.optim.SGD(0.1, global_clipnorm=1.0), "global_clipnorm", 0.01),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_changed_hyperparameter_takes_effect_at_the_next_compiled_step(name):
    make, attr, value = CHANGES[name]
    opt, ref_opt = make(), make()
    step = jg.jit_train_step(loss_fn, opt)
    params, state = init_params(), opt.init(init_params())
    ref_params, ref_state = init_params(), opt.init(init_params())
    for i in range(4):
        if i == 2:
            setattr(opt, attr, value)
            setattr(ref_opt, attr, value)
        step(params, state, X, Y)
        ref_params, ref_state = eager_step(ref_opt, ref_params, ref_state)
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-5, atol=1e-7)
    assert getattr(opt, attr) == value
    assert step.cache_info().misses == 1  # a new number is an input, not a new trace


def test_learning_rate_zero_freezes_the_parameters():
    opt = jg.optim.SGD(0.1)
    step = jg.jit_train_step(loss_fn, opt)
    params, state = init_params(), opt.init(init_params())
    step(params, state, X, Y)
    opt.learning_rate = 0.0
    frozen = {k: v.copy() for k, v in params.items()}
    for _ in range(2):
        step(params, state, X, Y)
    for k in params:
        np.testing.assert_array_equal(params[k], frozen[k])
    assert int(state["step"]) == 3


def test_a_replaced_schedule_or_flag_retraces():
    """Number -> schedule -> another schedule -> number, then a flag: each change of the
    update's code retraces; the steps follow the eager update throughout."""
    opt = jg.optim.SGD(0.1, momentum=0.9)
    ref_opt = jg.optim.SGD(0.1, momentum=0.9)
    step = jg.jit_train_step(loss_fn, opt)
    params, state = init_params(), opt.init(init_params())
    ref_params, ref_state = init_params(), opt.init(init_params())
    changes = [
        ("learning_rate", jg.optim.exponential_decay(0.1, 1, 0.5)),
        ("learning_rate", jg.optim.piecewise_constant([2], [0.3, 0.01])),
        ("learning_rate", 0.02),
        ("nesterov", True),
    ]
    for attr, value in changes:
        step(params, state, X, Y)
        ref_params, ref_state = eager_step(ref_opt, ref_params, ref_state)
        setattr(opt, attr, value)
        setattr(ref_opt, attr, value)
    step(params, state, X, Y)
    ref_params, _ = eager_step(ref_opt, ref_params, ref_state)
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-5, atol=1e-7)
    assert step.cache_info().misses == 1 + len(changes)


# -- aliasing, state layout, step count, failing steps ---------------------------------------------


def _snapshot(*trees):
    return [leaf.copy() for tree in trees for leaf in jg.core.pytree.flatten(tree)[0]]


def _assert_unchanged(before, *trees):
    after = [leaf for tree in trees for leaf in jg.core.pytree.flatten(tree)[0]]
    assert len(before) == len(after)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old, strict=True)


def test_tied_parameters_raise_instead_of_losing_an_update():
    opt = jg.optim.SGD(0.1)
    params = init_params()
    params["b2"] = params["b1"][:3]  # a view: shares memory with b1
    state = opt.init(params)
    before = _snapshot(params, state)
    with pytest.raises(
        ValueError,
        match=r"params\['b1'\] and params\['b2'\] share memory"
        r".*test_train_step.py:\d+",
    ):
        jg.jit_train_step(loss_fn, opt)(params, state, X, Y)
    _assert_unchanged(before, params, state)


def test_aliasing_on_a_later_call_is_caught_on_the_fast_path():
    opt = jg.optim.Adam(0.01)
    step = jg.jit_train_step(loss_fn, opt)
    params, state = init_params(), opt.init(init_params())
    step(params, state, X, Y)
    step(params, state, X, Y)  # the fast entry is in place now
    state["v"]["w1"] = state["m"]["w1"]  # one zero array shared by two slots
    before = _snapshot(params, state)
    with pytest.raises(
        ValueError,
        match=r"opt_state\['m'\]\['w1'\] and "
        r"opt_state\['v'\]\['w1'\] share memory",
    ):
        step(params, state, X, Y)
    _assert_unchanged(before, params, state)
    state["v"]["w1"] = np.zeros_like(state["m"]["w1"])
    step(params, state, X, Y)  # separate arrays again: the step runs
    assert int(state["step"]) == 3


def test_a_state_of_another_optimizer_names_the_expected_structure():
    params = init_params()
    state = jg.optim.SGD(0.1).init(params)
    with pytest.raises(
        ValueError,
        match=r"Adam.update: opt_state has the structure "
        r"\{'step': array\}, but Adam.init\(params\) makes "
        r"\{'m': \{'b1': array.*'step': array, 'v': ",
    ):
        jg.jit_train_step(loss_fn, jg.optim.Adam(0.01))(params, state, X, Y)


def test_an_int32_step_count_is_refused_with_the_conversion():
    opt = jg.optim.Adam(0.01)
    params = init_params()
    state = opt.init(params)
    state["step"] = np.zeros((), np.int32)  # as older versions made it
    with pytest.raises(
        TypeError,
        match=r"opt_state\['step'\] is int32\[\], but init\(params\) "
        r"makes int64\[\].*astype\(np.int64\)",
    ):
        jg.jit_train_step(loss_fn, opt)(params, state, X, Y)


def test_the_step_count_goes_past_2_31_like_the_eager_update():
    opt = jg.optim.Adam(0.01)
    params, state = init_params(), opt.init(init_params())
    state["step"][...] = 2**31 - 1
    ref_params, ref_state = eager_step(
        opt, init_params(), {k: np.copy(v) if k == "step" else v for k, v in state.items()}
    )
    jg.jit_train_step(loss_fn, opt)(params, state, X, Y)
    assert int(state["step"]) == 2**31 == int(ref_state["step"])
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-5, atol=1e-7)


def embedding_loss(p, idx, y):
    """A regulariser traced first: its parameter's Adam update can run before the gather."""
    reg = jg.reduce_sum(jg.square(p["w2"]))
    z = jg.gather(p["emb"], idx) @ p["w"]
    return reg + jg.reduce_mean(jg.square(z - y))


@pytest.mark.parametrize("first_call", [True, False])
def test_an_out_of_range_index_leaves_params_and_state_bitwise_unchanged(first_call):
    opt = jg.optim.Adam(0.1)
    r = np.random.default_rng(1)
    params = {
        "emb": r.standard_normal((10, 4)).astype(np.float32),
        "w": r.standard_normal(4).astype(np.float32),
        "w2": np.ones(5, np.float32),
    }
    state = opt.init(params)
    step = jg.jit_train_step(embedding_loss, opt)
    y = np.ones(3, np.float32)
    if not first_call:
        for _ in range(2):
            step(params, state, np.array([1, 2, 3], np.int32), y)
    before = _snapshot(params, state)
    with pytest.raises(IndexError, match="gather: index .*out of bounds"):
        step(params, state, np.array([1, 2, 30], np.int32), y)
    _assert_unchanged(before, params, state)


def test_every_op_whose_kernel_code_raises_is_marked_raises():
    """The in-place plan keeps writes after the last step that can raise (OpDef.raises): it
    must know them all. An emitter that writes a raise is its op's."""
    import inspect

    from jitgrad.backend.numba.emit import EMITTERS
    from jitgrad.core.opdef import REGISTRY

    raising = {
        name
        for name, method in EMITTERS.items()
        if any(
            word in inspect.getsource(method)
            for word in ("raise_index_error", "emit_checked_index", "raise ")
        )
    }
    assert raising and raising <= {name for name, op in REGISTRY.items() if op.raises}


def test_parameters_in_the_other_byte_order_are_refused_with_the_dtype():
    """They cannot be updated in place as they are (the kernel writes this machine's order)."""
    opt = jg.optim.SGD(0.1)
    params = init_params()
    state = opt.init(params)
    params["b1"] = params["b1"].astype(">f4")
    with pytest.raises(TypeError, match=r"params\['b1'\] .* got an array of >f4"):
        jg.jit_train_step(loss_fn, opt)(params, state, X, Y)
