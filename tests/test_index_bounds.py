"""Out-of-range indices and labels raise IndexError, eagerly and compiled, naming the op, the
index value, the axis size and the user's line; valid negative indices follow numpy.

Compiled code used to index without checks where the forward gather was dead code (the
backward scatter-add of jit(grad(f)) wrote outside its buffer, or segfaulted), where several
index arrays were merged into one flat index (gather_nd, x[i, j]), and for labels (a label
of 10 for 10 classes counted the row as loss 0)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad as jg

HERE = os.path.basename(__file__)


def _where(pattern: str) -> str:
    """`pattern` followed by this file's name and a line number (the user's line)."""
    return pattern + rf".*\({HERE}:\d+\)"


def _sum_of_gather(x, i):
    return jg.reduce_sum(jg.gather(x, i))


_grad_of_gather = jg.jit(jg.grad(_sum_of_gather))


@pytest.mark.parametrize("bad", [5, 7, -6, -9])
def test_compiled_gradient_of_gather_checks_indices(bad):
    x = np.arange(5, dtype=np.float32)
    with pytest.raises(
        IndexError,
        match=_where(
            rf"scatter_add \(the gradient of gather\): index {bad} is out of bounds for "
            r"axis 0 of size 5"
        ),
    ):
        _grad_of_gather(x, np.array([bad], np.int32))


def test_compiled_gradient_of_gather_far_out_of_range_does_not_crash():
    """10**6 used to write far outside the buffer: a segfault, so run it in a subprocess."""
    script = textwrap.dedent("""
        import numpy as np, jitgrad
        d = jitgrad.jit(jitgrad.grad(lambda x, i: jitgrad.reduce_sum(jitgrad.gather(x, i))))
        try:
            d(np.arange(5, dtype=np.float32), np.array([10**6], np.int32))
        except IndexError as exc:
            print("raised:", exc)
    """)
    env = dict(os.environ, JITGRAD_CACHE_DIR=jg.config.cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "index 1000000 is out of bounds for axis 0 of size 5" in done.stdout


def test_valid_negative_and_repeated_indices_accumulate_like_numpy():
    x = np.arange(5, dtype=np.float32)
    idx = np.array([-1, 4, 4, 0], np.int32)
    expected = np.zeros(5, np.float32)
    np.add.at(expected, idx, 1.0)
    np.testing.assert_array_equal(_grad_of_gather(x, idx).numpy(), expected)
    np.testing.assert_array_equal(jg.grad(_sum_of_gather)(x, idx).numpy(), expected)


def test_compiled_gather_names_the_value_the_axis_and_the_line():
    take = jg.jit(lambda x, i: jg.gather(x, i, axis=1))
    with pytest.raises(
        IndexError, match=_where(r"gather: index 3 is out of bounds for axis 1 of size 3")
    ):
        take(np.ones((2, 3), np.float32), np.array([0, 3]))


def test_eager_gather_and_its_gradient_check_indices():
    x = jg.constant(np.arange(5, dtype=np.float32))
    with pytest.raises(IndexError, match=_where(r"gather: index 7 is out of bounds")):
        jg.gather(x, [7])
    with pytest.raises(IndexError, match=_where(r"index -9 is out of bounds for axis 0")):
        jg.grad(_sum_of_gather)(x, np.array([-9]))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_getitem_with_an_index_array_checks_it(compiled):
    f = lambda x, i: jg.reduce_sum(x[i])  # noqa: E731
    fn = jg.jit_grad(f) if compiled else jg.value_and_grad(f)
    with pytest.raises(IndexError, match=r"index 4 is out of bounds for axis 0 of size 4"):
        fn(np.ones(4, np.float32), np.array([1, 4]))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_getitem_with_several_index_arrays_checks_each_before_merging(compiled):
    """x[[0], [4]] on a 3x3 input would merge to the flat index 4: element [1, 1]."""
    f = lambda x, i, j: x[i, j]  # noqa: E731
    fn = jg.jit(f) if compiled else f
    x = np.arange(9.0).reshape(3, 3)
    tensor = x if compiled else jg.constant(x)
    with pytest.raises(
        IndexError, match=_where(r"getitem: index 4 is out of bounds for axis 1 of size 3")
    ):
        fn(tensor, np.array([0]), np.array([4]))
    i, j = np.array([0, -1, 2]), np.array([-3, 2, -1])
    np.testing.assert_array_equal(np.asarray(fn(tensor, i, j)), x[i, j])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_gather_nd_checks_every_component(compiled):
    fn = jg.jit(jg.gather_nd) if compiled else jg.gather_nd
    x = np.arange(9.0).reshape(3, 3)
    with pytest.raises(
        IndexError,
        match=r"gather_nd: index 4 is out of bounds for axis 1 of "
        r"size 3",
    ):
        fn(x, np.array([[0, 4]]))
    # TensorFlow's gather_nd has no negative indices.
    with pytest.raises(IndexError, match=r"gather_nd: index -1 is out of bounds for axis 0"):
        fn(x, np.array([[-1, 0]]))
    np.testing.assert_array_equal(np.asarray(fn(x, np.array([[0, 2], [2, 1]]))), [2.0, 7.0])


def _sparse_losses():
    return {
        "with_logits": lambda y, z: jg.reduce_sum(
            jg.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)
        ),
        "loss": lambda y, z: jg.nn.sparse_softmax_cross_entropy(y, z),
    }


@pytest.mark.parametrize("label", [10, -1])
@pytest.mark.parametrize("loss", sorted(_sparse_losses()))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_out_of_range_labels_raise(compiled, loss, label):
    f = _sparse_losses()[loss]
    fn = jg.jit_grad(f, wrt=1) if compiled else jg.value_and_grad(f, 1)
    with pytest.raises(
        IndexError,
        match=_where(
            rf"sparse_softmax_cross_entropy_with_logits: label {label} is outside the valid "
            r"range \[0, 10\)"
        ),
    ):
        fn(np.array([3, label], np.int32), np.zeros((2, 10), np.float32))


def test_in_range_labels_compile_to_the_eager_loss():
    f = _sparse_losses()["loss"]
    labels = np.array([0, 9, 4], np.int64)
    logits = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    value, grad = jg.jit_grad(f, wrt=1)(labels, logits)
    eager_value, eager_grad = jg.value_and_grad(f, 1)(labels, logits)
    np.testing.assert_allclose(float(value), float(eager_value), rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), eager_grad.numpy(), rtol=1e-5, atol=1e-7)


def test_embedding_lookup_checks_ids_under_jit_grad():
    layer = jg.nn.Embedding(10, 4)
    params = layer.init(0, (None, 3))

    @jg.jit_grad
    def loss(params, ids):
        return jg.reduce_sum(layer.apply(params, ids))

    with pytest.raises(IndexError, match=r"index 10 is out of bounds for axis 0 of size 10"):
        loss(params, np.array([[1, 2, 10]], np.int32))
    _, grads = loss(params, np.array([[1, 2, 9]], np.int32))
    np.testing.assert_array_equal(
        grads["embeddings"].numpy().sum(axis=1), [0, 4, 4, 0, 0, 0, 0, 0, 0, 4]
    )


def test_one_hot_keeps_tensorflows_all_off_rows():
    """one_hot reads no memory at an index: out-of-range indices give an all-off row, as in
    TensorFlow (code relies on -1 for padding), eagerly and compiled."""
    expected = [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(jg.one_hot([1, -1, 3], 3).numpy(), expected)
    compiled = jg.jit(lambda i: jg.one_hot(i, 3))(np.array([1, -1, 3]))
    np.testing.assert_array_equal(compiled.numpy(), expected)


def test_gradient_of_one_element_gathered_from_a_vector():
    """A 0-d gather's cotangent is a scalar inside the kernel; the scatter-add used to call
    `.copy()` on it (a Numba typing error in the tape's compiled backward; found by
    tests/fuzz/test_indices.py)."""
    x = jg.constant(np.arange(4.0))
    for _ in range(3):  # the tape compiles its backward on the second recording
        with jg.GradientTape() as tape:
            tape.watch(x)
            y = jg.gather(x, np.array(2)) * 3.0
        np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 0.0, 3.0, 0.0])
    _, grad = jg.jit_grad(lambda x: jg.gather(x, np.array(-1)) * 3.0)(np.arange(4.0))
    np.testing.assert_array_equal(grad.numpy(), [0.0, 0.0, 0.0, 3.0])
