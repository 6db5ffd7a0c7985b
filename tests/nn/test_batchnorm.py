"""BatchNorm: values against numpy, gradients against finite differences, running statistics
updated as state by the tape, by jit and by jit_train_step (the same sequence each way)."""

import numpy as np
import pytest

import jitgrad as jg

RNG = np.random.default_rng(3)
X = RNG.standard_normal((8, 5)).astype(np.float32) * 2 + 1
IMAGES = RNG.standard_normal((4, 3, 3, 2)).astype(np.float32)


def reference(x, gamma, beta, mean, variance, eps):
    return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def test_training_normalizes_with_the_batch_and_moves_the_statistics():
    bn = jg.nn.BatchNorm(momentum=0.9)
    params = bn.init(0, (None, 5))
    y = bn.apply(params, X, training=True)
    mean, variance = X.mean(0), X.var(0)
    np.testing.assert_allclose(y.numpy(), reference(X, 1, 0, mean, variance, 1e-3), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * variance, rtol=1e-6)
    # Inference uses the running statistics, and does not move them.
    y = bn.apply(params, X, training=False)
    moving = (bn.moving_mean.numpy(), bn.moving_variance.numpy())
    np.testing.assert_allclose(y.numpy(), reference(X, 1, 0, *moving, 1e-3), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), moving[0])


def test_channels_axis_of_images_and_keras_names():
    bn = jg.nn.BatchNormalization(axis=-1, momentum=0.5, center=False)
    bn(IMAGES, training=True)  # Keras style: builds Variables on the first call
    assert [v.name.split("/")[-1] for v in bn.trainable_variables] == ["gamma:0"]
    assert {v.name.split("/")[-1] for v in bn.variables} >= {"moving_mean:0", "moving_variance:0"}
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * IMAGES.mean((0, 1, 2)), rtol=1e-5)


def test_gradient_matches_finite_differences():
    bn = jg.nn.BatchNorm()
    params = {k: v.astype(np.float64) for k, v in bn.init(0, (None, 5)).items()}
    bn.moving_mean = jg.Variable(np.zeros(5))
    bn.moving_variance = jg.Variable(np.ones(5))
    x = X.astype(np.float64)
    weights = RNG.standard_normal(x.shape)

    def loss(x, gamma):
        return jg.reduce_sum(bn.apply({"gamma": gamma, "beta": params["beta"]}, x, True) * weights)

    gx, gg = jg.grad(loss, argnums=(0, 1))(x, params["gamma"])
    eps = 1e-6
    for k in [(0, 0), (3, 2), (7, 4)]:
        step = np.zeros_like(x)
        step[k] = eps
        fd = float(loss(x + step, params["gamma"])) - float(loss(x - step, params["gamma"]))
        assert gx.numpy()[k] == pytest.approx(fd / (2 * eps), rel=1e-5, abs=1e-8)
    fd = float(loss(x, params["gamma"] + [eps, 0, 0, 0, 0])) - float(
        loss(x, params["gamma"] - [eps, 0, 0, 0, 0])
    )
    assert gg.numpy()[0] == pytest.approx(fd / (2 * eps), rel=1e-5)


def _model():
    return jg.nn.Sequential(
        [jg.nn.Dense(6, activation="relu"), jg.nn.BatchNorm(momentum=0.8), jg.nn.Dense(2)]
    )


def _loss(model):
    def loss(params, x, y):
        logits = model.apply(params, x, training=True)
        return jg.reduce_mean(jg.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    return loss


def test_jit_train_step_updates_the_running_statistics_like_the_tape():
    labels = (X[:, 0] > 1).astype(np.int32)
    eager_model, compiled_model = _model(), _model()
    eager_params = eager_model.init(0, (None, 5))
    compiled_params = compiled_model.init(0, (None, 5))
    opt = jg.optim.SGD(0.1)
    eager_state, compiled_state = opt.init(eager_params), opt.init(compiled_params)
    step = jg.jit_train_step(_loss(compiled_model), opt)
    grad = jg.value_and_grad(_loss(eager_model))
    for _ in range(4):
        loss = step(compiled_params, compiled_state, X, labels)
        want, grads = grad(eager_params, X, labels)
        eager_params, eager_state = opt.update(eager_params, grads, eager_state)
        assert float(loss) == pytest.approx(float(want), rel=1e-5)
    eager_bn, compiled_bn = eager_model.layers[1], compiled_model.layers[1]
    np.testing.assert_allclose(
        compiled_bn.moving_mean.numpy(), eager_bn.moving_mean.numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(
        compiled_bn.moving_variance.numpy(), eager_bn.moving_variance.numpy(), rtol=1e-5
    )
    assert not np.allclose(compiled_bn.moving_variance.numpy(), 1.0)
    # Inference under jit reads the statistics at each call (not frozen at trace time).
    infer = jg.jit(lambda p, x: compiled_model.apply(p, x, training=False))
    before = infer(compiled_params, X).numpy()
    compiled_bn.moving_mean.assign(compiled_bn.moving_mean.numpy() + 1.0)
    assert not np.allclose(infer(compiled_params, X).numpy(), before)


def test_apply_before_init_is_a_clear_error():
    with pytest.raises(ValueError, match="call init"):
        jg.nn.BatchNorm().apply({}, X)
