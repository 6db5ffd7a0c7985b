"""Tensor (a numpy array) and Tracer (a symbolic one); Variable, a mutable Tensor, is in
core/variable.py (it converts Python values, core/convert.py, which knows Tensor).

All three share `ArrayMethods`: Python operators, indexing and the TensorFlow-style methods.
The operators call the public op functions, which live higher up (`jitgrad.ops`); they are
looked up through `_api`, which `jitgrad.ops` binds at import, so this module stays at the
bottom of the dependency graph.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core.aval import AVal
from jitgrad.core.errors import TracerError, with_location

_api = None  # the `jitgrad.ops` namespace, bound by jitgrad.ops at import


def bind_operator_namespace(api) -> None:
    global _api
    _api = api


_numpy_calls = None  # (dispatch, dispatch_ufunc) of `jitgrad.numpy`, bound at its import


def bind_numpy_namespace(dispatch, dispatch_ufunc) -> None:
    global _numpy_calls
    _numpy_calls = (dispatch, dispatch_ufunc)


class ArrayMethods:
    """Operators and methods common to eager tensors and tracers."""

    __slots__ = ()
    __array_priority__ = 100

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """numpy's ufuncs on tensors (`np.exp(t)`, `np_array * t`) run jitgrad.numpy's function
        of the same name: recorded by tapes, traced by jit (see jitgrad.numpy.dispatch)."""
        return _numpy_calls[1](ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """numpy's functions on tensors (`np.mean(t, axis=0)`) run jitgrad.numpy's function of
        the same name; the others run in numpy on the values, except under a trace or on a
        tensor a tape differentiates (see jitgrad.numpy.dispatch)."""
        return _numpy_calls[0](func, args, kwargs)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def aval(self) -> AVal:
        return AVal(self.shape, self.dtype)

    @property
    def T(self):  # noqa: N802 - numpy's name
        return _api.transpose(self)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError(with_location("len() of a 0-d tensor"))
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError(with_location("iteration over a 0-d tensor"))
        return iter(_api.unstack(self, axis=0))

    def __getitem__(self, index):
        return _api.getitem(self, index)

    def __add__(self, other):
        return _api.add(self, other)

    def __radd__(self, other):
        return _api.add(other, self)

    def __sub__(self, other):
        return _api.subtract(self, other)

    def __rsub__(self, other):
        return _api.subtract(other, self)

    def __mul__(self, other):
        return _api.multiply(self, other)

    def __rmul__(self, other):
        return _api.multiply(other, self)

    def __truediv__(self, other):
        return _api.divide(self, other)

    def __rtruediv__(self, other):
        return _api.divide(other, self)

    def __floordiv__(self, other):
        return _api.floordiv(self, other)

    def __rfloordiv__(self, other):
        return _api.floordiv(other, self)

    def __mod__(self, other):
        return _api.mod(self, other)

    def __rmod__(self, other):
        return _api.mod(other, self)

    def __pow__(self, other):
        return _api.pow(self, other)

    def __rpow__(self, other):
        return _api.pow(other, self)

    def __matmul__(self, other):
        return _api.matmul(self, other)

    def __rmatmul__(self, other):
        return _api.matmul(other, self)

    def __neg__(self):
        return _api.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _api.abs(self)

    def __invert__(self):
        return _api.invert(self)

    def __and__(self, other):
        return _api.bitwise_and(self, other)

    def __rand__(self, other):
        return _api.bitwise_and(other, self)

    def __or__(self, other):
        return _api.bitwise_or(self, other)

    def __ror__(self, other):
        return _api.bitwise_or(other, self)

    def __xor__(self, other):
        return _api.bitwise_xor(self, other)

    def __rxor__(self, other):
        return _api.bitwise_xor(other, self)

    def __lshift__(self, other):
        return _api.left_shift(self, other)

    def __rlshift__(self, other):
        return _api.left_shift(other, self)

    def __rshift__(self, other):
        return _api.right_shift(self, other)

    def __rrshift__(self, other):
        return _api.right_shift(other, self)

    def __lt__(self, other):
        return _api.less(self, other)

    def __le__(self, other):
        return _api.less_equal(self, other)

    def __gt__(self, other):
        return _api.greater(self, other)

    def __ge__(self, other):
        return _api.greater_equal(self, other)

    def __eq__(self, other):
        return _api.equal(self, other)

    def __ne__(self, other):
        return _api.not_equal(self, other)

    # Elementwise __eq__ would make tensors unhashable; identity hashing keeps them usable as
    # dict keys (`{w: ...}`), which is what the tape's users do.
    __hash__ = object.__hash__

    @property
    def at(self):
        """JAX's functional index updates: `x.at[index].set(v)`, `.add(v)` and `.get()` return
        new tensors (jitgrad/ops/scatter.py)."""
        return _api._IndexUpdates(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _api.reshape(self, shape)

    def astype(self, dtype):
        return _api.cast(self, dtype)

    def sum(self, axis=None, keepdims=False):
        return _api.reduce_sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _api.reduce_mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _api.reduce_max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _api.reduce_min(self, axis=axis, keepdims=keepdims)


class Tensor(ArrayMethods):
    """An immutable eager tensor: a numpy array plus jitgrad's operators.

    >>> jitgrad.constant([1.0, 2.0]) * 3
    <jitgrad.Tensor: shape=(2,), dtype=float32, numpy=array([3., 6.], dtype=float32)>
    """

    __slots__ = ("_value", "__weakref__")
    variable = None  # the Variable this value was read from (see VariableRead)

    def __init__(self, value: np.ndarray):
        self._value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    @property
    def ndim(self) -> int:
        return self._value.ndim

    @property
    def size(self) -> int:
        return self._value.size

    def numpy(self):
        """The value as a numpy array (no copy; treat it as read-only), or a numpy scalar for
        a 0-d tensor, as TensorFlow returns."""
        value = self._value
        return value[()] if value.ndim == 0 else value

    def __array__(self, dtype=None, copy=None):
        # `_value` is an ndarray, or a numpy scalar for 0-d outputs of compiled functions.
        value = self._value
        if dtype is not None and np.dtype(dtype) != value.dtype:
            value = value.astype(dtype)
        elif copy:
            value = value.copy()
        return value if type(value) is np.ndarray else np.asarray(value)

    def _one_element(self, kind: str):
        if self._value.size != 1:
            raise TypeError(
                with_location(
                    f"{kind}() of a tensor of shape {self.shape}: needs exactly 1 element"
                )
            )
        return self._value.reshape(())[()]

    def __bool__(self) -> bool:
        return bool(self._one_element("bool"))

    def __float__(self) -> float:
        return float(self._one_element("float"))

    def __int__(self) -> int:
        return int(self._one_element("int"))

    def __index__(self) -> int:
        if self._value.dtype.kind not in "iu":
            raise TypeError(with_location(f"a {self.dtype} tensor cannot be used as an index"))
        return int(self._one_element("int"))

    def __format__(self, spec: str) -> str:
        """The value's format, as TensorFlow's: `f"{loss:.5f}"` formats the number of a 0-d
        tensor, and a tensor of any rank formats as its numpy array (`f"{t}"` is the array's
        text, not the repr)."""
        return format(self.numpy(), spec)

    def _numpy_text(self, is_repr: bool = True) -> str:
        """The value as TensorFlow shows it: a multi-line array starts on a new line
        (`numpy=\narray([[...` in the seeds), so its rows line up."""
        if self._value.ndim == 0:
            return str(self._value[()])
        text = repr(self._value) if is_repr else str(self._value)
        return "\n" + text if "\n" in text else text

    def __repr__(self) -> str:
        return (
            f"<jitgrad.Tensor: shape={self.shape}, dtype={self.dtype.name}, "
            f"numpy={self._numpy_text()}>"
        )

    def __str__(self) -> str:
        shown = self._numpy_text(is_repr=False)
        return f"jitgrad.Tensor({shown}, shape={self.shape}, dtype={self.dtype.name})"


class CompiledScalar(Tensor):
    """A 0-d result of a compiled call, kept as the Python number the kernel returned.

    Making a numpy scalar costs more than the whole kernel call of a scalar function (W1), so
    the numpy scalar of the result's dtype is made when the value is used, not when returned.
    One subclass per dtype (`compiled_scalar_type`) holds the numpy scalar type. The call
    path makes instances without calling the class (compiler/call_path.py, `_Body.leaves`):
    `_number` must stay all that an instance holds.
    """

    __slots__ = ("_number",)
    _scalar_type: type = np.float32

    def __init__(self, number):
        self._number = number

    @property
    def _value(self):
        return self._scalar_type(self._number)

    def __float__(self) -> float:
        return float(self._number)


_COMPILED_SCALAR_TYPES: dict = {}


def compiled_scalar_type(dtype) -> type:
    """The CompiledScalar subclass for `dtype`."""
    dtype = np.dtype(dtype)
    cls = _COMPILED_SCALAR_TYPES.get(dtype)
    if cls is None:
        cls = _COMPILED_SCALAR_TYPES[dtype] = type(
            f"CompiledScalar_{dtype.name}",
            (CompiledScalar,),
            {"__slots__": (), "_scalar_type": dtype.type, "__module__": __name__},
        )
    return cls


class Tracer(ArrayMethods):
    """A symbolic tensor recorded into a graph while a function is traced by `jit`."""

    __slots__ = ("trace", "var", "variable", "__weakref__")

    def __init__(self, trace, var, variable=None):
        self.trace = trace
        self.var = var
        self.variable = variable  # the Variable this input was read from, if any

    @property
    def shape(self) -> tuple[int, ...]:
        return self.var.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self.var.aval.dtype

    @property
    def aval(self) -> AVal:
        return self.var.aval

    def __format__(self, spec: str) -> str:
        self._concrete("format()")

    def _concrete(self, what: str):
        raise TracerError(
            with_location(
                f"{what} of a traced value (shape={self.shape}, dtype={self.dtype.name}) "
                f"while tracing {self.trace.name!r}: its value is not known until the compiled "
                "function runs. Python control flow on it cannot be compiled: use jitgrad.cond "
                "or jitgrad.switch for a branch, jitgrad.while_loop or jitgrad.fori_loop for a "
                "loop, jitgrad.where for an elementwise choice, or mark the argument static "
                "(jit(..., static_argnums=...))"
            )
        )

    def numpy(self):
        self._concrete(".numpy()")

    def __array__(self, dtype=None, copy=None):
        # numpy's `arr[i]` lands here (after __index__ raised): an ndarray's __getitem__ can
        # only return numpy values, so the fix is to index a tensor instead.
        raise TracerError(
            with_location(
                f"np.asarray() of a traced value (shape={self.shape}, dtype={self.dtype.name}) "
                f"while tracing {self.trace.name!r}: numpy needs its data, which exists only "
                "when the compiled function runs. Indexing a numpy array with it (`arr[i]`) "
                "comes here, since numpy cannot return a traced value: write "
                "jitgrad.numpy.asarray(arr)[i] (a gather on the constant, compiled and "
                "differentiable); for other numpy functions, use jitgrad.numpy's"
            )
        )

    def __bool__(self):
        self._concrete("bool()")

    def __float__(self):
        self._concrete("float()")

    def __int__(self):
        self._concrete("int()")

    def __index__(self):
        self._concrete("using as an index")

    def __repr__(self) -> str:
        return f"<jitgrad.Tracer {self.var.aval.short()} in {self.trace.name!r}>"
