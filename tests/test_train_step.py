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
    return {"w1": (r.standard_normal((6, 8)) * 0.3).astype(np.float32),
            "b1": np.zeros(8, np.float32),
            "w2": (r.standard_normal((8, 3)) * 0.3).astype(np.float32),
            "b2": np.zeros(3, np.float32)}


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
            [np.asarray(v) for v in jg.core.pytree.flatten(state)[0]])
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


def test_train_step_refuses_arrays_it_cannot_update_in_place():
    opt = jg.optim.SGD(0.1)
    params = init_params()
    state = opt.init(params)
    params["w1"] = params["w1"].T.copy().T  # not C-contiguous
    with pytest.raises(TypeError, match="C-contiguous"):
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
