"""Variable: a mutable Tensor whose reads tapes and traces credit (TensorFlow's tf.Variable),
and VariableRead, one read of it."""

from __future__ import annotations

import contextvars
import weakref

import numpy as np

from jitgrad.core.convert import to_array
from jitgrad.core.dispatch import current_trace
from jitgrad.core.errors import VariableCreationError, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.weak import WEAK_TYPES

# The enclosing name scopes, joined: "outer/inner/" ("" at the top). A contextvar, like the
# tape stack: each thread and task has its own.
_scope: contextvars.ContextVar = contextvars.ContextVar("jitgrad_name_scope", default="")


def current_name_scope() -> str:
    """The enclosing scopes' prefix for new Variable names ("" outside any scope)."""
    return _scope.get()


class name_scope:  # noqa: N801 - TensorFlow's name
    """A context manager that prefixes the names of Variables created inside it.

    >>> with jitgrad.name_scope("layer"):
    ...     v = jitgrad.Variable(1.0, name="w")
    >>> v.name
    'layer/w:0'

    As in TensorFlow, a name is relative to the scope entered around it ("outer/layer/"
    inside "outer"), a name ending in "/" is a whole scope, and "" is the top. Eager
    TensorFlow does not make names unique, and neither does this."""

    def __init__(self, name: str):
        if not isinstance(name, str):
            raise TypeError(with_location(f"name_scope: the name must be a str, got {name!r}"))
        self.name = name
        self._tokens: list = []

    def __enter__(self) -> str:
        name = self.name
        full = name if not name or name.endswith("/") else f"{_scope.get()}{name}/"
        self._tokens.append(_scope.set(full))
        return full

    def __exit__(self, *exc) -> bool:
        _scope.reset(self._tokens.pop())
        return False


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

    def __init__(self, value, name: str | None = None, trainable: bool = True, dtype=None):
        if isinstance(value, Tracer):
            raise VariableCreationError(
                with_location(
                    f"Variable created from a traced value ({value.aval.short()}) while tracing "
                    f"{value.trace.name!r}: a Variable needs a concrete initial value. Create it "
                    "outside the traced function, or decorate that with jitgrad.function, which "
                    "runs a call that creates Variables eagerly (TensorFlow's first-call rule)"
                )
            )
        super().__init__(_owned(to_array(value, dtype), value))
        # TensorFlow's names: the enclosing name scopes, the name ("Variable" by default: eager
        # TensorFlow does not make names unique) and ":0", its output index.
        self.name = f"{_scope.get()}{'Variable' if name is None else name}:0"
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
        it as reads of the Variable, as in TensorFlow). Under `jit`, the traced read: an input
        of the kernel, or the value assigned earlier in the function, not the value at trace
        time."""
        trace = current_trace.get()
        return self._read() if trace is None else trace.read_state(self)

    read_value = value

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
        """Set the value. Under `jit` (tf.function) the new value is an output of the kernel,
        assigned after each call; later reads in the same function see it."""
        trace = current_trace.get()
        if trace is not None:
            trace.write_state(self, self._traced_value(trace, value, "assign"))
            return self
        self._value = _owned(self._new_value(value, "assign"), value)
        return self

    def assign_add(self, delta):
        trace = current_trace.get()
        if trace is not None:
            new = trace.read_state(self) + self._traced_value(trace, delta, "assign_add")
            trace.write_state(self, new)
            return self
        self._value = self._value + self._new_value(delta, "assign_add")
        return self

    def assign_sub(self, delta):
        trace = current_trace.get()
        if trace is not None:
            new = trace.read_state(self) - self._traced_value(trace, delta, "assign_sub")
            trace.write_state(self, new)
            return self
        self._value = self._value - self._new_value(delta, "assign_sub")
        return self

    def _traced_value(self, trace, value, op: str):
        """`value` as a value of `trace` with this Variable's shape and dtype: Python and numpy
        values are converted to the dtype, traced values must have it (as TensorFlow)."""
        if isinstance(value, WEAK_TYPES):  # a Python float: takes the Variable's dtype
            value = value.astype(self.dtype)
        if isinstance(value, (Tensor, Tracer)):
            if value.dtype != self.dtype:
                raise TypeError(
                    with_location(
                        f"Variable.{op}: a {value.dtype.name} value for the {self.dtype.name} "
                        f"variable '{self.name}' (cast it first)"
                    )
                )
        else:
            value = Tensor(self._new_value(value, op))
        if value.shape != self.shape:
            raise ValueError(
                with_location(
                    f"Variable.{op}: value of shape {value.shape} does not match the variable "
                    f"'{self.name}' of shape {self.shape}"
                )
            )
        return trace.lift(value)

    def __repr__(self) -> str:
        return (
            f"<jitgrad.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}, "
            f"numpy={self._numpy_text()}>"
        )

    # print(v) shows the Variable, not a Tensor, as TensorFlow does.
    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        """`f"{v}"` is the Variable's text, as in TensorFlow; a format spec (`f"{v:.2f}"`,
        which TensorFlow refuses) formats its current value."""
        return str(self) if not spec else format(self.numpy()[()], spec)


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
        self._value = value  # Tensor.__init__'s one line, without its frame (a read per step)
        # A weak reference: the Variable holds its last read, and a cycle would keep a
        # deleted Variable's array alive until the garbage collector runs.
        self._variable = weakref.ref(variable)

    @property
    def variable(self) -> Variable | None:
        return self._variable()
