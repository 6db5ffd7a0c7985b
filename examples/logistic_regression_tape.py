"""Logistic regression trained with the eager GradientTape and `apply_gradients`, the way a
TensorFlow user writes it. From the third step on, the tape's backward pass runs as one
compiled kernel (the tape sees the same graph structure again and reuses the kernel).

Run: python examples/logistic_regression_tape.py [--steps 200]
"""

import argparse
import time

import numpy as np

import jitgrad as jg
from jitgrad.compiler import tape_backward


def make_data(n=512, features=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    true_w = rng.standard_normal(features).astype(np.float32)
    y = (x @ true_w + 0.5 * rng.standard_normal(n) > 0).astype(np.float32)
    return x, y


def main(steps: int, batch_size: int = 64) -> float:
    x, y = make_data()
    w = jg.Variable(np.zeros(x.shape[1], np.float32), name="w")
    b = jg.Variable(0.0, name="b")
    optimizer = jg.optim.SGD(learning_rate=0.1)
    loader = jg.data.batches(x, y, batch_size=batch_size, seed=0, drop_last=True)

    step, start = 0, time.perf_counter()
    while step < steps:
        for xb, yb in loader:
            with jg.GradientTape() as tape:
                z = xb @ w + b
                loss = jg.reduce_mean(jg.softplus(z) - yb * z)
            grads = tape.gradient(loss, [w, b])
            optimizer.apply_gradients(zip(grads, [w, b]))
            step += 1
            if step % 50 == 0 or step == 1:
                print(f"step {step:4d}: loss {float(loss):.4f}")
            if step == steps:
                break
    seconds = time.perf_counter() - start
    accuracy = float((((x @ w.numpy() + float(b)) > 0) == (y > 0.5)).mean())
    print(
        f"{steps} steps in {seconds:.2f} s ({seconds / steps * 1e6:.0f} us/step); "
        f"backward passes: {tape_backward.stats['eager']} eager, "
        f"{tape_backward.stats['compiled']} compiled"
    )
    print(f"training accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    main(parser.parse_args().steps)
