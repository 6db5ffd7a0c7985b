"""Horovod's two wrappers: DistributedOptimizer, an optimizer whose updates first average
the gradients over ranks, and DistributedGradientTape, a GradientTape whose gradients are
averaged (the pattern most of Horovod's TensorFlow 2 examples use)."""

from __future__ import annotations

from jitgrad.core.dispatch import current_trace
from jitgrad.distributed.collectives import allreduce_gradients
from jitgrad.distributed.world import check_same_structure, check_same_values, world
from jitgrad.ops.collective import mean_over_ranks


class _Wrapper:
    """Joins the job when made (a traced mean divides by its size) and passes every attribute
    it does not define to the wrapped object, `self.<wrapped_name>`."""

    wrapped_name: str

    def __init__(self, wrapped):
        world()
        self.__dict__[self.wrapped_name] = wrapped

    def __getattr__(self, name):
        try:
            wrapped = self.__dict__[self.wrapped_name]
        except KeyError:  # not set yet (unpickling asks for __setstate__ first)
            raise AttributeError(name) from None
        return getattr(wrapped, name)


class DistributedOptimizer(_Wrapper):
    """Wrap `optimizer` so that `apply_gradients` (a tape loop) and `update` (functional, also
    traced by jit_train_step) use the mean of the gradients over ranks: every rank then makes
    the same update, and the parameters stay identical. Everything else (init, slots,
    iterations, learning_rate, ...) is the wrapped optimizer's.

    >>> opt = jitgrad.distributed.DistributedOptimizer(jitgrad.optim.Adam(1e-3))
    >>> grads = tape.gradient(loss, model.trainable_variables)
    >>> opt.apply_gradients(zip(grads, model.trainable_variables))
    """

    wrapped_name = "optimizer"
    # jit_train_step checks at its first call that the ranks hold the same params and state.
    averages_over_ranks = True

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def apply_gradients(self, grads_and_vars):
        """Average the gradients over ranks (None entries stay None), then apply them.

        The second eager call checks that the variables hold the same values on every rank
        (world.check_same_values): ranks that start apart would never meet again. Not the
        first: Horovod's examples broadcast rank 0's variables after the first step (the
        model is built by its first call), and the port of such a loop must run. Not under a
        trace either: that would be a collective while compiling, which one rank may do alone
        (a retrace for an uneven last batch)."""
        pairs = list(grads_and_vars)
        variables = [v for _, v in pairs]
        if current_trace.get() is None and self.__dict__.get("eager_applies", 0) < 2:
            self.__dict__["eager_applies"] = self.__dict__.get("eager_applies", 0) + 1
            if self.__dict__["eager_applies"] == 2:
                what = "DistributedOptimizer.apply_gradients"
                check_same_structure(f"{what}: variables", variables, "variables")
                check_same_values(f"{what} (its second call)", variables, "variables")
        grads = allreduce_gradients([g for g, _ in pairs])
        return self.optimizer.apply_gradients(zip(grads, variables))

    def update(self, params, grads, state):
        """The wrapped optimizer's update of the gradients' mean over ranks; traced inside a
        compiled step, the mean is the in-kernel allreduce (ops/collective.py)."""
        return self.optimizer.update(params, mean_over_ranks(grads), state)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r})"


class DistributedGradientTape(_Wrapper):
    """Wrap `tape` so that `gradient` returns the mean over ranks of what `tape.gradient`
    returns (same structure; None entries stay None), eagerly or inside a jitgrad.function,
    where the mean is the kernel's allreduce. Everything else (watch, stop_recording,
    jacobian, ...) is the wrapped tape's, unreduced.

    >>> with jitgrad.GradientTape() as tape:
    ...     loss = loss_fn(model(x), y)
    >>> tape = jitgrad.distributed.DistributedGradientTape(tape)
    >>> grads = tape.gradient(loss, model.trainable_variables)      # the same on every rank
    >>> opt.apply_gradients(zip(grads, model.trainable_variables))

    It can also wrap the tape before recording:
    `with DistributedGradientTape(jitgrad.GradientTape()) as tape:`.
    """

    wrapped_name = "tape"

    def __enter__(self):
        self.tape.__enter__()
        return self

    def __exit__(self, *exc):
        return self.tape.__exit__(*exc)

    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none"):
        """The wrapped tape's gradient, averaged over ranks."""
        grads = self.tape.gradient(target, sources, output_gradients, unconnected_gradients)
        return allreduce_gradients(grads)

    def __repr__(self) -> str:
        return f"DistributedGradientTape({self.tape!r})"
