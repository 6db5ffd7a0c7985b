"""Checkpoints: bit-identical round trips of nested structures and dtypes, and training that
resumes from a checkpoint exactly where it left off."""

import numpy as np
import pytest

import jitgrad as jg
from jitgrad import checkpoint, data, optim
from jitgrad.core import pytree
from jitgrad.nn import MLP, Dropout, Sequential, losses


def _assert_identical(a, b):
    """Same structure, types, dtypes and bytes (NaN payloads included)."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_identical(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    else:
        assert a == b or (a != a and b != b)


def test_round_trip_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    nan_payload = np.array([0x7FC00123], np.uint32).view(np.float32)
    params = {
        "dense": {
            "kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": np.array([-0.0, np.inf, 1e-45], np.float32),
        },
        "layers": [rng.normal(size=2), (np.arange(3, dtype=np.int8), np.zeros((0, 2)))],
        7: {"half": np.array([1.5, -2], np.float16), "flags": np.array([True, False])},
        "nan": nan_payload,
        "scalar": np.float64(0.1),
        "u8": np.array(255, np.uint8),
        "variable": jg.Variable(np.ones(2, np.float32)),
    }
    opt_state = {"step": np.asarray(7, np.int32), "m": [np.full(2, 1 / 3)], "empty": None}
    path = checkpoint.save(
        tmp_path / "ckpt",
        params,
        opt_state,
        epoch=3,
        lr=1e-3,
        note="ok",
        history=[1.5, float("nan")],
        best=None,
    )
    assert path.endswith("ckpt.npz")
    loaded, loaded_state, extra = checkpoint.load(path)
    expected = dict(params, variable=np.ones(2, np.float32))  # Variables come back as arrays
    _assert_identical(loaded, expected)
    _assert_identical(loaded_state, opt_state)
    _assert_identical(
        extra, {"epoch": 3, "lr": 1e-3, "note": "ok", "history": [1.5, float("nan")], "best": None}
    )
    assert "params/dense/kernel" in np.load(path).files  # readable names
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.npz"]  # no temporary left behind


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store set"):
        checkpoint.save(tmp_path / "bad.npz", {"w": {1, 2}})
    with pytest.raises(TypeError, match="dict key"):
        checkpoint.save(tmp_path / "bad.npz", {(1, 2): np.zeros(1)})


MODEL = Sequential([MLP([8], activation="tanh"), Dropout(0.2), MLP([3])])
rng = np.random.default_rng(1)
X = rng.normal(size=(24, 5)).astype(np.float32)
Y = rng.integers(0, 3, 24)


def _train(params, state, opt, loader, epochs):
    def loss_fn(p, x, y, key):
        logits = MODEL.apply(p, x, training=True, key=key)
        return losses.sparse_softmax_cross_entropy(y, logits)

    for _ in range(epochs):
        for x, y in loader:
            grads = jg.grad(loss_fn)(params, x, y, state["step"])  # the step count is the key
            params, state = opt.update(params, grads, state)
    return params, state


def _as_numpy(tree):
    leaves, treedef = pytree.flatten(tree)
    return pytree.unflatten(treedef, [np.asarray(x) for x in leaves])


def test_training_resumes_bit_identically(tmp_path, monkeypatch):
    # The tape's compiled backward (from a structure's second recording on) rounds differently
    # from the eager first step, so which steps ran eagerly would depend on the process's
    # history; this test is about the checkpoint, so every backward runs eagerly.
    monkeypatch.setattr(jg.config, "compile_tape_backward", False)
    opt = optim.Adam(optim.cosine_decay(0.05, 20), global_clipnorm=1.0)
    params = MODEL.init(0, X.shape)
    straight = _train(params, opt.init(params), opt, data.batches(X, Y, batch_size=8, seed=0), 3)

    loader = data.batches(X, Y, batch_size=8, seed=0)
    first = _train(params, opt.init(params), opt, loader, 1)
    path = checkpoint.save(tmp_path / "ckpt.npz", *first, epoch=loader.epoch)
    params_1, state_1, extra = checkpoint.load(path)
    resumed_loader = data.batches(X, Y, batch_size=8, seed=0)
    resumed_loader.epoch = extra["epoch"]
    resumed = _train(params_1, state_1, opt, resumed_loader, 2)

    _assert_identical(_as_numpy(resumed), _as_numpy(straight))
    assert int(resumed[1]["step"]) == 9


def test_save_creates_the_directory(tmp_path):
    path = checkpoint.save(tmp_path / "run" / "epoch3" / "ckpt", {"w": np.ones(2)}, step=3)
    assert path.endswith("ckpt.npz")
    params, _, extra = checkpoint.load(path)
    assert params["w"].tolist() == [1.0, 1.0] and extra == {"step": 3}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "plain npz"])
def test_a_damaged_or_foreign_file_is_named_not_a_checkpoint(tmp_path, damage):
    """Not numpy's words about pickles or zip files: the path, and what it is not."""
    good = checkpoint.save(tmp_path / "good", {"w": np.arange(100.0)})
    bad = tmp_path / "bad.npz"
    if damage == "garbage":
        bad.write_bytes(b"not a checkpoint" * 8)
    elif damage == "truncated":
        bad.write_bytes(open(good, "rb").read()[:200])
    else:
        np.savez(bad, w=np.ones(3))
    with pytest.raises(ValueError, match=r"bad\.npz is not a readable jitgrad checkpoint"):
        checkpoint.load(bad)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.npz")
