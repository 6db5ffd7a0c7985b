"""Per-example gradients with `jitgrad.vmap`, used for differentially private SGD (DP-SGD,
Abadi et al. 2016) on scikit-learn's bundled digits.

DP-SGD needs the gradient of every example separately: each is clipped to a maximum L2 norm
C, the clipped gradients are summed, Gaussian noise of standard deviation sigma * C is added,
and the mean is the step. `jit(vmap(grad(loss), in_axes=(None, 0, 0)))` gives all of them as
ONE compiled kernel over the batch (batched matmuls, no Python loop); here the clipping,
noise and update are traced into the same kernel.

Run: python examples/per_example_gradients.py [--epochs 20] [--noise 1.0] [--clip 1.0]
(needs the `examples` extra: scikit-learn)
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

import jitgrad as jg


def load_data(seed: int = 0):
    digits = load_digits()  # ships inside scikit-learn: no download
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def init_params(seed: int, sizes=(64, 64, 10)):
    rng = np.random.default_rng(seed)
    params = {}
    for k, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{k}"] = (rng.standard_normal((m, n)) * np.sqrt(2.0 / m)).astype(np.float32)
        params[f"b{k}"] = np.zeros(n, np.float32)
    return params


def logits_of(params, x):
    h = jg.nn.relu(x @ params["w0"] + params["b0"])
    return h @ params["w1"] + params["b1"]


def example_loss(params, x, y):
    """The loss of ONE example: x of shape (64,), y a scalar label."""
    logits = logits_of(params, x)
    return jg.reduce_logsumexp(logits) - jg.gather(logits, y)


per_example_grads = jg.vmap(jg.grad(example_loss), in_axes=(None, 0, 0))


def clipped_sum(grads, clip: float):
    """Each example's gradient (over all parameters) scaled to L2 norm <= clip, summed."""
    squares = sum(
        jg.reduce_sum(jg.reshape(g * g, (g.shape[0], -1)), axis=1) for g in grads.values()
    )
    scale = jg.minimum(1.0, clip / (jg.sqrt(squares) + 1e-12))  # (batch,)
    return {
        k: jg.reduce_sum(g * jg.reshape(scale, (-1,) + (1,) * (g.ndim - 1)), axis=0)
        for k, g in grads.items()
    }


@jg.jit
def dp_step(params, x, y, noise, learning_rate, clip, sigma):
    """One DP-SGD step: per-example gradients, clipping, noise, mean, update: one kernel."""
    summed = clipped_sum(per_example_grads(params, x, y), clip)
    batch = x.shape[0]
    return {
        k: params[k] - learning_rate * (summed[k] + sigma * clip * noise[k]) / batch for k in params
    }


def accuracy(params, x, y) -> float:
    return float((np.asarray(logits_of(params, x)).argmax(-1) == y).mean())


def check_against_a_loop(params, x, y) -> float:
    """Max |vmap - loop of grad| over 8 examples (the loop is what users write without vmap)."""
    batched = jg.jit(per_example_grads)(params, x[:8], y[:8])
    worst = 0.0
    for b in range(8):
        one = jg.grad(example_loss)(params, x[b], y[b])
        worst = max(
            worst, *(float(np.abs(batched[k].numpy()[b] - one[k].numpy()).max()) for k in one)
        )
    return worst


def main(epochs: int, batch_size: int, learning_rate: float, clip: float, sigma: float) -> float:
    (x_train, y_train), (x_test, y_test) = load_data()
    params = init_params(0)
    print(
        f"per-example gradients, vmap vs a loop of grad: max |diff| = "
        f"{check_against_a_loop(params, x_train, y_train):.2e}"
    )
    rng = np.random.default_rng(1)
    steps = len(x_train) // batch_size

    def step(params, pick):
        noise = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        new = dp_step(params, x_train[pick], y_train[pick], noise, learning_rate, clip, sigma)
        return {k: v.numpy() for k, v in new.items()}

    # The first call runs on numpy while its kernel compiles in the background: wait for the
    # kernel here, so that the timing below is of the compiled step.
    start = time.perf_counter()
    params = step(params, rng.permutation(len(x_train))[:batch_size])
    jg.wait_for_compiles()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        for s in range(steps):
            params = step(params, order[s * batch_size : (s + 1) * batch_size])
        print(f"epoch {epoch + 1:2d}: test accuracy {accuracy(params, x_test, y_test):.3f}")
    per_step = (time.perf_counter() - start) / max(epochs * steps, 1)
    print(
        f"compile: {compile_seconds:.1f} s; {per_step * 1e6:.0f} us/step at batch {batch_size} "
        "(per-example gradients, clipping, noise and update in one kernel)"
    )
    final = accuracy(params, x_test, y_test)
    print(f"test accuracy: {final:.3f} (clip {clip}, noise multiplier {sigma})")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=1.0)
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.learning_rate, args.clip, args.noise)
