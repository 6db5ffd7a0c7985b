"""jit_train_step: forward, backward, gradient clipping and the optimizer update as ONE kernel
that updates the parameters and the optimizer state in place.

In place means the kernel's update loops write the new values straight into the caller's
arrays (the input buffer is passed as the output buffer), when that is safe: the loop that
writes a parameter reads it elementwise, and nothing after that loop reads the old value.
Otherwise the new value is copied into the caller's array after the call.

A step that raises leaves the parameters and the state as they were: the only errors a kernel
raises are index errors (gather, its gradient, index checks), and no loop writes into a
caller's array before the last step that can raise (`_donation_plan`); the copies come after
the kernel returned, and cannot fail (same shapes and dtypes; the step count is int64).

The optimizer's numeric settings are kernel inputs read at every call, and changing a schedule
or a flag retraces (see `jitgrad.optim.hyperparameters`).

Distributed (`distributed=True`, data parallelism over MPI ranks): the traced step takes the
mean over ranks of each gradient (the `allreduce` op, ops/collective.py) before the optimizer
update, so clipping and the update see the reduced gradients, and the kernel calls
MPI_Allreduce on the gradient buffers in place between backward and update
(backend/numba/mpi.py): a step is still one native call. Every rank must make the same
collective calls in the same order, so a distributed step compiles in its own process before
its first call runs (no numpy fallback meanwhile, no compile worker: a fallback step would
round differently from the kernel, and the ranks' parameters would drift apart). Its first
call checks that params and opt_state have the same structure, shapes, dtypes and values on
every rank (two allgathers: a description, then a digest per leaf), and raises naming the
first difference: ranks that start apart would never meet again. When every rank runs on one
machine, that first call makes the step sharded instead (sharded_step.py): each rank updates
its share of the rows, through memory the ranks share, in a kernel of its own (ShardKernel).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jitgrad.autodiff.transforms import value_and_grad
from jitgrad.compiler import sharded_step
from jitgrad.compiler.function import Compiled, JitFunction
from jitgrad.compiler.stateful import write_back
from jitgrad.core import dtypes, pytree
from jitgrad.core.errors import with_location
from jitgrad.core.variable import Variable
from jitgrad.ir.schedule import LoopGroup
from jitgrad.ops.collective import allgather_rows_p, mean_over_ranks

# Compiled version -> its `_donation_plan`, computed once; a version belongs to one train step.
_DONATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class InPlace:
    """How a train step's fast entry (call_path.make_entry) writes into its arguments.

    `aliases`: kernel buffer param j -> explicit leaf k that its loop writes in place;
    `copies`: (output leaf, input leaf) pairs copied into the caller's arrays after the call;
    `updated`: the number of leading leaves (params, then state) that the step updates, and
    `check(step, params, opt_state)` raises if they cannot be updated in place (the entry calls
    it whenever those leaves are not the very objects it last checked). An unbound function:
    the entry, cached by the step, must not hold the step itself."""

    aliases: dict
    copies: list
    updated: int
    check: Callable


class TrainStep(JitFunction):
    """`step(params, opt_state, *batch) -> loss` (or `(loss, aux)`), updating `params` and
    `opt_state` (nested dicts/lists of numpy arrays) in place."""

    def __init__(
        self,
        loss_fn,
        optimizer,
        has_aux=False,
        static_argnums=(),
        fastmath=False,
        distributed=False,
    ):
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.has_aux = has_aux
        self.distributed = distributed
        # A step whose gradients are averaged over ranks (distributed=True, or an optimizer
        # that averages them itself: DistributedOptimizer) checks at its first call that every
        # rank holds the same parameters and state.
        self._structure_checked = not (
            distributed or getattr(optimizer, "averages_over_ranks", False)
        )
        self._sharded = None  # decided at a distributed step's first call (sharded_step.py)
        if distributed:
            from jitgrad.distributed.world import world

            world()  # join the job: the traced mean divides by its size
        super().__init__(
            self._step_function(),
            tuple(i + self.leading_args for i in _as_tuple(static_argnums)),
            (),
            fastmath,
            name=f"jit_train_step({getattr(loss_fn, '__name__', 'loss')})",
        )
        retrace_on_change = getattr(optimizer, "retrace_on_change", None)
        if retrace_on_change is not None:
            retrace_on_change(self)

    # The arguments before the batch: params, opt_state (a sharded step's kernel has three).
    leading_args = 2

    def _step_function(self):
        """The function traced: one step of `loss_fn` and the optimizer's update."""
        loss_fn, has_aux, optimizer = self.loss_fn, self.has_aux, self.optimizer
        distributed = self.distributed

        def step(params, opt_state, *batch):
            out, grads = value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
            if distributed:
                grads = mean_over_ranks(grads)
            new_params, new_state = optimizer.update(params, grads, opt_state)
            return out, new_params, new_state

        return step

    def _call(self, args, kwargs):
        if kwargs or len(args) < 2:
            raise TypeError(
                with_location(
                    f"{self.name}: call it as step(params, opt_state, *batch), positionally"
                )
            )
        self._check_updated(args[0], args[1])
        if not self._structure_checked:
            from jitgrad.distributed.world import check_same_structure, check_same_values

            check_same_structure(f"{self.name}: params", args[0], "params")
            check_same_structure(f"{self.name}: opt_state", args[1], "opt_state")
            check_same_values(f"{self.name}", args[0], "params")
            check_same_values(f"{self.name}", args[1], "opt_state")
            self._structure_checked = True
        if self.distributed and self._sharded is None:
            self._sharded = sharded_step.shard_if_possible(self, args[0], args[1]) or False
        if self._sharded:
            self._use_entry(self._sharded.entry)
            return self._sharded.call(args[0], args[1], args[2:])
        return super()._call(args, kwargs)

    def shard_kernel(self, rank: int, size: int) -> ShardKernel:
        """The kernel of this step's sharded form (sharded_step.py) on `rank` of `size`."""
        return ShardKernel(self, rank, size)

    def clear_cache(self) -> None:
        """Forget the compiled versions (the optimizer's code changed: a slot added, say) and
        the sharded form, which the next call chooses again."""
        super().clear_cache()
        if self._sharded:
            self._sharded = None

    def lower(self, *args, **kwargs):
        """The kernel a call with these arguments runs (a sharded step's own, see
        sharded_step.py, once its first call has chosen it)."""
        if self._sharded and not kwargs:
            return self._sharded.lower(args[0], args[1], args[2:])
        return super().lower(*args, **kwargs)

    def _compiles_now(self) -> bool:
        return self.distributed or super()._compiles_now()

    def _check_updated(self, params, opt_state) -> None:
        """Raise unless every leaf of params and opt_state is a writeable C-contiguous array of
        its own: leaves that share memory (tied weights: one array passed twice) would each be
        written in place, and all but one update would be lost."""
        leaves, paths = [], []
        for name, tree in (("params", params), ("opt_state", opt_state)):
            tree_leaves, treedef = pytree.flatten(tree)
            tree_paths = pytree.leaf_paths(name, treedef)
            for leaf, path in zip(tree_leaves, tree_paths):
                problem = _not_updatable(leaf)
                if problem is not None:
                    raise TypeError(
                        with_location(
                            f"{self.name}: {path} must be a writeable C-contiguous numpy array "
                            f"(updated in place), got {problem}"
                        )
                    )
            leaves += tree_leaves
            paths += tree_paths
        self._refuse_shared_memory(leaves, paths)

    def _refuse_shared_memory(self, leaves: list, paths: list) -> None:
        shared = _first_overlap(leaves)
        if shared is not None:
            first, second = (paths[i] for i in shared)
            raise ValueError(
                with_location(
                    f"{self.name}: {first} and {second} share memory (one array passed twice, or "
                    "views of one array); both are updated in place, so one update would be lost. "
                    "Pass separate arrays, or tie weights inside the loss function by using one "
                    "parameter in both places"
                )
            )

    def _in_place(self, compiled: Compiled) -> InPlace:
        aliases, copies, updated = self._donation(compiled)
        return InPlace(aliases, copies, updated, TrainStep._check_updated)

    def _donation(self, compiled: Compiled):
        plan = _DONATIONS.get(compiled)
        if plan is None:
            plan = _DONATIONS[compiled] = _donation_plan(compiled, self.has_aux)
        return plan

    def _run(self, compiled: Compiled, arrays: list):
        if compiled.state == "compiled":
            aliases, copies, _ = self._donation(compiled)
            outputs = compiled.run(arrays, {j: arrays[k] for j, k in aliases.items()})
        else:
            # The numpy fallback (tiered execution) writes nothing in place: copy every update
            # back, after the whole step succeeded, as the kernel's copies are.
            outputs = compiled.run(arrays)
            updated = _count_updated(compiled)
            first = len(compiled.traced.outputs) - updated
            copies = [(first + k, k) for k in range(updated)]
        flat = pytree.flatten(outputs)[0]
        for out_index, in_index in copies:
            target = arrays[in_index]
            value = flat[out_index]._value
            if value is not target:
                target[...] = value
        if compiled.states:  # random Generators the step advanced (compiler/stateful.py)
            outputs = write_back(compiled.states, outputs)
        return outputs[0]


class ShardKernel(TrainStep):
    """The kernel of a sharded step (sharded_step.py): `(params, state rows, exchange,
    *batch) -> loss`, updating the parameters and this rank's rows of the state in place."""

    leading_args = 3

    def __init__(self, step: TrainStep, rank: int, size: int):
        self.rank, self.size = rank, size
        super().__init__(
            step.loss_fn,
            step.optimizer,
            step.has_aux,
            tuple(i - TrainStep.leading_args for i in step._static_argnums),
            step.fastmath,
            distributed=True,
        )
        self._structure_checked = True  # the state's rows differ between ranks: checked whole
        self._sharded = False
        self.name = step.name

    def _step_function(self):
        return sharded_step.sharded_step_function(
            self.loss_fn, self.has_aux, self.optimizer, self.rank, self.size
        )


def _as_tuple(x):
    return (x,) if isinstance(x, int) else tuple(x)


def _not_updatable(leaf) -> str | None:
    """Why jit_train_step cannot update `leaf` in place (None: it can)."""
    if isinstance(leaf, np.ndarray):
        if leaf.dtype not in dtypes.SUPPORTED:
            return (
                f"an array of {leaf.dtype} (jitgrad holds bool, integers and float16/32/64, "
                "in this machine's byte order)"
            )
        if not leaf.flags.writeable:
            return "a read-only array"
        if not leaf.flags.c_contiguous:
            return "an array that is not C-contiguous (np.ascontiguousarray copies it)"
        return None
    if isinstance(leaf, Variable):
        return (
            "a Variable (train Variables with a GradientTape inside @jitgrad.function, or "
            "pass numpy arrays)"
        )
    return type(leaf).__name__


def _first_overlap(leaves: list) -> tuple[int, int] | None:
    """Indices (in order) of two arrays whose memory overlaps, or None. Each C-contiguous
    array occupies one byte range; sorted by start, if any two ranges overlap then two
    neighbours do."""
    spans = sorted(
        (a.__array_interface__["data"][0], a.nbytes, i) for i, a in enumerate(leaves) if a.nbytes
    )
    for (start, size, i), (next_start, _, j) in zip(spans, spans[1:]):
        if next_start < start + size:
            return min(i, j), max(i, j)
    return None


def _donation_plan(compiled: Compiled, has_aux: bool):
    """(kernel buffer param -> input index written in place, outputs to copy back, number of
    updated leaves).

    Output leaves are: loss [, aux leaves], new params, new state; input leaves start with
    params then state, in the same order, so new leaf i updates input leaf i. A loop may
    write into the caller's array only after the last step that can raise: a step that
    raises then leaves every parameter and state array as it was. A sharded step's gathered
    parameter is first written by the loop of its new share, where the kernel mirrors it
    (KernelSource.mirrored)."""
    graph = compiled.graph
    schedule = compiled.schedule
    n_updated = _count_updated(compiled)
    first = len(graph.outputs) - n_updated
    last_read = {}
    writer = {}
    last_raise = -1
    mirrored = {}  # a new share -> the gathered parameters its loop writes too
    for out, share in compiled.kernel_source.mirrored.items():
        mirrored.setdefault(share, []).append(out)
    for position, step in enumerate(schedule.steps):
        eqns = step.eqns if isinstance(step, LoopGroup) else [step.eqn]
        for e in eqns:
            for x in e.inputs:
                last_read[x] = position
            if (isinstance(step, LoopGroup) and e.op.reduction is None) or (
                e.op is allgather_rows_p  # writes its whole output (sharded_step.py)
            ):
                writer.setdefault(e.out, position)
            for out in mirrored.get(e.out, ()):
                writer[out] = position
            if e.op.raises:  # OpDef.raises: its kernel code can raise an IndexError
                last_raise = position
    out_plan = compiled.kernel_source.outputs
    aliases, copies = {}, []
    used_inputs = set(graph.outputs)
    for k in range(n_updated):
        out_index, in_index = first + k, k
        new, old = graph.outputs[out_index], graph.inputs[in_index]
        kind, j = out_plan[out_index]
        safe = (
            kind == "param"
            and new in writer
            and old not in used_inputs
            and last_read.get(old, -1) <= writer[new]
            and writer[new] > last_raise
            and graph.outputs.count(new) == 1
        )
        if safe:
            aliases[j] = in_index
        else:
            copies.append((out_index, in_index))
    return aliases, copies, n_updated


def _count_updated(compiled: Compiled) -> int:
    """Number of (params + state) leaves: the trailing outputs of the step (advanced random
    states lead the outputs: compiler/stateful.py)."""
    tree = compiled.out_tree[2][1] if compiled.states else compiled.out_tree
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


def jit_train_step(
    loss_fn=None,
    optimizer=None,
    *,
    has_aux=False,
    static_argnums=(),
    fastmath=False,
    distributed=False,
):
    """Compile a whole training step (forward, backward, clipping, optimizer update) into one
    kernel that updates `params` and `opt_state` in place and returns the loss.

    >>> opt = jitgrad.optim.Adam(1e-3)
    >>> step = jitgrad.jit_train_step(loss_fn, opt)
    >>> state = opt.init(params)
    >>> loss = step(params, state, x, y)   # params and state now hold the updated values

    `distributed=True` (under an MPI launcher, see jitgrad.distributed): the kernel averages
    the gradients over ranks before the update; the loss returned is this rank's. On one
    machine each rank then updates only its share of the rows, through memory the ranks
    share, and opt_state's slot arrays become arrays in that memory (sharded_step.py);
    otherwise the kernel calls MPI_Allreduce in place and every rank updates everything.
    """
    if loss_fn is None:
        return lambda fn: jit_train_step(
            fn,
            optimizer,
            has_aux=has_aux,
            static_argnums=static_argnums,
            fastmath=fastmath,
            distributed=distributed,
        )
    return TrainStep(loss_fn, optimizer, has_aux, static_argnums, fastmath, distributed)
