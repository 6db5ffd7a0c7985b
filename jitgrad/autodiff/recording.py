"""What a GradientTape records, in the form that makes a structure key cheap (the compiled
backward, installed by jitgrad.compiler, caches its kernels by that key)."""

from __future__ import annotations

from jitgrad.core.opdef import REGISTRY
from jitgrad.core.tensor import Tensor
from jitgrad.ir.graph import Eqn


class Recording:
    """What a tape recorded, kept in the form that makes the compiled backward's cache key
    cheap: values numbered in order of first appearance, each op as (op, params, input
    numbers, output number). The tape's Eqns are materialised from it only when the backward
    runs op by op.

    Only values that no recorded op produced (the external ones) need their shapes and dtypes
    in the key: every other shape follows from the ops."""

    __slots__ = ("refs", "values", "ops", "op_keys", "external", "compilable")

    def __init__(self):
        self.refs: dict[int, int] = {}  # id(value) -> number
        self.values: list = []  # by number; holds the recorded values alive
        self.ops: list = []  # (op, params, input numbers, output number)
        self.op_keys: list = []  # (op, params as a tuple, input numbers): hashable
        self.external: list = []  # numbers of the values no recorded op produced
        self.compilable = True

    def add(self, op, inputs, params, out) -> None:
        refs = self.refs
        values = self.values
        numbers = []
        for x in inputs:
            k = refs.get(id(x))
            if k is None:
                k = refs[id(x)] = len(values)
                values.append(x)
                self.external.append(k)
            numbers.append(k)
        numbers = tuple(numbers)
        self.ops.append((op, params, numbers, len(values)))
        # Param values are hashable and their order is fixed by each op's call site.
        self.op_keys.append((op, tuple(params.items()) if params else (), numbers))
        refs[id(out)] = len(values)
        values.append(out)
        if type(out) is not Tensor or REGISTRY.get(op.name) is not op:
            self.compilable = False  # tracers, custom_gradient nodes

    def eqns(self) -> list[Eqn]:
        values = self.values
        return [
            Eqn(op, tuple([values[k] for k in numbers]), params, values[out])
            for op, params, numbers, out in self.ops
        ]

    def key(self, seeds, sources):
        """(hashable key, values in number order), or None if this graph cannot be compiled."""
        if not self.compilable:
            return None
        refs = self.refs
        external = list(self.external)
        values = self.values
        n_recorded = len(values)
        extra = []

        def number(v):
            k = refs.get(id(v))
            if k is None:
                k = n_recorded + len(extra)
                extra.append(v)
                external.append(k)
            return k

        ends = tuple([(number(t), number(c)) for t, c in seeds])
        starts = tuple([number(s) for s in sources])
        values = values + extra if extra else values
        avals = []
        for k in external:
            value = values[k]
            if not isinstance(value, Tensor):
                return None
            array = value._value  # core.aval.aval_key(value), without two properties
            avals.append((array.shape, array.dtype.char))
        return (tuple(self.op_keys), ends, starts, tuple(avals)), values
