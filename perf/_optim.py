"""The optimizers the jitgrad train-step variants use: `jitgrad.optim.SGD/Adam` when that package
exists, else the small stand-ins below with the same interface (`init(params) -> state`,
`update(params, grads, state) -> (new_params, new_state)`, written with jitgrad ops so
`jitgrad.jit_train_step` traces them into its kernel). Params are flat dicts of arrays.
"""

from __future__ import annotations

import numpy as np


class SGD:
    """p <- p - learning_rate * g."""

    def __init__(self, learning_rate=0.01):
        self.learning_rate = learning_rate

    def init(self, params):
        return {}

    def update(self, params, grads, state):
        return {k: params[k] - self.learning_rate * grads[k] for k in params}, state


class Adam:
    """Adam (Kingma & Ba) as optax and torch.optim write it: p <- p - lr m^ / (sqrt(v^) + eps),
    with bias-corrected moments m^, v^; the step count is a float32 scalar in the state."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = (
            learning_rate,
            beta_1,
            beta_2,
            epsilon,
        )

    def init(self, params):
        return {
            "step": np.zeros((), np.float32),
            "m": {k: np.zeros_like(v) for k, v in params.items()},
            "v": {k: np.zeros_like(v) for k, v in params.items()},
        }

    def update(self, params, grads, state):
        import jitgrad as jg

        b1, b2 = self.beta_1, self.beta_2
        step = state["step"] + 1.0
        c1, c2 = 1.0 - b1**step, 1.0 - b2**step
        new_params, m, v = {}, {}, {}
        for k, p in params.items():
            g = grads[k]
            m[k] = b1 * state["m"][k] + (1.0 - b1) * g
            v[k] = b2 * state["v"][k] + (1.0 - b2) * (g * g)
            new_params[k] = p - self.learning_rate * (m[k] / c1) / (
                jg.sqrt(v[k] / c2) + self.epsilon
            )
        return new_params, {"step": step, "m": m, "v": v}


def optimizers():
    """(SGD class, Adam class, where they come from)."""
    try:
        from jitgrad import optim

        return optim.SGD, optim.Adam, "jitgrad.optim"
    except ImportError:
        return SGD, Adam, "perf/_optim.py stand-in (jitgrad.optim absent)"
