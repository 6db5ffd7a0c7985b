"""Every example of the five seed documents, with `tf`/`tfe` spelled `jitgrad`, asserting the
numbers (and printed forms) the seeds show."""

from math import pi

import numpy as np

import jitgrad

F32_EPS = float(np.finfo(np.float32).eps)


def toy(w1, w2):
    """The seeds' toy function (seeds 000, 001, 003)."""
    return 3 * w1**2 + 2 * w1 * w2


# ---------------------------------------------------------------------------------------------
# Seeds 000 / 001 / 003: the toy function


def test_toy_function_finite_differences_in_plain_python():
    w1, w2 = 5, 3
    eps = 1e-6
    assert (toy(w1 + eps, w2) - toy(w1, w2)) / eps == 36.000003007075065
    assert (toy(w1, w2 + eps) - toy(w1, w2)) / eps == 10.000000003174137


def test_toy_function_gradients_with_the_tape():
    w1, w2 = jitgrad.Variable(5.0), jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        z = toy(w1, w2)
    gradients = tape.gradient(z, [w1, w2])
    assert isinstance(gradients, list)
    assert [g.numpy().item() for g in gradients] == [36.0, 10.0]
    assert all(g.dtype == jitgrad.float32 and g.shape == () for g in gradients)
    # Exactly the analytic partial derivatives 6 w1 + 2 w2 and 2 w1 (the seed's finite
    # difference estimates, 36.000003 and 10.0000000, are checked above).
    assert float(gradients[0]) == 6 * 5 + 2 * 3
    assert float(gradients[1]) == 2 * 5


def test_toy_function_gradients_print_as_in_the_seeds():
    w1, w2 = jitgrad.Variable(5.0), jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        z = toy(w1, w2)
    gradients = tape.gradient(z, [w1, w2])
    assert repr(gradients) == (
        "[<jitgrad.Tensor: shape=(), dtype=float32, numpy=36.0>, "
        "<jitgrad.Tensor: shape=(), dtype=float32, numpy=10.0>]"
    )


def test_toy_function_written_inline_seed_003():
    w1, w2 = jitgrad.Variable(5.0), jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        z = 3 * (w1**2) + 2 * (w1 * w2)
    gradients = tape.gradient(z, [w1, w2])
    assert repr(gradients) == (
        "[<jitgrad.Tensor: shape=(), dtype=float32, numpy=36.0>, "
        "<jitgrad.Tensor: shape=(), dtype=float32, numpy=10.0>]"
    )


# ---------------------------------------------------------------------------------------------
# Seed 002: introduction to gradients


def test_seed_002_square_of_a_variable():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        y = x**2
    assert repr(y) == "<jitgrad.Tensor: shape=(), dtype=float32, numpy=9.0>"
    dy_dx = tape.gradient(y, x)
    assert dy_dx.numpy() == 6.0


def _seed_002_model(w):
    b = jitgrad.Variable(jitgrad.zeros(2, dtype=jitgrad.float32), name="b")
    x = [[1.0, 2.0, 3.0]]
    with jitgrad.GradientTape(persistent=True) as tape:
        y = x @ w + b
        loss = jitgrad.reduce_mean(y**2)
    return b, y, tape, loss


def _analytic_seed_002(w):
    """loss = mean(y^2) over the 2 outputs of y = x w + b: dl/dy = y, dl/dw = x^T y."""
    x = np.array([[1.0, 2.0, 3.0]])
    y = x @ np.asarray(w, np.float64)
    return x.T @ y, y[0]


def test_seed_002_matmul_of_a_nested_list_and_a_random_variable():
    w = jitgrad.Variable(jitgrad.random.normal((3, 2), seed=2), name="w")
    b, y, tape, loss = _seed_002_model(w)
    assert y.shape == (1, 2) and y.dtype == jitgrad.float32
    [dl_dw, dl_db] = tape.gradient(loss, [w, b])
    assert w.shape == (3, 2)
    assert dl_dw.shape == (3, 2)
    assert str(w.shape) == "(3, 2)" and str(dl_dw.shape) == "(3, 2)"
    want_w, want_b = _analytic_seed_002(w)
    np.testing.assert_allclose(dl_dw.numpy(), want_w, rtol=4 * F32_EPS, atol=4 * F32_EPS)
    np.testing.assert_allclose(dl_db.numpy(), want_b, rtol=4 * F32_EPS, atol=4 * F32_EPS)


def test_seed_002_gradients_with_the_seeds_own_w_match_its_printout():
    w = jitgrad.Variable(
        np.array(
            [[1.03333, 0.42647403], [1.036649, -1.5083102], [0.96885073, -0.66818607]], np.float32
        ),
        name="w",
    )
    assert repr(w) == (
        "<jitgrad.Variable 'w:0' shape=(3, 2) dtype=float32, numpy=\n"
        "array([[ 1.03333   ,  0.42647403],\n"
        "       [ 1.036649  , -1.5083102 ],\n"
        "       [ 0.96885073, -0.66818607]], dtype=float32)>"
    )
    b, _, tape, loss = _seed_002_model(w)
    [dl_dw, dl_db] = tape.gradient(loss, [w, b])
    printed = np.array(
        [[6.0131803, -4.5947046], [12.0263605, -9.189409], [18.039541, -13.784114]], np.float32
    )
    np.testing.assert_allclose(dl_dw.numpy(), printed, rtol=2 * F32_EPS)
    assert repr(dl_dw) == (
        "<jitgrad.Tensor: shape=(3, 2), dtype=float32, numpy=\n"
        "array([[  6.0131803,  -4.5947046],\n"
        "       [ 12.0263605,  -9.189409 ],\n"
        "       [ 18.039541 , -13.784114 ]], dtype=float32)>"
    )

    # The same tape again, with the variables in a dict: the dict comes back.
    my_vars = {"w": w, "b": b}
    grad = tape.gradient(loss, my_vars)
    assert set(grad) == {"w", "b"}
    np.testing.assert_allclose(grad["b"].numpy(), printed[0], rtol=2 * F32_EPS)
    np.testing.assert_array_equal(grad["w"].numpy(), dl_dw.numpy())
    assert repr(grad["b"]) == (
        "<jitgrad.Tensor: shape=(2,), dtype=float32, "
        "numpy=array([ 6.0131803, -4.5947046], dtype=float32)>"
    )


def test_seed_002_watch_accessed_variables_false(capsys):
    x0 = jitgrad.Variable(0.0)
    x1 = jitgrad.Variable(10.0)

    with jitgrad.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x1)
        y0 = jitgrad.math.sin(x0)
        y1 = jitgrad.nn.softplus(x1)
        y = y0 + y1
        ys = jitgrad.reduce_sum(y)
        grad = tape.gradient(ys, {"x0": x0, "x1": x1})

        print("dy/dx0:", grad["x0"])
        print("dy/dx1:", grad["x1"])

    assert grad["x0"] is None
    assert grad["x1"].dtype == jitgrad.float32
    assert grad["x1"].numpy() == np.float32(0.9999546)
    assert str(grad["x1"]) == "jitgrad.Tensor(0.9999546, shape=(), dtype=float32)"
    assert capsys.readouterr().out == (
        "dy/dx0: None\ndy/dx1: jitgrad.Tensor(0.9999546, shape=(), dtype=float32)\n"
    )


# ---------------------------------------------------------------------------------------------
# Seed 003: constants watched by hand, and the chain rule


def test_seed_003_watched_constants():
    a = jitgrad.constant(1.0)
    b = jitgrad.constant(2.0)
    c = jitgrad.constant(3.0)
    w = jitgrad.constant(4.0)
    with jitgrad.GradientTape() as tape:
        tape.watch([w])
        y = a * w**2 + b * w + c
    [dy_dw] = tape.gradient(y, [w])
    assert dy_dw.numpy() == 10.0  # 2 a w + b
    assert str(dy_dw) == "jitgrad.Tensor(10.0, shape=(), dtype=float32)"


def test_seed_003_chain_rule():
    x = jitgrad.constant(1.0)
    w1 = jitgrad.constant(2.0)
    b1 = jitgrad.constant(1.0)
    w2 = jitgrad.constant(2.0)
    b2 = jitgrad.constant(1.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch([w1, b1, w2, b2])
        y1 = x * w1 + b1
        y2 = y1 * w2 + b2

    dy2_dy1 = tape.gradient(y2, [y1])[0]
    dy1_dw1 = tape.gradient(y1, [w1])[0]
    dy2_dw1 = tape.gradient(y2, [w1])[0]

    dy2_dw2 = tape.gradient(y2, [w2])[0]
    dy2_db2 = tape.gradient(y2, [b2])[0]
    dy1_dw1 = tape.gradient(y1, [w1])[0]
    dy1_db1 = tape.gradient(y1, [b1])[0]

    assert str(dy2_dy1 * dy1_dw1) == "jitgrad.Tensor(2.0, shape=(), dtype=float32)"
    assert str(dy2_dw1) == "jitgrad.Tensor(2.0, shape=(), dtype=float32)"
    assert (dy2_dy1 * dy1_dw1).numpy() == dy2_dw1.numpy() == 2.0
    assert dy2_dy1.numpy() == 2.0  # w2
    assert dy1_dw1.numpy() == 1.0  # x
    assert dy2_dw2.numpy() == 3.0  # y1
    assert dy2_db2.numpy() == 1.0
    assert dy1_db1.numpy() == 1.0


# ---------------------------------------------------------------------------------------------
# Seed 004: tfe.gradients_function, higher orders, control flow, tapes


def _sin_squared(x):
    return jitgrad.square(jitgrad.sin(x))


def test_seed_004_gradients_function_at_half_pi():
    f = _sin_squared
    assert f(pi / 2).numpy() == 1.0
    grad_f = jitgrad.gradients_function(f)
    grads = grad_f(pi / 2)
    assert isinstance(grads, list) and len(grads) == 1
    assert jitgrad.abs(grad_f(pi / 2)[0]).numpy() < 1e-7


def test_seed_004_higher_order_gradients_of_sin_squared():
    f = _sin_squared

    def grad(f):
        return lambda x: jitgrad.gradients_function(f)(x)[0]

    x = jitgrad.lin_space(-2 * pi, 2 * pi, 100)  # 100 points between -2 pi and +2 pi
    assert x.shape == (100,) and x.dtype == jitgrad.float32
    assert x.numpy()[0] == np.float32(-2 * pi) and x.numpy()[-1] == np.float32(2 * pi)
    xs = x.numpy().astype(np.float64)
    # sin^2 x and its derivatives sin 2x, 2 cos 2x, -4 sin 2x at the float32 points, checked
    # to a few float32 roundings of the largest value of each.
    cases = [
        (f, np.sin(xs) ** 2, 1.0),
        (grad(f), np.sin(2 * xs), 1.0),
        (grad(grad(f)), 2 * np.cos(2 * xs), 2.0),
        (grad(grad(grad(f))), -4 * np.sin(2 * xs), 4.0),
    ]
    for fn, want, scale in cases:
        got = fn(x)
        assert got.shape == (100,) and got.dtype == jitgrad.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=4 * F32_EPS * scale)


def test_seed_004_python_control_flow():
    def f(x, y):
        output = 1
        for i in range(int(y)):  # noqa: B007 - the seed, verbatim
            output = jitgrad.multiply(output, x)
        return output

    def g(x, y):
        # The gradient of `f` with respect to its first parameter.
        return jitgrad.gradients_function(f)(x, y)[0]

    assert f(3.0, 2).numpy() == 9.0  # f(x, 2) is x * x
    assert g(3.0, 2).numpy() == 6.0  # and its gradient 2 x
    assert f(4.0, 3).numpy() == 64.0  # f(x, 3) is x * x * x
    assert g(4.0, 3).numpy() == 48.0  # and its gradient 3 x^2
    # y is a Python int: an int32 tensor, whose gradient is None.
    assert jitgrad.gradients_function(f)(3.0, 2)[1] is None


def test_seed_004_gradient_with_respect_to_an_intermediate_value():
    x = jitgrad.ones((2, 2))
    with jitgrad.GradientTape(persistent=True) as t:
        t.watch(x)
        y = jitgrad.reduce_sum(x)
        z = jitgrad.multiply(y, y)
    # The derivative of z with respect to the intermediate value y.
    dz_dy = t.gradient(z, y)
    assert dz_dy.numpy() == 8.0
    # The derivative of z with respect to the original input tensor x.
    dz_dx = t.gradient(z, x)
    for i in [0, 1]:
        for j in [0, 1]:
            assert dz_dx[i][j].numpy() == 8.0
    assert dz_dx.shape == (2, 2)


def test_seed_004_nested_tapes_with_only_the_inner_watch():
    x = jitgrad.constant(1.0)  # Convert the Python 1.0 to a Tensor object
    with jitgrad.GradientTape() as t:
        with jitgrad.GradientTape() as t2:
            t2.watch(x)
            y = x * x * x
        # Computed inside t's context, so the gradient computation is differentiable too.
        dy_dx = t2.gradient(y, x)
    d2y_dx2 = t.gradient(dy_dx, x)
    assert dy_dx.numpy() == 3.0
    assert d2y_dx2.numpy() == 6.0
