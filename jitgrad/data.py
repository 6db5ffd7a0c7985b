"""A minimal batch iterator over numpy arrays (no data framework).

>>> loader = data.batches(x_train, y_train, batch_size=128, seed=0)
>>> for epoch in range(10):
...     for xb, yb in loader:          # each pass is one epoch, with a new permutation
...         ...
"""

from __future__ import annotations

import math

import numpy as np

from jitgrad.distributed import world as _world
from jitgrad.distributed.collectives import shard_bounds, warn_if_uneven


class Batches:
    """Iterable over tuples of batches, one epoch per `iter()`. With `shuffle`, epoch e uses
    the permutation drawn from (seed, e), so a run is reproducible and can resume at any epoch
    by setting `epoch` (the number of the next pass). With `shard`, each batch is this rank's
    slice of the global batch (jitgrad.distributed.shard)."""

    def __init__(
        self, arrays, batch_size: int, shuffle: bool, seed, drop_last: bool, shard: bool = False
    ):
        if not arrays:
            raise ValueError("batches: needs at least one array")
        self.arrays = [np.asarray(a) for a in arrays]
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ValueError(f"batches: arrays must have the same length, got shapes {shapes}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}")
        self.num_rows = lengths.pop()
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = np.random.SeedSequence().entropy if seed is None else seed
        self.drop_last = drop_last
        self.shard = shard
        comm = _world.world().comm if shard else None
        if comm is not None and seed is None:
            # Every rank must cut its slice out of the same permutation: rank 0's.
            self.seed = comm.bcast(self.seed, root=0)
        if shard:
            warn_if_uneven(
                self.batch_size,
                f"batches(shard=True): the global batch of {self.batch_size} rows",
                stacklevel=4,
            )
            last = self.num_rows % self.batch_size
            if last and not drop_last:
                what = (
                    f"batches(shard=True): the last global batch, {last} of {self.num_rows} rows,"
                )
                warn_if_uneven(last, what, stacklevel=4)
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_rows // self.batch_size
        return math.ceil(self.num_rows / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = (
            np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            if self.shuffle
            else None
        )
        for b in range(len(self)):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.num_rows)
            if self.shard:
                lo, hi = shard_bounds(stop - start)
                start, stop = start + lo, start + hi
            rows = slice(start, stop)
            if order is not None:
                rows = order[rows]
            yield tuple(a[rows] for a in self.arrays)


def batches(
    *arrays,
    batch_size: int,
    shuffle: bool = True,
    seed=None,
    drop_last: bool = False,
    shard: bool = False,
) -> Batches:
    """Batches of rows of `arrays` (same first dimension), as tuples of numpy arrays.

    >>> loader = batches(x, y, batch_size=32, seed=0)
    >>> len(loader), [b[0].shape for b in loader][:1]
    (4, [(32, 784)])

    `shuffle` draws a new permutation each epoch (each `for` over the result), reproducible
    from `seed`; `drop_last` drops a final partial batch. Without shuffling, batches are
    views of the arrays.

    `shard=True` (data parallelism, jitgrad.distributed): `batch_size` is the global batch,
    and each rank gets its consecutive slice of every global batch (sizes differing by at most
    one row); every rank draws the same permutation (with `seed=None`, rank 0's seed). A
    global batch, or a last partial batch kept by `drop_last=False`, that does not divide by
    the number of ranks warns: the ranks' gradients are averaged with equal weights, so
    unequal shares do not make the update one process makes on the whole batch.
    """
    return Batches(arrays, batch_size, shuffle, seed, drop_last, shard)
