"""jit_train_step(distributed=True) when every rank runs on one machine: each rank updates a
share of every parameter's rows, as ZeRO's first stage does, in the one kernel of its step.

Why: with the gradients averaged by MPI_Allreduce, every rank then runs the whole optimizer
update, the same arithmetic on the same numbers on every rank, and Open MPI's allreduce copies
each gradient through its own buffers. On one machine the ranks can read each other's memory
instead: backward writes each rank's gradients straight into its row of an exchange array that
all of them map (jitgrad.distributed.shared_memory: `publish_rows`); each rank's update loop
reads, for the rows it owns, every rank's gradient straight from there and sums them as it goes
(`exchange_rows`), updates those rows of the parameters and of the optimizer state, writing
the new rows into the exchange array and into its own parameters (where the update's loop runs
in vectors; emit.py: `mirrors`), and copies the other ranks' rows into its parameters
(`allgather_rows`). The ranks wait for each other at two exchange points per step (after the
gradients, after the new rows), through a cache line of the exchange array per rank
(backend/numba/exchange_points.py), not through MPI. What remains is what the cores must move:
each rank reads the other ranks' gradients of the rows it owns, and their new parameters of
the rows it does not own. W11 on two ranks (perf/results/session22_w11.md): the step
0.83-0.89x the same kernel with MPI_Allreduce, and within -0.015 to +0.043 ms (median +0.015)
of the step without any exchange.

What the user sees is what the allreduce path gives: after every step the parameters are
identical on every rank, bit for bit (each row is computed once, by its owner, and copied),
and equal to one process's training on the global batch up to float rounding. The optimizer
state is complete on every rank too: its slot arrays (Adam's m and v, ...) live in memory the
ranks share, each rank writing the rows it owns, and a step returns only once every rank has
written its rows. At the first call, and whenever opt_state holds other slot arrays (a new
init, a loaded checkpoint), the step copies this rank's rows of them into the shared arrays
and puts the shared ones in opt_state (new slot subtrees in the same dict, of dicts and lists
that notice a slot array replaced in them); that is local to each rank, as no other rank
touches those rows. The step counter stays per rank.

The kernel's arguments are the parameters, the state's rows this rank owns (views), and the
exchange array. A rank's share of a value is rows [b[q], b[q+1]) of its leading axis
(core/row_shares.py); each parameter's slots have its shape, so they split the same way.

It applies when: the job has several ranks, all on one machine (MPI's shared-memory split),
`jitgrad.config.sharded_update` is on, the optimizer's update is elementwise (SGD, Adam,
AdamW, RMSprop; `Optimizer.updates_elementwise`), every parameter is a float32 or a float64
array (one dtype) with at least one dimension, and opt_state is the dict that init makes.
Otherwise the step reduces by MPI_Allreduce and updates everything on every rank
(train_step.py), as it does, with a warning, when the machine's shared memory (/dev/shm)
cannot hold the exchange array and the state. Global-norm clipping uses the norm of the whole
averaged gradient: the sum of the squares of each rank's rows, summed over the ranks by an
MPI_Allreduce of one number. The parameters keep the shapes of the first call (the exchange
array is sized for them).
"""

from __future__ import annotations

import warnings

import numpy as np

from jitgrad import ops
from jitgrad.autodiff.transforms import value_and_grad
from jitgrad.core import pytree
from jitgrad.core.config import config
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import with_location
from jitgrad.core.row_shares import exchange_columns, row_share, row_size, value_offsets
from jitgrad.ops.collective import (
    allgather_rows_p,
    allreduce,
    exchange_rows_p,
    publish_rows_p,
)

SHARDABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shard_if_possible(step, params, opt_state):
    """A ShardedStep for `step`'s calls with params like `params`, or None where the sharded
    update does not apply (see the module's docstring); collective: every rank decides alike
    (the conditions are the same on every rank once the structures were checked equal)."""
    from jitgrad.distributed.world import world

    job = world()
    if job.size == 1 or not config.sharded_update:
        return None
    optimizer = step.optimizer
    if not (hasattr(optimizer, "updates_elementwise") and optimizer.updates_elementwise()):
        return None
    leaves = pytree.flatten(params)[0]
    if not leaves or any(
        not isinstance(p, np.ndarray) or p.ndim == 0 or p.dtype != leaves[0].dtype for p in leaves
    ):
        return None
    if leaves[0].dtype not in SHARDABLE_DTYPES:
        return None
    if not isinstance(opt_state, dict) or set(opt_state) != {"step", *optimizer.slots}:
        return None
    if job.local_size != job.size:  # not every rank on this machine: no memory to share
        return None
    try:
        return ShardedStep(step, job, params)
    except OSError as exc:  # every rank raises it (shared_zeros): every rank falls back
        warnings.warn(
            f"jitgrad: {step.name} reduces by MPI_Allreduce instead of sharding its update: {exc}",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


class ShardedStep:
    """The sharded form of one TrainStep: its kernel (train_step.ShardKernel), the exchange
    array, and the optimizer state's slot arrays in memory the ranks share. Made at the step's
    first call (on every rank: that call is collective), for the parameters' shapes and dtype
    of that call."""

    def __init__(self, step, job, params):
        from jitgrad.distributed.shared_memory import shared_zeros

        self.step, self.rank, self.size = step, job.rank, job.size
        leaves, self.treedef = pytree.flatten(params)
        self.shapes = [p.shape for p in leaves]
        total, dtype = sum(p.size for p in leaves), leaves[0].dtype
        columns = exchange_columns(total, dtype.itemsize)  # and each rank's control line
        self.exchange = shared_zeros(job.comm, (self.size + 1, columns), dtype)
        self.slots = step.optimizer.slots
        memory = shared_zeros(job.comm, (len(self.slots), total), dtype)
        offsets = value_offsets(self.shapes)
        # slot name -> the arrays that hold it, one per parameter (pytree order)
        self.shared = {
            name: [
                memory[k, offsets[i] : offsets[i + 1]].reshape(shape)
                for i, shape in enumerate(self.shapes)
            ]
            for k, name in enumerate(self.slots)
        }
        self._subtrees = {}  # slot name -> the subtree of shared arrays put in opt_state
        self._changes = [False]  # whether a container of those subtrees has changed since
        self._shares = {"step": None}  # the kernel's opt_state: this rank's rows of each slot
        for name, arrays in self.shared.items():
            rows = [a[slice(*row_share(a.shape, self.rank, self.size))] for a in arrays]
            self._shares[name] = pytree.unflatten(self.treedef, rows)
        self.kernel = step.shard_kernel(self.rank, self.size)

        def entry(_self, *args, **kwargs):
            if kwargs or len(args) < 2:
                return step._call(args, kwargs)  # raises the usual error
            return self.call(args[0], args[1], args[2:])

        self.entry = entry

    def call(self, params, opt_state, batch):
        return self.kernel(params, self._state_shares(opt_state), self.exchange, *batch)

    def lower(self, params, opt_state, batch):
        return self.kernel.lower(params, self._state_shares(opt_state), self.exchange, *batch)

    def _state_shares(self, opt_state) -> dict:
        """The kernel's opt_state: the step counter and this rank's rows of each slot array,
        after adopting slot arrays that are not the shared ones (see `_adopt`). The slot
        subtrees put in opt_state are watched containers (`watched_tree`): a slot array
        replaced inside them is noticed without walking them at every step."""
        replaced = self._changes[0]
        for name in self.slots:
            if opt_state[name] is not self._subtrees.get(name):
                replaced = True
        if replaced:
            self._adopt(opt_state)
        self._shares["step"] = opt_state["step"]
        return self._shares

    def _adopt(self, opt_state: dict) -> None:
        """Put the shared slot arrays in `opt_state` (a new subtree per slot), after copying
        into them this rank's rows of the arrays it held: the rows this rank updates. No
        other rank reads or writes those rows, so this needs no collective: a state given to
        every rank (a checkpoint loaded, a new init) is adopted whether or not the others'
        opt_state objects changed too."""
        changes = [False]  # set when a container of the new subtrees changes
        for name in self.slots:
            leaves, treedef = pytree.flatten(opt_state[name])
            if treedef != self.treedef:
                raise ValueError(
                    with_location(
                        f"{self.step.name}: opt_state[{name!r}] has the structure "
                        f"{pytree.describe(treedef)}, but the parameters have "
                        f"{pytree.describe(self.treedef)}"
                    )
                )
            for path, leaf, shared in zip(
                pytree.leaf_paths(f"opt_state[{name!r}]", treedef), leaves, self.shared[name]
            ):
                leaf = np.asarray(leaf)
                if leaf.shape != shared.shape or leaf.dtype != shared.dtype:
                    raise ValueError(
                        with_location(
                            f"{self.step.name}: {path} is {leaf.dtype} {leaf.shape}, but this "
                            f"sharded step's first call had {shared.dtype} {shared.shape}"
                        )
                    )
                if leaf is not shared:
                    first, end = row_share(shared.shape, self.rank, self.size)
                    shared[first:end] = leaf[first:end]
            subtree = watched_tree(treedef, iter(self.shared[name]), changes)
            opt_state[name] = self._subtrees[name] = subtree
        self._changes = changes


_MUTATORS = {
    dict: ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault")
    + ("update",),
    list: ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert")
    + ("pop", "remove", "clear", "sort", "reverse"),
}


def _watching(base: type) -> type:
    """A subclass of `base` (dict or list) whose every mutating method first sets
    `self.changes[0]`; pickled or copied, it is a plain `base`."""

    def watch(name):
        method = getattr(base, name)

        def mutate(self, *args, **kwargs):
            self.changes[0] = True
            return method(self, *args, **kwargs)

        mutate.__name__ = name
        return mutate

    def reduce(self):  # a pickle or a copy is a plain container
        return base, (base(self),)

    body = {name: watch(name) for name in _MUTATORS[base]}
    body["__reduce__"] = reduce
    body["__slots__"] = ("changes",)
    body["__doc__"] = f"A {base.__name__} of a sharded step's opt_state (see watched_tree)."
    return type(f"Watched{base.__name__.capitalize()}", (base,), body)


WatchedDict, WatchedList = _watching(dict), _watching(list)


def watched_tree(treedef, leaves, changes: list):
    """The pytree of `treedef` over the iterator `leaves`, its dicts and lists watched: any
    change to one of them sets `changes[0]` (ShardedStep._state_shares). Tuples cannot change
    and stay tuples (their lists and dicts are watched)."""
    if treedef == pytree.LEAF:
        return next(leaves)
    if treedef is None:
        return None
    kind, meta, children = treedef
    values = [watched_tree(child, leaves, changes) for child in children]
    if kind == "tuple":
        return tuple(values)
    if kind == "namedtuple":
        return meta(*values)
    node = WatchedDict(zip(meta, values)) if kind == "dict" else WatchedList(values)
    node.changes = changes
    return node


def sharded_step_function(loss_fn, has_aux: bool, optimizer, rank: int, size: int):
    """The function a sharded step's kernel traces (train_step.ShardKernel):
    `(params, state rows, exchange, *batch) -> (loss, new params, new state rows)`."""

    def step(params, state_shares, exchange, *batch):
        out, grads = value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
        p_leaves, treedef = pytree.flatten(params)
        g_leaves = pytree.flatten(grads)[0]
        shapes = [tuple(p.shape) for p in p_leaves]
        published = bind(publish_rows_p, exchange, *g_leaves, rank=rank, size=size)
        offsets = value_offsets(shapes)
        p_shares, g_shares = [], []
        for i, (p, shape) in enumerate(zip(p_leaves, shapes)):
            first, end = row_share(shape, rank, size)
            share = (end - first, *shape[1:])
            start = offsets[i] + first * row_size(shape)
            total = bind(exchange_rows_p, exchange, published, row=0, start=start, shape=share)
            for q in range(1, size):  # in rank order: the same bits whichever rank adds
                rows = bind(exchange_rows_p, exchange, published, row=q, start=start, shape=share)
                total = total + rows
            g_shares.append(ops.cast(total * (1.0 / size), p.dtype))
            p_shares.append(p[first:end])
        norm = None
        if optimizer.global_clipnorm is not None:
            squares = sum(ops.reduce_sum(ops.square(g)) for g in g_shares)
            norm = ops.sqrt(allreduce(squares))
        new_shares, new_state = optimizer.update(
            pytree.unflatten(treedef, p_shares),
            pytree.unflatten(treedef, g_shares),
            state_shares,
            global_norm=norm,
        )
        share_leaves = pytree.flatten(new_shares)[0]
        # One exchange point for every parameter, after this rank has written all its new
        # rows and its rows of the new state: when a step returns on any rank, every rank has
        # written its rows of the state too (a checkpoint of the whole state taken between
        # steps reads one step's values). The first gather waits there; it reads (orders)
        # everything, and each later one follows the one before it.
        state_leaves = [x for x in pytree.flatten(new_state)[0] if len(x.shape)]
        previous, new_params = (*share_leaves, *state_leaves), []
        for i, (share, shape) in enumerate(zip(share_leaves, shapes)):
            whole = bind(
                allgather_rows_p,
                exchange,
                share,
                *previous,
                rank=rank,
                size=size,
                rows=shape[0],
                offset=offsets[i],
                tag=1,
            )
            new_params.append(whole)
            previous = (whole,)
        return out, pytree.unflatten(treedef, new_params), new_state

    return step
