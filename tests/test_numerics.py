"""Compiled numbers equal eager (numpy) numbers: integer wraparound in the narrow type, IEEE
special values through the simplifier and the op templates, and float32 sums that keep their
digits. Integer and exactly rounded float results are compared bit for bit (any NaN for a
NaN); the eager result is the reference."""

import numpy as np
import pytest

import jitgrad as jg

I32_MAX = np.iinfo(np.int32).max


def eager(fn, *args):
    return np.asarray(fn(*[jg.constant(a) for a in args]))


def assert_same_bits(compiled, reference):
    """Equal dtype and shape, and equal bits (-0.0 is not +0.0); any NaN matches any NaN."""
    compiled, reference = np.asarray(compiled), np.asarray(reference)
    assert compiled.dtype == reference.dtype and compiled.shape == reference.shape
    if reference.dtype.kind == "f":
        nan = np.isnan(compiled) & np.isnan(reference)
        same = (compiled == reference) & (np.signbit(compiled) == np.signbit(reference))
        assert np.all(nan | same), f"compiled {compiled!r} vs eager {reference!r}"
    else:
        np.testing.assert_array_equal(compiled, reference)


def check(fn, *args):
    """jit(fn)(*args) equals fn on eager tensors, bit for bit."""
    args = [np.asarray(a) for a in args]
    assert_same_bits(jg.jit(fn)(*args), eager(fn, *args))


# -- integers: numpy's dtype and wraparound ---------------------------------------------------

INTEGER_CASES = {
    "int32 sum at the maximum wraps": (lambda x, y: x + y, np.int32(I32_MAX), np.int32(1)),
    "uint8 0 - 1 is 255": (lambda x, y: x - y, np.uint8(0), np.uint8(1)),
    "int16 product wraps": (lambda x, y: x * y, np.int16(300), np.int16(300)),
    "comparison after a wrap": (lambda x, y: (x + y) > 0, np.int32(I32_MAX), np.int32(1)),
    "floordiv of a wrapped difference": (lambda x, y: (x - y) // 2, np.uint8(0), np.uint8(1)),
    "array comparison after a wrap": (
        lambda x, y: (x + y) > 0,
        np.full(5, I32_MAX, np.int32),
        np.arange(5, dtype=np.int32),
    ),
    "int32 reduce_sum wraps": (jg.reduce_sum, np.full(4, 2**30, np.int32)),
    "uint8 reduce_sum wraps": (jg.reduce_sum, np.full(7, 200, np.uint8)),
    "int32 reduce_mean of a wrapped sum": (jg.reduce_mean, np.full(4, 2**30, np.int32)),
    "int32 reduce_prod wraps": (jg.reduce_prod, np.array([65537, 65537], np.int32)),
    "uint8 sign of values >= 128": (jg.sign, np.array([0, 1, 128, 255], np.uint8)),
    "uint8 0-d sign": (jg.sign, np.uint8(200)),
    "int64 minimum // -1 wraps to the minimum": (
        lambda x, y: x // y,
        np.array([np.iinfo(np.int64).min, 7, -7], np.int64),
        np.array([-1, -1, 2], np.int64),
    ),
}


@pytest.mark.parametrize("case", list(INTEGER_CASES))
def test_compiled_integers_wrap_like_numpy(case):
    fn, *args = INTEGER_CASES[case]
    check(fn, *args)


# -- IEEE special values ----------------------------------------------------------------------

F32 = np.float32
IEEE_CASES = {
    "x + 0.0 at -0.0 is +0.0": (lambda x: x + 0.0, F32(-0.0)),
    "0.0 - x at +0.0 is +0.0": (lambda x: 0.0 - x, F32(0.0)),
    "x ** 0.5 at -inf, -0.0 is sqrt's": (lambda x: x**0.5, np.array([-np.inf, -0.0], F32)),
    "0-d x ** 0.5 at -inf is NaN": (lambda x: x**0.5, F32(-np.inf)),
    "maximum(-0.0, 0.0) is +0.0": (jg.maximum, F32(-0.0), F32(0.0)),
    "maximum(0.0, -0.0) is -0.0": (jg.maximum, F32(0.0), F32(-0.0)),
    "minimum(0.0, -0.0) is -0.0": (jg.minimum, F32(0.0), F32(-0.0)),
    "maximum(1, NaN) is NaN": (jg.maximum, np.array([1.0, 2.0], F32), np.array([np.nan, 0.0], F32)),
    "minimum(1, NaN) is NaN": (jg.minimum, np.array([1.0, 2.0], F32), np.array([np.nan, 3.0], F32)),
    "sign(-0.0) is +0.0": (jg.sign, np.array([-0.0, 0.0, np.nan, -np.inf], F32)),
    "reduce_max of a +-0 tie is the later": (jg.reduce_max, np.array([0.0, -0.0], F32)),
    "row maxima of +-0 ties": (
        lambda x: jg.reduce_max(x, axis=1),
        np.array([[0.0, -0.0], [-0.0, 0.0]], F32),
    ),
}


@pytest.mark.parametrize("case", list(IEEE_CASES))
def test_compiled_special_values_match_eager(case):
    fn, *args = IEEE_CASES[case]
    check(fn, *args)


def test_products_by_constants_overflow_like_eager():
    """Kernels are compiled without fast-math flags: with 'reassoc', LLVM folded
    (x * 1e38) * 1e-38 into x * (1e38 * 1e-38), and 88 came back instead of inf."""
    check(lambda x: x * 1e38 * 1e-38, F32(88.0))


# -- float32 reductions accumulate wide (item 6) --------------------------------------------------


def ulps_from_exact(result, x) -> float:
    """How many float32 ulps `result` is from the exactly rounded float64 sum of `x`."""
    exact = np.float32(np.sum(x, dtype=np.float64))
    return abs(float(result) - float(exact)) / float(np.spacing(exact))


def test_float32_sum_of_many_small_terms_keeps_its_digits():
    """2**24 terms of 0.1 (a parallel loop): one float32 accumulator per vector lane was off
    by 1e-3 relative (~8,000 ulps); eager's pairwise sum is 2 ulps off. Blocks of float32
    partial sums added in float64 match it."""
    x = np.full(1 << 24, 0.1, np.float32)
    total = np.asarray(jg.jit(jg.reduce_sum)(x))
    assert total.dtype == np.float32
    assert ulps_from_exact(total, x) <= 2


def test_float32_mean_of_a_serial_loop_keeps_its_digits():
    """Below the parallel threshold (a serial loop): 100_000 terms of 0.1."""
    x = np.full(100_000, 0.1, np.float32)
    mean = np.asarray(jg.jit(jg.reduce_mean)(x))
    assert mean.dtype == np.float32
    assert ulps_from_exact(mean * np.float32(100_000), x) <= 2


def test_float32_sum_over_rows_keeps_its_digits():
    """A 2-D loop: float32 partial sums per row, long rows in blocks as a 1-D loop's, added in
    float64 (unblocked rows of 1,024 were 4 ulps off on an Intel Xeon, 2 on an AMD EPYC)."""
    x = np.full((4096, 1024), 0.1, np.float32)
    total = np.asarray(jg.jit(jg.reduce_sum)(x))
    assert ulps_from_exact(total, x) <= 2


def test_float32_sum_source_adds_float32_blocks_in_float64():
    source = jg.jit(jg.reduce_sum).lower(np.ones(1 << 20, np.float32)).source
    assert "acc1 = np.float64(0.0)" in source and "part1 = np.float32(0.0)" in source
    assert "acc1 += np.float64(part1)" in source and "v1 = np.float32(acc1)" in source


def test_narrow_integer_sum_accumulates_in_int64_and_wraps_once():
    source = jg.jit(jg.reduce_sum).lower(np.ones(8, np.int32)).source
    assert "acc1 = np.int64(0)" in source
    assert "v1 = np.int32(acc1)" in source
