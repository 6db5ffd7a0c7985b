"""Variable: a mutable Tensor whose reads tapes and traces credit (TensorFlow's tf.Variable),
and VariableRead, one read of it."""

from __future__ import annotations

import weakref

import numpy as np

from jitgrad.core.convert import to_array
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor


class Variable(Tensor):
    """A mutable tensor, watched automatically by tapes when read (if trainable).

    >>> w = jitgrad.Variable(5.0); w.assign_add(1.0); float(w)
    6.0

    A Variable owns its array: it copies a numpy array it is given, and `assign` replaces the
    array instead of writing into it, so the values a tape recorded stay what they were. The
    array is always C-contiguous (a transposed value is copied once, when assigned; `assign_add`
    of one gives a C-ordered sum, as numpy orders the result of a C and an F operand): compiled
    kernels read it as one on every call, with no check on the fast path.
    """

    __slots__ = ("name", "trainable", "_last_read")
    _counter = 0

    def __init__(self, value, name: str | None = None, trainable: bool = True, dtype=None):
        super().__init__(_owned(to_array(value, dtype), value))
        if name is None:
            Variable._counter += 1
            name = f"Variable_{Variable._counter}" if Variable._counter > 1 else "Variable"
        self.name = name
        self.trainable = bool(trainable)
        self._last_read = None

    def numpy(self) -> np.ndarray:
        """A copy of the current value (a Variable changes; its snapshots must not)."""
        return self._value.copy()

    def _read(self) -> VariableRead:
        """The current value as an immutable tensor that remembers this Variable. One object
        per assigned value, shared by every tape, so ops recorded by an inner tape's backward
        pass are recognised by the enclosing tapes."""
        read = self._last_read
        if read is None or read._value is not self._value:
            read = self._last_read = VariableRead(self._value, self)
        return read

    def value(self) -> Tensor:
        """The current value as an immutable Tensor (tapes that watch this Variable see ops on
        it as reads of the Variable, as in TensorFlow)."""
        return self._read()

    def read_value(self) -> Tensor:
        return self._read()

    def _new_value(self, value, op: str) -> np.ndarray:
        new = to_array(value, self.dtype)
        if new.shape != self.shape:
            raise ValueError(
                with_location(
                    f"Variable.{op}: value of shape {new.shape} does not match the variable "
                    f"'{self.name}' of shape {self.shape}"
                )
            )
        return new

    def assign(self, value):
        self._value = _owned(self._new_value(value, "assign"), value)
        return self

    def assign_add(self, delta):
        self._value = self._value + self._new_value(delta, "assign_add")
        return self

    def assign_sub(self, delta):
        self._value = self._value - self._new_value(delta, "assign_sub")
        return self

    def __repr__(self) -> str:
        return (
            f"<jitgrad.Variable '{self.name}:0' shape={self.shape} dtype={self.dtype.name}, "
            f"numpy={self._numpy_text()}>"
        )

    # print(v) shows the Variable, not a Tensor, as TensorFlow does.
    __str__ = __repr__


def _owned(array: np.ndarray, source) -> np.ndarray:
    """`array` as a C-contiguous array, copied if it may be the caller's numpy array (which the
    caller can mutate)."""
    if not array.flags.c_contiguous:
        return np.ascontiguousarray(array)
    if isinstance(source, np.ndarray) and np.may_share_memory(array, source):
        return array.copy()
    return array


class VariableRead(Tensor):
    """The value of a Variable at one moment: what a recorded op read. Tapes credit gradients
    flowing into it to `variable`; a later `assign` makes a new read and leaves this one (and
    the backward pass that uses it) unchanged."""

    __slots__ = ("_variable",)

    def __init__(self, value: np.ndarray, variable: Variable):
        super().__init__(value)
        # A weak reference: the Variable holds its last read, and a cycle would keep a
        # deleted Variable's array alive until the garbage collector runs.
        self._variable = weakref.ref(variable)

    @property
    def variable(self) -> Variable | None:
        return self._variable()
