"""The two rewrites of a max pool's gradient after relu (passes/simplify.py):
`mask_before_max_pool_scatter` (exact: bit for bit the graph it replaces) and
`sum_of_max_pool_scatter` (the same terms summed in another order)."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.autodiff.vjp import joint_graph
from jitgrad.core.aval import AVal
from jitgrad.ir.interpret import eval_graph
from jitgrad.ir.trace import Trace, tracing
from jitgrad.passes import optimize

X_SHAPE = (2, 6, 6, 3)
# The hard inputs multiply infinities by zeros on purpose (eagerly, in both graphs).
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def trace(fn, *shapes):
    t = Trace(fn.__name__)
    with tracing(t):
        ins = [t.new_input(AVal(s, np.dtype("float32"))) for s in shapes]
        return t.to_graph([fn(*ins)])


def relu(x):
    return jg.nn.relu(x)


def relu_floor_minus_one(x):
    return jg.where(x > 0, x, jg.zeros_like(x) - 1.0)  # c = -1 <= b = 0: the rule holds


def relu_floor_one(x):
    return jg.where(x > 0, x, jg.ones_like(x))  # c = 1 > b = 0: s > 0 everywhere, no rule


def leaky_relu(x):
    return jg.nn.leaky_relu(x, 0.1)  # the else branch is not a constant: no rule


def pooled_shape(window, strides, padding):
    x = np.zeros(X_SHAPE, np.float32)
    return jg.nn.max_pool2d(x, window, strides, padding).shape


def backward_graph(activation, window, strides, padding, with_bias=False):
    """The joint graph of sum(max_pool(activation(x [+ b])) * g): its outputs are the loss and
    the gradients w.r.t. x (and b)."""
    shape = pooled_shape(window, strides, padding)

    def loss(x, g, b):
        h = activation(x + b if with_bias else x)
        return jg.reduce_sum(jg.nn.max_pool2d(h, window, strides, padding) * g)

    graph = trace(loss, X_SHAPE, shape, (X_SHAPE[-1],))
    wrt = [graph.inputs[0], graph.inputs[2]] if with_bias else [graph.inputs[0]]
    joint, connected = joint_graph(graph, graph.outputs, wrt)
    assert all(connected)
    return joint, shape


def hard_inputs(shape, seed=0):
    """Pre-activations with ties (a few distinct values), zeros of both signs, NaN and inf;
    cotangents with -0.0, NaN and inf."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.float32([-1.5, -0.0, 0.0, 0.5, 0.5, 2.0, np.nan, np.inf, -np.inf]), X_SHAPE)
    g = rng.choice(np.float32([-0.0, 0.0, 1.0, -2.5, 3.0, np.nan, np.inf]), shape)
    b = rng.choice(np.float32([-0.0, 0.0, 0.25, -0.5]), X_SHAPE[-1])
    return x, g, b


def masked_scatters(graph):
    """The selects in `graph` of a max_pool_scatter's output (the backward's relu mask)."""
    scattered = {e.out for e in graph.eqns if e.op.name == "max_pool_scatter"}
    return [e for e in graph.eqns if e.op.name == "select" and e.inputs[1] in scattered]


def pooled_masks(graph):
    """The comparisons of a max_pool's output in `graph` (the rewrite's mask)."""
    pooled = {e.out for e in graph.eqns if e.op.name == "max_pool"}
    return [e for e in graph.eqns if e.op.name == "greater" and e.inputs[0] in pooled]


POOLS = [
    ((2, 2), (2, 2), "VALID"),
    ((3, 3), (1, 1), "SAME"),  # overlapping windows: several reach one position
    ((3, 3), (2, 2), "SAME"),
    ((2, 3), (2, 1), [[0, 0], [1, 1], [0, 2], [0, 0]]),  # explicit padding
]


@pytest.mark.parametrize("window, strides, padding", POOLS)
@pytest.mark.parametrize("activation", [relu, relu_floor_minus_one])
def test_relu_mask_moves_to_the_pooled_cotangent_bit_for_bit(activation, window, strides, padding):
    joint, shape = backward_graph(activation, window, strides, padding)
    optimized = optimize(joint)
    assert len(masked_scatters(joint)) == 1
    assert not masked_scatters(optimized)
    assert len(pooled_masks(optimized)) == 1
    for seed in range(3):
        x, g, _ = hard_inputs(shape, seed)
        before, after = eval_graph(joint, x, g, 0), eval_graph(optimized, x, g, 0)
        np.testing.assert_array_equal(after[1], before[1])
        assert np.array_equal(np.signbit(after[1]), np.signbit(before[1]))


@pytest.mark.parametrize("activation", [relu_floor_one, leaky_relu])
def test_no_rewrite_where_the_mask_is_not_the_pooled_values_sign(activation):
    joint, shape = backward_graph(activation, (2, 2), (2, 2), "VALID")
    optimized = optimize(joint)
    assert len(masked_scatters(optimized)) == 1
    assert not pooled_masks(optimized)
    x, g, _ = hard_inputs(shape)
    np.testing.assert_array_equal(eval_graph(optimized, x, g, 0)[1], eval_graph(joint, x, g, 0)[1])


def bias_gradient_input(graph):
    (total,) = [e for e in graph.eqns if e.op.name == "reduce_sum" and e.out.aval.shape == (3,)]
    return total.inputs[0].aval.shape


@pytest.mark.parametrize("window, strides, padding", POOLS)
def test_bias_gradient_sums_the_pooled_cotangent(window, strides, padding):
    joint, shape = backward_graph(relu, window, strides, padding, with_bias=True)
    optimized = optimize(joint)
    assert bias_gradient_input(joint) == X_SHAPE
    assert bias_gradient_input(optimized) == shape
    rng = np.random.default_rng(1)
    x, g, b = (rng.normal(size=s).astype(np.float32) for s in (X_SHAPE, shape, (3,)))
    before, after = eval_graph(joint, x, g, b), eval_graph(optimized, x, g, b)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[2], before[2], rtol=1e-5, atol=1e-6)


def test_bias_gradient_keeps_the_scatter_when_a_window_can_lie_in_the_padding():
    """Padding as wide as the window: a window wholly in the padding drops its cotangent, so
    the scatter's sum is not the pooled cotangent's."""
    padding = [[0, 0], [2, 2], [0, 0], [0, 0]]
    joint, shape = backward_graph(relu, (2, 2), (2, 2), padding, with_bias=True)
    optimized = optimize(joint)
    assert bias_gradient_input(optimized) == X_SHAPE
    x = np.ones(X_SHAPE, np.float32)
    g = np.ones(shape, np.float32)
    b = np.zeros(3, np.float32)
    # Per channel 2 images x 5 x 3 windows, of which the first and last rows (2 x 2 x 3) lie
    # wholly in the padding: 18 reach the input, 30 are pooled.
    assert shape == (2, 5, 3, 3)
    np.testing.assert_array_equal(eval_graph(optimized, x, g, b)[2], np.full(3, 18.0, np.float32))


def test_compiled_relu_pool_gradients_equal_eager_with_ties():
    """The kernel (the rewritten graph) against the tape (the ops as written), ties included."""
    x = np.random.default_rng(2).choice(np.float32([-1.0, 0.0, 0.5, 0.5, 2.0]), X_SHAPE)
    b = np.float32([0.0, -0.5, 0.25])
    g = np.random.default_rng(3).normal(size=pooled_shape((2, 2), (2, 2), "VALID"))
    g = g.astype(np.float32)

    def loss(x, b):
        h = jg.nn.max_pool2d(jg.nn.relu(x + b), 2, 2, "VALID")
        return jg.reduce_sum(h * g)

    value, (dx, db) = jg.jit_grad(loss, wrt=(0, 1))(x, b)
    ex, eb = jg.grad(loss, argnums=(0, 1))(x, b)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(ex))
    np.testing.assert_allclose(np.asarray(db), np.asarray(eb), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "padding", ["SAME", [[0, 0], [3, 3], [1, 1], [0, 0]]], ids=["same", "window-wide"]
)
def test_pool_gradient_of_minus_inf_windows_and_padded_windows(padding):
    """A window whose maximum is -inf routes its cotangent to its first tap inside the input
    (not to a padded tap), and a window wholly in the padding drops it: eagerly and compiled."""
    x = np.random.default_rng(4).normal(size=X_SHAPE).astype(np.float32)
    x[:, :3] = -np.inf
    shape = pooled_shape((3, 3), (1, 1), padding)
    g = np.arange(1, 1 + np.prod(shape), dtype=np.float32).reshape(shape)

    def loss(x):
        return jg.reduce_sum(jg.nn.max_pool2d(x, (3, 3), (1, 1), padding) * g)

    eager = np.asarray(jg.grad(loss)(x))
    _, compiled = jg.jit_grad(loss)(x)
    np.testing.assert_array_equal(np.asarray(compiled), eager)
    assert np.all(np.isfinite(eager))
