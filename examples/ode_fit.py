"""Fit the four parameters of a Lotka-Volterra predator-prey model to noisy observations of
one trajectory, by gradient descent through the ODE solver.

    x' = a x - b x y      (prey)
    y' = d x y - c y      (predators)

The loss simulates the whole trajectory (1,000 explicit Euler steps) as ONE `jitgrad.lax.scan`
and compares it with the observations; `jitgrad.jit_train_step` compiles the simulation, its
reverse-mode gradient (a native reverse loop) and the Adam update into one Numba kernel, so
that a training step costs about a hundred microseconds, whatever the number of Euler steps
(the graph, and the compile time, do not grow with it). The parameters are optimised in log
space: they stay positive and Adam's steps are relative changes, whatever their scale.

Run: python examples/ode_fit.py [--iters 1000] [--steps 1000] [--plot ode_fit.png]
(the plot needs matplotlib)
"""

import argparse
import time

import numpy as np

import jitgrad as jg

TRUE_THETA = (1.1, 0.4, 0.4, 0.1)  # (a, b, c, d)
Z0 = (10.0, 5.0)  # (prey, predators) at t = 0
DT = 0.01
NAMES = ("a", "b", "c", "d")


def simulate(theta, steps: int):
    """The Euler trajectory from Z0, shape (steps, 2): the state after each step. One scan:
    its carry is the pair (x, y), its per-step output the stacked state."""
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]

    def euler_step(state, _):
        x, y = state
        x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
        return (x, y), jg.stack([x, y])

    z0 = (np.float64(Z0[0]), np.float64(Z0[1]))
    _, trajectory = jg.lax.scan(euler_step, z0, length=steps)
    return trajectory


def make_loss(steps: int, every: int):
    """Mean squared error between the simulated states at the observation times (every
    `every`-th Euler step) and the observations."""

    def loss_fn(params, observed):
        theta = jg.exp(params["log_theta"])
        predicted = simulate(theta, steps)[every - 1 :: every]
        return jg.reduce_mean(jg.square(predicted - observed))

    return loss_fn


def make_data(steps: int, every: int, noise: float, seed: int):
    """Observations of the true trajectory every `every` Euler steps, with Gaussian noise;
    the true trajectory is computed in plain numpy (an independent check of `simulate`)."""
    a, b, c, d = TRUE_THETA
    x, y = Z0
    truth = np.empty((steps, 2))
    for t in range(steps):
        x, y = x + DT * (a * x - b * x * y), y + DT * (d * x * y - c * y)
        truth[t] = x, y
    clean = truth[every - 1 :: every]
    observed = clean + noise * np.random.default_rng(seed).standard_normal(clean.shape)
    return truth, observed


def main(
    iters: int,
    steps: int,
    every: int,
    noise: float,
    perturb: float,
    learning_rate: float,
    log_every: int,
    seed: int,
    plot: str | None,
) -> dict:
    truth, observed = make_data(steps, every, noise, seed)
    print(
        f"{len(observed)} noisy observations (sigma {noise}) of a {steps}-step Euler "
        f"trajectory (dt {DT}, t = 0..{steps * DT:g})"
    )
    rng = np.random.default_rng(seed + 1)
    guess = np.exp(np.log(TRUE_THETA) + perturb * rng.standard_normal(4))
    params = {"log_theta": np.log(guess)}  # float64: the kernel computes in float64
    optimizer = jg.optim.Adam(learning_rate=learning_rate)
    state = optimizer.init(params)
    loss_fn = make_loss(steps, every)
    train_step = jg.jit_train_step(loss_fn, optimizer)

    start = time.perf_counter()
    loss = train_step(params, state, observed)
    first = time.perf_counter() - start
    # Until its kernel serves, a step runs on numpy (tiered execution), where a 1,000-step
    # loop is a Python loop: wait for the kernel rather than train on the slow path.
    train_step.wait()
    serving = time.perf_counter() - start
    print(f"time to first step: {first:.2f} s; kernel serving after {serving:.2f} s")
    print(f"iter {1:5d}: loss {float(loss):.5f}  theta {np.round(guess, 4)}")

    history = [float(loss)]
    t0 = time.perf_counter()
    for i in range(2, iters + 1):
        loss = train_step(params, state, observed)
        history.append(float(loss))
        if i % log_every == 0 or i == iters:
            theta = np.exp(params["log_theta"])
            print(f"iter {i:5d}: loss {history[-1]:.5f}  theta {np.round(theta, 4)}")
    seconds = time.perf_counter() - t0
    per_step = seconds / max(iters - 1, 1) * 1e6
    print(f"{iters - 1} compiled steps in {seconds:.2f} s ({per_step:.0f} us/step)")

    # The final parameters' loss (a step returns the loss before its update), eagerly.
    final_loss = float(loss_fn(params, observed))
    theta = np.exp(params["log_theta"])
    true_loss = float(loss_fn({"log_theta": np.log(TRUE_THETA)}, observed))
    print(
        f"final loss: {final_loss:.5f} (at the true parameters: {true_loss:.5f}; "
        f"noise variance {noise**2:.5f})"
    )
    print("parameter   true   start  fitted   error")
    for name, true, start_value, fitted in zip(NAMES, TRUE_THETA, guess, theta):
        error = abs(fitted - true) / true
        print(f"{name:>9} {true:6.3f}  {start_value:6.3f}  {fitted:6.3f}  {error:6.1%}")
    print(f"max relative error: {np.max(np.abs(theta / np.asarray(TRUE_THETA) - 1)):.4f}")
    if plot:
        fitted_path = np.asarray(simulate(theta, steps))  # eagerly: a Python loop over ops
        start_path = np.asarray(simulate(guess, steps))
        _plot(truth, observed, fitted_path, start_path, every, history, plot)
    return {"theta": theta, "loss": final_loss, "history": history}


def _plot(truth, observed, fitted, start, every, history, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = DT * np.arange(1, len(truth) + 1)
    t_obs = t[every - 1 :: every]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": (2, 1)})
    for k, (name, color) in enumerate((("prey x", "tab:blue"), ("predators y", "tab:red"))):
        ax1.plot(t_obs, observed[:, k], ".", color=color, alpha=0.5, label=f"{name}: data")
        ax1.plot(t, truth[:, k], "-", color=color, lw=1, label=f"{name}: true")
        ax1.plot(t, fitted[:, k], "--", color="black", lw=1.2, label=f"{name}: fitted")
        ax1.plot(t, start[:, k], ":", color=color, lw=1, alpha=0.6, label=f"{name}: start")
    ax1.set(title="Lotka-Volterra: data, true and fitted trajectories", xlabel="t")
    ax1.legend(fontsize=7, ncol=2)
    ax2.semilogy(np.arange(1, len(history) + 1), history)
    ax2.set(title="training loss (MSE)", xlabel="Adam step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=1000, help="Adam steps")
    parser.add_argument("--steps", type=int, default=1000, help="Euler steps of dt = 0.01")
    parser.add_argument("--every", type=int, default=10, help="observe every N Euler steps")
    parser.add_argument("--noise", type=float, default=0.5, help="observation noise sigma")
    parser.add_argument("--perturb", type=float, default=0.3, help="log-scale start offset")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="ode_fit.png")
    args = parser.parse_args()
    main(
        args.iters,
        args.steps,
        args.every,
        args.noise,
        args.perturb,
        args.lr,
        args.log_every,
        args.seed,
        args.plot or None,
    )
