"""jitgrad.random: the Philox4x32-10 primitive against Random123's known answers, the same bits
eagerly, in the graph interpreter and compiled, keys (JAX) and Generators (TensorFlow) that
draw new numbers at every call of a jitted function, and the warning for numpy.random draws
made while tracing."""

import warnings

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backend.numba import philox as compiled_philox
from jitgrad.ir.interpret import eval_graph
from jitgrad.ops import philox

# Random123's kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words), result.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_matches_random123_known_answers_in_numpy_and_numba(counter, key, want):
    words = [np.uint64(c) for c in counter]
    assert tuple(int(w) for w in philox.philox4x32(*words, *key)) == want
    block = counter[0] | (counter[1] << 32)
    got = compiled_philox._block(
        np.uint64(key[0]), np.uint64(key[1]), np.uint64(block), words[2], words[3]
    )
    assert tuple(int(w) for w in got) == want


def test_draws_use_the_documented_counter_layout():
    """Block b of a draw at offset o is Philox of counter (b lo, b hi, o lo, o hi)."""
    key = np.array([0xA4093822, 0x299F31D0], np.uint32)
    offset = np.int64(0x03707344_13198A2E)
    bits = jg.random.bits(jg.constant(key), (8,)).numpy()  # offset 0: blocks 0 and 1
    np.testing.assert_array_equal(bits[:4], philox.philox4x32(*[np.uint64(0)] * 4, *key))
    words = philox.words(key, offset, 4)
    want = philox.philox4x32(*map(np.uint64, (0, 0, 0x13198A2E, 0x03707344)), *key)
    np.testing.assert_array_equal(words, want)


def _draws(key):
    """Every distribution, float32 and float64, 0-d included, from a key."""
    out = {}
    for dtype in (jg.float32, jg.float64):
        name = np.dtype(dtype).name
        out[f"normal {name}"] = jg.random.normal(key, (7, 3), dtype)
        out[f"uniform {name}"] = jg.random.uniform(key, (5,), dtype)
        out[f"uniform [-2, 3) {name}"] = jg.random.uniform(key, (5,), dtype, -2.0, 3.0)
        out[f"0-d normal {name}"] = jg.random.normal(key, (), dtype)
    out["bits"] = jg.random.bits(key, (6,))
    out["split"] = jg.random.split(key, 3)
    out["fold_in"] = jg.random.fold_in(key, 7)
    out["randint"] = jg.random.randint(key, (9,), -3, 4)
    out["bernoulli"] = jg.random.bernoulli(key, 0.3, (9,))
    return out


GENERATOR = jg.random.Generator.from_seed(2024)


def _generator_draws(x):
    """Draws of a Generator the function reads: its state is an input and an output."""
    return {
        "normal": x + GENERATOR.normal((3,)),
        "uniform float64": GENERATOR.uniform((4,), dtype=jg.float64),
        "truncated float32": GENERATOR.truncated_normal((50,), mean=1.0, stddev=2.0),
        "truncated float64": GENERATOR.truncated_normal((50,), dtype=jg.float64),
        "integers": GENERATOR.uniform((6,), 10, 20, dtype=jg.int64),
    }


_compiled = {}


def _jitted(fn):
    """One jitted function per test module: each is compiled once."""
    if fn not in _compiled:
        _compiled[fn] = jg.jit(fn)
    return _compiled[fn]


def _numpy(tree):
    return {k: v.numpy() for k, v in tree.items()}


def _assert_same_bits(got, want):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].tobytes() == want[name].tobytes(), name


def test_key_draws_are_the_same_bits_eagerly_interpreted_and_compiled():
    key = jg.random.key(123)
    eager = _numpy(_draws(key))
    compiled = _numpy(_jitted(_draws)(key))
    _assert_same_bits(compiled, eager)
    lowered = _jitted(_draws).lower(key)
    names = sorted(eager)  # the outputs are a dict: sorted keys
    interpreted = dict(zip(names, eval_graph(lowered.traced, key.numpy())))
    _assert_same_bits(interpreted, eager)
    assert "philox_normal" in lowered.source and "philox_uniform32" in lowered.source


def test_generator_draws_are_the_same_bits_eagerly_and_compiled():
    x = np.zeros(3, np.float32)
    GENERATOR.reset_from_seed(7)
    eager = [_numpy(_generator_draws(x)) for _ in range(2)]
    GENERATOR.reset_from_seed(7)
    f = _jitted(_generator_draws)
    compiled = [_numpy(f(x)) for _ in range(2)]
    for got, want in zip(compiled, eager):
        _assert_same_bits(got, want)
    assert not np.array_equal(compiled[0]["normal"], compiled[1]["normal"])
    assert GENERATOR.state.numpy()[0] == 10  # five draws per call
    assert "states[0].assign(" in type(f).__call__.source  # the fast entry writes it back


def test_keys_passed_to_a_jitted_function_draw_per_key():
    f = _jitted(_draws)
    a, b, a_again = (f(jg.random.key(s))["normal float32"].numpy() for s in (1, 2, 1))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, a_again)


def test_a_jitted_function_draws_new_numbers_at_each_call_from_the_global_generator():
    f = _jitted(lambda x: x + jg.random.normal([4]) + jg.random.uniform([4]))
    x = np.zeros(4, np.float32)
    jg.random.set_seed(3)
    first, second = f(x).numpy(), f(x).numpy()
    assert not np.array_equal(first, second)
    jg.random.set_seed(3)
    eager = [(jg.random.normal([4]) + jg.random.uniform([4])).numpy() for _ in range(2)]
    np.testing.assert_array_equal(first, eager[0])
    np.testing.assert_array_equal(second, eager[1])


def test_split_and_fold_in_are_deterministic_and_distinct():
    key = jg.random.key(0)
    k1, k2 = jg.random.split(key)
    again = jg.random.split(key).numpy()
    np.testing.assert_array_equal(np.stack([k1.numpy(), k2.numpy()]), again)
    assert k1.dtype == jg.uint32 and k1.shape == (2,)
    folded = [jg.random.fold_in(key, d).numpy().tolist() for d in (0, 1, 0)]
    assert folded[0] == folded[2] != folded[1]
    keys = {tuple(k) for k in jg.random.split(key, 100).numpy().tolist()} | {
        tuple(f) for f in folded
    }
    assert len(keys) == 102  # the 100 split keys, fold_in's two, all different
    x = jg.random.normal(k1, (8,)).numpy()
    assert not np.array_equal(x, jg.random.normal(k2, (8,)).numpy())
    assert not np.array_equal(x, jg.random.normal(key, (8,)).numpy())
    assert jg.random.PRNGKey(5).numpy().tolist() == [0, 5]
    assert jg.random.key(-1).numpy().tolist() == [2**32 - 1, 2**32 - 1]
    assert jg.random.key(2**40 + 3).numpy().tolist() == [2**8, 3]


def test_a_traced_seed_and_fold_in_data_give_the_eager_keys():
    @jg.jit
    def keys(seed, step):
        k = jg.random.key(seed)
        return k, jg.random.fold_in(k, step)

    k, folded = keys(np.int64(-7), np.int32(12))
    np.testing.assert_array_equal(k.numpy(), jg.random.key(-7).numpy())
    np.testing.assert_array_equal(folded.numpy(), jg.random.fold_in(jg.random.key(-7), 12).numpy())


def test_distributions():
    key = jg.random.key(42)
    for dtype in (jg.float32, jg.float64):
        z = jg.random.normal(key, (100_000,), dtype).numpy().astype(np.float64)
        # 5 standard errors: mean 1/sqrt(n), variance sqrt(2/n).
        assert abs(z.mean()) < 5 / np.sqrt(1e5) and abs(z.var() - 1) < 5 * np.sqrt(2e-5)
        u = jg.random.uniform(key, (100_000,), dtype).numpy()
        assert u.dtype == dtype and u.min() >= 0 and u.max() < 1
        assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 1e5)
        t = jg.random.Generator.from_key(key).truncated_normal((20_000,), dtype=dtype).numpy()
        assert np.abs(t).max() <= 2 and abs(t.std() - 0.8796) < 0.02
    u = jg.random.uniform(key, (1000,), jg.float32, -2.0, 3.0).numpy()
    assert u.min() >= -2 and u.max() < 3
    i = jg.random.randint(key, (10_000,), -3, 4).numpy()
    assert i.dtype == np.int32 and set(np.unique(i)) == set(range(-3, 4))
    b = jg.random.bernoulli(key, 0.3, (100_000,)).numpy()
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 5 * np.sqrt(0.21 / 1e5)
    bits = jg.random.bits(key, (100_000,)).numpy()
    assert abs(bits.astype(np.float64).mean() / 2**32 - 0.5) < 0.005


def test_the_tensorflow_forms():
    a = jg.random.normal([3], seed=7).numpy()
    np.testing.assert_array_equal(a, jg.random.normal([3], seed=7).numpy())
    assert a.dtype == np.float32
    s = jg.random.normal([2, 2], mean=10.0, stddev=0.001, dtype=jg.float64).numpy()
    assert s.dtype == np.float64 and np.abs(s - 10).max() < 0.01
    u = jg.random.uniform([1000], 2, 5, dtype=jg.int32, seed=3).numpy()
    assert u.dtype == np.int32 and u.min() == 2 and u.max() == 4
    t = jg.random.truncated_normal([1000], stddev=2.0, seed=1).numpy()
    assert np.abs(t).max() <= 4.0
    stateless = jg.random.stateless_normal([3], seed=[0, 7]).numpy()
    np.testing.assert_array_equal(stateless, jg.random.normal(jg.random.key(7), (3,)).numpy())
    v = jg.random.stateless_uniform([3], seed=[1, 2], minval=1.0, maxval=2.0).numpy()
    assert v.min() >= 1 and v.max() < 2
    half = jg.random.uniform(jg.random.key(1), (20_000,), jg.float16).numpy()
    assert half.dtype == np.float16 and half.min() >= 0 and half.max() < 1  # float32 rounded
    assert jg.random.normal([3], dtype=jg.float16).dtype == jg.float16


def test_a_generator_is_deterministic_given_its_seed():
    g1, g2 = jg.random.Generator.from_seed(9), jg.random.Generator.from_seed(9)
    np.testing.assert_array_equal(g1.normal((4,)).numpy(), g2.normal((4,)).numpy())
    assert g1.state.numpy().tolist() == [1, 0, 9] and g1.state.dtype == jg.int64
    # A Generator's first draw is the same draw from the key of its seed.
    np.testing.assert_array_equal(
        jg.random.Generator.from_seed(9).uniform((3,)).numpy(),
        jg.random.uniform(jg.random.key(9), (3,)).numpy(),
    )
    children = g1.split(2)
    draws = [c.normal((4,)).numpy() for c in (*children, g1)]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    other = jg.random.Generator.from_non_deterministic_state()
    assert other.state.numpy()[0] == 0 and other.algorithm == "philox"


def test_svi_noise_under_jit_grad_is_new_at_each_call():
    """Black-box SVI: a reparameterised sample of q = N(mu, 1) inside a compiled gradient."""
    g = jg.random.Generator.from_seed(0)

    @jg.jit_grad
    def negative_elbo(mu):
        z = mu + g.normal((64,), dtype=jg.float64)
        return jg.reduce_mean(0.5 * z**2)

    mu = np.zeros(64)
    (v1, g1), (v2, g2) = negative_elbo(mu), negative_elbo(mu)
    assert float(v1) != float(v2) and not np.array_equal(g1.numpy(), g2.numpy())
    # The gradient is the noise itself over 64: d/dmu mean(0.5 (mu + eps)^2) = (mu + eps) / 64.
    check = jg.random.Generator.from_seed(0)
    np.testing.assert_allclose(g1.numpy(), check.normal((64,), dtype=jg.float64).numpy() / 64)
    np.testing.assert_allclose(g2.numpy(), check.normal((64,), dtype=jg.float64).numpy() / 64)


def test_a_train_step_advances_its_generator():
    g = jg.random.Generator.from_seed(1)

    def loss(params, x):
        return jg.reduce_sum((params["w"] * x + g.normal((2,))) ** 2)

    opt = jg.optim.SGD(0.1)
    params = {"w": np.ones(2, np.float32)}
    step = jg.jit_train_step(loss, opt)
    state = opt.init(params)
    losses = [float(step(params, state, np.ones(2, np.float32))) for _ in range(2)]
    assert g.state.numpy()[0] == 2
    eager = jg.random.Generator.from_seed(1)
    w = np.ones(2, np.float32)
    noise = eager.normal((2,)).numpy()
    assert losses[0] == pytest.approx(float(np.sum((w + noise) ** 2)), rel=1e-6)
    w = w - 0.1 * 2 * (w + noise)
    noise = eager.normal((2,)).numpy()
    assert losses[1] == pytest.approx(float(np.sum((w + noise) ** 2)), rel=1e-5)


def test_a_generator_cannot_advance_inside_a_compiled_loop_body():
    g = jg.random.Generator.from_seed(0)

    @jg.jit
    def f(x):
        return jg.fori_loop(0, 3, lambda i, c: c + g.normal(()), x)

    with pytest.raises(TypeError, match="random Generator.*advanced its state, inside"):
        f(np.float32(0))


def test_bad_keys_and_arguments_name_the_op():
    with pytest.raises(
        TypeError, match=r"random.normal: expects a key .*got uint32 of shape \(1,\)"
    ):
        jg.random.normal(np.array([1], np.uint32), (3,))
    with pytest.raises(TypeError, match="philox: normal draws are float32 or float64, not int32"):
        jg.random.normal(jg.random.key(0), (3,), jg.int32)
    with pytest.raises(TypeError, match="random.uniform: draws floats"):
        jg.random.uniform(jg.random.key(0), (3,), jg.int32)
    with pytest.raises(TypeError, match="integer dtypes need maxval"):
        jg.random.uniform([3], dtype=jg.int32)
    with pytest.raises(TypeError, match="random.truncated_normal: takes a shape first"):
        jg.random.truncated_normal(jg.random.key(0))
    with pytest.raises(TypeError, match="Generator.split: makes new Generators"):
        jg.jit(lambda x: jg.random.Generator.from_seed(0).split(2) and x)(1.0)


def _numpy_draw(x):
    return x + np.random.randn(2)


def test_numpy_random_while_tracing_warns_with_the_line_and_is_restored():
    original = np.random.randn
    with pytest.warns(RuntimeWarning, match=r"np.random.randn called while tracing .*test_random"):
        jg.jit(_numpy_draw)(np.zeros(2))
    assert np.random.randn is original

    def failing(x):
        np.random.normal()
        raise ValueError("inside the trace")

    with pytest.warns(RuntimeWarning, match="np.random.normal"), pytest.raises(ValueError):
        jg.jit(failing)(1.0)
    assert np.random.normal.__module__ != __name__ and np.random.randn is original

    from numpy.random import rand  # bound before the trace: the state check catches it

    with pytest.warns(RuntimeWarning, match="numpy's global random generator drew"):
        jg.jit(lambda x: x + rand())(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.random.randn(1)  # outside a trace: no warning
        jg.jit(lambda x: x * 2)(1.0)


def test_layers_built_by_a_compiled_first_call_draw_without_a_warning():
    """TensorFlow's guide pattern: a Module whose Dense layers make their Variables in the
    first call of a jitgrad.function. Their initializers draw with numpy, once, for the
    Variables' initial values: no warning about draws reused at every call."""

    class Model(jg.Module):
        def __init__(self):
            super().__init__()
            self.layers = [jg.nn.Dense(4), jg.nn.Dense(2)]

        @jg.function
        def __call__(self, x):
            for layer in self.layers:
                x = jg.nn.relu(layer(x))
            return x

    model = Model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = model(np.ones((2, 3), np.float32))
        assert np.array_equal(model(np.ones((2, 3), np.float32)).numpy(), first.numpy())
    assert len(model.trainable_variables) == 4


def test_a_call_a_tape_watches_draws_and_advances_as_the_kernel_does():
    """A tape watching the inputs replays the graph op by op: the state still advances."""
    g = jg.random.Generator.from_seed(4)
    f = jg.jit(lambda x: jg.reduce_sum(x * g.normal((2,))))
    x = jg.constant(np.ones(2, np.float32))
    with jg.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    want = jg.random.Generator.from_seed(4).normal((2,)).numpy()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), want)
    assert g.state.numpy()[0] == 1


def test_categorical_samples_follow_the_softmax_of_the_logits():
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    logits = np.log(probs).astype(np.float32)
    s = jg.random.categorical(jg.random.key(0), logits, shape=(20_000, 2)).numpy()
    assert s.shape == (20_000, 2) and s.dtype == np.int64
    for b in range(2):
        freq = np.bincount(s[:, b], minlength=3) / 20_000
        np.testing.assert_allclose(freq, probs[b], atol=5 * np.sqrt(0.25 / 20_000))
    tf_form = jg.random.categorical(logits, 7, seed=3)
    assert tf_form.shape == (2, 7)
    assert jg.random.categorical(jg.random.key(1), logits.T, axis=0).shape == (2,)
