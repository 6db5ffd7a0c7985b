"""A GRU, written with jitgrad ops inside `jitgrad.lax.scan`, learns a task that needs memory:
reading a sequence of random numbers x_1..x_T, say at every step t whether the running sum
x_1 + ... + x_t is positive. The current input alone gives ~60% of the labels; the network must
integrate what it has seen.

The parameters are a plain dict of numpy arrays; `jitgrad.jit_train_step` compiles the scan
over time, backpropagation through time (a native reverse loop over the stored states),
gradient clipping and the Adam update into one Numba kernel that updates the parameters in
place.

Run: python examples/rnn_sequence.py [--steps 1000] [--plot rnn_sequence.png]
(needs the `examples` extra: tqdm, matplotlib)
"""

import argparse
import time

import numpy as np
from tqdm import tqdm

import jitgrad as jg


def make_data(n: int, length: int, rng):
    """`n` sequences of `length` standard normal numbers, shape (n, length, 1), and their
    labels: 1.0 where the running sum is positive."""
    x = rng.standard_normal((n, length, 1)).astype(np.float32)
    y = (np.cumsum(x, axis=1) > 0).astype(np.float32)
    return x, y


def time_major(*arrays):
    """(batch, time, ...) -> (time, batch, ...), the layout `scan` iterates over. Done in
    numpy, outside the compiled step: Numba takes seconds to compile an n-d transpose, so a
    `jg.transpose` in the loss would make the first step seconds slower."""
    return tuple(np.ascontiguousarray(np.swapaxes(a, 0, 1)) for a in arrays)


def init_params(hidden: int, seed: int = 0) -> dict:
    """A GRU cell (update gate z, reset gate r, candidate n) and a linear readout."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    params = {}
    for gate in "zrn":
        params[f"w_{gate}"] = normal(1, hidden, scale=1.0)  # input -> gate
        params[f"u_{gate}"] = normal(hidden, hidden, scale=hidden**-0.5)  # state -> gate
        params[f"b_{gate}"] = np.zeros(hidden, np.float32)
    params["w_out"] = normal(hidden, 1, scale=hidden**-0.5)
    params["b_out"] = np.zeros(1, np.float32)
    return params


def gru_logits(p, x):
    """Logits for every step of every sequence: x (time, batch, 1) -> (time, batch, 1)."""
    batch, hidden = x.shape[1], p["u_z"].shape[0]

    def cell(h, x_t):  # h: (batch, hidden), x_t: (batch, 1)
        z = jg.sigmoid(x_t @ p["w_z"] + h @ p["u_z"] + p["b_z"])
        r = jg.sigmoid(x_t @ p["w_r"] + h @ p["u_r"] + p["b_r"])
        n = jg.tanh(x_t @ p["w_n"] + r * (h @ p["u_n"]) + p["b_n"])
        h = (1.0 - z) * n + z * h
        return h, h @ p["w_out"] + p["b_out"]

    h0 = jg.zeros((batch, hidden), p["u_z"].dtype)
    _, logits = jg.lax.scan(cell, h0, x)  # over the leading (time) axis of x
    return logits


def loss_fn(params, x, y):  # x, y: (time, batch, 1)
    logits = gru_logits(params, x)
    loss = jg.nn.losses.binary_cross_entropy_with_logits(y, logits)
    accuracy = jg.reduce_mean(jg.cast(jg.equal(jg.cast(logits > 0, jg.float32), y), jg.float32))
    return loss, accuracy


def accuracy(params, x, y, chunk: int = 512) -> float:
    """Per-step accuracy, computed eagerly (the scan runs as a Python loop over jitgrad ops)."""
    hits = 0.0
    for i in range(0, len(x), chunk):
        xs, ys = time_major(x[i : i + chunk], y[i : i + chunk])
        logits = np.asarray(gru_logits(params, xs))
        hits += float(((logits > 0) == (ys > 0.5)).sum())
    return hits / y.size


def main(
    steps: int,
    length: int,
    hidden: int,
    batch_size: int,
    n_train: int,
    n_test: int,
    learning_rate: float,
    eval_every: int,
    seed: int,
    plot: str | None,
) -> dict:
    rng = np.random.default_rng(seed)
    x_train, y_train = make_data(n_train, length, rng)
    x_test, y_test = make_data(n_test, length, rng)
    baseline = float(((x_test > 0) == (y_test > 0.5)).mean())
    print(
        f"task: sign of the running sum, {n_train} train / {n_test} test sequences of length "
        f"{length}; the current input's sign alone is right {baseline:.1%} of the time"
    )

    params = init_params(hidden, seed)
    # Gradients through 50 steps of a recurrence can spike: clip their global norm, and let
    # the learning rate decay along a cosine for a quiet end of training.
    schedule = jg.optim.cosine_decay(learning_rate, decay_steps=steps, alpha=0.05)
    optimizer = jg.optim.Adam(learning_rate=schedule, global_clipnorm=1.0)
    state = optimizer.init(params)
    train_step = jg.jit_train_step(loss_fn, optimizer, has_aux=True)
    loader = jg.data.batches(x_train, y_train, batch_size=batch_size, seed=seed, drop_last=True)

    def batches():
        while True:
            for xb, yb in loader:
                yield time_major(xb, yb)

    stream = batches()
    start = time.perf_counter()
    loss, acc = train_step(params, state, *next(stream))
    first = time.perf_counter() - start
    # Until its kernel serves, a step runs on numpy (tiered execution), the scan as a Python
    # loop: wait for the kernel rather than train on the slow path.
    train_step.wait()
    print(
        f"time to first step: {first:.2f} s; kernel serving after "
        f"{time.perf_counter() - start:.2f} s"
    )

    losses, accuracies = [float(loss)], [float(acc)]
    evals = [(1, accuracy(params, x_test, y_test))]
    train_seconds = 0.0
    bar = tqdm(range(2, steps + 1), desc="training", initial=1, total=steps)
    for step in bar:
        t0 = time.perf_counter()
        loss, acc = train_step(params, state, *next(stream))
        train_seconds += time.perf_counter() - t0
        losses.append(float(loss))
        accuracies.append(float(acc))
        if step % eval_every == 0 or step == steps:
            evals.append((step, accuracy(params, x_test, y_test)))
        window = min(len(losses), 50)
        bar.set_postfix(
            loss=f"{np.mean(losses[-window:]):.4f}",
            acc=f"{np.mean(accuracies[-window:]):.3f}",
            test=f"{evals[-1][1]:.3f}",
        )
    bar.close()
    if steps > 1:
        print(f"{steps - 1} compiled steps: {train_seconds / (steps - 1) * 1e3:.2f} ms/step")

    train_accuracy = accuracy(params, x_train, y_train)
    test_accuracy = evals[-1][1]
    window = min(len(losses), 50)
    print(f"final train loss (last {window} batches): {np.mean(losses[-window:]):.4f}")
    print(f"train accuracy: {train_accuracy:.4f}")
    print(f"test accuracy: {test_accuracy:.4f} (current input alone: {baseline:.4f})")
    if plot:
        _plot(losses, accuracies, evals, baseline, plot)
    return {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy, "losses": losses}


def _plot(losses, accuracies, evals, baseline, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, min(25, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.semilogy(steps, losses, alpha=0.3, label="batch")
    ax1.semilogy(steps[window - 1 :], smooth, label=f"mean of {window}")
    ax1.set(title="training loss (binary cross-entropy)", xlabel="step")
    ax1.legend()
    ax2.plot(steps, accuracies, alpha=0.3, label="train batch")
    eval_steps, eval_accuracy = zip(*evals)
    ax2.plot(eval_steps, eval_accuracy, "o-", label="test")
    ax2.axhline(baseline, color="gray", ls=":", label="current input alone")
    ax2.set(title="per-step accuracy", xlabel="step", ylim=(0.4, 1.0))
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps")
    parser.add_argument("--length", type=int, default=50, help="sequence length")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=4096, help="training sequences")
    parser.add_argument("--test", type=int, default=1024, help="test sequences")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="rnn_sequence.png")
    args = parser.parse_args()
    main(
        args.steps,
        args.length,
        args.hidden,
        args.batch_size,
        args.train,
        args.test,
        args.lr,
        args.eval_every,
        args.seed,
        args.plot or None,
    )
