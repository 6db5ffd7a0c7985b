"""Gaussian-process regression: fit an RBF kernel's lengthscale, signal variance and noise
variance by maximising the log marginal likelihood, then predict held-out points.

    K = s^2 exp(-(x - x')^2 / (2 l^2)) + n^2 I,     K = L L^T (cholesky)
    -log p(y) = |L^-1 y|^2 / 2 + sum(log diag L) + N log(2 pi) / 2

L^-1 y is one `jitgrad.linalg.triangular_solve`. The three hyperparameters are softplus of
unconstrained ones (positive whatever Adam does); `jitgrad.jit_grad` compiles the likelihood
and its gradient (through the Cholesky factorisation and the triangular solve, VJPs included)
into one Numba kernel, and `jitgrad.optim.Adam` takes the steps. The prediction is the
posterior mean K(x*, x) K^-1 y, by two more triangular solves.

Run: python examples/gaussian_process.py [--steps 300]
"""

import argparse
import time

import numpy as np

import jitgrad as jg

TRUE = {"lengthscale": 0.6, "signal": 1.0, "noise": 0.15}  # noise: a standard deviation


def make_data(n_train=80, n_test=200, seed=0):
    """Noisy draws of a smooth function on [-3, 3]; test targets without noise."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n_train))
    x_test = np.linspace(-3, 3, n_test)

    def f(t):
        return np.sin(2.0 * t) + 0.5 * np.cos(5.0 * t) * np.exp(-0.3 * t * t)

    y = f(x) + TRUE["noise"] * rng.standard_normal(n_train)
    return x, y, x_test, f(x_test)


def hyperparameters(raw):
    """(lengthscale, signal variance, noise variance), each softplus of a raw parameter."""
    positive = jg.nn.softplus(raw)
    return positive[0], positive[1], positive[2]


def rbf(a, b, lengthscale, signal):
    d = jg.reshape(a, (-1, 1)) - jg.reshape(b, (1, -1))
    return signal * jg.exp(-(d * d) / (2.0 * lengthscale * lengthscale))


def factor(raw, x):
    """The Cholesky factor L of the training covariance K = rbf(x, x) + noise I."""
    lengthscale, signal, noise = hyperparameters(raw)
    k = rbf(x, x, lengthscale, signal) + noise * jg.linalg.eye(x.shape[0], dtype=x.dtype)
    return jg.linalg.cholesky(k)


def negative_log_likelihood(raw, x, y):
    """-log p(y | x, hyperparameters), per training point."""
    n = x.shape[0]
    chol = factor(raw, x)
    alpha = jg.linalg.triangular_solve(chol, jg.reshape(y, (n, 1)), lower=True)
    nll = 0.5 * jg.reduce_sum(alpha * alpha) + jg.reduce_sum(jg.math.log(jg.linalg.diag_part(chol)))
    return nll / n + 0.5 * np.log(2 * np.pi)


def posterior_mean(raw, x, y, x_test):
    """K(x*, x) (L L^T)^-1 y, by a forward and a backward triangular solve."""
    chol = factor(raw, x)
    z = jg.linalg.triangular_solve(chol, jg.reshape(y, (x.shape[0], 1)), lower=True)
    weights = jg.linalg.triangular_solve(chol, z, lower=True, adjoint=True)
    lengthscale, signal, _ = hyperparameters(raw)
    return jg.reshape(rbf(x_test, x, lengthscale, signal) @ weights, (-1,))


def softplus_inverse(v):
    return np.log(np.expm1(v))


def main(steps: int, learning_rate: float) -> float:
    x, y, x_test, f_test = make_data()
    # A poor start: lengthscale 2, signal variance 0.3, noise variance 1.
    raw = jg.Variable(softplus_inverse(np.array([2.0, 0.3, 1.0])), name="raw")
    optimizer = jg.optim.Adam(learning_rate)
    value_and_grad = jg.jit_grad(negative_log_likelihood)

    start = time.perf_counter()
    for step in range(1, steps + 1):
        nll, grad = value_and_grad(raw.numpy(), x, y)
        optimizer.apply_gradients([(grad, raw)])
        if step == 1 or step % 100 == 0:
            print(f"step {step:4d}: -log p(y)/N = {float(nll):.4f}")
    seconds = time.perf_counter() - start

    lengthscale, signal, noise = (float(v) for v in hyperparameters(jg.constant(raw.numpy())))
    mean = posterior_mean(raw.numpy(), x, y, x_test).numpy()
    rmse = float(np.sqrt(np.mean((mean - f_test) ** 2)))
    print(f"{steps} steps in {seconds:.2f} s (compile included)")
    print(
        f"fitted: lengthscale {lengthscale:.3f}, signal variance {signal:.3f}, "
        f"noise std {np.sqrt(noise):.3f} (data made with noise std {TRUE['noise']})"
    )
    print(f"held-out RMSE of the posterior mean: {rmse:.4f} (predicting 0: {np.std(f_test):.4f})")
    return rmse


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    args = parser.parse_args()
    main(args.steps, args.learning_rate)
