"""Optimizer settings that a compiled update reads at every call instead of freezing them.

A traced update that read `self.learning_rate` as a Python float would bake the number into
the kernel, and `opt.learning_rate = 1e-4` after the first step would be ignored by every
compiled step (while the eager `update` obeys it). So a number given to a `Hyperparameter` is
held in a 0-d float64 Variable: tracing reads a Variable as a kernel input, passed at each
call, so a new number costs no retrace. float64 keeps the number exact; the update casts it to
each parameter's dtype where a Python float would have been weakly typed, so the arithmetic
(and every bit of the result) is the same as with the plain float.

A schedule (a callable of the step count), None, or any other object is Python that the trace
runs: putting one in place of another, or of a number, changes the traced code. The optimizer
then asks the compiled steps built from it to retrace (`Optimizer.__setattr__`).
"""

from __future__ import annotations

import numbers

import numpy as np

from jitgrad.core.variable import Variable


class Setting(Variable):
    """The Variable that holds a hyperparameter's number (not trainable: tapes ignore it)."""

    __slots__ = ()

    def __init__(self, value, name: str):
        super().__init__(np.float64(value), name=name, trainable=False)


# The ranges a number may take (PyTorch's checks): (what the message says, the test). A NaN
# fails every test.
NON_NEGATIVE = ("must be >= 0", lambda v: v >= 0)
POSITIVE = ("must be > 0", lambda v: v > 0)
A_DECAY = ("must be in [0, 1)", lambda v: 0 <= v < 1)
A_FRACTION = ("must be in [0, 1]", lambda v: 0 <= v <= 1)


class Hyperparameter:
    """A descriptor: reads give what the user set (a float for numbers), sets of a number
    assign the held Setting in place, so compiled updates that read it see the new value.

    A number outside `valid` (a pair of this module: NON_NEGATIVE, ...) is a ValueError, and a
    string, or None unless `optional`, a TypeError, when set: at the optimizer's construction
    or later (`opt.learning_rate = "1e-3"`). Before, `Adam(0.1, beta_1=1.5)` trained to
    nonsense and `SGD("0.1")` failed in the first update's multiply. Schedules (callables),
    Variables, tensors and 0-d arrays are held as they are.

    >>> class Momentum(Optimizer):
    ...     momentum = Hyperparameter(NON_NEGATIVE)
    """

    def __init__(self, valid=None, optional: bool = False):
        self.valid, self.optional = valid, optional

    def __set_name__(self, owner, name: str) -> None:
        self.name = name
        self.attr = "_" + name

    def _check(self, opt, value) -> None:
        where = f"{type(opt).__name__}: {self.name}"
        if is_number(value):
            if self.valid is not None and not self.valid[1](value):
                raise ValueError(f"{where} {self.valid[0]}, got {value}")
        elif isinstance(value, (str, bytes, bool, np.bool_)) or (
            value is None and not self.optional
        ):
            allowed = "a number" + (" or None" if self.optional else "")
            raise TypeError(
                f"{where} must be {allowed}, or a schedule (a callable of the step count), got "
                f"{type(value).__name__} {value!r}"
            )

    def __get__(self, opt, owner=None):
        if opt is None:
            return self
        held = opt.__dict__[self.attr]
        return float(held._value) if isinstance(held, Setting) else held

    def __set__(self, opt, value) -> None:
        self._check(opt, value)
        held = opt.__dict__.get(self.attr)
        if not is_number(value):
            opt.__dict__[self.attr] = value
        elif isinstance(held, Setting):
            held.assign(np.float64(value))
        else:
            opt.__dict__[self.attr] = Setting(value, f"{type(opt).__name__}.{self.name}")

    def traced(self, opt):
        """What the update computes with: the Setting (a Variable) or the object as set."""
        return opt.__dict__[self.attr]

    def kind(self, opt):
        """What the traced code depends on: 'number' for any number, else the object set (by
        identity: a new schedule object is new code even if it computes the same)."""
        held = opt.__dict__.get(self.attr)
        return "number" if isinstance(held, Setting) else id(held)


def is_number(value) -> bool:
    """A real number the optimizer may hold in a Setting (bools are flags, not numbers)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def hyperparameters(cls) -> list[Hyperparameter]:
    """The Hyperparameter descriptors of an optimizer class, base classes first."""
    found = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Hyperparameter):
                found[name] = value
    return list(found.values())
