"""jit_train_step: forward, backward, gradient clipping and the optimizer update as ONE kernel
that updates the parameters and the optimizer state in place.

In place means the kernel's update loops write the new values straight into the caller's
arrays (the input buffer is passed as the output buffer), when that is safe: the loop that
writes a parameter reads it elementwise, and nothing after that loop reads the old value.
Otherwise the new value is copied into the caller's array after the call.
"""

from __future__ import annotations

import numpy as np

from jitgrad.api import Compiled, JitFunction
from jitgrad.core import pytree
from jitgrad.core.errors import with_location
from jitgrad.passes.fuse import REDUCTIONS, LoopGroup
from jitgrad.transforms import value_and_grad


class TrainStep(JitFunction):
    """`step(params, opt_state, *batch) -> loss` (or `(loss, aux)`), updating `params` and
    `opt_state` (nested dicts/lists of numpy arrays) in place."""

    def __init__(self, loss_fn, optimizer, has_aux=False, static_argnums=(), fastmath=False):
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.has_aux = has_aux

        def step(params, opt_state, *batch):
            out, grads = value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
            new_params, new_state = optimizer.update(params, grads, opt_state)
            return out, new_params, new_state

        super().__init__(step, tuple(i + 2 for i in _as_tuple(static_argnums)), (), fastmath,
                         name=f"jit_train_step({getattr(loss_fn, '__name__', 'loss')})")

    def _call(self, args, kwargs):
        if kwargs or len(args) < 2:
            raise TypeError(with_location(f"{self.name}: call it as step(params, opt_state, "
                                          "*batch), positionally"))
        for name, tree in (("params", args[0]), ("opt_state", args[1])):
            for leaf in pytree.flatten(tree)[0]:
                if not (isinstance(leaf, np.ndarray) and leaf.flags.c_contiguous
                        and leaf.flags.writeable):
                    raise TypeError(with_location(
                        f"{self.name}: {name} must hold writeable C-contiguous numpy arrays "
                        f"(updated in place), got {type(leaf).__name__}"))
        return super()._call(args, kwargs)

    def _in_place(self, compiled: Compiled):
        aliases, copies, _ = self._donation(compiled)
        return aliases, copies

    def _donation(self, compiled: Compiled):
        plan = getattr(compiled, "donation", None)
        if plan is None:
            plan = compiled.donation = _donation_plan(compiled, self.has_aux)
        return plan

    def _run(self, compiled: Compiled, arrays: list):
        aliases, copies, _ = self._donation(compiled)
        outputs = compiled.run(arrays, {j: arrays[k] for j, k in aliases.items()})
        flat = pytree.flatten(outputs)[0]
        for out_index, in_index in copies:
            target = arrays[in_index]
            value = flat[out_index]._value
            if value is not target:
                target[...] = value
        return outputs[0]


def _as_tuple(x):
    return (x,) if isinstance(x, int) else tuple(x)


def _donation_plan(compiled: Compiled, has_aux: bool):
    """(kernel buffer param -> input index written in place, outputs to copy back, ...).

    Output leaves are: loss [, aux leaves], new params, new state; input leaves start with
    params then state, in the same order, so new leaf i updates input leaf i."""
    graph = compiled.graph
    schedule = compiled.schedule
    n_updated = _count_updated(compiled)
    first = len(graph.outputs) - n_updated
    last_read = {}
    writer = {}
    for position, step in enumerate(schedule.steps):
        eqns = step.eqns if isinstance(step, LoopGroup) else [step.eqn]
        for e in eqns:
            for x in e.inputs:
                last_read[x] = position
            if isinstance(step, LoopGroup) and e.op.name not in REDUCTIONS:
                writer[e.out] = position
    out_plan = compiled.kernel_source.outputs
    aliases, copies = {}, []
    used_inputs = set(graph.outputs)
    for k in range(n_updated):
        out_index, in_index = first + k, k
        new, old = graph.outputs[out_index], graph.inputs[in_index]
        kind, j = out_plan[out_index]
        safe = (kind == "param" and new in writer and old not in used_inputs
                and last_read.get(old, -1) <= writer[new]
                and graph.outputs.count(new) == 1)
        if safe:
            aliases[j] = in_index
        else:
            copies.append((out_index, in_index))
    return aliases, copies, first


def _count_updated(compiled: Compiled) -> int:
    """Number of (params + state) leaves: the trailing outputs of the step."""
    tree = compiled.out_tree
    _, _, children = tree
    count = 0
    for child in children[1:]:
        count += len(pytree.flatten(pytree.unflatten(child, _Counter()))[0])
    return count


class _Counter:
    """An endless supply of leaves, to count a structure's leaves."""

    def __iter__(self):
        return self

    def __next__(self):
        return 0


def jit_train_step(loss_fn=None, optimizer=None, *, has_aux=False, static_argnums=(),
                   fastmath=False):
    """Compile a whole training step (forward, backward, clipping, optimizer update) into one
    kernel that updates `params` and `opt_state` in place and returns the loss.

    >>> opt = jitgrad.optim.Adam(1e-3)
    >>> step = jitgrad.jit_train_step(loss_fn, opt)
    >>> state = opt.init(params)
    >>> loss = step(params, state, x, y)   # params and state now hold the updated values
    """
    if loss_fn is None:
        return lambda fn: jit_train_step(fn, optimizer, has_aux=has_aux,
                                         static_argnums=static_argnums, fastmath=fastmath)
    return TrainStep(loss_fn, optimizer, has_aux, static_argnums, fastmath)
