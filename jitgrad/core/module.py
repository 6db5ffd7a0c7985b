"""Module (TensorFlow's tf.Module): a named container whose Variables and sub-modules are
found by walking its attributes, and name scopes for the Variables created inside one.

>>> class Linear(jitgrad.Module):
...     def __init__(self, name=None):
...         super().__init__(name=name)
...         self.w, self.b = jitgrad.Variable(5.0), jitgrad.Variable(0.0)
...     def __call__(self, x):
...         return self.w * x + self.b
>>> [v.numpy() for v in Linear().trainable_variables]     # sorted attribute names: b, w
[0.0, 5.0]

The walk is TensorFlow's: the attributes in sorted order, each flattened as a nested
list/tuple/dict (dicts by sorted key); a module's own values come before those of its
sub-modules, which are walked after it in the order found; each object is reported once.
"""

from __future__ import annotations

import functools
import re

from jitgrad.core import pytree
from jitgrad.core.errors import with_location
from jitgrad.core.variable import Variable, name_scope

_CAMEL_TO_SNAKE = re.compile(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")


def camel_to_snake(name: str) -> str:
    """TensorFlow's default module name: `MyDense` -> `my_dense`, `MLP` -> `mlp`."""
    return _CAMEL_TO_SNAKE.sub(r"_\1", name).lower()


class Module:
    """The base class of models and layers (tf.Module).

    `name` defaults to the snake_case class name; `name_scope` is a context manager naming the
    Variables created inside it `<module name>/...`; `variables`, `trainable_variables` and
    `submodules` are found by walking the attributes (see the module docstring). A subclass
    need not call `super().__init__()` (TensorFlow's guides often do not): the name then
    defaults lazily.
    """

    def __init__(self, name: str | None = None):
        if name is None:
            name = camel_to_snake(type(self).__name__)
        elif not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                with_location(
                    f"Module: {name!r} is not a valid module name; module names must be valid "
                    "Python identifiers (as in TensorFlow)"
                )
            )
        self._set_name(name)

    def _set_name(self, name: str) -> None:
        """Name the module, and fix its scope inside the scopes enclosing its creation."""
        self._name = name
        with name_scope(name) as full:
            self._name_scope = name_scope(full)

    @property
    def name(self) -> str:
        name = self.__dict__.get("_name")
        return name if name is not None else camel_to_snake(type(self).__name__)

    @property
    def name_scope(self) -> name_scope:
        """The scope `with module.name_scope:` enters: "<enclosing scopes>/<name>/", fixed
        when the module was made, as in TensorFlow."""
        scope = self.__dict__.get("_name_scope")
        if scope is None:
            scope = self.__dict__["_name_scope"] = name_scope(self.name + "/")
        return scope

    @property
    def variables(self) -> tuple:
        """Every Variable of this module and its sub-modules, each once."""
        return tuple(walk(self, _is_variable))

    @property
    def trainable_variables(self) -> tuple:
        """The Variables created with `trainable=True`, each once."""
        return tuple(walk(self, _is_trainable))

    @property
    def non_trainable_variables(self) -> tuple:
        return tuple(walk(self, _is_non_trainable))

    @property
    def submodules(self) -> tuple:
        """Every Module reachable from this one's attributes (not itself), each once."""
        return tuple(walk(self, _is_module))

    @classmethod
    def with_name_scope(cls, method):
        """Decorate a method so that it runs inside its module's `name_scope`.

        >>> class Dense(jitgrad.Module):
        ...     @jitgrad.Module.with_name_scope
        ...     def __call__(self, x): ...
        """

        @functools.wraps(method)
        def inside_scope(self, *args, **kwargs):
            with self.name_scope:
                return method(self, *args, **kwargs)

        return inside_scope

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


# Module's own bookkeeping, never walked.
_IGNORED_ATTRIBUTES = frozenset({"_name", "_name_scope"})


def _is_variable(x) -> bool:
    return isinstance(x, Variable)


def _is_trainable(x) -> bool:
    return isinstance(x, Variable) and x.trainable


def _is_non_trainable(x) -> bool:
    return isinstance(x, Variable) and not x.trainable


def _is_module(x) -> bool:
    return isinstance(x, Module)


def walk(module: Module, predicate, seen: set | None = None):
    """The values reachable from `module`'s attributes for which `predicate` holds, in
    TensorFlow's order (tf.Module._flatten_module): `module`'s attributes by sorted name, each
    flattened as a pytree; then each sub-module found, in that order, walked the same way.
    Each object is yielded once, and a cycle of modules is walked once."""
    if seen is None:
        seen = {id(module)}
    found_modules = []
    attributes = getattr(module, "__dict__", {})
    for key in sorted(attributes):
        if key in _IGNORED_ATTRIBUTES:
            continue
        for leaf in _leaves(attributes[key]):
            if id(leaf) in seen:
                continue
            seen.add(id(leaf))
            if predicate(leaf):
                yield leaf
            if isinstance(leaf, Module):
                found_modules.append(leaf)
    for submodule in found_modules:
        yield from walk(submodule, predicate, seen)


def _leaves(value) -> list:
    """The leaves of an attribute's value: nested dicts (by sorted key), lists and tuples are
    opened, as TensorFlow's `nest` does; anything else (a Variable, a Module) is a leaf."""
    if isinstance(value, dict):
        try:
            keys = pytree.sorted_keys(value)
        except TypeError:  # keys without an order: insertion order
            keys = list(value)
        return [leaf for k in keys for leaf in _leaves(value[k])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]
