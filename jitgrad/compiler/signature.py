"""The call signature: what selects a compiled version, from one classification of each leaf.

An argument is a static value (selects a version by value) or a pytree whose leaves are
classified here, once, by one set of rules:

- a Python float, bool, or int that fits int32: a scalar of that weak type, key `((), char)`
  (int -> int32, TensorFlow's rule, and an int outside int32 is int64, `"l"`; a float is a
  float64 input traced as a weak value, core/weak.py, so it computes as in an eager call:
  `leaf_tracer`, and what is still weak at the end becomes float32: `traced_outputs`);
- an array, Tensor or Variable (or a list of Python numbers, one array leaf, see `jit`): the
  C-contiguous array the kernel reads, key `(shape, dtype char)`.

The same rules yield the three forms the call path needs:

- `call_key(args, ...)`: the version cache key and the kernel's leaf values (general path);
- `Guard`: generated lines that check that a call's leaves would give the key of the call
  they were generated for, without computing it (the fast entry, call_path.make_entry);
- `entry_key(args, ...)`: the leaf types, which select among a version's fast entries.

`aval_key` is the key of one array or Tensor, shared with the tape's recording key
(tape_backward.Recording.key). This module imports only core, ops.base and numpy.
"""

from __future__ import annotations

import numpy as np

from jitgrad.core import dtypes, pytree
from jitgrad.core.aval import AVal, aval_key
from jitgrad.core.convert import to_array
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.core.weak import as_weak
from jitgrad.ops.base import settle_weak

INT32_MIN, INT32_END = -(2**31), 2**31
SCALAR_KEYS = {float: ((), "f"), int: ((), "i"), bool: ((), "?")}
INT64_KEY = ((), "l")  # a Python int outside int32
STATIC_TYPES = (int, float, bool, str, type(None))  # static values a guard compares with ==
_NUMPY_SCALARS = frozenset(np.dtype(c).type for c in "fdbhilqBH?")


def fits_int32(value: int) -> bool:
    return INT32_MIN <= value < INT32_END


def scalar_key(value) -> tuple:
    """The key of a Python float, int or bool argument leaf."""
    kind = type(value)
    return SCALAR_KEYS[kind] if kind is not int or fits_int32(value) else INT64_KEY


def flatten_argument(arg) -> tuple[list, object]:
    """An argument's leaves and structure; a list of Python numbers is one leaf, the array
    `jitgrad.constant` makes of it (see `jit`)."""
    return pytree.flatten(arg, is_leaf=pytree.is_number_list)


def leaf_array(leaf) -> np.ndarray:
    """A C-contiguous array for an argument leaf (kernels index arrays as C-contiguous); a
    Python float is float64, the value it stands for, weak when traced (`leaf_tracer`)."""
    if type(leaf) is float:
        return np.asarray(leaf, np.float64)
    if type(leaf) is np.ndarray:
        if leaf.dtype not in dtypes.SUPPORTED:  # this machine's byte order, or a clear error
            return to_array(leaf, op="jit")
        return leaf if leaf.flags.c_contiguous else np.ascontiguousarray(leaf)
    if isinstance(leaf, Tensor):
        value = leaf._value
        return value if value.flags.c_contiguous else np.ascontiguousarray(value)
    if isinstance(leaf, Tracer):
        leaf._concrete("passing to a compiled function")
    return to_array(leaf, op="jit")


def leaf_tracer(trace, leaf, arr: np.ndarray) -> Tracer:
    """The input tracer for argument leaf `leaf` (its array `arr`): weak for a Python float."""
    tracer = trace.new_input(AVal(arr.shape, arr.dtype))
    return as_weak(tracer) if type(leaf) is float else tracer


def traced_outputs(leaves) -> list:
    """A traced function's output leaves, weak values settled to float32 (core/weak.py)."""
    return [settle_weak(x) for x in leaves]


def static_key(value, index: int, name: str) -> tuple:
    """The key of static argument #`index` of function `name`: its type and value."""
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            with_location(
                f"{name}: static argument #{index} of type {type(value).__name__} is not hashable; "
                "static arguments select a compiled version by value"
            )
        ) from None
    return ("static", type(value).__name__, value)


def call_key(args, static: frozenset, name: str) -> tuple[tuple, list]:
    """(version key, kernel leaf values): per argument, its static key, the key of a
    top-level scalar or array, or (structure, key per leaf). Python scalars at the top level
    stay scalars (the kernel's dispatcher types them); nested leaves become arrays."""
    key = []
    arrays = []
    for i, a in enumerate(args):
        kind = type(a)
        if i in static:
            key.append(static_key(a, i, name))
        elif kind is float or kind is int or kind is bool:
            arrays.append(a)
            key.append(scalar_key(a))
        elif kind is np.ndarray or kind is Tensor or kind is Variable:
            arr = leaf_array(a)
            arrays.append(arr)
            key.append(aval_key(arr))
        else:
            leaves, tree = flatten_argument(a)
            part = [tree]
            for leaf in leaves:
                arr = leaf_array(leaf)
                arrays.append(arr)
                part.append(aval_key(arr))
            key.append(tuple(part))
    return tuple(key), arrays


def entry_key(args, static: frozenset) -> tuple:
    """The types of the non-static leaves (a Tensor's with its value's): calls of one version
    whose leaves differ in type need different guards, so different fast entries."""
    return tuple(
        (type(leaf), type(leaf._value)) if isinstance(leaf, Tensor) else type(leaf)
        for i, a in enumerate(args)
        if i not in static
        for leaf in flatten_argument(a)[0]
    )


class Guard:
    """Generated lines that check that a call's arguments `a0, a1, ...` have the signature
    of the arguments the guard was built from; a failed check runs `fallback`.

    The structure checks follow the treedef `flatten_argument` gives, so leaves come in the
    kernel's order; each leaf check is its key rule (above), written out inline."""

    def __init__(self, env: dict, fallback: str):
        self.env = env  # names the generated lines refer to
        self.fallback = fallback
        self.lines: list[str] = []
        self.leaf_sources: list[tuple[str, bool]] = []  # (expression, is already a scalar)
        self.node_types = 0  # namedtuple types named in the environment

    def check(self, condition: str) -> None:
        self.lines += [f"    if not ({condition}):", f"        {self.fallback}"]

    def arguments(self, args, static: frozenset) -> bool:
        """Guard lines for every argument; False if one cannot be checked cheaply (an
        unhashable or exotic static value, an exotic leaf)."""
        for i, a in enumerate(args):
            if i in static:
                if type(a) not in STATIC_TYPES:
                    return False
                self.env[f"static{i}"] = a
                self.check(f"type(a{i}) is {type(a).__name__} and a{i} == static{i}")
            elif not self.tree(f"a{i}", a, flatten_argument(a)[1]):
                return False
        return True

    def tree(self, expr: str, value, treedef) -> bool:
        """Guard lines for subtree `value` (structure `treedef`) at `expr`."""
        if treedef == pytree.LEAF:
            return self.leaf(expr, value)
        if treedef is None:
            self.check(f"{expr} is None")
            return True
        kind, meta, children = treedef
        if kind == "dict":
            self.check(f"type({expr}) is dict and len({expr}) == {len(meta)}")
            parts = [(f"{expr}[{k!r}]", value[k]) for k in meta]
        elif kind == "namedtuple":
            # The exact type: another namedtuple with the same fields is another structure.
            name = f"N{self.node_types}"
            self.node_types += 1
            self.env[name] = meta
            self.check(f"type({expr}) is {name}")
            parts = [(f"{expr}[{n}]", v) for n, v in enumerate(value)]
        else:
            if type(value) not in (list, tuple):
                return False  # a subclass: not worth a guard
            self.check(f"type({expr}) is {kind} and len({expr}) == {len(children)}")
            parts = [(f"{expr}[{n}]", v) for n, v in enumerate(value)]
        return all(self.tree(e, v, c) for (e, v), c in zip(parts, children))

    def leaf(self, expr: str, value) -> bool:
        if type(value) is list:
            # A list of Python numbers is one array leaf: converted at each call (as eager
            # ops convert it), then checked like an array argument.
            self.env["number_list_array"] = _number_list_array
            expr, value = f"number_list_array({expr})", _number_list_array(value)
        k = len(self.leaf_sources)
        name = f"l{k}"
        self.lines.append(f"    {name} = {expr}")
        kind = type(value)
        if kind in SCALAR_KEYS:
            return self.scalar(name, value)
        if isinstance(value, Tensor):
            self.env[f"T{k}"] = kind
            self.check(f"type({name}) is T{k}")
            self.lines.append(f"    {name} = {name}._value")
            value = value._value
        if type(value) is np.ndarray:
            self.env[f"d{k}"] = value.dtype
            self.check(
                f"type({name}) is ndarray and {name}.shape == {value.shape!r} "
                f"and {name}.dtype is d{k}"
            )
            self.leaf_sources.append((name, False))
            return True
        if isinstance(value, np.generic) and type(value) in _NUMPY_SCALARS:
            self.env[f"S{k}"] = type(value)
            self.check(f"type({name}) is S{k}")
            self.leaf_sources.append((name, True))
            return True
        return False

    def scalar(self, name: str, value) -> bool:
        """`scalar_key` inline: the type, and for an int the int32 range."""
        key = scalar_key(value)
        if key == INT64_KEY:
            return False  # rare: the general path serves it
        kind = type(value).__name__
        if key == SCALAR_KEYS[int]:
            self.check(f"type({name}) is int and {INT32_MIN} <= {name} < {INT32_END}")
        else:
            self.check(f"type({name}) is {kind}")
        self.leaf_sources.append((name, True))
        return True


def _number_list_array(value) -> np.ndarray:
    """The array a list of Python numbers stands for (`flatten_argument`); a TypeError, which
    sends the call to the general path, for anything else."""
    if not pytree.is_number_list(value):
        raise TypeError("not a list of Python numbers")
    return to_array(value, op="jit")
