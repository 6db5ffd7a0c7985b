"""Function transforms (grad, value_and_grad, gradients_function, hessian, jvp, hvp), their
compositions, and jitgrad.test's gradient checkers."""

import numpy as np
import pytest

import jitgrad


def values(tree):
    """A nested structure of tensors as the same structure of Python numbers / lists."""
    if isinstance(tree, dict):
        return {k: values(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(values(v) for v in tree)
    return None if tree is None else tree.numpy().tolist()


A = np.array([[2.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 4.0]])  # symmetric
B = np.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0], [2.0, 0.0, 1.0]])  # not symmetric


# ---------------------------------------------------------------------------------------------
# grad / value_and_grad


def test_grad_of_a_scalar_function():
    g = jitgrad.grad(lambda x: x**3)(2.0)
    assert g.dtype == jitgrad.float32 and g.numpy() == 12.0


def test_grad_of_a_non_scalar_output_is_the_gradient_of_its_sum():
    x = np.array([1.0, 2.0, 3.0])
    assert values(jitgrad.grad(lambda x: x * x)(x)) == [2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    "argnums, want",
    [
        (0, 9.0),
        (1, 12.0),
        (-1, 12.0),
        ((0, 1), (9.0, 12.0)),
        ((1, 0), (12.0, 9.0)),
        ((1,), (12.0,)),
    ],
)
def test_grad_argnums(argnums, want):
    def f(x, y):
        return x * y**2

    assert values(jitgrad.grad(f, argnums=argnums)(2.0, 3.0)) == want


def test_grad_argnums_out_of_range_raises_value_error():
    with pytest.raises(ValueError, match="argnums 2 of f: the function was called with 2"):

        def f(x, y):
            return x * y

        jitgrad.grad(f, argnums=2)(2.0, 3.0)


def test_grad_of_an_unconnected_argument_is_zero():
    g = jitgrad.grad(lambda x, y: x * 2.0, argnums=1)(3.0, np.array([4.0, 5.0]))
    assert g.shape == (2,) and values(g) == [0.0, 0.0]


def test_grad_of_an_integer_argument_raises_type_error():
    """Regression: grad(f)(3) returned an int32 zero, a silently wrong derivative."""
    with pytest.raises(TypeError, match="argument 0 is differentiated but holds a int32"):
        jitgrad.grad(lambda x: x * 2.0)(3)
    with pytest.raises(TypeError, match="argument 1"):
        jitgrad.value_and_grad(lambda p, q: p[0] * q, argnums=(0, 1))([2.0], np.arange(2))
    assert jitgrad.grad(lambda x: x * 2.0)(3.0).numpy() == 2.0


def test_grad_of_a_function_returning_integers_raises_type_error():
    with pytest.raises(TypeError, match="only float targets"):
        jitgrad.grad(lambda x: jitgrad.cast(x, jitgrad.int32))(3.0)


def test_value_and_grad():
    value, g = jitgrad.value_and_grad(lambda x: jitgrad.reduce_sum(x**2))(np.array([1.0, 2.0]))
    assert value.numpy() == 5.0 and value.dtype == jitgrad.float64
    assert values(g) == [2.0, 4.0]


def test_value_and_grad_argnums_tuple():
    value, (gx, gy) = jitgrad.value_and_grad(lambda x, y: x * y, argnums=(0, 1))(2.0, 5.0)
    assert [value.numpy(), gx.numpy(), gy.numpy()] == [10.0, 5.0, 2.0]


def test_value_and_grad_with_aux():
    def loss(w):
        y = w * 3.0
        return jitgrad.reduce_sum(y * y), {"y": y, "note": "aux"}

    (value, aux), g = jitgrad.value_and_grad(loss, has_aux=True)(np.array([1.0, 2.0]))
    assert value.numpy() == 45.0
    assert values(aux["y"]) == [3.0, 6.0] and aux["note"] == "aux"
    assert values(g) == [18.0, 36.0]
    g2, aux2 = jitgrad.grad(loss, has_aux=True)(np.array([1.0, 2.0]))
    assert values(g2) == [18.0, 36.0] and aux2["note"] == "aux"


def test_has_aux_needs_a_pair():
    with pytest.raises(TypeError, match="has_aux=True, so it must return a pair"):
        jitgrad.value_and_grad(lambda x: x * x, has_aux=True)(2.0)


def test_value_and_grad_of_nested_arguments_keeps_their_structure():
    def f(params, scale):
        w0, (w1,) = params["w"]
        return (w0 * w1 + jitgrad.reduce_sum(params["b"] ** 2)) * scale

    params = {"w": [2.0, (3.0,)], "b": np.array([1.0, 2.0])}
    value, (g, gscale) = jitgrad.value_and_grad(f, argnums=(0, 1))(params, 2.0)
    assert value.numpy() == 22.0
    assert values(g) == {"w": [6.0, (4.0,)], "b": [4.0, 8.0]}
    assert isinstance(g["w"], list) and isinstance(g["w"][1], tuple)
    assert gscale.numpy() == 11.0
    assert values(jitgrad.grad(lambda p: p[0] * p[1])([2.0, 3.0])) == [3.0, 2.0]


def test_grad_passes_keyword_arguments_through():
    assert jitgrad.grad(lambda x, k=1.0: x * k)(3.0, k=5.0).numpy() == 5.0


# ---------------------------------------------------------------------------------------------
# gradients_function / value_and_gradients_function (tfe)


def test_gradients_function_of_all_arguments():
    grads = jitgrad.gradients_function(lambda x, y: x * y**2)(2.0, 3.0)
    assert isinstance(grads, list) and values(grads) == [9.0, 12.0]


def test_gradients_function_params_selection_by_index_and_by_name():
    def f(x, y, z):
        return x * y * z

    assert values(jitgrad.gradients_function(f, params=[1])(2.0, 3.0, 4.0)) == [8.0]
    assert values(jitgrad.gradients_function(f, params=[2, 0])(2.0, 3.0, 4.0)) == [6.0, 12.0]
    assert values(jitgrad.gradients_function(f, params=["y", "z"])(2.0, 3.0, 4.0)) == [8.0, 6.0]


def test_gradients_function_accepts_python_scalars_numpy_tensors_and_variables():
    def f(x, y):
        return x * y

    for x, y in [
        (2.0, 5.0),
        (np.float32(2.0), np.array(5.0, np.float32)),
        (jitgrad.constant(2.0), jitgrad.Variable(5.0)),
    ]:
        assert values(jitgrad.gradients_function(f)(x, y)) == [5.0, 2.0]


def test_gradients_function_gives_none_for_integer_and_unconnected_arguments():
    def f(x, n, unused):
        return x * n

    assert values(jitgrad.gradients_function(f)(2.0, 3, 1.0)) == [3.0, None, None]


def test_value_and_gradients_function():
    value, grads = jitgrad.value_and_gradients_function(lambda x, y: x * y**2)(2.0, 3.0)
    assert value.numpy() == 18.0 and values(grads) == [9.0, 12.0]
    value, grads = jitgrad.value_and_gradients_function(lambda x, y: x * y, params=[0])(2.0, 3.0)
    assert value.numpy() == 6.0 and values(grads) == [3.0]


# ---------------------------------------------------------------------------------------------
# hessian


def test_hessian_of_a_quadratic_form():
    x = np.array([1.0, -2.0, 0.5])
    h = jitgrad.hessian(lambda x: jitgrad.reduce_sum(x * jitgrad.matmul(B, x)))(x)
    assert h.shape == (3, 3) and h.dtype == jitgrad.float64
    np.testing.assert_allclose(h.numpy(), B + B.T, rtol=1e-15)  # d2(x^T B x) = B + B^T


def test_hessian_of_sum_of_sines():
    x = np.array([0.3, 1.0, -2.0, 4.0])
    h = jitgrad.hessian(lambda x: jitgrad.reduce_sum(jitgrad.sin(x)))(x)
    np.testing.assert_allclose(h.numpy(), np.diag(-np.sin(x)), rtol=1e-15, atol=0)


def test_hessian_of_a_matrix_argument_has_shape_x_plus_x():
    x = np.arange(1.0, 5.0).reshape(2, 2)
    h = jitgrad.hessian(lambda x: jitgrad.reduce_sum(x**3))(x)
    assert h.shape == (2, 2, 2, 2)
    want = np.zeros((2, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            want[i, j, i, j] = 6 * x[i, j]
    np.testing.assert_allclose(h.numpy(), want, rtol=1e-15)


def test_hessian_argnums_and_scalars():
    assert jitgrad.hessian(lambda x: x**3)(2.0).numpy() == 12.0
    assert jitgrad.hessian(lambda x, y: x * y**3, argnums=1)(2.0, 1.0).numpy() == 12.0


# ---------------------------------------------------------------------------------------------
# jvp / hvp


def test_jvp_of_a_linear_map_is_the_matrix_product():
    x, v = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    y, jv = jitgrad.jvp(lambda x: jitgrad.matmul(B, x), (x,), (v,))
    np.testing.assert_allclose(y.numpy(), B @ x, rtol=1e-15)
    np.testing.assert_allclose(jv.numpy(), B @ v, rtol=1e-15)


def test_jvp_of_an_elementwise_function():
    x, v = np.array([0.0, 1.0, -2.0]), np.array([1.0, 3.0, 0.5])
    y, jv = jitgrad.jvp(lambda x: jitgrad.sin(x) * x, (x,), (v,))
    np.testing.assert_allclose(y.numpy(), np.sin(x) * x, rtol=1e-15)
    np.testing.assert_allclose(jv.numpy(), (np.cos(x) * x + np.sin(x)) * v, rtol=1e-14)


def test_jvp_of_several_arguments_and_unconnected_ones():
    x, y = np.array([2.0, 3.0]), np.array([5.0, 7.0])
    out, jv = jitgrad.jvp(lambda x, y: x * y, (x, y), (np.array([1.0, 0.0]), np.ones(2)))
    assert values(out) == [10.0, 21.0] and values(jv) == [7.0, 3.0]  # y dx + x dy
    out, jv = jitgrad.jvp(lambda x, y: x * 2.0, (3.0, 4.0), (1.0, 1.0))
    assert out.numpy() == 6.0 and jv.numpy() == 2.0
    out, jv = jitgrad.jvp(lambda x: jitgrad.constant(2.0), (3.0,), (1.0,))
    assert out.numpy() == 2.0 and jv.numpy() == 0.0


def test_jvp_of_nested_arguments_and_outputs_keeps_their_structure():
    """Regression: jvp refused dicts/lists, which the issue requires of every transform."""

    def f(p):
        return {"prod": p["a"] * p["b"][0], "sq": [p["a"] ** 2]}

    out, jv = jitgrad.jvp(f, ({"a": 2.0, "b": [3.0]},), ({"a": 1.0, "b": [10.0]},))
    assert values(out) == {"prod": 6.0, "sq": [4.0]}
    assert values(jv) == {"prod": 23.0, "sq": [4.0]}  # b da + a db; 2 a da
    with pytest.raises(ValueError, match="same structure"):
        jitgrad.jvp(f, ({"a": 2.0, "b": [3.0]},), ({"a": 1.0},))
    with pytest.raises(ValueError, match="tangent of shape"):
        jitgrad.jvp(lambda x: x, (np.ones(2),), (np.ones(3),))


def test_hvp_equals_hessian_times_v():
    def f(x):
        return jitgrad.reduce_sum(jitgrad.sin(x) * x) + jitgrad.reduce_sum(x * jitgrad.matmul(A, x))

    x, v = np.array([1.0, 2.0, -0.5]), np.array([1.0, -3.0, 0.25])
    h = jitgrad.hessian(f)(x).numpy()
    hv = jitgrad.hvp(f, x, v)
    np.testing.assert_allclose(hv.numpy(), h @ v, rtol=1e-14)
    diag = 2 * np.cos(x) - x * np.sin(x)  # d2(x sin x)
    np.testing.assert_allclose(hv.numpy(), (np.diag(diag) + 2 * A) @ v, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# compositions


def test_grad_of_grad_of_grad():
    f = lambda x: x**4  # noqa: E731
    assert jitgrad.grad(jitgrad.grad(f))(2.0).numpy() == 48.0
    assert jitgrad.grad(jitgrad.grad(jitgrad.grad(f)))(2.0).numpy() == 48.0
    g3 = jitgrad.grad(jitgrad.grad(jitgrad.grad(jitgrad.sin)))(np.float64(0.5))
    np.testing.assert_allclose(g3.numpy(), -np.cos(0.5), rtol=1e-15)


def test_grad_of_hessian():
    # d/dx_k sum_ij H_ij of sum(x^3) = d/dx_k sum_i 6 x_i = 6
    g = jitgrad.grad(
        lambda x: jitgrad.reduce_sum(jitgrad.hessian(lambda y: jitgrad.reduce_sum(y**3))(x))
    )(np.array([1.0, 2.0]))
    assert values(g) == [6.0, 6.0]
    # and of sum(x^4): sum_i 12 x_i^2 -> 24 x
    g = jitgrad.grad(
        lambda x: jitgrad.reduce_sum(jitgrad.hessian(lambda y: jitgrad.reduce_sum(y**4))(x))
    )(np.array([1.0, 2.0]))
    assert values(g) == [24.0, 48.0]


def test_hessian_of_a_gradient_norm():
    def f(x):
        g = jitgrad.grad(lambda y: jitgrad.reduce_sum(y**4))(x)  # 4 y^3
        return jitgrad.reduce_sum(g)

    h = jitgrad.hessian(f)(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(h.numpy(), np.diag([24.0, 48.0]))  # 24 x


def test_jvp_of_grad_and_grad_of_jvp():
    _, jv = jitgrad.jvp(jitgrad.grad(lambda x: x**4), (2.0,), (1.0,))
    assert jv.numpy() == 48.0
    g = jitgrad.grad(lambda x: jitgrad.jvp(lambda y: y**4, (x,), (1.0,))[1])(2.0)
    assert g.numpy() == 48.0


def test_value_and_grad_of_gradients_function():
    value, g = jitgrad.value_and_grad(lambda x: jitgrad.gradients_function(lambda y: y**3)(x)[0])(
        2.0
    )
    assert value.numpy() == 12.0 and g.numpy() == 12.0


def test_a_transform_inside_a_tape():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        g = jitgrad.grad(lambda y: y**3)(x)  # 3 x^2, recorded by the tape
    assert g.numpy() == 27.0
    assert tape.gradient(g, x).numpy() == 18.0


# ---------------------------------------------------------------------------------------------
# jitgrad.test


def test_compute_gradient_theoretical_matches_numerical():
    x, y = np.array([1.0, 2.0]), np.array([0.5, 0.7, -0.2])

    def f(x, y):
        return jitgrad.reshape(x, (2, 1)) * jitgrad.sin(y)  # (2, 3)

    theoretical, numerical = jitgrad.test.compute_gradient(f, [x, y])
    assert len(theoretical) == len(numerical) == 2
    # Entry [k, j] is d y_k / d x_j: (6, 2) for x and (6, 3) for y.
    assert theoretical[0].shape == numerical[0].shape == (6, 2)
    assert theoretical[1].shape == numerical[1].shape == (6, 3)
    want_x = np.zeros((2, 3, 2))
    want_y = np.zeros((2, 3, 3))
    for a in range(2):
        for b in range(3):
            want_x[a, b, a] = np.sin(y[b])
            want_y[a, b, b] = x[a] * np.cos(y[b])
    np.testing.assert_allclose(theoretical[0], want_x.reshape(6, 2), rtol=1e-15)
    np.testing.assert_allclose(theoretical[1], want_y.reshape(6, 3), rtol=1e-15)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-8, atol=1e-9)


def test_compute_gradient_in_float32():
    x = np.array([0.2, -1.0, 2.0], np.float32)
    theoretical, numerical = jitgrad.test.compute_gradient(jitgrad.tanh, [x])
    assert theoretical[0].dtype == np.float32
    np.testing.assert_allclose(
        theoretical[0], np.diag(1 - np.tanh(x.astype(np.float64)) ** 2), rtol=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-3, atol=1e-4)


def test_check_grads_passes_on_correct_gradients():
    jitgrad.test.check_grads(lambda x: jitgrad.tanh(x) * x, [np.array([0.3, -1.2])], order=2)
    jitgrad.test.check_grads(
        lambda x, y: jitgrad.sin(x) * y**2, [np.array([0.3, -1.2]), np.array([1.5, 0.2])], order=3
    )

    @jitgrad.custom_gradient
    def cube(x):
        return x * x * x, lambda dy: dy * 3.0 * x * x

    jitgrad.test.check_grads(cube, [np.array([0.3, -1.2])], order=3)


def test_check_grads_raises_on_a_wrong_custom_gradient():
    @jitgrad.custom_gradient
    def wrong_sin(x):
        return jitgrad.sin(x), lambda dy: dy * jitgrad.sin(x)  # should be cos

    with pytest.raises(AssertionError, match="gradient check failed for wrong_sin"):
        jitgrad.test.check_grads(wrong_sin, [np.array([0.3, -1.2])], order=1)


def test_check_grads_raises_on_a_wrong_second_derivative():
    @jitgrad.custom_gradient
    def cube(x):
        # Right first derivative, but its own derivative is cut: the second order is wrong.
        return x * x * x, lambda dy: dy * jitgrad.stop_gradient(3.0 * x * x)

    jitgrad.test.check_grads(cube, [np.array([0.3, -1.2])], order=1)
    with pytest.raises(AssertionError, match="gradient check failed for vjp\\(cube\\)"):
        jitgrad.test.check_grads(cube, [np.array([0.3, -1.2])], order=2)
