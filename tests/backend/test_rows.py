"""Row loops (backend/numba/rows.py): groups that depend on each other row by row run in one
loop over the rows; anything that needs a whole column first must not."""

import numpy as np
import pytest

import jitgrad as jg

RNG = np.random.default_rng(3)
X = RNG.standard_normal((6, 5)).astype(np.float32)
LABELS = RNG.integers(0, 5, 6).astype(np.int32)


def softmax_xent(x, labels):
    return jg.reduce_mean(jg.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x))


def row_then_column(x, labels):
    y = x / jg.reduce_sum(jg.exp(x), axis=1, keepdims=True)  # row-local
    z = y - jg.reduce_mean(y, axis=0, keepdims=True)  # needs every row of y first
    return jg.reduce_sum(z * z * jg.cast(labels[:, None], jg.float32))


def column_then_row(x, labels):
    c = x - jg.reduce_max(x, axis=0)  # column maxima broadcast along the rows
    return jg.reduce_sum(jg.reduce_logsumexp(c, axis=1)) + jg.reduce_sum(c[:, 0])


def column_sums_as_rows(x, labels):
    """A column reduction of a square input read back as one value per row: shaped like a
    row value, but complete only after the last row."""
    s = jg.reduce_sum(jg.exp(x[:, :5]), axis=0)  # (5,): sums over the 6 rows, then 5 of them
    t = jg.reshape(s, (5, 1)) * x[:5, :5]
    return jg.reduce_sum(jg.tanh(t) * jg.reduce_max(t, axis=1, keepdims=True))


def square_column_sums(x, labels):
    sq = x[:5, :5]
    s = jg.reduce_sum(jg.exp(sq), axis=0)  # (5,) over the rows of a (5, 5)
    t = jg.reshape(s, (5, 1)) * sq
    return jg.reduce_sum(jg.tanh(t) * jg.reduce_max(t, axis=1, keepdims=True))


def row_sums_along_columns(x, labels):
    """Row sums of a square input broadcast numpy's way, along the last axis: element (i, j)
    reads the sum of row j, which a row loop has not computed yet at row i < j."""
    sq = jg.exp(x[:5, :5])
    c = sq - jg.reduce_sum(sq, axis=1)
    return jg.reduce_sum(jg.reduce_logsumexp(c, axis=1) * jg.cast(labels[:5], jg.float32))


@pytest.mark.parametrize(
    "fn, merges",
    [
        (softmax_xent, True),
        (row_then_column, True),
        (column_then_row, None),
        (column_sums_as_rows, None),
        (square_column_sums, None),
        (row_sums_along_columns, None),
    ],
)
def test_row_loops_compute_what_the_tape_computes(fn, merges):
    compiled = jg.jit_grad(fn, wrt=0)
    value, grad = compiled(X, LABELS)
    x = jg.constant(X)
    with jg.GradientTape() as tape:
        tape.watch(x)
        eager = fn(x, LABELS)
    np.testing.assert_allclose(float(value), float(eager), rtol=1e-5)
    want = np.asarray(tape.gradient(eager, x))
    np.testing.assert_allclose(np.asarray(grad), want, atol=1e-5 * np.abs(want).max())
    if merges:
        assert "rows for the" in compiled.lower(X, LABELS).source


def test_softmax_cross_entropy_is_one_row_loop():
    source = jg.jit_grad(softmax_xent, wrt=0).lower(X, LABELS).source
    assert source.count("for i0 in range(6)") == 1
