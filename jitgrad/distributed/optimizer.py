"""DistributedOptimizer: an optimizer whose updates first average the gradients over ranks
(Horovod's wrapper)."""

from __future__ import annotations

from jitgrad.distributed.collectives import allreduce_gradients
from jitgrad.distributed.world import check_same_structure, check_same_values, world
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

    # jit_train_step checks at its first call that the ranks hold the same params and state.
    averages_over_ranks = True

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
        """Average the gradients over ranks (None entries stay None), then apply them. The
        first call checks that the variables hold the same values on every rank
        (world.check_same_values): ranks that start apart would never meet again."""
        pairs = list(grads_and_vars)
        variables = [v for _, v in pairs]
        if not self.__dict__.get("variables_checked"):
            what = "DistributedOptimizer.apply_gradients: variables"
            check_same_structure(what, variables, "variables")
            check_same_values("DistributedOptimizer.apply_gradients", variables, "variables")
            self.__dict__["variables_checked"] = True
        grads = allreduce_gradients([g for g, _ in pairs])
        return self.optimizer.apply_gradients(zip(grads, variables))

    def update(self, params, grads, state):
        """The wrapped optimizer's update of the gradients' mean over ranks; traced inside a
        compiled step, the mean is the in-kernel allreduce (ops/collective.py)."""
        return self.optimizer.update(params, mean_over_ranks(grads), state)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r})"
