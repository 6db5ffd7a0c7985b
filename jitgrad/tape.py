"""GradientTape with TensorFlow's semantics, recording into the graph IR's equation shape."""

from __future__ import annotations

import contextlib

import numpy as np

from jitgrad.autodiff.backprop import backprop
from jitgrad.core import pytree
from jitgrad.core.dispatch import tape_stack
from jitgrad.core.errors import with_location
from jitgrad.core.tensor import Tensor, Tracer, Variable
from jitgrad.ir.graph import Eqn
from jitgrad.ops.elementwise import ones_like_value, zeros_like_value
from jitgrad.ops.shape import reshape, stack

_VALUES = (Tensor, Tracer)


class GradientTape:
    """Records operations on watched tensors so that gradients can be computed.

    >>> w = jitgrad.Variable(3.0)
    >>> with jitgrad.GradientTape() as tape:
    ...     y = w * w
    >>> float(tape.gradient(y, w))
    6.0
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True):
        self._persistent = persistent
        self._watch_accessed = watch_accessed_variables
        self._recording = False
        self._used = False
        self.reset()

    # -- context ---------------------------------------------------------------------------
    def __enter__(self):
        tape_stack.set(tape_stack.get() + (self,))
        self._recording = True
        return self

    def __exit__(self, *exc):
        self._recording = False
        tape_stack.set(tuple(t for t in tape_stack.get() if t is not self))
        return False

    @contextlib.contextmanager
    def stop_recording(self):
        """Temporarily stop recording operations on this tape."""
        was, self._recording = self._recording, False
        try:
            yield
        finally:
            self._recording = was

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._eqns: list[Eqn] = []
        self._tracked: set[int] = set()
        self._held: list = []  # keeps watched values alive, so their ids stay theirs
        self._variables: dict[int, Variable] = {}
        self._aliases: dict[int, Tracer] = {}  # id(Variable) -> its tracer inside a jit trace

    # -- watching --------------------------------------------------------------------------
    def watch(self, tensor) -> None:
        """Watch a tensor (or a nested list/tuple/dict of them). Enclosing tapes that are
        recording watch it too, so gradients of gradients work."""
        leaves, _ = pytree.flatten(tensor)
        for t in leaves:
            if not isinstance(t, _VALUES):
                raise ValueError(
                    with_location(
                        f"GradientTape.watch: expects tensors or Variables, got "
                        f"{type(t).__name__} {t!r:.60}; convert it with jitgrad.constant first"
                    )
                )
        stack = tape_stack.get()
        watchers = [self] + [t for t in stack[: _index(stack, self)] if t._recording]
        for tape in watchers:
            for t in leaves:
                tape._watch_one(t)

    def _watch_one(self, t) -> None:
        if id(t) not in self._tracked:
            self._tracked.add(id(t))
            self._held.append(t)
        if isinstance(t, Variable):
            self._variables[id(t)] = t

    def watched_variables(self) -> tuple:
        """The Variables this tape watches, in the order they were first watched."""
        return tuple(self._variables.values())

    def _maybe_record(self, op, args, params, out) -> None:
        """Called by `bind` for every op while this tape is on the stack."""
        if not self._recording or not op.differentiable:
            return
        tracked = self._tracked
        hit = False
        for a in args:
            if id(a) in tracked:
                hit = True
            elif self._watch_accessed:
                var = a if type(a) is Variable else getattr(a, "variable", None)
                if var is not None and var.trainable:
                    self._watch_one(a)
                    if a is not var:
                        self._variables[id(var)] = var
                        self._aliases[id(var)] = a
                    hit = True
        if hit:
            self._eqns.append(Eqn(op, args, params, out))
            tracked.add(id(out))

    # -- gradients -------------------------------------------------------------------------
    def _check_usable(self, what: str) -> None:
        if self._used and not self._persistent:
            raise RuntimeError(
                with_location(
                    f"GradientTape.{what}: a non-persistent GradientTape can only be used to "
                    "compute one set of gradients (or jacobians); create it with "
                    "GradientTape(persistent=True) to call it several times"
                )
            )
        self._used = True

    def _resolve(self, source):
        return self._aliases.get(id(source), source)

    def gradient(self, target, sources, output_gradients=None,
                 unconnected_gradients="none"):
        """d(sum of targets)/d(sources), with `sources`' structure; None where unconnected."""
        self._check_usable("gradient")
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(f"unconnected_gradients must be 'none' or 'zero', got "
                             f"{unconnected_gradients!r}")
        targets, _ = pytree.flatten(target)
        for t in targets:
            _check_target(t)
        leaves, treedef = pytree.flatten(sources)
        for s in leaves:
            if not isinstance(s, _VALUES):
                raise TypeError(
                    with_location(
                        f"GradientTape.gradient: sources must be tensors or Variables, got "
                        f"{type(s).__name__} {s!r:.60}"
                    )
                )
        if output_gradients is None:
            seeds = [(t, ones_like_value(t)) for t in targets]
        else:
            cts, _ = pytree.flatten(output_gradients)
            if len(cts) != len(targets):
                raise ValueError(f"GradientTape.gradient: {len(cts)} output_gradients for "
                                 f"{len(targets)} targets")
            from jitgrad.ops.base import as_value

            seeds = [(t, as_value(c, dtype=t.dtype)) for t, c in zip(targets, cts)]
        grads = self._backprop(seeds, [self._resolve(s) for s in leaves])
        if unconnected_gradients == "zero":
            grads = [zeros_like_value(s) if g is None else g for s, g in zip(leaves, grads)]
        if not self._persistent:
            self._release()
        return pytree.unflatten(treedef, grads)

    def _backprop(self, seeds, sources):
        with self.stop_recording():
            return backprop(self._eqns, seeds, sources)

    def _release(self) -> None:
        self._eqns, self._held = [], []

    def jacobian(self, target, sources, unconnected_gradients="none",
                 parallel_iterations=None, experimental_use_pfor=True):
        """d target / d source for every element: shape target.shape + source.shape."""
        self._check_usable("jacobian")
        _check_target(target)
        leaves, treedef = pytree.flatten(sources)
        resolved = [self._resolve(s) for s in leaves]
        rows = []
        flat_size = int(np.prod(target.shape, dtype=np.int64))
        for k in range(flat_size):
            seed = np.zeros(flat_size, target.dtype)
            seed[k] = 1
            rows.append(self._backprop([(target, Tensor(seed.reshape(target.shape)))], resolved))
        out = []
        for i, s in enumerate(leaves):
            column = [r[i] for r in rows]
            if all(c is None for c in column):
                out.append(zeros_like_value(_jac_zeros(target, s))
                           if unconnected_gradients == "zero" else None)
                continue
            column = [zeros_like_value(s) if c is None else c for c in column]
            out.append(reshape(stack(column) if column else _jac_zeros(target, s),
                               target.shape + s.shape))
        if not self._persistent:
            self._release()
        return pytree.unflatten(treedef, out)

    def batch_jacobian(self, target, source, unconnected_gradients="none",
                       parallel_iterations=None, experimental_use_pfor=True):
        """Per-example Jacobian: target [B, ...], source [B, ...] -> [B, target..., source...],
        assuming example b of the target depends only on example b of the source."""
        self._check_usable("batch_jacobian")
        _check_target(target)
        if target.shape[:1] != source.shape[:1]:
            raise ValueError(with_location(
                f"batch_jacobian: target {target.shape} and source {source.shape} need the same "
                "first (batch) dimension"))
        inner = int(np.prod(target.shape[1:], dtype=np.int64))
        batch = target.shape[0]
        columns = []
        for k in range(inner):
            seed = np.zeros((batch, inner), target.dtype)
            seed[:, k] = 1
            (g,) = self._backprop([(target, Tensor(seed.reshape(target.shape)))],
                                  [self._resolve(source)])
            if g is None:
                g = zeros_like_value(source)
            columns.append(g)
        if not self._persistent:
            self._release()
        if all(c is None for c in columns) and unconnected_gradients == "none":
            return None
        out = stack(columns, axis=1) if columns else _jac_zeros(target[0], source)
        return reshape(out, target.shape + source.shape[1:])


def _jac_zeros(target, source):
    return Tensor(np.zeros(target.shape + source.shape, source.dtype))


def _index(stack: tuple, tape) -> int:
    for i, t in enumerate(stack):
        if t is tape:
            return i
    return len(stack)


def _check_target(t) -> None:
    if not isinstance(t, _VALUES):
        raise TypeError(with_location(
            f"GradientTape.gradient: the target must be a tensor, got {type(t).__name__}"))
    if t.dtype.kind != "f":
        raise TypeError(with_location(
            f"GradientTape.gradient: the target has dtype {t.dtype.name} (shape {t.shape}); "
            "only float targets can be differentiated (cast it first)"))


def custom_gradient(f):
    """Decorate `f(*xs) -> (y, grad_fn)`; the tape then uses `grad_fn(dy) -> dxs` instead of
    differentiating `f`'s body.

    >>> @jitgrad.custom_gradient
    ... def clip_grad(x):
    ...     return x, lambda dy: jitgrad.clip_by_value(dy, -1.0, 1.0)
    """
    from jitgrad.core.opdef import OpDef
    from jitgrad.ops.base import as_value
    from jitgrad.ops.elementwise import stop_gradient

    def wrapper(*args):
        xs = [as_value(a) if not isinstance(a, _VALUES) else a for a in args]
        tapes = tape_stack.get()
        token = tape_stack.set(())
        try:
            y, grad_fn = f(*xs)
            y = stop_gradient(y)  # a fresh value: the tapes see only the custom node
        finally:
            tape_stack.reset(token)

        def vjp(g, out, *inputs):
            grads = grad_fn(g)
            grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
            if len(grads) != len(inputs):
                raise ValueError(f"custom_gradient of {f.__name__}: grad_fn returned "
                                 f"{len(grads)} gradients for {len(inputs)} inputs")
            return tuple(None if gr is None else as_value(gr, dtype=x.dtype)
                         for gr, x in zip(grads, inputs))

        op = OpDef(f"custom_gradient[{f.__name__}]", _no_eval, _no_eval, vjp, "other")
        for tape in tapes:
            tape._maybe_record(op, tuple(xs), {}, y)
        return y

    wrapper.__name__ = getattr(f, "__name__", "custom_gradient")
    wrapper.__doc__ = f.__doc__
    return wrapper


def _no_eval(*_args, **_params):
    raise AssertionError("a custom_gradient node is never re-evaluated")
