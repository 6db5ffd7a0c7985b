"""The batch iterator: coverage, alignment, seeded shuffling per epoch, drop_last."""

import numpy as np
import pytest

from jitgrad import data

X = np.arange(10 * 3).reshape(10, 3)
Y = np.arange(10) * 10


def test_batches_cover_every_row_once_and_stay_aligned():
    loader = data.batches(X, Y, batch_size=4, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    rows = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    assert sorted(rows[:, 0]) == list(X[:, 0])
    np.testing.assert_array_equal(rows[:, 0] // 3 * 10, ys)  # x and y rows stay paired
    assert not np.array_equal(ys, Y)  # shuffled


def test_shuffle_is_reproducible_per_epoch_and_resumable():
    a, b = data.batches(Y, batch_size=3, seed=1), data.batches(Y, batch_size=3, seed=1)
    epochs_a = [np.concatenate([y for (y,) in a]) for _ in range(3)]
    epochs_b = [np.concatenate([y for (y,) in b]) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(epochs_a[0], epochs_a[1])  # a new permutation each epoch
    resumed = data.batches(Y, batch_size=3, seed=1)
    resumed.epoch = 2
    np.testing.assert_array_equal(np.concatenate([y for (y,) in resumed]), epochs_a[2])
    other = np.concatenate([y for (y,) in data.batches(Y, batch_size=3, seed=2)])
    assert not np.array_equal(other, epochs_a[0])


def test_drop_last_and_no_shuffle():
    loader = data.batches(X, batch_size=4, shuffle=False, drop_last=True)
    batches = [x for (x,) in loader]
    assert len(loader) == 2 and [len(x) for x in batches] == [4, 4]
    np.testing.assert_array_equal(np.concatenate(batches), X[:8])
    assert np.shares_memory(batches[0], X)  # unshuffled batches are views


def test_invalid_arguments():
    with pytest.raises(ValueError, match="same length"):
        data.batches(X, Y[:5], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(X, batch_size=0)
    with pytest.raises(ValueError, match="at least one array"):
        data.batches(batch_size=2)
