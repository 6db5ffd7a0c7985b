"""TensorFlow compatibility: Module, function, tensor formatting, norms and clipping, the tape's
TensorFlow semantics, and the models of TensorFlow's guides ("Basic training loops", the
Core-API logistic regression and MLP) written verbatim apart from `import jitgrad as tf` (their
data pipelines, pandas and tf.data, are replaced by small synthetic arrays)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import jitgrad as tf
from jitgrad.ops.norms import global_norm
from jitgrad.testing import check_grads

rng = np.random.default_rng(15)

# ---------------------------------------------------------------------------------------------
# Module


class Leaf(tf.Module):
    def __init__(self, value, name=None):
        super().__init__(name=name)
        self.v = tf.Variable(value, name="v")


class Tree(tf.Module):
    """Attributes of every kind the walk opens, named so that sorted order differs from
    assignment order."""

    def __init__(self):
        super().__init__()
        self.z_list = [Leaf(1.0, "first"), tf.Variable(2.0, name="in_list")]
        self.a_dict = {"y": tf.Variable(3.0, name="dict_y"), "b": (Leaf(4.0, "in_tuple"),)}
        self.m_frozen = tf.Variable(5.0, name="frozen", trainable=False)
        self.not_a_variable = tf.constant(6.0)
        self.label = "text"


def test_module_name_defaults_to_the_snake_case_class_name():
    class MyDenseLayer(tf.Module):
        pass

    class MLP(tf.Module):
        pass

    assert MyDenseLayer().name == "my_dense_layer"
    assert MLP().name == "mlp"
    assert Leaf(1.0, name="encoder").name == "encoder"
    for bad in ("has space", "a.b", "1st"):
        with pytest.raises(ValueError, match="not a valid module name"):
            tf.Module(name=bad)
    assert tf.nn.Dense(3, name="my-dense").name == "my-dense"  # Keras' names are not checked


def test_module_walk_finds_variables_in_tensorflows_order():
    tree = Tree()
    names = [v.name for v in tree.variables]
    # a_dict (keys sorted: b's tuple holds a module, walked later; then y), m_frozen, z_list's
    # Variable; then the sub-modules in the order found: in_tuple's v, first's v.
    assert names == ["dict_y:0", "frozen:0", "in_list:0", "v:0", "v:0"]
    assert [v.numpy() for v in tree.variables][-2:] == [4.0, 1.0]
    assert [v.name for v in tree.trainable_variables] == [
        "dict_y:0",
        "in_list:0",
        "v:0",
        "v:0",
    ]
    assert [m.name for m in tree.submodules] == ["in_tuple", "first"]
    assert isinstance(tree.variables, tuple)


def test_module_walk_reports_each_object_once_and_survives_cycles():
    shared = Leaf(1.0)
    parent = tf.Module()
    parent.a = shared
    parent.b = [shared, shared.v]
    shared.parent = parent  # a cycle
    assert len(parent.variables) == 1
    assert parent.submodules == (shared,)
    assert shared.submodules == (parent,)


def test_module_without_super_init_and_with_nested_modules():
    class Normalize(tf.Module):
        def __init__(self, x):
            self.mean = tf.Variable(tf.math.reduce_mean(x, axis=0))

    class Outer(tf.Module):
        def __init__(self):
            self.inner = Normalize(np.ones((3, 2), np.float32))

    assert Normalize(np.ones((2, 2))).name == "normalize"
    outer = Outer()
    assert len(outer.variables) == 1 and outer.submodules[0].name == "normalize"
    assert outer.name_scope.name == "outer/"


def test_name_scope_prefixes_variable_names():
    with tf.name_scope("block"):
        with tf.name_scope("dense"):
            v = tf.Variable(1.0, name="w")
        u = tf.Variable(1.0)
    assert (v.name, u.name) == ("block/dense/w:0", "block/Variable:0")

    class Dense(tf.Module):
        @tf.Module.with_name_scope
        def __call__(self, x):
            if not hasattr(self, "w"):
                self.w = tf.Variable(2.0, name="w")
            return x * self.w

    with tf.name_scope("model"):
        layer = Dense()
    layer(1.0)
    assert layer.name_scope.name == "model/dense/"
    assert layer.w.name == "model/dense/w:0"


def test_variable_names_have_tensorflows_suffix():
    assert tf.Variable(1.0).name == "Variable:0"
    assert tf.Variable(1.0, name="w").name == "w:0"
    assert "'w:0'" in repr(tf.Variable(1.0, name="w"))


def test_nn_layers_are_modules_with_keras_names_and_order():
    model = tf.nn.Sequential([tf.nn.Dense(3, activation="relu"), tf.nn.Dense(2)], seed=0)
    model(np.ones((4, 5), np.float32))
    assert isinstance(model, tf.Module)
    assert [layer.name for layer in model.submodules] == ["dense", "dense"]
    assert [v.name for v in model.variables] == [
        "sequential/dense/kernel:0",
        "sequential/dense/bias:0",
        "sequential/dense_1/kernel:0",
        "sequential/dense_1/bias:0",
    ]
    assert model.trainable_variables == model.variables
    with tf.name_scope("outer"):
        layer = tf.nn.Dense(2)
    assert layer.name_scope.name == "outer/dense/"


# ---------------------------------------------------------------------------------------------
# function


def test_function_as_decorator_with_and_without_arguments():
    @tf.function
    def square(x):
        return x * x

    @tf.function(reduce_retracing=True, jit_compile=True, autograph=False, experimental_foo=1)
    def cube(x):
        return x * x * x

    assert float(square(3.0)) == 9.0
    assert float(cube(2.0)) == 8.0
    assert float(tf.function(lambda x: x + 1.0)(1.0)) == 2.0
    with pytest.raises(TypeError, match="unexpected keyword"):
        tf.function(lambda x: x, jit_compil=True)


def test_function_flags_with_bool_and_str_defaults_are_static():
    @tf.function
    def f(x, training=False, mode="double"):
        if training:  # Python control flow on a flag, as in TensorFlow
            x = x + 1.0
        return x * 2.0 if mode == "double" else x

    assert float(f(1.0)) == 2.0
    assert float(f(1.0, training=True)) == 4.0
    assert float(f(1.0, True, "same")) == 2.0
    assert f.cache_info().versions == 3


def test_function_input_signature_converts_and_checks():
    @tf.function(input_signature=[tf.TensorSpec(shape=[None, 2], dtype=tf.float32)])
    def total(x):
        return tf.reduce_sum(x)

    assert float(total(np.ones((3, 2)))) == 6.0  # float64 data converted to the spec's float32
    assert float(total([[1.0, 2.0]])) == 3.0
    with pytest.raises(TypeError, match="does not match its input_signature"):
        total(np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="does not match its input_signature"):
        total(tf.constant(np.ones((1, 2))))  # a float64 tensor is not converted
    with pytest.raises(TypeError, match="input_signature has 1"):
        total(np.ones((1, 2)), np.ones((1, 2)))
    spec = tf.TensorSpec([None, 2])
    assert spec.is_compatible_with(np.zeros((5, 2), np.float32))
    assert not spec.is_compatible_with(np.zeros((5, 2, 1), np.float32))
    assert tf.TensorSpec(None, tf.float64).is_compatible_with(np.zeros((1, 2, 3)))


class Scaler(tf.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = tf.Variable(scale)
        self.offset = 1.0  # a Python attribute: a constant of the trace

    @tf.function
    def __call__(self, x):
        return x * self.scale + self.offset

    @tf.function
    def twice(self, x, negate=False):
        y = self(x) * 2.0
        return -y if negate else y


def test_function_on_module_methods_reads_variables_at_each_call():
    a, b = Scaler(2.0), Scaler(3.0)
    x = np.float32([1.0, 2.0])
    np.testing.assert_allclose(a(x).numpy(), [3.0, 5.0])
    np.testing.assert_allclose(b(x).numpy(), [4.0, 7.0])  # its own instance, its own Variable
    a.scale.assign(10.0)
    np.testing.assert_allclose(a(x).numpy(), [11.0, 21.0])  # no retrace: the Variable is input
    assert type(a).__call__.__get__(a).cache_info().versions == 1
    bound = a.__call__
    assert bound is a.__call__  # one compiled function per instance
    np.testing.assert_allclose(bound(x).numpy(), [11.0, 21.0])
    np.testing.assert_allclose(a.twice(x, negate=True).numpy(), [-22.0, -42.0])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(a(x))
    assert float(tape.gradient(y, a.scale)) == 3.0


def test_function_first_call_that_creates_variables_runs_eagerly():
    class Lazy(tf.Module):
        def __init__(self):
            self.built = False

        @tf.function
        def __call__(self, x):
            if not self.built:
                # an initial value computed from the traced input: not concrete when traced
                self.w = tf.Variable(tf.ones((x.shape[1], 2)) * tf.reduce_mean(x))
                self.built = True
            return tf.matmul(x, self.w)

    lazy = Lazy()
    x = np.float32([[1.0, 3.0]])
    first = lazy(x).numpy()
    np.testing.assert_allclose(first, [[8.0, 8.0]])
    np.testing.assert_allclose(lazy(x).numpy(), first)  # traced now, reading the Variable
    assert len(lazy.variables) == 1

    @tf.jit
    def make(x):
        return tf.Variable(x * 2.0)

    with pytest.raises(tf.TracerError, match="Variable created from a traced value"):
        make(np.float32(1.0))


# ---------------------------------------------------------------------------------------------
# Formatting


def test_tensor_format_is_numpys():
    loss = tf.constant(0.123456789)
    assert f"{loss:.5f}" == "0.12346"
    assert f"{loss:2.5f}" == f"{np.float32(0.123456789):2.5f}"
    t = tf.constant([1.0, 2.5])
    assert f"{t}" == f"{np.float32([1.0, 2.5])}"
    with pytest.raises(TypeError):
        f"{t:.2f}"  # numpy arrays refuse a number format too
    v = tf.Variable(1.25, name="w")
    assert f"{v:1.2f}" == "1.25" and f"{v}" == str(v)

    @tf.jit
    def formats(x):
        return f"{x:.2f}"

    with pytest.raises(tf.TracerError, match="format"):
        formats(np.float32(1.0))


# ---------------------------------------------------------------------------------------------
# identity, norm, clipping


def test_identity_is_a_new_tensor_with_gradient_one():
    v = tf.Variable([1.0, -0.0])
    with tf.GradientTape() as tape:
        y = tf.identity(v)
    assert type(y) is tf.Tensor and np.signbit(y.numpy()[1])
    np.testing.assert_array_equal(tape.gradient(y, v).numpy(), [1.0, 1.0])
    assert tf.identity([True, False]).numpy().tolist() == [True, False]


VECTOR_ORDS = ["euclidean", 1, 2, np.inf, 3.0, 0.5]
MATRIX_ORDS = ["euclidean", "fro", 1, 2, np.inf]


@pytest.mark.parametrize("order", VECTOR_ORDS)
@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_vector_norms_match_numpy(order, axis, keepdims):
    x = rng.normal(size=(3, 4))
    got = tf.norm(x, ord=order, axis=axis, keepdims=keepdims).numpy()
    numpy_ord = 2 if order == "euclidean" else order
    if axis is None:  # all elements, as one vector
        want = np.linalg.norm(x.reshape(-1), ord=numpy_ord)
        want = np.full([1] * x.ndim, want) if keepdims else want
    else:
        want = np.linalg.norm(x, ord=numpy_ord, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("order", MATRIX_ORDS)
@pytest.mark.parametrize("axis", [(0, 1), (-1, -2), (2, 0)])
def test_matrix_norms_match_numpy(order, axis):
    if order == 2:
        pytest.importorskip("jitgrad.ops.matrix")  # svd: jitgrad.linalg
    x = rng.normal(size=(2, 3, 4))
    numpy_ord = "fro" if order == "euclidean" else order
    for keepdims in (False, True):
        got = tf.norm(x, ord=order, axis=axis, keepdims=keepdims).numpy()
        want = np.linalg.norm(x, ord=numpy_ord, axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize(
    "order, axis", [(o, None) for o in VECTOR_ORDS] + [(o, (0, 1)) for o in MATRIX_ORDS]
)
def test_norm_gradients_match_finite_differences(order, axis):
    if order == 2 and axis is not None:
        pytest.importorskip("jitgrad.ops.matrix")
    # Away from 0 and from ties (the 1- and inf-norms' kinks), in float64.
    x = rng.uniform(0.5, 1.5, size=(3, 3)) * rng.choice([-1.0, 1.0], size=(3, 3))
    x += np.diag([0.0, 0.7, 1.6])
    check_grads(lambda a: tf.norm(a, ord=order, axis=axis), [x], order=1, rtol=1e-6)


def test_norm_gradient_at_zero_is_tensorflows():
    """TensorFlow's euclidean and p-norms are sqrt(sum(x*x)) and (sum |x|^p)^(1/p): their
    gradient at 0 is 0 * inf = NaN; the 1- and inf-norms' subgradient there is 0."""
    zero = tf.Variable(np.zeros(3))
    for order, want in [("euclidean", np.nan), (2, np.nan), (3.0, np.nan), (1, 0.0), (np.inf, 0)]:
        with tf.GradientTape() as tape, np.errstate(all="ignore"):
            n = tf.norm(zero, ord=order)
        with np.errstate(all="ignore"):
            g = tape.gradient(n, zero).numpy()
        assert float(n) == 0.0
        np.testing.assert_array_equal(g, np.full(3, want))


def test_norm_errors_name_the_problem():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="norm: ord='fro' is not a vector norm"):
        tf.norm(x, ord="fro")
    with pytest.raises(ValueError, match="ord=3 is not a matrix norm"):
        tf.norm(x, ord=3, axis=(0, 1))
    with pytest.raises(ValueError, match="2 unique integer axes"):
        tf.norm(x, axis=(1, 1))
    with pytest.raises(ValueError, match="out of range"):
        tf.norm(x, axis=2)
    with pytest.raises(ValueError, match="ord=-1 is not a vector norm"):
        tf.norm(x, ord=-1)
    with pytest.raises(TypeError, match="float tensor"):
        tf.norm(np.ones(3, np.int32))


def test_clip_by_norm_matches_tensorflows_formula_and_has_finite_gradients_at_zero():
    t = np.float64([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(tf.clip_by_norm(t, 1.0).numpy(), t / np.linalg.norm(t))
    np.testing.assert_allclose(tf.clip_by_norm(t, 1.0, axes=[1]).numpy(), [[0.6, 0.8], [0.3, 0.4]])
    check_grads(lambda a: tf.clip_by_norm(a, 1.0, axes=[1]), [t], order=2)
    zero = tf.Variable(np.zeros(2))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.clip_by_norm(zero, 1.0))
    np.testing.assert_array_equal(tape.gradient(y, zero).numpy(), [1.0, 1.0])


def test_clip_by_global_norm():
    grads = [np.float32([3.0]), None, np.float32([[4.0]])]
    clipped, norm = tf.clip_by_global_norm(grads, 1.0)
    assert float(norm) == 5.0 and clipped[1] is None
    np.testing.assert_allclose(clipped[0].numpy(), [0.6], rtol=1e-6)
    np.testing.assert_allclose(clipped[2].numpy(), [[0.8]], rtol=1e-6)
    unchanged, _ = tf.clip_by_global_norm(grads, 10.0)
    np.testing.assert_array_equal(unchanged[0].numpy(), [3.0])
    with np.errstate(invalid="ignore"):
        inf, _ = tf.clip_by_global_norm([np.float32([np.inf, 1.0])], 1.0)
    assert np.isnan(inf[0].numpy()).all()  # TensorFlow's rule for a non-finite norm
    assert float(global_norm([np.ones(4)])) == 2.0
    with pytest.raises(TypeError, match="t_list must be a list"):
        tf.clip_by_global_norm(np.ones(3), 1.0)


def test_norms_compile():
    @tf.jit
    def f(x):
        clipped, total = tf.clip_by_global_norm([x, 2.0 * x], 1.0)
        return tf.norm(x, ord=1, axis=[0, 1]) + tf.norm(clipped[1]) + total + tf.identity(x)[0, 0]

    x = rng.normal(size=(2, 3))
    np.testing.assert_allclose(f(x).numpy(), f.fn(tf.constant(x)).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Tape semantics


def test_gradient_of_a_variable_with_respect_to_itself_is_ones():
    v = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        y = v
    np.testing.assert_array_equal(tape.gradient(y, v).numpy(), [1.0, 1.0])
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        y = v
    assert tape.gradient(y, v) is None  # not watched
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(v)
    np.testing.assert_array_equal(tape.gradient(v, v).numpy(), [1.0, 1.0])


def test_integer_target_gives_none_with_a_warning():
    x = tf.Variable(2.0)
    with tf.GradientTape() as tape:
        y = tf.cast(x * 3.0, tf.int32)
        z = x * 3.0
    with pytest.warns(RuntimeWarning, match="target has dtype int32"):
        assert tape.gradient(y, x) is None
    with tf.GradientTape() as tape:
        y = tf.cast(x * 3.0, tf.int32)
        z = x * 3.0
    with pytest.warns(RuntimeWarning):
        assert float(tape.gradient([y, z], x)) == 3.0  # the float target still counts


def test_unconnected_gradients_enum():
    x, y = tf.Variable(1.0), tf.Variable([1.0, 2.0])
    with tf.GradientTape(persistent=True) as tape:
        z = x * 2.0
    dx, dy = tape.gradient(z, [x, y], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    np.testing.assert_array_equal(dy.numpy(), [0.0, 0.0])
    assert tape.gradient(z, y, unconnected_gradients=tf.UnconnectedGradients.NONE) is None
    assert tape.jacobian(z, y, unconnected_gradients=tf.UnconnectedGradients.ZERO).shape == (2,)


def test_gradient_through_an_op_without_gradient_raises_lookup_error():
    """TensorFlow's autodiff guide, verbatim."""
    image = tf.Variable([[[0.5, 0.0, 0.0]]])
    delta = tf.Variable(0.1)

    with tf.GradientTape() as tape:
        new_image = tf.image.adjust_contrast(image, delta)

    try:
        print(tape.gradient(new_image, [image, delta]))
        assert False  # This should not happen.  # noqa: B011 - the guide's line
    except LookupError as e:
        assert "gradient registry has no entry for: adjust_contrast" in f"{type(e).__name__}: {e}"

    with pytest.raises(LookupError, match="adjust_contrast"):
        tf.jit_grad(lambda x: tf.reduce_sum(tf.image.adjust_contrast(x, 2.0)))(np.ones((2, 2, 1)))
    # Without a path to a differentiated value, no gradient is asked of it.
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.image.adjust_contrast(tf.stop_gradient(image), 2.0)) + delta
    assert float(tape.gradient(y, delta)) == 1.0


def test_linspace_of_python_ints_is_float64_as_in_tensorflow():
    assert tf.linspace(-2, 2, 5).dtype == tf.float64
    assert tf.linspace(-2.0, 2.0, 5).dtype == tf.float32
    np.testing.assert_array_equal(tf.linspace(-2, 2, 5).numpy(), np.linspace(-2, 2, 5))


def test_convert_to_tensor_of_a_traced_value_returns_it():
    seen = []

    @tf.jit
    def f(x):
        y = tf.convert_to_tensor(x)
        seen.append(y is x)
        return tf.convert_to_tensor(y, dtype=tf.float32) * 2.0

    assert float(f(np.float32(1.5))) == 3.0 and seen == [True]


# ---------------------------------------------------------------------------------------------
# The guides' models, verbatim apart from the import (and plots, data loading)

TRUE_W = 3.0
TRUE_B = 2.0

NUM_EXAMPLES = 201


def test_basic_training_loops_guide():
    x = tf.linspace(-2, 2, NUM_EXAMPLES)
    x = tf.cast(x, tf.float32)

    def f(x):
        return x * TRUE_W + TRUE_B

    noise = tf.constant(np.random.default_rng(0).normal(size=NUM_EXAMPLES), tf.float32)
    y = f(x) + noise

    class MyModel(tf.Module):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            # Initialize the weights to `5.0` and the bias to `0.0`
            # In practice, these should be randomly initialized
            self.w = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def __call__(self, x):
            return self.w * x + self.b

    model = MyModel()

    # List the variables tf.modules's built-in variable aggregation.
    print("Variables:", model.variables)

    # Verify the model works
    assert model(3.0).numpy() == 15.0

    def loss(target_y, predicted_y):
        return tf.reduce_mean(tf.square(target_y - predicted_y))

    def train(model, x, y, learning_rate):
        with tf.GradientTape() as t:
            # Trainable variables are automatically tracked by GradientTape
            current_loss = loss(y, model(x))

        # Use GradientTape to calculate the gradients with respect to W and b
        dw, db = t.gradient(current_loss, [model.w, model.b])

        # Subtract the gradient scaled by the learning rate
        model.w.assign_sub(learning_rate * dw)
        model.b.assign_sub(learning_rate * db)

    model = MyModel()
    weights = []
    biases = []
    epochs = range(10)
    lines = []

    def report(model, loss):
        return f"W = {model.w.numpy():1.2f}, b = {model.b.numpy():1.2f}, loss={current_loss:2.5f}"

    def training_loop(model, x, y):
        for epoch in epochs:
            # Update the model with the single giant batch
            train(model, x, y, learning_rate=0.1)

            # Track this before I update
            weights.append(model.w.numpy())
            biases.append(model.b.numpy())
            current_loss = loss(y, model(x))

            lines.append(f"Epoch {epoch:2d}:")
            lines.append("    " + report(model, current_loss))

    current_loss = loss(y, model(x))
    lines.append("    " + report(model, current_loss))
    training_loop(model, x, y)
    assert lines[0].startswith("    W = 5.00, b = 0.00, loss=")
    assert abs(weights[-1] - TRUE_W) < 0.3 and abs(biases[-1] - TRUE_B) < 0.5
    assert "Current loss: %1.6f" % loss(model(x), y).numpy()  # noqa: UP031 - the guide's
    assert [v.name for v in model.variables] == ["Variable:0", "Variable:0"]


def _breast_cancer_like(n=160, features=6):
    """Two separable classes, standing in for the guide's Wisconsin data."""
    data = np.random.default_rng(3)
    y = (data.random(n) < 0.4).astype(np.float32)
    x = data.normal(size=(n, features)).astype(np.float32) * 3.0 + 10.0
    x[:, :3] += 4.0 * y[:, None]
    return x, y


def test_core_logistic_regression_guide():
    x_train, y_train = _breast_cancer_like()
    x_train, y_train = (
        tf.convert_to_tensor(x_train, dtype=tf.float32),
        tf.convert_to_tensor(y_train, dtype=tf.float32),
    )

    class Normalize(tf.Module):
        def __init__(self, x):
            # Initialize the mean and standard deviation for normalization
            self.mean = tf.Variable(tf.math.reduce_mean(x, axis=0))
            self.std = tf.Variable(tf.math.reduce_std(x, axis=0))

        def norm(self, x):
            # Normalize the input
            return (x - self.mean) / self.std

        def unnorm(self, x):
            # Unnormalize the input
            return (x * self.std) + self.mean

    norm_x = Normalize(x_train)
    x_train_norm = norm_x.norm(x_train)

    def log_loss(y_pred, y):
        # Compute the log loss
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=y_pred)
        return tf.reduce_mean(ce)

    class LogisticRegression(tf.Module):
        def __init__(self):
            self.built = False

        def __call__(self, x, train=True):
            # Initialize the model parameters on the first call
            if not self.built:
                # Randomly generate the weight vector and bias term
                rand_w = tf.random.uniform(shape=[x.shape[-1], 1], seed=22)
                rand_b = tf.random.uniform(shape=[], seed=22)
                self.w = tf.Variable(rand_w)
                self.b = tf.Variable(rand_b)
                self.built = True
            # Compute model output
            z = tf.add(tf.matmul(x, self.w), self.b)
            z = tf.squeeze(z, axis=1)
            if train:
                return z
            return tf.sigmoid(z)

    log_reg = LogisticRegression()
    y_pred = log_reg(x_train_norm[:5], train=False)
    assert ((y_pred.numpy() > 0) & (y_pred.numpy() < 1)).all()

    def predict_class(y_pred, thresh=0.5):
        # Return a tensor with : 1. if y_pred_i > 0.5 and 0. ow/
        return tf.cast(y_pred > thresh, tf.float32)

    def accuracy(y_pred, y):
        # Return the proportion of matches between y_pred and y
        y_pred = tf.math.sigmoid(y_pred)
        y_pred_class = predict_class(y_pred)
        check_equal = tf.cast(y_pred_class == y, tf.float32)
        acc_val = tf.reduce_mean(check_equal)
        return acc_val

    epochs = 12
    learning_rate = 0.1  # the guide's 0.01 over its 200 epochs
    train_losses, train_accs = [], []
    for epoch in range(epochs):
        batch_losses, batch_accs = [], []
        for start in range(0, x_train.shape[0], 64):  # the guide's tf.data batches
            x_batch, y_batch = x_train_norm[start : start + 64], y_train[start : start + 64]
            with tf.GradientTape() as tape:
                y_pred_batch = log_reg(x_batch)
                batch_loss = log_loss(y_pred_batch, y_batch)
            batch_acc = accuracy(y_pred_batch, y_batch)
            # Update parameters with respect to the gradient calculations
            grads = tape.gradient(batch_loss, log_reg.variables)
            for g, v in zip(grads, log_reg.variables):
                v.assign_sub(learning_rate * g)
            # Keep track of batch-level model performance
            batch_losses.append(batch_loss)
            batch_accs.append(batch_acc)
        # Keep track of epoch-level model performance
        train_loss, train_acc = tf.reduce_mean(batch_losses), tf.reduce_mean(batch_accs)
        train_losses.append(train_loss)
        train_accs.append(train_acc)
        if epoch % 20 == 0:
            print(f"Epoch: {epoch}, Training log loss: {train_loss:.3f}")
    assert float(train_losses[-1]) < float(train_losses[0])
    assert f"{train_accs[-1]:.3f}" > "0.850"

    class ExportModule(tf.Module):
        def __init__(self, model, norm_x, class_pred):
            # Initialize pre and postprocessing functions
            self.model = model
            self.norm_x = norm_x
            self.class_pred = class_pred

        @tf.function(input_signature=[tf.TensorSpec(shape=[None, None], dtype=tf.float32)])
        def __call__(self, x):
            # Run the ExportModule for new data points
            x = self.norm_x.norm(x)
            y = self.model(x, train=False)
            y = self.class_pred(y)
            return y

    log_reg_export = ExportModule(model=log_reg, norm_x=norm_x, class_pred=predict_class)
    test_preds = log_reg_export(x_train)
    want = predict_class(log_reg(norm_x.norm(x_train), train=False))
    np.testing.assert_array_equal(test_preds.numpy(), want.numpy())
    assert [m.name for m in log_reg_export.submodules] == ["logistic_regression", "normalize"]
    assert len(log_reg_export.variables) == 4


def test_core_mlp_guide():
    def xavier_init(shape):
        # Computes the xavier initialization values for a weight matrix
        in_dim, out_dim = shape
        xavier_lim = tf.sqrt(6.0) / tf.sqrt(tf.cast(in_dim + out_dim, tf.float32))
        weight_vals = tf.random.uniform(
            shape=(in_dim, out_dim), minval=-xavier_lim, maxval=xavier_lim, seed=22
        )
        return weight_vals

    class DenseLayer(tf.Module):
        def __init__(self, out_dim, weight_init=xavier_init, activation=tf.identity):
            # Initialize the dimensions and activation functions
            self.out_dim = out_dim
            self.weight_init = weight_init
            self.activation = activation
            self.built = False

        def __call__(self, x):
            if not self.built:
                # Infer the input dimension based on first call
                self.in_dim = x.shape[1]
                # Initialize the weights and biases using Xavier scheme
                self.w = tf.Variable(xavier_init(shape=(self.in_dim, self.out_dim)))
                self.b = tf.Variable(tf.zeros(shape=(self.out_dim,)))
                self.built = True
            # Compute the forward pass
            z = tf.add(tf.matmul(x, self.w), self.b)
            return self.activation(z)

    class MLP(tf.Module):
        def __init__(self, layers):
            self.layers = layers

        @tf.function
        def __call__(self, x, preds=False):
            # Execute the model's layers sequentially
            for layer in self.layers:
                x = layer(x)
            return x

    mlp_model = MLP(
        [
            DenseLayer(out_dim=16, activation=tf.nn.relu),
            DenseLayer(out_dim=12, activation=tf.nn.relu),
            DenseLayer(out_dim=3),
        ]
    )

    def cross_entropy_loss(y_pred, y):
        # Compute cross entropy loss with a sparse operation
        sparse_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=y_pred)
        return tf.reduce_mean(sparse_ce)

    def accuracy(y_pred, y):
        # Compute accuracy after extracting class predictions
        class_preds = tf.argmax(tf.nn.softmax(y_pred), axis=1)
        is_equal = tf.equal(y, class_preds)
        return tf.reduce_mean(tf.cast(is_equal, tf.float32))

    class Adam:
        def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, ep=1e-7):
            # Initialize optimizer parameters and variable slots
            self.beta_1 = beta_1
            self.beta_2 = beta_2
            self.learning_rate = learning_rate
            self.ep = ep
            self.t = 1.0
            self.v_dvar, self.s_dvar = [], []
            self.built = False

        def apply_gradients(self, grads, vars):  # noqa: A002 - the guide's name
            # Initialize variables on the first call
            if not self.built:
                for var in vars:
                    v = tf.Variable(tf.zeros(shape=var.shape))
                    s = tf.Variable(tf.zeros(shape=var.shape))
                    self.v_dvar.append(v)
                    self.s_dvar.append(s)
                self.built = True
            # Update the model variables given their gradients
            for i, (d_var, var) in enumerate(zip(grads, vars)):
                self.v_dvar[i].assign(self.beta_1 * self.v_dvar[i] + (1 - self.beta_1) * d_var)
                self.s_dvar[i].assign(
                    self.beta_2 * self.s_dvar[i] + (1 - self.beta_2) * tf.square(d_var)
                )
                v_dvar_bc = self.v_dvar[i] / (1 - (self.beta_1**self.t))
                s_dvar_bc = self.s_dvar[i] / (1 - (self.beta_2**self.t))
                var.assign_sub(self.learning_rate * (v_dvar_bc / (tf.sqrt(s_dvar_bc) + self.ep)))
            self.t += 1.0
            return

    def train_step(x_batch, y_batch, loss, acc, model, optimizer):
        # Update the model state given a batch of data
        with tf.GradientTape() as tape:
            y_pred = model(x_batch)
            batch_loss = loss(y_pred, y_batch)
        batch_acc = acc(y_pred, y_batch)
        grads = tape.gradient(batch_loss, model.variables)
        optimizer.apply_gradients(grads, model.variables)
        return batch_loss, batch_acc

    data = np.random.default_rng(5)
    y_all = data.integers(0, 3, 96).astype(np.int64)
    x_all = (data.normal(size=(96, 10)) + 2.0 * np.eye(3, 10)[y_all]).astype(np.float32)
    optimizer = Adam(learning_rate=1e-2)
    losses = []
    for _epoch in range(8):
        for start in range(0, 96, 32):
            batch_loss, batch_acc = train_step(
                x_all[start : start + 32],
                y_all[start : start + 32],
                cross_entropy_loss,
                accuracy,
                mlp_model,
                optimizer,
            )
            losses.append(float(batch_loss))
        print(f"Training loss: {batch_loss:.3f}, Training accuracy: {batch_acc:.3f}")
    assert losses[-1] < losses[0]
    assert len(mlp_model.variables) == 6 and len(mlp_model.submodules) == 3
    # The compiled forward pass equals the layers run eagerly.
    eager = x_all
    for layer in mlp_model.layers:
        eager = layer(eager)
    np.testing.assert_allclose(mlp_model(x_all).numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one compiled version serves every call
        mlp_model(x_all)
    assert type(mlp_model).__call__.__get__(mlp_model).cache_info().versions <= 2
    assert math.isfinite(losses[-1])
