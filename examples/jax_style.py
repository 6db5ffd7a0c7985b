"""A functional training loop for users coming from JAX: parameters are a plain dict of
arrays, `jit_grad` returns the loss and a gradient dict of the same structure in one kernel,
and the update is a jitted pure function.

Run: python examples/jax_style.py [--steps 300]
"""

import argparse

import numpy as np

import jitgrad as jg


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "hidden": {
            "w": (rng.standard_normal((1, 32)) * 1.0).astype(np.float32),
            "b": np.zeros(32, np.float32),
        },
        "out": {
            "w": (rng.standard_normal((32, 1)) * 0.2).astype(np.float32),
            "b": np.zeros(1, np.float32),
        },
    }


def predict(params, x):
    h = jg.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


@jg.jit_grad
def loss_and_grads(params, x, y):
    return jg.reduce_mean(jg.square(predict(params, x) - y))


@jg.jit
def sgd(params, grads, lr):
    return {
        layer: {k: params[layer][k] - lr * grads[layer][k] for k in params[layer]}
        for layer in params
    }


def main(steps: int) -> float:
    x = np.linspace(-3, 3, 256, dtype=np.float32)[:, None]
    y = np.sin(x)
    params = init_params()
    for step in range(1, steps + 1):
        loss, grads = loss_and_grads(params, x, y)
        params = sgd(params, grads, np.float32(0.1))  # a dict of tensors: fine as input
        if step % 100 == 0 or step == 1:
            print(f"step {step:4d}: mse {float(loss):.5f}")
    final = float(loss)
    print(f"final mse: {final:.5f}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
