"""runtime.permute (a kernel's transposes) and runtime.contiguous_copy (its strided views made
C-contiguous) against numpy, over shapes with sizes 0 and 1, every permutation and dtype,
and the errors permute raises for an output of the wrong shape or a non-permutation."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgrad.backend.numba import runtime
from jitgrad.backend.numba.helper_names import ARRAY_DTYPES


def _ints(values):
    return tuple(np.int64(v) for v in values)


def _permuted(x, perm):
    out = np.empty([x.shape[p] for p in perm], x.dtype)
    runtime.permute(x, out, _ints(perm))
    return out


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=3, max_size=5),
    data=st.data(),
)
def test_permute_is_numpys_transpose(shape, data):
    perm = data.draw(st.permutations(range(len(shape))))
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    np.testing.assert_array_equal(_permuted(x, perm), np.transpose(x, perm))


@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
def test_permute_every_dtype_and_permutation_of_a_w10_shape(dtype):
    x = (np.arange(2 * 3 * 4 * 5) % 7).astype(dtype).reshape(2, 3, 4, 5)
    for perm in itertools.permutations(range(4)):
        np.testing.assert_array_equal(_permuted(x, perm), np.transpose(x, perm))


def test_permute_rejects_a_wrong_output_shape_or_a_non_permutation():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="permute: the output's shape is not the input's"):
        runtime.permute(x, np.empty((3, 2, 5)), _ints((1, 0, 2)))
    with pytest.raises(ValueError, match="permute: perm is not a permutation"):
        runtime.permute(np.zeros((2, 2, 2)), np.empty((2, 2, 2)), _ints((0, 0, 1)))
    with pytest.raises(ValueError, match="permute: the output's shape"):
        runtime.permute(x, np.empty((2, 3, 4)), _ints((0, 1, 3)))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    data=st.data(),
)
def test_contiguous_copy_of_a_strided_view(shape, data):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    steps = [data.draw(st.sampled_from([1, 2, -1, -2])) for _ in shape]
    view = x[tuple(slice(None, None, s) for s in steps)]
    copied = runtime.contiguous_copy(view)
    assert copied.flags.c_contiguous
    np.testing.assert_array_equal(copied, view)
