"""`jitgrad.function`: TensorFlow's tf.function as `jit`, and `TensorSpec` for its
input_signature.

>>> @jitgrad.function
... def f(x):
...     return x * x
>>> @jitgrad.function(input_signature=[jitgrad.TensorSpec([None], jitgrad.float32)])
... def g(x):
...     return jitgrad.reduce_sum(x)

It is `jit` with TensorFlow's arguments and three of its rules:

- parameters whose default is a Python bool or str (`training=False`, `mode="sum"`) are static:
  a flag selects a compiled version by value, so `if training:` works, as in TensorFlow, where
  every Python argument is part of the trace key. Other Python numbers stay traced scalars (a
  new float does not compile a new kernel);
- on a method, each instance gets its own compiled function, and the Variables read through
  `self` are inputs (see `JitFunction.__get__`);
- a call whose trace creates Variables (a model built on its first call) runs eagerly.

`autograph`, `jit_compile`, `reduce_retracing` and the `experimental_*` options are accepted and
change nothing: jitgrad always compiles the traced graph, Python control flow on traced values
is an error (use `jitgrad.cond` / `while_loop`), and new shapes share one kernel.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from jitgrad.compiler.function import JitFunction
from jitgrad.core import dtypes, pytree
from jitgrad.core.convert import to_array
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer


class TensorSpec:
    """The shape and dtype a tensor argument must have (tf.TensorSpec); None in `shape` is a
    dimension of any size, and `shape=None` any rank.

    >>> jitgrad.TensorSpec([None, 3], jitgrad.float32).is_compatible_with(np.zeros((5, 3)))
    False
    """

    def __init__(self, shape, dtype=dtypes.float32, name: str | None = None):
        self.shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
        self.dtype = dtypes.as_dtype(dtype)
        self.name = name

    def _shape_fits(self, shape) -> bool:
        return self.shape is None or (
            len(shape) == len(self.shape)
            and all(want is None or want == got for want, got in zip(self.shape, shape))
        )

    def is_compatible_with(self, value) -> bool:
        """Whether `value` (a tensor, array or TensorSpec) has this spec's dtype and fits its
        shape."""
        if isinstance(value, TensorSpec):
            return value.dtype == self.dtype and (
                value.shape is None or self._shape_fits(value.shape)
            )
        return np.dtype(value.dtype) == self.dtype and self._shape_fits(np.shape(value))

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorSpec) and (self.shape, self.dtype, self.name) == (
            other.shape,
            other.dtype,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype, self.name))

    def __repr__(self) -> str:
        return f"TensorSpec(shape={self.shape!r}, dtype={self.dtype.name}, name={self.name!r})"


def _conform(name: str, signature, args: tuple) -> tuple:
    """`args` as tensors of `signature`'s specs: Python and numpy values are converted to the
    spec's dtype, tensors must have it (as TensorFlow requires); shapes must fit."""
    if len(args) != len(signature):
        raise TypeError(
            with_location(
                f"{name}: called with {len(args)} argument(s), but its input_signature has "
                f"{len(signature)}: {list(signature)}"
            )
        )
    out = []
    for position, (arg, spec_tree) in enumerate(zip(args, signature)):
        specs, spec_def = pytree.flatten(spec_tree)
        leaves, arg_def = pytree.flatten(arg, is_leaf=pytree.is_number_list)
        if arg_def != spec_def:
            raise TypeError(
                with_location(
                    f"{name}: argument #{position} has the structure {pytree.describe(arg_def)}, "
                    f"its input_signature {pytree.describe(spec_def)}"
                )
            )
        converted = []
        for leaf, spec in zip(leaves, specs):
            value = (
                leaf if isinstance(leaf, (Tensor, Tracer)) else Tensor(to_array(leaf, spec.dtype))
            )
            if not spec.is_compatible_with(value):
                raise TypeError(
                    with_location(
                        f"{name}: argument #{position} is {value.dtype.name}{list(value.shape)}, "
                        f"which does not match its input_signature {spec}"
                    )
                )
            converted.append(value)
        out.append(pytree.unflatten(arg_def, converted))
    return tuple(out)


# tf.function's options besides the experimental_* ones; `name` names the compiled function.
_TF_OPTIONS = frozenset({"autograph", "jit_compile", "reduce_retracing", "name"})


def function(func=None, input_signature=None, **options):
    """TensorFlow's `tf.function`: `jit` with TensorFlow's arguments (see the module
    docstring), usable as `@function`, `@function(...)` and `function(f, ...)`, on functions
    and on methods.

    >>> class Model(jitgrad.Module):
    ...     @jitgrad.function
    ...     def __call__(self, x, training=False):
    ...         return x * 2.0 if training else x
    """
    unknown = [k for k in options if k not in _TF_OPTIONS and not k.startswith("experimental_")]
    if unknown:
        raise TypeError(f"function() got unexpected keyword argument(s) {unknown}")
    if func is None:
        return functools.partial(function, input_signature=input_signature, **options)
    static = _flag_parameters(func)
    jitted = JitFunction(func, static_argnames=static, name=options.get("name"))
    jitted.variables_on_first_call = True
    if input_signature is not None:
        signature = tuple(input_signature)
        jitted.convert_args = functools.partial(_conform, jitted.name, signature)
    return jitted


def _flag_parameters(func) -> tuple[str, ...]:
    """The parameters whose default is a Python bool or str: flags, static under `function`."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if isinstance(p.default, (bool, str)))
