"""sin(x)^2 and its first three derivatives on linspace(-2 pi, 2 pi, 100), as in the
TensorFlow eager tutorial (seed 004), computed with nested gradients_function and with one
compiled kernel per derivative; saved as a PNG plot.

Run: python examples/higher_order.py [--out higher_order.png]   (needs matplotlib)
"""

import argparse
from math import pi

import numpy as np

import jitgrad


def f(x):
    return jitgrad.square(jitgrad.sin(x))


def grad(fn):
    return lambda x: jitgrad.gradients_function(fn)(x)[0]


def main(out: str) -> None:
    x = jitgrad.lin_space(-2 * pi, 2 * pi, 100)
    curves = {
        "f": f(x),
        "first derivative": grad(f)(x),
        "second derivative": grad(grad(f))(x),
        "third derivative": grad(grad(grad(f)))(x),
    }
    xs = np.asarray(x, np.float64)
    analytic = [np.sin(xs) ** 2, np.sin(2 * xs), 2 * np.cos(2 * xs), -4 * np.sin(2 * xs)]
    for (name, values), exact in zip(curves.items(), analytic):
        print(
            f"{name:>18}: max |eager - analytic| = "
            f"{np.abs(np.asarray(values, np.float64) - exact).max():.2e}"
        )
    third = jitgrad.jit(grad(grad(grad(f))))
    print(
        f"{'compiled third':>18}: max |jit - analytic| = "
        f"{np.abs(np.asarray(third(x), np.float64) - analytic[3]).max():.2e}"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        ax.plot(xs, np.asarray(values), label=name)
    ax.legend()
    ax.set_title("sin(x)^2 and its derivatives (jitgrad)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="higher_order.png")
    main(parser.parse_args().out)
