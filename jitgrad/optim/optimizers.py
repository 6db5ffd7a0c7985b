"""Optimizers with one pure update rule and two interfaces.

Functional (JAX/optax style): `state = opt.init(params)` and
`params, state = opt.update(params, grads, state)`, where params, grads and state are nested
dicts/lists/tuples of arrays. `update` is written with jitgrad ops only (no Python branch on a
value, no mutation), so `jitgrad.jit(opt.update)` compiles it, alone or inside a train step:

>>> opt = Adam(1e-3)
>>> state = opt.init(params)        # {'step': 0-d int32, 'm': like params, 'v': like params}
>>> params, state = opt.update(params, grads, state)

TensorFlow style: `opt.apply_gradients(zip(grads, variables))` assigns the new values to the
Variables, keeps each Variable's slots (keyed by the Variable object) and counts
`opt.iterations`; it calls the same `update`, so the math lives in one place.

The rules and defaults are Keras 3's; `global_clipnorm` clips all gradients of an update by
their joint norm first. The scalar coefficients (learning rate, bias corrections) are float32.
A Python-float learning rate is a constant of a compiled update (changing it later needs a new
trace); a schedule is evaluated at the traced step count, so it costs no recompilation.
"""

from __future__ import annotations

import numpy as np

from jitgrad import ops
from jitgrad.core import pytree
from jitgrad.core.convert import to_array
from jitgrad.core.tensor import Variable
from jitgrad.ops.base import as_value


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients by max_norm / max(norm, max_norm), where norm is their joint L2
    norm; returns (clipped, norm). `grads` is any nested dict/list/tuple of arrays.

    >>> clipped, norm = clip_by_global_norm([g1, g2], 1.0)
    """
    leaves, treedef = pytree.flatten(grads)
    leaves = [as_value(g) for g in leaves]
    norm = ops.sqrt(sum(ops.reduce_sum(ops.square(g)) for g in leaves))
    scale = max_norm / ops.maximum(norm, max_norm)
    clipped = [g * ops.cast(scale, g.dtype) for g in leaves]
    return pytree.unflatten(treedef, clipped), norm


def _like(scalar, p):
    """A per-step scalar in the parameter's dtype (a Python float is weakly typed already)."""
    return ops.cast(scalar, p.dtype) if hasattr(scalar, "dtype") else scalar


def _zeros_like(leaf) -> np.ndarray:
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        leaf = to_array(leaf)
    return np.zeros(leaf.shape, leaf.dtype)


class Optimizer:
    """The base class: subclasses name their per-parameter `slots` and define `_update_leaf`
    (and `_coefficients` for per-step scalars)."""

    slots: tuple[str, ...] = ()

    def __init__(self, learning_rate, global_clipnorm: float | None = None):
        self.learning_rate = learning_rate
        self.global_clipnorm = global_clipnorm
        self.iterations = Variable(np.int32(0), name="iterations", trainable=False)
        self._slot_values: dict[int, tuple[Variable, dict]] = {}

    # -- functional ------------------------------------------------------------------------------
    def init(self, params) -> dict:
        """The initial state: a 0-d int32 step counter and one zero tree per slot.

        >>> SGD(0.1, momentum=0.9).init({"w": np.ones(3, np.float32)})
        {'step': array(0, dtype=int32), 'momentum': {'w': array([0., 0., 0.], dtype=float32)}}
        """
        leaves, treedef = pytree.flatten(params)
        state = {"step": np.zeros((), np.int32)}
        for name in self.slots:
            state[name] = pytree.unflatten(treedef, [_zeros_like(p) for p in leaves])
        return state

    def update(self, params, grads, state):
        """(new params, new state) after one step; pure and traceable.

        >>> params, state = opt.update(params, grads, state)
        """
        p_leaves, treedef = pytree.flatten(params)
        g_leaves, g_treedef = pytree.flatten(grads)
        if g_treedef != treedef:
            raise ValueError(f"{type(self).__name__}.update: grads {pytree.describe(g_treedef)} "
                             f"do not match params {pytree.describe(treedef)}")
        g_leaves = [as_value(g) for g in g_leaves]
        if self.global_clipnorm is not None:
            g_leaves, _ = clip_by_global_norm(g_leaves, self.global_clipnorm)
        step = as_value(state["step"])
        lr = self.learning_rate(step) if callable(self.learning_rate) else self.learning_rate
        coefficients = self._coefficients(lr, ops.cast(step + 1, np.float32))
        slot_leaves = {name: [as_value(s) for s in pytree.flatten(state[name])[0]]
                       for name in self.slots}
        new_params, new_slots = [], {name: [] for name in self.slots}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            slots = {name: slot_leaves[name][i] for name in self.slots}
            p, slots = self._update_leaf(as_value(p), g, slots, coefficients)
            new_params.append(p)
            for name in self.slots:
                new_slots[name].append(slots[name])
        new_state = {"step": step + 1}
        for name in self.slots:
            new_state[name] = pytree.unflatten(treedef, new_slots[name])
        return pytree.unflatten(treedef, new_params), new_state

    def _coefficients(self, lr, t) -> dict:
        """Scalars shared by all parameters at update number `t` (1 for the first update)."""
        return {"lr": lr}

    def _update_leaf(self, p, g, slots: dict, c: dict):
        raise NotImplementedError

    # -- TensorFlow style ------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        """Update Variables in place from (gradient, variable) pairs; None gradients are skipped.

        >>> opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
        ...                         model.trainable_variables))
        """
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            raise ValueError(f"{type(self).__name__}.apply_gradients: no gradient provided for "
                             "any variable")
        variables = [v for _, v in pairs]
        slots = [self._slots_of(v) for v in variables]
        state = {"step": self.iterations.value()}
        for name in self.slots:
            state[name] = [s[name] for s in slots]
        new_values, new_state = self.update([v.value() for v in variables],
                                            [g for g, _ in pairs], state)
        for i, (v, value) in enumerate(zip(variables, new_values)):
            v.assign(value)
            for name in self.slots:
                slots[i][name] = new_state[name][i]
        self.iterations.assign(new_state["step"])
        return self.iterations

    def _slots_of(self, variable: Variable) -> dict:
        # The entry keeps the Variable alive, so its id cannot be reused by another object.
        entry = self._slot_values.get(id(variable))
        if entry is None:
            entry = self._slot_values[id(variable)] = (
                variable, {name: np.zeros(variable.shape, variable.dtype) for name in self.slots})
        return entry[1]

    def get_slot(self, variable: Variable, name: str):
        """The current value of slot `name` (e.g. 'm') of `variable` (TensorFlow's get_slot)."""
        return self._slots_of(variable)[name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate!r})"


class SGD(Optimizer):
    """p -= lr g; with momentum, m = momentum m - lr g and p += m, or with Nesterov
    p += momentum m - lr g.

    >>> opt = SGD(0.1, momentum=0.9, nesterov=True)
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False,
                 global_clipnorm: float | None = None):
        super().__init__(learning_rate, global_clipnorm)
        if momentum < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.slots = ("momentum",) if momentum else ()

    def _update_leaf(self, p, g, slots, c):
        lr = _like(c["lr"], p)
        if not self.momentum:
            return p - g * lr, {}
        m = slots["momentum"] * self.momentum - g * lr
        step = m * self.momentum - g * lr if self.nesterov else m
        return p + step, {"momentum": m}


class Adam(Optimizer):
    """Adam with Keras' epsilon-hat form: alpha = lr sqrt(1 - b2^t) / (1 - b1^t),
    m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2), p -= alpha m / (sqrt(v) + epsilon).

    >>> opt = Adam(1e-3)
    """

    slots = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, global_clipnorm: float | None = None):
        super().__init__(learning_rate, global_clipnorm)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _coefficients(self, lr, t):
        b1_power = ops.pow(np.float32(self.beta_1), t)
        b2_power = ops.pow(np.float32(self.beta_2), t)
        return {"lr": lr, "alpha": ops.sqrt(1.0 - b2_power) / (1.0 - b1_power) * lr}

    def _update_leaf(self, p, g, slots, c):
        m = slots["m"] + (g - slots["m"]) * (1.0 - self.beta_1)
        v = slots["v"] + (ops.square(g) - slots["v"]) * (1.0 - self.beta_2)
        return p - _like(c["alpha"], p) * m / (ops.sqrt(v) + self.epsilon), {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * weight_decay * p before the Adam step.

    >>> opt = AdamW(1e-3, weight_decay=0.01)
    """

    def __init__(self, learning_rate=0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7,
                 global_clipnorm: float | None = None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, global_clipnorm)
        self.weight_decay = float(weight_decay)

    def _update_leaf(self, p, g, slots, c):
        return super()._update_leaf(p - p * self.weight_decay * _like(c["lr"], p), g, slots, c)


class RMSprop(Optimizer):
    """v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + epsilon) (Keras 3: epsilon inside the
    root). `centered` subtracts the squared running mean of g from v; `momentum` accumulates
    the increments.

    >>> opt = RMSprop(1e-3, momentum=0.9, centered=True)
    """

    def __init__(self, learning_rate=0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False,
                 global_clipnorm: float | None = None):
        super().__init__(learning_rate, global_clipnorm)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = centered
        self.slots = ("velocity",) + (("momentum",) if momentum else ()) + \
            (("average_gradient",) if centered else ())

    def _update_leaf(self, p, g, slots, c):
        rho = self.rho
        new = {"velocity": slots["velocity"] * rho + ops.square(g) * (1.0 - rho)}
        denominator = new["velocity"]
        if self.centered:
            new["average_gradient"] = slots["average_gradient"] * rho + g * (1.0 - rho)
            denominator = denominator - ops.square(new["average_gradient"])
        increment = g * _like(c["lr"], p) / ops.sqrt(denominator + self.epsilon)
        if self.momentum:
            new["momentum"] = slots["momentum"] * self.momentum + increment
            increment = new["momentum"]
        return p - increment, new
