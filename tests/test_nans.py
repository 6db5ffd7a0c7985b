"""NaN and Inf propagate as numpy's; `config.debug_nans` finds the op that made the first NaN."""

import numpy as np
import pytest

import jitgrad as jg

CASES = {
    "log(0)": (lambda x: jg.log(x * 0.0), np.array([1.0, 2.0])),
    "0/0": (lambda x: (x * 0.0) / (x * 0.0), np.array([1.0, 2.0])),
    "exp overflow": (lambda x: jg.exp(x * 1000.0), np.array([1.0, -1.0], np.float32)),
    "sqrt(negative)": (lambda x: jg.sqrt(-x), np.array([1.0, 4.0])),
    "inf - inf": (lambda x: jg.exp(x * 1000.0) - jg.exp(x * 1000.0), np.array([1.0])),
    "tanh(inf)": (lambda x: jg.tanh(x / 0.0), np.array([1.0, -1.0], np.float32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_propagate_like_numpy(name):
    fn, x = CASES[name]
    eager = np.asarray(fn(jg.constant(x)))
    compiled = np.asarray(jg.jit(fn)(x))
    with np.errstate(all="ignore"):
        expected = np.asarray(fn(jg.constant(x)))
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(compiled, eager)  # NaN == NaN, inf == inf positionally


@pytest.fixture
def debug_nans():
    jg.config.debug_nans = True
    yield
    jg.config.debug_nans = False


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_debug_nans_eager_names_op_and_line(debug_nans):
    x = jg.constant([1.0, -1.0])
    with pytest.raises(FloatingPointError, match=r"sqrt: produced NaN.*test_nans.py:\d+"):
        jg.sqrt(x)
    jg.exp(x)  # no NaN: no error


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_debug_nans_compiled_reruns_to_locate_the_op(debug_nans):
    def f(x):
        doubled = x * 2.0
        return jg.log(doubled) + 1.0  # the NaN is born here

    with pytest.raises(FloatingPointError) as info:
        jg.jit(f)(np.array([1.0, -1.0]))
    message = str(info.value)
    assert message.startswith("log: produced NaN")
    assert "test_nans.py:" in message


def test_nans_in_inputs_are_not_reported(debug_nans):
    jg.jit(lambda x: x + 1.0)(np.array([np.nan]))
    jg.constant([np.nan]) * 2.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_debug_nans_names_an_eager_sum_of_opposite_infinities(debug_nans):
    x = jg.constant([np.inf, -np.inf])
    with pytest.raises(FloatingPointError, match=r"reduce_sum: produced NaN.*test_nans.py:\d+"):
        jg.reduce_sum(x)
    with pytest.raises(FloatingPointError, match=r"reduce_sum: produced NaN"):
        jg.reduce_mean(x)
