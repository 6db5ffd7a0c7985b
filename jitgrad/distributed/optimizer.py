"""DistributedOptimizer: an optimizer whose updates first average the gradients over ranks
(Horovod's wrapper)."""

from __future__ import annotations

from jitgrad.distributed.collectives import allreduce_gradients
from jitgrad.distributed.world import world
from jitgrad.ops.collective import mean_over_ranks


class DistributedOptimizer:
    """Wrap `optimizer` so that `apply_gradients` (a tape loop) and `update` (functional, also
    traced by jit_train_step) use the mean of the gradients over ranks: every rank then makes
    the same update, and the parameters stay identical. Everything else (init, slots,
    iterations, learning_rate, ...) is the wrapped optimizer's.

    >>> opt = jitgrad.distributed.DistributedOptimizer(jitgrad.optim.Adam(1e-3))
    >>> grads = tape.gradient(loss, model.trainable_variables)
    >>> opt.apply_gradients(zip(grads, model.trainable_variables))
    """

    def __init__(self, optimizer):
        world()  # join the job now: the traced mean divides by its size
        self.__dict__["optimizer"] = optimizer

    def __getattr__(self, name):
        if name == "optimizer":  # not set yet (unpickling): no recursion through this method
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def apply_gradients(self, grads_and_vars):
        """Average the gradients over ranks (None entries stay None), then apply them."""
        pairs = list(grads_and_vars)
        grads = allreduce_gradients([g for g, _ in pairs])
        return self.optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))

    def update(self, params, grads, state):
        """The wrapped optimizer's update of the gradients' mean over ranks; traced inside a
        compiled step, the mean is the in-kernel allreduce (ops/collective.py)."""
        return self.optimizer.update(params, mean_over_ranks(grads), state)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r})"
