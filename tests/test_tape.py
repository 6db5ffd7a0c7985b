"""GradientTape semantics (TensorFlow's), one test each, including the error cases."""

import gc
import weakref

import numpy as np
import pytest

import jitgrad


def values(tree):
    """A nested structure of tensors as the same structure of Python floats / lists."""
    if isinstance(tree, dict):
        return {k: values(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(values(v) for v in tree)
    return None if tree is None else tree.numpy().tolist()


# ---------------------------------------------------------------------------------------------
# persistent / non-persistent


def test_persistent_tape_gives_gradients_several_times():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = x * x
        z = y * y
    assert tape.gradient(y, x).numpy() == 6.0
    assert tape.gradient(z, x).numpy() == 108.0  # 4 x^3
    assert tape.gradient(z, y).numpy() == 18.0
    assert tape.jacobian(z, x).numpy() == 108.0


def test_non_persistent_tape_refuses_a_second_gradient():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        y = x * x
    assert tape.gradient(y, x).numpy() == 6.0
    with pytest.raises(RuntimeError, match="non-persistent GradientTape.*persistent=True"):
        tape.gradient(y, x)
    with pytest.raises(RuntimeError, match="non-persistent"):
        tape.jacobian(y, x)


def test_non_persistent_tape_refuses_a_gradient_after_a_jacobian():
    x = jitgrad.Variable([1.0, 2.0])
    with jitgrad.GradientTape() as tape:
        y = x * x
    np.testing.assert_array_equal(tape.jacobian(y, x).numpy(), [[2.0, 0.0], [0.0, 4.0]])
    with pytest.raises(RuntimeError, match="non-persistent"):
        tape.gradient(y, x)


def test_a_gradient_call_that_raised_leaves_a_non_persistent_tape_usable():
    """Regression: the tape was marked used before its arguments were checked."""
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        y = x * x
    with pytest.raises(TypeError):
        tape.gradient(y, 3.0)
    assert tape.gradient(y, x).numpy() == 6.0


def test_gradient_inside_the_with_block():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        y = x**2
        dy_dx = tape.gradient(y, x)
    assert dy_dx.numpy() == 6.0


def test_persistent_tape_inside_its_block_records_its_own_gradient():
    """Regression: as in TensorFlow, the backward pass of a persistent tape called inside its
    context is recorded, so the same tape then differentiates the gradient."""
    x = jitgrad.constant(3.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = x * x * x
        dy_dx = tape.gradient(y, x)  # 3 x^2 = 27
    assert dy_dx.numpy() == 27.0
    assert tape.gradient(dy_dx, x).numpy() == 18.0  # 6 x
    assert tape.gradient(y, x).numpy() == 27.0  # the recorded backward pass changes nothing


def test_non_persistent_tape_stops_recording_after_its_gradient():
    """As TensorFlow pops it: only the enclosing tape records what follows."""
    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape() as outer:
        outer.watch(x)
        with jitgrad.GradientTape() as inner:
            inner.watch(x)
            y = x * x * x
            g = inner.gradient(y, x)  # recorded by `outer` only
            h = g * x
    assert g.numpy() == 12.0
    assert outer.gradient(h, x).numpy() == 36.0  # d(3 x^3)/dx = 9 x^2


# ---------------------------------------------------------------------------------------------
# watching


def test_watch_a_tensor():
    x = jitgrad.constant([1.0, 2.0])
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = jitgrad.reduce_sum(x * x)
    assert values(tape.gradient(y, x)) == [2.0, 4.0]


def test_an_unwatched_constant_has_no_gradient():
    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape() as tape:
        y = x * x
    assert tape.gradient(y, x) is None


def test_an_unwatched_tensor_feeding_a_recorded_op_has_no_gradient():
    """Regression: a constant that meets a watched value was differentiated anyway; TensorFlow
    gives None for anything the tape does not watch."""
    x, c = jitgrad.constant(2.0), jitgrad.constant(3.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = x * c
    assert tape.gradient(y, c) is None
    assert values(tape.gradient(y, [x, c])) == [3.0, None]
    assert values(tape.gradient(y, [x, c], unconnected_gradients="zero")) == [3.0, 0.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda a, b, c: [a, b, c],
        lambda a, b, c: (a, [b, (c,)]),
        lambda a, b, c: {"a": a, "rest": [b, {"c": c}]},
    ],
)
def test_watch_a_nested_structure(make):
    a, b, c = jitgrad.constant(1.0), jitgrad.constant(2.0), jitgrad.constant(3.0)
    with jitgrad.GradientTape() as tape:
        tape.watch(make(a, b, c))
        y = a * b * c
    assert values(tape.gradient(y, [a, b, c])) == [6.0, 3.0, 2.0]


@pytest.mark.parametrize(
    "bad", [3.0, 2, np.ones(3), "x", [jitgrad.constant(1.0), 2.0], {"k": np.float32(1.0)}]
)
def test_watch_a_non_tensor_raises_value_error(bad):
    with jitgrad.GradientTape() as tape:
        with pytest.raises(ValueError, match="GradientTape.watch: expects tensors"):
            tape.watch(bad)


def test_watched_variables_in_order_of_first_access():
    v1, v2, v3 = jitgrad.Variable(1.0), jitgrad.Variable(2.0), jitgrad.Variable(3.0)
    c = jitgrad.constant(4.0)
    with jitgrad.GradientTape() as tape:
        tape.watch(c)
        y = v3 * v1 + c
        y = y * v3
        tape.watch(v2)
    watched = tape.watched_variables()
    assert isinstance(watched, tuple)
    assert len(watched) == 3
    assert all(a is b for a, b in zip(watched, (v3, v1, v2)))


def test_watch_accessed_variables_true_watches_trainable_variables_on_use():
    v = jitgrad.Variable([1.0, 2.0])
    with jitgrad.GradientTape() as tape:
        y = jitgrad.reduce_sum(v * v)
    assert values(tape.gradient(y, v)) == [2.0, 4.0]
    assert tape.watched_variables()[0] is v


def test_watch_accessed_variables_false_watches_only_what_is_watched():
    v, w = jitgrad.Variable(2.0), jitgrad.Variable(5.0)
    with jitgrad.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(w)
        y = v * w
    assert tape.watched_variables() == (w,)
    assert values(tape.gradient(y, [v, w])) == [None, 2.0]


def test_non_trainable_variables_are_not_watched():
    """Regression: a non-trainable Variable used next to a watched one got a gradient."""
    v = jitgrad.Variable(2.0)
    frozen = jitgrad.Variable(5.0, trainable=False)
    with jitgrad.GradientTape() as tape:
        y = v * frozen
    assert tape.watched_variables() == (v,)
    assert values(tape.gradient(y, [v, frozen])) == [5.0, None]


def test_a_non_trainable_variable_can_be_watched_explicitly():
    frozen = jitgrad.Variable(5.0, trainable=False)
    with jitgrad.GradientTape() as tape:
        tape.watch(frozen)
        y = frozen * frozen
    assert tape.gradient(y, frozen).numpy() == 10.0


def test_stop_recording():
    v = jitgrad.Variable(2.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = v * v
        with tape.stop_recording():
            z = v * v * v  # not recorded: a constant for the tape
        w = y + z
    assert tape.gradient(w, v).numpy() == 4.0
    assert tape.gradient(z, v) is None


def test_reset_forgets_what_was_recorded():
    v = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        y = v * v
        tape.reset()
        z = v * 3.0
    assert tape.watched_variables() == (v,)  # watched again by the use after the reset
    assert tape.gradient(z, v).numpy() == 3.0

    with jitgrad.GradientTape() as tape:
        y = v * v
        tape.reset()
    assert tape.gradient(y, v) is None


# ---------------------------------------------------------------------------------------------
# targets


def test_a_list_of_targets_adds_up_their_gradients():
    v = jitgrad.Variable(2.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        a = v * v
        b = v * 3.0
    assert tape.gradient([a, b], v).numpy() == 7.0
    assert tape.gradient((a, [b]), v).numpy() == 7.0
    assert tape.gradient({"a": a, "b": b}, v).numpy() == 7.0


def test_a_non_scalar_target_gives_the_gradient_of_its_sum():
    v = jitgrad.Variable([1.0, 2.0, 3.0])
    with jitgrad.GradientTape(persistent=True) as tape:
        y = v * v
        total = jitgrad.reduce_sum(y)
    assert values(tape.gradient(y, v)) == [2.0, 4.0, 6.0]
    assert values(tape.gradient(y, v)) == values(tape.gradient(total, v))


def test_output_gradients_weight_a_target():
    v = jitgrad.Variable([1.0, 2.0, 3.0])
    with jitgrad.GradientTape(persistent=True) as tape:
        y = v * v
        z = v * 3.0
    weights = np.array([1.0, 0.0, 2.0], np.float32)
    assert values(tape.gradient(y, v, output_gradients=weights)) == [2.0, 0.0, 12.0]
    assert values(tape.gradient(y, v, output_gradients=jitgrad.constant(weights))) == [
        2.0,
        0.0,
        12.0,
    ]
    assert values(tape.gradient(y, v, output_gradients=[1.0, 0.0, 2.0])) == [2.0, 0.0, 12.0]
    # TensorFlow's flat list: one cotangent per target, None meaning ones.
    assert values(tape.gradient(y, v, output_gradients=[weights])) == [2.0, 0.0, 12.0]
    assert values(tape.gradient([y, z], v, output_gradients=[weights, None])) == [5.0, 3.0, 15.0]
    assert values(
        tape.gradient({"y": y, "z": z}, v, output_gradients={"y": None, "z": weights})
    ) == [5.0, 4.0, 12.0]


def test_output_gradients_of_the_wrong_shape_or_structure_raise_value_error():
    v = jitgrad.Variable([1.0, 2.0, 3.0])
    with jitgrad.GradientTape(persistent=True) as tape:
        y = v * v
    with pytest.raises(ValueError, match=r"output_gradients of shape \(2,\).*\(3,\)"):
        tape.gradient(y, v, output_gradients=[1.0, 2.0])
    with pytest.raises(ValueError, match="one per target"):
        tape.gradient([y, y], v, output_gradients=[np.ones(3)])


def test_unconnected_gradients_none_and_zero():
    v, u = jitgrad.Variable([1.0, 2.0]), jitgrad.Variable([[5.0, 6.0]])
    with jitgrad.GradientTape(persistent=True) as tape:
        y = v * v
    assert values(tape.gradient(y, [u, v])) == [None, [2.0, 4.0]]
    zero = tape.gradient(y, [u, v], unconnected_gradients="zero")
    assert values(zero) == [[[0.0, 0.0]], [2.0, 4.0]]
    assert zero[0].shape == u.shape and zero[0].dtype == u.dtype
    with pytest.raises(ValueError, match="unconnected_gradients must be 'none' or 'zero'"):
        tape.gradient(y, u, unconnected_gradients="zeros")


# ---------------------------------------------------------------------------------------------
# sources


def test_sources_keep_their_structure():
    a, b, c = jitgrad.Variable(1.0), jitgrad.Variable(2.0), jitgrad.Variable(3.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = a * b * c
    assert tape.gradient(y, a).numpy() == 6.0
    assert values(tape.gradient(y, [a, b])) == [6.0, 3.0]
    assert values(tape.gradient(y, (a, b))) == (6.0, 3.0)
    assert values(tape.gradient(y, {"a": a, "c": c})) == {"a": 6.0, "c": 2.0}
    nested = tape.gradient(y, {"x": [a, (b, {"deep": c})], "y": (c,)})
    assert values(nested) == {"x": [6.0, (3.0, {"deep": 2.0})], "y": (2.0,)}
    assert isinstance(nested["x"], list) and isinstance(nested["x"][1], tuple)


def test_a_0d_variable_added_to_a_vector_gets_the_sum_of_the_gradients():
    x = jitgrad.constant(np.array([1.0, -2.0, 0.5, 3.0], np.float32))
    b = jitgrad.Variable(np.float32(0.25))
    for _ in range(3):  # after an assignment the tape records the new value
        with jitgrad.GradientTape() as tape:
            z = x + b
            loss = jitgrad.reduce_sum(z * z)
        np.testing.assert_allclose(
            tape.gradient(loss, [b])[0].numpy(), np.sum(2 * (x.numpy() + b.numpy())), rtol=1e-6
        )
        b.assign_sub(0.5)


def test_a_0d_variable_added_to_a_vector_under_two_tapes_has_a_second_derivative():
    x = jitgrad.constant(np.array([1.0, -2.0, 0.5]))
    b = jitgrad.Variable(0.75)
    with jitgrad.GradientTape() as outer:
        with jitgrad.GradientTape() as inner:
            loss = jitgrad.reduce_sum((b + x) ** 3)
        db = inner.gradient(loss, b)
    expected = np.sum(6 * (x.numpy() + 0.75))  # d2/db2 of sum((b + x)^3)
    np.testing.assert_allclose(outer.gradient(db, b).numpy(), expected, rtol=1e-12)


def test_the_sum_of_a_weak_vector_stays_weak():
    """A float64 result of weak inputs only is weak (core/weak.py), the eager sum's fast lane
    included: the sum then takes a float32 tensor's dtype."""
    weak = jitgrad.reduce_sum(jitgrad.broadcast_to(jitgrad.log(1.35), (3,)))
    assert (weak * jitgrad.constant(np.float32(2.0))).dtype == np.float32


def test_a_flat_list_of_sources_with_an_unconnected_one():
    a, b = jitgrad.Variable(2.0), jitgrad.Variable(5.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = a * a
    assert values(tape.gradient(y, [a, b])) == [4.0, None]
    assert values(tape.gradient(y, (b, a), unconnected_gradients="zero")) == (0.0, 4.0)


def test_the_same_source_twice():
    a = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        y = a * a
    assert values(tape.gradient(y, [a, a])) == [4.0, 4.0]


def test_gradient_with_respect_to_intermediate_tensors():
    x = jitgrad.Variable(3.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = x * x
        z = jitgrad.sin(y)
        w = z * 2.0
    assert tape.gradient(w, z).numpy() == 2.0
    np.testing.assert_allclose(tape.gradient(w, y).numpy(), 2 * np.cos(np.float32(9.0)), rtol=1e-6)
    assert tape.gradient(z, w) is None  # w comes after z
    assert tape.gradient(w, w).numpy() == 1.0


def test_integer_sources_get_none():
    n = jitgrad.constant(2)
    k = jitgrad.Variable(3)
    b = jitgrad.constant(3.0)
    with jitgrad.GradientTape() as tape:
        tape.watch([n, b])
        y = jitgrad.cast(n * k, jitgrad.float32) * b
    assert values(tape.gradient(y, [n, k, b])) == [None, None, 6.0]


def test_integer_sources_get_integer_zeros_with_unconnected_zero():
    n = jitgrad.constant([2, 3])
    b = jitgrad.constant(3.0)
    with jitgrad.GradientTape() as tape:
        tape.watch([n, b])
        y = jitgrad.reduce_sum(jitgrad.cast(n, jitgrad.float32)) * b
    dn, db = tape.gradient(y, [n, b], unconnected_gradients="zero")
    assert dn.dtype == jitgrad.int32 and values(dn) == [0, 0]
    assert db.numpy() == 5.0


@pytest.mark.parametrize("dtype", [jitgrad.int32, jitgrad.int64, jitgrad.bool])
def test_gradient_of_a_non_float_target_is_none_with_a_warning(dtype):
    """TensorFlow's rule: a warning, and no gradient from that target."""
    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = jitgrad.cast(x, dtype)
    with pytest.warns(RuntimeWarning, match=f"target has dtype {np.dtype(dtype).name}"):
        assert tape.gradient(y, x) is None


@pytest.mark.parametrize("target", [3.0, np.ones(2), None])
def test_a_target_that_is_not_a_tensor_raises_type_error(target):
    x = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        x * x
    with pytest.raises(TypeError, match="GradientTape.gradient: the target"):
        tape.gradient(target, x)


@pytest.mark.parametrize("source", [3.0, np.ones(3), [jitgrad.constant(1.0), "w"]])
def test_a_source_that_is_not_a_tensor_raises_type_error(source):
    x = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        y = x * x
    with pytest.raises(TypeError, match="sources must be tensors or Variables"):
        tape.gradient(y, source)


# ---------------------------------------------------------------------------------------------
# nested tapes


def test_nested_tapes_to_third_order():
    x = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as t3:
        with jitgrad.GradientTape() as t2:
            with jitgrad.GradientTape() as t1:
                y = x**4
            g1 = t1.gradient(y, x)
        g2 = t2.gradient(g1, x)
    g3 = t3.gradient(g2, x)
    assert [g1.numpy(), g2.numpy(), g3.numpy()] == [32.0, 48.0, 48.0]  # 4x^3, 12x^2, 24x


def test_nested_tapes_to_third_order_of_a_product_in_float64():
    x = jitgrad.constant(np.float64(0.7))
    with jitgrad.GradientTape() as t3:
        with jitgrad.GradientTape() as t2:
            with jitgrad.GradientTape() as t1:
                t1.watch(x)
                y = jitgrad.sin(x) * x
            g1 = t1.gradient(y, x)
        g2 = t2.gradient(g1, x)
    g3 = t3.gradient(g2, x)
    s, c = np.sin(0.7), np.cos(0.7)
    want = [s + 0.7 * c, 2 * c - 0.7 * s, -3 * s - 0.7 * c]
    np.testing.assert_allclose([g1.numpy(), g2.numpy(), g3.numpy()], want, rtol=1e-14)


def test_watch_on_an_inner_tape_watches_on_the_recording_enclosing_tapes():
    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape(persistent=True) as outer:
        with jitgrad.GradientTape() as inner:
            inner.watch(x)
            y = x * x
    assert inner.gradient(y, x).numpy() == 4.0
    assert outer.gradient(y, x).numpy() == 4.0


def test_watch_on_an_inner_tape_skips_an_enclosing_tape_that_is_not_recording():
    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape(persistent=True) as outer:
        with outer.stop_recording():
            with jitgrad.GradientTape() as inner:
                inner.watch(x)
                y = x * x
        z = y * x
    assert inner.gradient(y, x).numpy() == 4.0
    assert outer.gradient(z, x) is None
    assert outer.gradient(z, y) is None


# ---------------------------------------------------------------------------------------------
# jacobian and batch_jacobian


def test_jacobian_has_shape_target_plus_source_and_matches_the_analytic_one():
    xv = np.arange(6.0).reshape(2, 3) / 5
    wv = np.arange(12.0).reshape(3, 4) / 10 - 0.5
    x, w = jitgrad.constant(xv), jitgrad.constant(wv)
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        y = jitgrad.tanh(x @ w)
    jx, jw = tape.jacobian(y, [x, w])
    assert jx.shape == (2, 4, 2, 3) and jw.shape == (2, 4, 3, 4)
    d = 1 - np.tanh(xv @ wv) ** 2  # d tanh(u) = 1 - tanh(u)^2, u = x w
    # dy[a,b]/dx[c,k] = d[a,b] [a == c] w[k,b];  dy[a,b]/dw[k,l] = d[a,b] x[a,k] [b == l]
    want_x = np.einsum("ab,ac,kb->abck", d, np.eye(2), wv)
    want_w = np.einsum("ab,ak,bl->abkl", d, xv, np.eye(4))
    np.testing.assert_allclose(jx.numpy(), want_x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(jw.numpy(), want_w, rtol=1e-13, atol=1e-15)


def test_jacobian_of_scalars_and_of_unconnected_sources():
    x = jitgrad.constant(3.0)
    u = jitgrad.constant([1.0, 2.0])
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch([x, u])
        y = x * x
        v = u * 2.0
    assert tape.jacobian(y, x).numpy() == 6.0
    assert tape.jacobian(v, x) is None
    zero = tape.jacobian(v, x, unconnected_gradients="zero")
    assert zero.shape == (2,) and values(zero) == [0.0, 0.0]
    assert values(tape.jacobian(v, [u, x])) == [[[2.0, 0.0], [0.0, 2.0]], None]


def test_jacobian_of_an_empty_target_is_empty_not_none():
    """Regression: a target with no elements gave None instead of a (0, 3, 0, 3) Jacobian."""
    x = jitgrad.constant(np.zeros((0, 3), np.float32))
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = x * 2.0
    jac = tape.jacobian(y, x)
    assert jac is not None and jac.shape == (0, 3, 0, 3)


def test_batch_jacobian_matches_the_analytic_per_example_jacobian():
    xv = np.arange(6.0).reshape(2, 3) / 5
    wv = np.arange(12.0).reshape(3, 4) / 10 - 0.5
    x = jitgrad.constant(xv)
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = jitgrad.tanh(x @ wv)
    bj = tape.batch_jacobian(y, x)
    assert bj.shape == (2, 4, 3)
    d = 1 - np.tanh(xv @ wv) ** 2
    np.testing.assert_allclose(bj.numpy(), np.einsum("ab,kb->abk", d, wv), rtol=1e-13)


def test_batch_jacobian_of_an_elementwise_function_is_diagonal_per_example():
    x = jitgrad.constant(np.arange(6.0).reshape(2, 3))
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = x * x
    bj = tape.batch_jacobian(y, x)
    want = np.stack([np.diag(2 * row) for row in np.arange(6.0).reshape(2, 3)])
    np.testing.assert_array_equal(bj.numpy(), want)


def test_batch_jacobian_of_an_unconnected_source_is_none_unless_zero_is_asked():
    """Regression: 'none' gave zeros."""
    x, u = jitgrad.constant(np.ones((2, 3))), jitgrad.constant(np.ones((2, 5)))
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch([x, u])
        y = x * x
    assert tape.batch_jacobian(y, u) is None
    zero = tape.batch_jacobian(y, u, unconnected_gradients="zero")
    assert zero.shape == (2, 3, 5) and not zero.numpy().any()


def test_batch_jacobian_needs_a_common_batch_dimension():
    x = jitgrad.constant(np.ones((2, 3)))
    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = jitgrad.reduce_sum(x, axis=0)
    with pytest.raises(ValueError, match="same first \\(batch\\) dimension"):
        tape.batch_jacobian(y, x)


# ---------------------------------------------------------------------------------------------
# custom_gradient and stop_gradient


def test_custom_gradient_clips_the_gradient():
    @jitgrad.custom_gradient
    def clip_gradient(x):
        def grad_fn(dy):
            return jitgrad.clip_by_value(dy, -1.0, 1.0)

        return x * 1.0, grad_fn

    x = jitgrad.Variable([1.0, 2.0])
    with jitgrad.GradientTape() as tape:
        y = clip_gradient(x) * jitgrad.constant([5.0, -0.5])
    assert values(y) == [5.0, -1.0]
    assert values(tape.gradient(y, x)) == [1.0, -0.5]


def test_custom_gradient_gives_a_stable_log1pexp():
    @jitgrad.custom_gradient
    def log1pexp(x):
        # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), with the derivative sigmoid(x).
        y = jitgrad.maximum(x, 0.0) + jitgrad.log1p(jitgrad.exp(-jitgrad.abs(x)))
        return y, lambda dy: dy * jitgrad.sigmoid(x)

    x = jitgrad.constant([-100.0, 0.0, 100.0])
    with jitgrad.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = log1pexp(x)
        with np.errstate(over="ignore", invalid="ignore"):
            naive = jitgrad.math.log(1 + jitgrad.exp(x))
    # e^-100 is a float32 denormal: compared with an absolute tolerance.
    np.testing.assert_allclose(
        y.numpy(), [np.exp(-100.0), np.log(2.0), 100.0], rtol=1e-7, atol=1e-30
    )
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [0.0, 0.5, 1.0], atol=1e-30)
    with np.errstate(over="ignore", invalid="ignore"):
        naive_grad = tape.gradient(naive, x).numpy()
    assert np.isnan(naive_grad[2])  # inf / inf: why the custom gradient exists


def test_custom_gradient_of_two_inputs():
    @jitgrad.custom_gradient
    def f(x, y):
        return x * y, lambda dz: (dz * 10.0, dz * 20.0)

    a, b = jitgrad.Variable(1.0), jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        z = f(a, b)
    assert z.numpy() == 2.0
    assert values(tape.gradient(z, [a, b])) == [10.0, 20.0]


def test_custom_gradient_is_differentiated_again_through_its_grad_fn():
    @jitgrad.custom_gradient
    def cube(x):
        return x * x * x, lambda dy: dy * 3.0 * x * x

    x = jitgrad.constant(2.0)
    with jitgrad.GradientTape() as outer:
        outer.watch(x)
        with jitgrad.GradientTape() as inner:
            inner.watch(x)
            y = cube(x)
        g = inner.gradient(y, x)
    assert g.numpy() == 12.0
    assert outer.gradient(g, x).numpy() == 12.0  # 6 x


def test_custom_gradient_reading_a_variable_needs_a_variables_argument():
    """Regression: the Variable's gradient was silently None. As in TensorFlow, grad_fn takes
    `variables` and returns (input gradients, variable gradients)."""
    v = jitgrad.Variable(3.0)

    @jitgrad.custom_gradient
    def scale(x):
        return x * v, lambda dy: dy * 7.0

    x = jitgrad.constant(1.0)
    with jitgrad.GradientTape():
        with pytest.raises(TypeError, match="'variables'"):
            scale(x)

    @jitgrad.custom_gradient
    def scale_ok(x):
        def grad_fn(dy, variables):
            assert variables == [v]
            return dy * v, [dy * x * 100.0]

        return x * v, grad_fn

    with jitgrad.GradientTape() as tape:
        tape.watch(x)
        y = scale_ok(x)
    assert values(tape.gradient(y, [x, v])) == [3.0, 100.0]


def test_custom_gradient_with_several_outputs_raises_type_error():
    """Regression: a tuple y was converted to one stacked tensor without a word."""

    @jitgrad.custom_gradient
    def two(x):
        return (x * 2.0, x * 3.0), lambda da, db: da * 2.0 + db * 3.0

    with pytest.raises(TypeError, match="y a single tensor, got a tuple"):
        two(jitgrad.constant(1.0))


def test_stop_gradient():
    x = jitgrad.Variable(2.0)
    with jitgrad.GradientTape(persistent=True) as tape:
        y = x * jitgrad.stop_gradient(x * x)
        z = jitgrad.stop_gradient(x)
    assert y.numpy() == 8.0
    assert tape.gradient(y, x).numpy() == 4.0
    assert tape.gradient(z, x) is None


# ---------------------------------------------------------------------------------------------
# Variables


def test_variable_assign_assign_add_assign_sub():
    v = jitgrad.Variable(2.0)
    assert v.assign(5.0) is v and v.numpy() == 5.0
    assert v.assign_add(1.0) is v and v.numpy() == 6.0
    assert v.assign_sub(0.5) is v and v.numpy() == 5.5
    assert v.dtype == jitgrad.float32
    w = jitgrad.Variable([1.0, 2.0])
    w.assign_add(np.array([1.0, 1.0]))  # cast to the variable's dtype
    assert w.dtype == jitgrad.float32 and values(w) == [2.0, 3.0]
    with pytest.raises(ValueError, match=r"Variable.assign: value of shape \(3,\)"):
        w.assign([1.0, 2.0, 3.0])


def test_gradients_after_assignment_use_the_new_value():
    v = jitgrad.Variable(2.0)
    v.assign(5.0)
    with jitgrad.GradientTape() as tape:
        y = v * v
    assert tape.gradient(y, v).numpy() == 10.0
    v.assign_sub(1.0)
    with jitgrad.GradientTape() as tape:
        y = v * v
    assert tape.gradient(y, v).numpy() == 8.0


def test_assign_inside_a_tape_leaves_the_recorded_values_alone():
    """Regression: the tape recorded the Variable itself, so the backward pass saw the new
    value. Each read counts with the value it had, as in TensorFlow:
    z = (v0 v0) v1 -> dz/dv = 2 v0 v1 + v0^2 = 2*2*10 + 4."""
    v = jitgrad.Variable(2.0)
    with jitgrad.GradientTape() as tape:
        y = v * v
        v.assign(10.0)
        z = y * v
    assert z.numpy() == 40.0
    assert tape.gradient(z, v).numpy() == 44.0


def test_reads_through_value_and_read_value_count_as_the_variable():
    v = jitgrad.Variable(3.0)
    with jitgrad.GradientTape() as tape:
        y = v.value() * v.read_value() * 2.0
    assert tape.gradient(y, v).numpy() == 12.0


def test_a_variable_as_the_target():
    v = jitgrad.Variable([1.0, 2.0])
    with jitgrad.GradientTape() as tape:
        tape.watch(v)
    assert values(tape.gradient(v, v)) == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# memory


def test_deleting_a_persistent_tape_frees_what_it_held():
    x = jitgrad.Variable(np.ones(1000, np.float32))
    tape = jitgrad.GradientTape(persistent=True)
    with tape:
        y = x * 2.0
        z = jitgrad.sin(y)
    assert tape.gradient(z, x) is not None
    refs = [weakref.ref(y), weakref.ref(z)]
    del y, z
    gc.collect()
    assert all(r() is not None for r in refs)  # the persistent tape keeps them for later
    del tape
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_non_persistent_tape_frees_its_record_after_gradient():
    x = jitgrad.Variable(np.ones(1000, np.float32))
    with jitgrad.GradientTape() as tape:
        y = x * 2.0
        z = jitgrad.sin(y)
    refs = [weakref.ref(y)]
    del y
    tape.gradient(z, x)
    gc.collect()
    assert refs[0]() is None
    assert tape.watched_variables() == (x,)


@pytest.mark.parametrize(
    "form",
    [
        lambda x, s: x * 0.5 + 2 * x - x / 4.0 + 1.0 - (3 - x) + x**2.0 + 2.0**x,
        lambda x, s: x * s + s - x / s + (s - x) * (x + s),
        lambda x, s: s * x - x * s + jitgrad.exp(x) * s,
    ],
)
def test_eager_fast_lane_gradients_match_the_compiled_ones(form):
    """Float tensors with Python scalars and 0-d tensors take the eager fast lane: the values
    and the gradients (w.r.t. the vector and the 0-d tensor) must match jit_grad's."""
    xv = np.linspace(-1, 1, 5).astype(np.float32)
    sv = np.float32(1.5)
    x, s = jitgrad.Variable(xv), jitgrad.Variable(sv)
    with jitgrad.GradientTape() as tape:
        y = jitgrad.reduce_sum(form(x, s))
    gx, gs = tape.gradient(y, [x, s], unconnected_gradients="zero")
    compiled = jitgrad.jit_grad(lambda a, b: jitgrad.reduce_sum(form(a, b)), wrt=(0, 1))
    value, (cx, cs) = compiled(xv, sv)
    np.testing.assert_allclose(float(y), float(value), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(cx), rtol=1e-5)
    np.testing.assert_allclose(float(gs), float(cs), rtol=1e-5)
    untaped = form(jitgrad.constant(xv), jitgrad.constant(sv))
    np.testing.assert_allclose(np.asarray(untaped), np.asarray(form(x, s)), rtol=1e-6)


def test_eager_square_is_exact_with_and_without_a_tape():
    """numpy's power is exactly rounded for a scalar (or stride-0) exponent 2 but not for a
    contiguous array of 2s: the eager weak-scalar path must keep the former."""
    x = np.random.default_rng(0).uniform(0.5, 2.0, 1000).astype(np.float32)
    t = jitgrad.constant(x)
    np.testing.assert_array_equal(np.asarray(t**2.0), x * x)
    np.testing.assert_array_equal(np.asarray(jitgrad.pow(t, jitgrad.constant(2.0))), x * x)
    with jitgrad.GradientTape() as tape:
        tape.watch(t)
        y = t**2.0
    np.testing.assert_array_equal(np.asarray(y), x * x)
    np.testing.assert_array_equal(np.asarray(tape.gradient(y, t)), 2 * x)
