"""Layers: shapes and values against numpy, eager == compiled (one kernel for every layer,
forward and backward), the TensorFlow style against the functional one, keyed dropout."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.nn import (
    MLP,
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    MaxPool2D,
    Sequential,
    dropout,
    fold_in,
    losses,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(6, 4)).astype(np.float32)


def _relu(x):
    return np.maximum(x, 0)


def test_dense_matches_numpy_and_flattens_leading_axes():
    layer = Dense(3, activation="relu")
    params = layer.init(0, (None, 4))
    assert params["kernel"].shape == (4, 3) and params["bias"].shape == (3,)
    params["bias"] = np.array([0.5, -0.5, 0.1], np.float32)
    expected = _relu(X @ params["kernel"] + params["bias"])
    np.testing.assert_allclose(layer.apply(params, X).numpy(), expected, rtol=1e-6)
    x3 = X.reshape(2, 3, 4)
    out = layer.apply(params, x3)
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out.numpy(), expected.reshape(2, 3, 3), rtol=1e-6)
    assert set(Dense(2, use_bias=False).init(0, (4,))) == {"kernel"}


def test_layer_norm_matches_numpy_over_one_and_several_axes():
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    for axis in (-1, (1, 2)):
        layer = LayerNorm(axis=axis, epsilon=1e-5)
        params = layer.init(0, x.shape)
        params = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        axes = (2,) if axis == -1 else axis
        mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
        shape = [d if i in axes else 1 for i, d in enumerate(x.shape)]
        expected = (x - mean) / np.sqrt(var + 1e-5) * params["gamma"].reshape(shape) + params[
            "beta"
        ].reshape(shape)
        np.testing.assert_allclose(layer.apply(params, x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_embedding_looks_up_rows():
    layer = Embedding(10, 3)
    params = layer.init(0, (None, 5))
    assert params["embeddings"].shape == (10, 3)
    assert np.abs(params["embeddings"]).max() <= 0.05
    ids = np.array([[1, 2, 9], [0, 0, 3]])
    np.testing.assert_array_equal(layer.apply(params, ids).numpy(), params["embeddings"][ids])
    assert layer.output_shape((2, 3)) == (2, 3, 3)


def test_mlp_structure_activations_and_reproducible_init():
    mlp = MLP([8, 8, 2], activation="tanh")
    params = mlp.init(0, (None, 4))
    assert list(params) == ["dense", "dense_1", "dense_2"]
    assert [params[k]["kernel"].shape for k in params] == [(4, 8), (8, 8), (8, 2)]
    h = X
    for name in ("dense", "dense_1"):
        h = np.tanh(h @ params[name]["kernel"] + params[name]["bias"])
    expected = h @ params["dense_2"]["kernel"] + params["dense_2"]["bias"]
    np.testing.assert_allclose(mlp.apply(params, X).numpy(), expected, rtol=1e-5, atol=1e-6)
    again = mlp.init(0, (None, 4))
    np.testing.assert_array_equal(again["dense_1"]["kernel"], params["dense_1"]["kernel"])
    # one generator threaded through the layers: layers of equal shape differ
    assert not np.array_equal(params["dense"]["kernel"][:, :2], params["dense_1"]["kernel"][:4, :2])
    assert mlp.output_shape((None, 4)) == (None, 2)


def test_dropout_keeps_the_expected_fraction_scaled_and_is_keyed():
    x = np.ones((200, 100), np.float32)
    y = dropout(x, 0.3, key=5).numpy()
    kept = y != 0
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(dropout(x, 0.3, key=np.int64(5)).numpy(), y)
    other = dropout(x, 0.3, key=6).numpy() != 0
    assert 0.5 < (other == kept).mean() < 0.65  # independent masks agree on 0.7^2 + 0.3^2
    # no visible structure: neighbouring elements are uncorrelated
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < 0.02
    layer = Dropout(0.3)
    assert layer.apply({}, x) is x
    with pytest.raises(ValueError, match="needs key="):
        layer.apply({}, x, training=True)
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_dropout_gradient_is_the_scaled_mask():
    x = jg.constant(rng.normal(size=(4, 5)).astype(np.float32))
    with jg.GradientTape() as tape:
        tape.watch(x)
        y = dropout(x, 0.5, key=1)
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, np.where(y.numpy() != 0, 2.0, 0.0))


def test_fold_in_gives_distinct_keys():
    keys = {int(fold_in(0, i)) for i in range(20)} | {int(fold_in(1, i)) for i in range(20)}
    assert len(keys) == 40


MODEL = Sequential(
    [Dense(8), LayerNorm(), Dropout(0.25), Dense(5, activation="gelu"), Dropout(0.5), Dense(3)]
)
EMBEDDING = Embedding(12, 4)
X3 = rng.normal(size=(6, 4)).astype(np.float32)
LABELS = np.array([0, 2, 1, 1, 1, 0])
IDS = np.array([[1, 4, 7], [11, 0, 4]])


def _loss_and_outputs(params, x, labels, key, table, ids):
    logits = MODEL.apply(params, x, training=True, key=key)
    embedded = EMBEDDING.apply({"embeddings": table}, ids)
    return losses.sparse_softmax_cross_entropy(labels, logits), (logits, embedded)


def test_layers_eager_equal_compiled_forward_and_backward():
    """One kernel for every layer: the model's value and gradients, and an embedding lookup."""
    params = MODEL.init(0, X3.shape)
    table = EMBEDDING.init(0, IDS.shape)["embeddings"]
    eager_fn = jg.value_and_grad(_loss_and_outputs, has_aux=True)
    (loss, (logits, embedded)), grads = eager_fn(params, X3, LABELS, 3, table, IDS)
    compiled = jg.jit(eager_fn)
    (c_loss, (c_logits, c_embedded)), c_grads = compiled(
        params, X3, LABELS, np.int32(3), table, IDS
    )
    np.testing.assert_array_equal(c_logits.numpy() == 0, logits.numpy() == 0)  # same masks
    np.testing.assert_allclose(c_logits.numpy(), logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(c_embedded.numpy(), embedded.numpy())
    assert float(c_loss) == pytest.approx(float(loss), rel=1e-5)
    for name in params:
        for k in params[name]:
            np.testing.assert_allclose(
                c_grads[name][k].numpy(), grads[name][k].numpy(), rtol=1e-4, atol=1e-6
            )
    # a new key is a new input value, not a new compilation
    (_, (other, _)), _ = compiled(params, X3, LABELS, np.int32(4), table, IDS)
    assert not np.array_equal(other.numpy(), c_logits.numpy())
    assert compiled.cache_info().versions == 1
    # not training: dropout is the identity, deterministic
    first = MODEL.apply(params, X3).numpy()
    np.testing.assert_array_equal(MODEL.apply(params, X3, key=9).numpy(), first)


def test_tensorflow_style_builds_variables_equal_to_functional_init():
    model = Sequential([Dense(5, activation="relu"), Dropout(0.2), Dense(2)], seed=7)
    y = jg.constant(rng.normal(size=(6, 2)).astype(np.float32))
    out = model(X)
    params = model.init(7, X.shape)
    np.testing.assert_array_equal(out.numpy(), model.apply(params, X).numpy())
    names = [v.name for v in model.trainable_variables]
    assert names == [
        "sequential/dense/kernel:0",
        "sequential/dense/bias:0",
        "sequential/dense_1/kernel:0",
        "sequential/dense_1/bias:0",
    ]
    assert all(isinstance(v, jg.Variable) for v in model.trainable_variables)

    with jg.GradientTape() as tape:
        loss = losses.mean_squared_error(y, model(X, training=True, key=2))
    tape_grads = tape.gradient(loss, model.trainable_variables)
    grads = jg.grad(
        lambda p: losses.mean_squared_error(y, model.apply(p, X, training=True, key=2))
    )(params)
    functional = [
        grads[a][b]
        for a, b in [
            ("dense", "kernel"),
            ("dense", "bias"),
            ("dense_1", "kernel"),
            ("dense_1", "bias"),
        ]
    ]
    for g_tape, g in zip(tape_grads, functional):
        np.testing.assert_array_equal(g_tape.numpy(), g.numpy())


def test_unbuilt_layer_has_no_variables_and_errors_are_clear():
    layer = Dense(2)
    assert layer.trainable_variables == []
    layer.build((None, 3))
    assert [v.shape for v in layer.trainable_variables] == [(3, 2), (2,)]
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(2, activation="swishy")


def test_conv_layers_build_a_lenet_whose_gradients_match_eager():
    """Conv2D, MaxPool2D, AvgPool2D and Flatten: Keras' names and output shapes, and a small
    CNN's compiled value and gradients equal the tape's."""
    model = Sequential(
        [
            Conv2D(3, 3, activation="relu"),
            MaxPool2D(2),
            Conv2D(4, 2, padding="same"),
            AvgPool2D(2, strides=1),
            Flatten(),
            Dense(2),
        ]
    )
    shape = (None, 9, 9, 1)
    params = model.init(0, shape)
    assert list(params) == ["conv2d", "conv2d_1", "dense"]
    assert model.output_shape(shape) == (None, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 9, 1)).astype(np.float32)
    y = np.array([0, 1], np.int32)

    def loss(p, x, y):
        logits = model.apply(p, x)
        return jg.reduce_mean(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )

    value, grads = jg.jit_grad(loss, wrt=0)(params, x, y)
    want_value, want_grads = jg.value_and_grad(loss)(params, x, y)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    for layer in params:
        for name in params[layer]:
            np.testing.assert_allclose(
                np.asarray(grads[layer][name]),
                np.asarray(want_grads[layer][name]),
                rtol=1e-4,
                atol=1e-6,
            )
    with pytest.raises(ValueError, match="padding must be"):
        Conv2D(3, 3, padding="full")
