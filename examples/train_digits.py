"""An MLP on scikit-learn's bundled digits (8x8 images, 10 classes), trained with
`jitgrad.jit_train_step` + Adam: forward, backward and the Adam update are one Numba kernel
that updates the parameters and optimizer state in place.

Run: python examples/train_digits.py [--epochs 40] [--plot digits_curve.png]
(needs the `examples` extra: scikit-learn, tqdm, matplotlib)
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from tqdm import tqdm

import jitgrad as jg


def load_data(seed: int = 0):
    digits = load_digits()  # ships inside scikit-learn: no download
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


model = jg.nn.MLP([128, 64, 10], activation="relu")


def loss_fn(params, x, y):
    logits = model.apply(params, x)
    loss = jg.nn.losses.sparse_softmax_cross_entropy(y, logits)
    accuracy = jg.reduce_mean(jg.cast(jg.equal(jg.argmax(logits, axis=-1), y), jg.float32))
    return loss, accuracy


def evaluate(params, x, y) -> float:
    logits = np.asarray(model.apply(params, x))
    return float((logits.argmax(-1) == y).mean())


def main(epochs: int, batch_size: int, plot: str | None) -> float:
    (x_train, y_train), (x_test, y_test) = load_data()
    params = model.init(0, (None, x_train.shape[1]))
    optimizer = jg.optim.Adam(learning_rate=3e-3)
    state = optimizer.init(params)
    train_step = jg.jit_train_step(loss_fn, optimizer, has_aux=True)
    loader = jg.data.batches(x_train, y_train, batch_size=batch_size, seed=0, drop_last=True)

    start = time.perf_counter()
    train_step(params, state, *next(iter(loader)))  # the first call compiles (or loads)
    print(f"time to first step (trace + compile): {time.perf_counter() - start:.2f} s")

    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        losses, accuracies = [], []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for xb, yb in bar:
            loss, accuracy = train_step(params, state, xb, yb)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracies[-1]:.3f}")
        seconds = time.perf_counter() - t0
        test_accuracy = evaluate(params, x_test, y_test)
        history.append((np.mean(losses), np.mean(accuracies), test_accuracy))
        print(
            f"epoch {epoch + 1:3d}: loss {np.mean(losses):.4f}  train acc "
            f"{np.mean(accuracies):.3f}  test acc {test_accuracy:.3f}  "
            f"({seconds * 1e3:.1f} ms, {seconds / len(loader) * 1e6:.0f} us/step)"
        )

    final = history[-1][2]
    print(f"test accuracy: {final:.4f}")
    if plot:
        _plot(history, plot)
    return final


def _plot(history, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss, train_acc, test_acc = map(np.asarray, zip(*history))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(loss)
    ax1.set(title="training loss", xlabel="epoch")
    ax2.plot(train_acc, label="train")
    ax2.plot(test_acc, label="test")
    ax2.set(title="accuracy", xlabel="epoch")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--plot", default="digits_curve.png")
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.plot or None)
