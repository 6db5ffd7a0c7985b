"""Compiled backward passes for the eager tape.

A training loop records the same graph structure at every step. The first time a structure is
seen the tape runs its backward op by op (eagerly); the second time (`config.tape_compile_after`)
its backward graph is compiled into one kernel, keyed by the structure, and reused from then on.
The kernel takes the forward values the tape already holds (nothing is recomputed) and the seed
cotangents.
Nested tapes that must record the backward, traces, and custom gradients keep the eager path.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

from jitgrad.autodiff.vjp import joint_graph
from jitgrad.config import config
from jitgrad.core import pytree
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.opdef import REGISTRY
from jitgrad.core.tensor import Tensor
from jitgrad.ir.graph import Eqn, Graph, Var
from jitgrad.signature import aval_key

MAX_ENTRIES = 256
_cache: collections.OrderedDict = collections.OrderedDict()
_lock = threading.Lock()
stats = {"eager": 0, "compiled": 0, "compiles": 0}


def compiled_backprop(seeds, sources, tape):
    """Like `backprop`, through a cached kernel; None when this call must run eagerly."""
    if (not config.compile_tape_backward or current_trace.get() is not None
            or _other_tape_recording(tape)):
        stats["eager"] += 1
        return None
    structure = tape._recorded.key(seeds, sources)
    if structure is None:
        stats["eager"] += 1
        return None
    key, values = structure
    with _lock:
        entry = _cache.get(key, 0)
        if isinstance(entry, int):
            entry += 1
            if entry < config.tape_compile_after:
                _cache[key] = entry  # seen `entry` times: still eager
                if len(_cache) > MAX_ENTRIES:
                    _cache.popitem(last=False)
                stats["eager"] += 1
                return None
            entry = _compile(tape._eqns, seeds, sources, values)
            _cache[key] = entry
            stats["compiles"] += 1
        _cache.move_to_end(key)
    compiled, connected, used = entry
    stats["compiled"] += 1
    outs = iter(compiled.run([_contiguous(values[k]._value) for k in used]))
    return [next(outs) if c else None for c in connected]


def _contiguous(value):
    """The array (or numpy scalar) the kernel takes for a recorded value: eager views such as
    transposes and large broadcasts are not C-contiguous."""
    if type(value) is np.ndarray and not value.flags.c_contiguous:
        return np.ascontiguousarray(value)
    return value


def _other_tape_recording(tape) -> bool:
    return any(t is not tape and t._recording for t in tape_stack.get())


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
        return [Eqn(op, tuple([values[k] for k in numbers]), params, values[out])
                for op, params, numbers, out in self.ops]

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
        if any(not isinstance(values[k], Tensor) for k in external):
            return None
        avals = tuple([aval_key(values[k]) for k in external])
        return (tuple(self.op_keys), ends, starts, avals), values


def _compile(eqns, seeds, sources, values):
    """(kernel, connected, value numbers of its inputs) for the backward of the recorded
    `eqns`: their joint graph, reading the forward values the tape holds (no recomputation)."""
    from jitgrad.api import compile_graph

    number = {}
    for k, v in enumerate(values):  # a value numbered twice (a seed used twice) is read once
        number.setdefault(id(v), k)
    var = {i: Var(values[k].aval) for i, k in number.items()}
    produced = {id(e.out) for e in eqns}
    external = [k for i, k in number.items() if i not in produced]
    graph = Graph(tuple(var[id(values[k])] for k in external),
                  tuple(Eqn(e.op, tuple(var[id(x)] for x in e.inputs), e.params, var[id(e.out)])
                        for e in eqns), ())
    joint, connected = joint_graph(graph, [var[id(t)] for t, _ in seeds],
                                   [var[id(s)] for s in sources],
                                   [var[id(c)] for _, c in seeds], recompute=False)
    numbers = external + [number[id(e.out)] for e in eqns]  # of the joint graph's inputs
    _, out_tree = pytree.flatten([0] * len(joint.outputs))
    compiled = compile_graph(joint, "tape backward", out_tree, prune_inputs=True)
    compiled.load()
    return compiled, connected, [numbers[k] for k in compiled.input_indices]
