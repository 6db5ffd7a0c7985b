"""Optimizers with one pure update rule and two interfaces.

Functional (JAX/optax style): `state = opt.init(params)` and
`params, state = opt.update(params, grads, state)`, where params, grads and state are nested
dicts/lists/tuples of arrays. `update` is written with jitgrad ops only (no Python branch on a
value, no mutation), so `jitgrad.jit(opt.update)` compiles it, alone or inside a train step:

>>> opt = Adam(1e-3)
>>> state = opt.init(params)        # {'step': 0-d int64, 'm': like params, 'v': like params}
>>> params, state = opt.update(params, grads, state)

TensorFlow style: `opt.apply_gradients(zip(grads, variables))` assigns the new values to the
Variables, keeps each Variable's slots (keyed by the Variable object) and counts
`opt.iterations`; it calls the same `update`, so the math lives in one place.

The rules and defaults are Keras 3's; `global_clipnorm` clips all gradients of an update by
their joint norm first. The scalar coefficients (learning rate, bias corrections) are float32.

Numeric settings (learning rate, betas, epsilon, momentum, rho, weight decay, clip norm) are
read by a compiled update at every call (see `hyperparameters`): `opt.learning_rate = 1e-4`
between steps takes effect at the next step, compiled or eager. A schedule is evaluated at the
traced step count, so it costs no recompilation either; replacing it by another schedule or a
number (or changing a flag such as `nesterov`) retraces the train steps built from `opt`. A
`jit` of your own around `update` reads the numbers too but does not see a replaced schedule
or flag: call its `clear_cache()`. The step count is int64: it cannot overflow.
"""

from __future__ import annotations

import weakref

import numpy as np

from jitgrad import ops
from jitgrad.core import pytree
from jitgrad.core.convert import to_array
from jitgrad.core.variable import Variable
from jitgrad.ops.base import as_value
from jitgrad.optim.hyperparameters import (
    A_DECAY,
    A_FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Hyperparameter,
    hyperparameters,
)
from jitgrad.optim.state import check_state, layout


def clip_by_global_norm(grads, max_norm, norm=None):
    """Scale all gradients by max_norm / max(norm, max_norm), where norm is their joint L2
    norm (given, when `grads` are shares of a larger gradient: a sharded update); returns
    (clipped, norm). `grads` is any nested dict/list/tuple of arrays.

    >>> clipped, norm = clip_by_global_norm([g1, g2], 1.0)
    """
    leaves, treedef = pytree.flatten(grads)
    leaves = [as_value(g) for g in leaves]
    if norm is None:
        norm = ops.sqrt(sum(ops.reduce_sum(ops.square(g)) for g in leaves))
    max_norm = _like(max_norm, norm)
    scale = max_norm / ops.maximum(norm, max_norm)
    clipped = [g * ops.cast(scale, g.dtype) for g in leaves]
    return pytree.unflatten(treedef, clipped), norm


def _like(scalar, p):
    """A scalar in `p`'s dtype (a Python float is weakly typed already). Settings are float64
    Variables: casting them where a Python float would have been rounded to p's dtype gives
    the same bits as the plain float did."""
    return ops.cast(scalar, p.dtype) if hasattr(scalar, "dtype") else scalar


def _float32(scalar):
    """A scalar as float32: the dtype of the per-step coefficients."""
    return ops.cast(scalar, np.float32) if hasattr(scalar, "dtype") else scalar


class _Spec:
    """The shape and dtype of an array of the state: enough to check a state, without zeros."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def _spec_like(leaf) -> _Spec:
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        leaf = to_array(leaf)
    return _Spec(leaf.shape, leaf.dtype)


class Optimizer:
    """The base class: subclasses name their per-parameter `slots`, declare their numeric
    settings as `Hyperparameter`s, and define `_update_leaf` (and `_coefficients` for per-step
    scalars). The update reads a setting through `self._traced(name)`."""

    slots: tuple[str, ...] = ()
    learning_rate = Hyperparameter(NON_NEGATIVE)
    global_clipnorm = Hyperparameter(POSITIVE, optional=True)

    def __init__(self, learning_rate, global_clipnorm: float | None = None):
        self.learning_rate = learning_rate
        self.global_clipnorm = global_clipnorm
        self.iterations = Variable(np.int64(0), name="iterations", trainable=False)
        self._slot_values: dict[int, tuple[Variable, dict]] = {}
        self._compiled_users = weakref.WeakSet()

    # -- settings --------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        """Set an attribute; if that changes the code of the traced update (a schedule replaced,
        a flag flipped, a slot added), the compiled steps built from this optimizer retrace."""
        users = self.__dict__.get("_compiled_users")
        before = self._code_key() if users else None
        super().__setattr__(name, value)
        if users and self._code_key() != before:
            for fn in list(users):
                fn.clear_cache()

    def _code_key(self) -> tuple:
        """Everything the traced update's code depends on besides the numbers it reads at every
        call: which settings are numbers, which schedule objects, the slots, the flags."""
        return (tuple(h.kind(self) for h in hyperparameters(type(self))), self.slots, self._flags())

    def _flags(self) -> tuple:
        """Python flags that select the update's code (subclasses with flags override)."""
        return ()

    def _traced(self, name: str):
        """Setting `name` as the update computes with it (a Variable for a number)."""
        return getattr(type(self), name).traced(self)

    def retrace_on_change(self, compiled) -> None:
        """Call `compiled.clear_cache()` whenever a change of this optimizer changes its traced
        update's code (jit_train_step registers itself); held by a weak reference."""
        self._compiled_users.add(compiled)

    def __getstate__(self) -> dict:
        """A copy or pickle has no compiled steps of its own yet (and weak sets do not pickle)."""
        state = dict(self.__dict__)
        del state["_compiled_users"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _compiled_users=weakref.WeakSet())

    # -- functional ------------------------------------------------------------------------------
    def init(self, params) -> dict:
        """The initial state: a 0-d int64 step counter and one zero tree per slot.

        >>> SGD(0.1, momentum=0.9).init({"w": np.ones(3, np.float32)})
        {'step': array(0), 'momentum': {'w': array([0., 0., 0.], dtype=float32)}}
        """
        specs, treedef = pytree.flatten(self._state_specs(params))
        return pytree.unflatten(treedef, [np.zeros(s.shape, s.dtype) for s in specs])

    def _state_specs(self, params) -> dict:
        """The state `init(params)` makes, with a _Spec in place of each array."""
        leaves, treedef = pytree.flatten(params)
        specs = [_spec_like(p) for p in leaves]
        state = {"step": _Spec((), np.int64)}
        for name in self.slots:
            state[name] = pytree.unflatten(treedef, specs)
        return state

    def update(self, params, grads, state, *, global_norm=None):
        """(new params, new state) after one step; pure and traceable. `global_norm`: the
        joint norm of the whole gradient when `params`, `grads` and `state` are shares of
        the rows of the whole (a sharded update, compiler/sharded_step.py), for clipping.

        >>> params, state = opt.update(params, grads, state)
        """
        p_leaves, treedef = pytree.flatten(params)
        g_leaves, g_treedef = pytree.flatten(grads)
        if g_treedef != treedef:
            raise ValueError(
                f"{type(self).__name__}.update: grads {pytree.describe(g_treedef)} "
                f"do not match params {pytree.describe(treedef)}"
            )
        check_state(type(self).__name__, layout(self._state_specs(params)), state)
        g_leaves = [as_value(g) for g in g_leaves]
        if self.global_clipnorm is not None:
            g_leaves, _ = clip_by_global_norm(
                g_leaves, self._traced("global_clipnorm"), global_norm
            )
        step = as_value(state["step"])
        lr = self._traced("learning_rate")
        lr = lr(step) if callable(lr) else lr
        coefficients = self._coefficients(lr, ops.cast(step + 1, np.float32))
        slot_leaves = {
            name: [as_value(s) for s in pytree.flatten(state[name])[0]] for name in self.slots
        }
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

    def updates_elementwise(self) -> bool:
        """Whether each element of a parameter's update depends on that element of the
        parameter, gradient and slots alone, so that ranks may each update a share of the rows
        (compiler/sharded_step.py). True only when the class that defines `_update_leaf`
        declares `update_is_elementwise = True`: a subclass with its own rule must say so."""
        for cls in type(self).__mro__:
            if "_update_leaf" in vars(cls):
                return vars(cls).get("update_is_elementwise", False)
        return False

    # -- TensorFlow style ------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        """Update Variables in place from (gradient, variable) pairs; None gradients are skipped.

        >>> opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
        ...                         model.trainable_variables))
        """
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            raise ValueError(
                f"{type(self).__name__}.apply_gradients: no gradient provided for any variable"
            )
        variables = [v for _, v in pairs]
        slots = [self._slots_of(v) for v in variables]
        state = {"step": self.iterations.value()}
        for name in self.slots:
            state[name] = [s[name] for s in slots]
        new_values, new_state = self.update(
            [v.value() for v in variables], [g for g, _ in pairs], state
        )
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
                variable,
                {name: np.zeros(variable.shape, variable.dtype) for name in self.slots},
            )
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

    update_is_elementwise = True

    momentum = Hyperparameter(NON_NEGATIVE)

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        global_clipnorm: float | None = None,
    ):
        super().__init__(learning_rate, global_clipnorm)
        self.momentum = momentum
        self.nesterov = nesterov

    @property
    def slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def _flags(self) -> tuple:
        return (bool(self.nesterov),)

    def _update_leaf(self, p, g, slots, c):
        lr = _like(c["lr"], p)
        if not self.momentum:
            return p - g * lr, {}
        momentum = _like(self._traced("momentum"), p)
        m = slots["momentum"] * momentum - g * lr
        step = m * momentum - g * lr if self.nesterov else m
        return p + step, {"momentum": m}


class Adam(Optimizer):
    """Adam with Keras' epsilon-hat form: alpha = lr sqrt(1 - b2^t) / (1 - b1^t),
    m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2), p -= alpha m / (sqrt(v) + epsilon).

    >>> opt = Adam(1e-3)
    """

    update_is_elementwise = True

    slots = ("m", "v")
    beta_1 = Hyperparameter(A_DECAY)
    beta_2 = Hyperparameter(A_DECAY)
    epsilon = Hyperparameter(NON_NEGATIVE)

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        global_clipnorm: float | None = None,
    ):
        super().__init__(learning_rate, global_clipnorm)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _coefficients(self, lr, t):
        beta_1, beta_2 = self._traced("beta_1"), self._traced("beta_2")
        b1_power = ops.pow(_float32(beta_1), t)
        b2_power = ops.pow(_float32(beta_2), t)
        alpha = ops.sqrt(1.0 - b2_power) / (1.0 - b1_power) * _float32(lr)
        # The complements in float64, as Python computed them from plain floats.
        return {
            "lr": lr,
            "alpha": alpha,
            "one_minus_beta_1": 1.0 - beta_1,
            "one_minus_beta_2": 1.0 - beta_2,
            "epsilon": self._traced("epsilon"),
        }

    def _update_leaf(self, p, g, slots, c):
        m = slots["m"] + (g - slots["m"]) * _like(c["one_minus_beta_1"], p)
        v = slots["v"] + (ops.square(g) - slots["v"]) * _like(c["one_minus_beta_2"], p)
        new_p = p - _like(c["alpha"], p) * m / (ops.sqrt(v) + _like(c["epsilon"], p))
        return new_p, {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * weight_decay * p before the Adam step.

    >>> opt = AdamW(1e-3, weight_decay=0.01)
    """

    update_is_elementwise = True

    weight_decay = Hyperparameter(NON_NEGATIVE)

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        global_clipnorm: float | None = None,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, global_clipnorm)
        self.weight_decay = weight_decay

    def _update_leaf(self, p, g, slots, c):
        decay = _like(self._traced("weight_decay"), p)
        return super()._update_leaf(p - p * decay * _like(c["lr"], p), g, slots, c)


class RMSprop(Optimizer):
    """v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + epsilon) (Keras 3: epsilon inside the
    root). `centered` subtracts the squared running mean of g from v; `momentum` accumulates
    the increments.

    >>> opt = RMSprop(1e-3, momentum=0.9, centered=True)
    """

    update_is_elementwise = True

    rho = Hyperparameter(A_FRACTION)
    momentum = Hyperparameter(NON_NEGATIVE)
    epsilon = Hyperparameter(NON_NEGATIVE)

    def __init__(
        self,
        learning_rate=0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        global_clipnorm: float | None = None,
    ):
        super().__init__(learning_rate, global_clipnorm)
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon
        self.centered = centered

    @property
    def slots(self) -> tuple[str, ...]:
        return (
            ("velocity",)
            + (("momentum",) if self.momentum else ())
            + (("average_gradient",) if self.centered else ())
        )

    def _flags(self) -> tuple:
        return (bool(self.centered),)

    def _update_leaf(self, p, g, slots, c):
        rho = self._traced("rho")
        rho_p, one_minus_rho = _like(rho, p), _like(1.0 - rho, p)
        new = {"velocity": slots["velocity"] * rho_p + ops.square(g) * one_minus_rho}
        denominator = new["velocity"]
        if self.centered:
            new["average_gradient"] = slots["average_gradient"] * rho_p + g * one_minus_rho
            denominator = denominator - ops.square(new["average_gradient"])
        epsilon = _like(self._traced("epsilon"), p)
        increment = g * _like(c["lr"], p) / ops.sqrt(denominator + epsilon)
        if self.momentum:
            new["momentum"] = slots["momentum"] * _like(self._traced("momentum"), p) + increment
            increment = new["momentum"]
        return p - increment, new
