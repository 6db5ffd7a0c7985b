"""GradientTape with TensorFlow's semantics, recording into the graph IR's equation shape."""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import warnings

import numpy as np

from jitgrad.autodiff.backprop import backprop
from jitgrad.autodiff.recording import Recording
from jitgrad.core import pytree
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.errors import with_location
from jitgrad.core.opdef import NOT_DIFFERENTIABLE
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.core.variable import Variable
from jitgrad.ir.graph import Eqn
from jitgrad.ops.elementwise import add, ones_like_value, zeros_like_value
from jitgrad.ops.shape import reshape, transpose

_VALUES = (Tensor, Tracer)
# The compiled backward, `fn(seeds, sources, tape) -> cotangents` (None: run op by op),
# installed by jitgrad.compiler: autodiff never imports the compiler.
_compiled_backprop = None


def install_compiled_backprop(fn) -> None:
    """Make `fn` the tape's compiled backward (see jitgrad.compiler.tape_backward)."""
    global _compiled_backprop
    _compiled_backprop = fn


# jitgrad.batching.vmap, installed by that layer (above this one) when jitgrad is imported:
# the Jacobians are one batched backward pass over their seeds.
_vmap = None


def install_vmap(fn) -> None:
    """Make `fn` (vmap) what jacobian and batch_jacobian batch their backward passes with."""
    global _vmap
    _vmap = fn


class UnconnectedGradients(str, enum.Enum):
    """What `GradientTape.gradient` returns for a source the target does not depend on:
    None, or zeros of the source's shape (tf.UnconnectedGradients). The values equal the
    strings "none" and "zero", which the tape accepts too."""

    NONE = "none"
    ZERO = "zero"


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
        stack = tape_stack.get()
        if stack and stack[-1] is self:  # the innermost tape, as a `with` block leaves it
            tape_stack.set(stack[:-1])
        else:
            tape_stack.set(tuple(t for t in stack if t is not self))
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
        """Forget everything recorded so far, as if this were a new tape."""
        self._recorded = Recording()  # the recorded ops (see autodiff.recording.Recording)
        self._tracked: set[int] = set()
        self._held: list = []  # keeps watched values alive, so their ids stay theirs
        self._variables: dict[int, Variable] = {}
        # id(Variable) -> the values recorded ops read from it: VariableReads eagerly, its
        # tracer inside a jit trace. A Variable's gradient is the sum over its reads.
        self._reads: dict[int, list] = {}
        self._used = False

    # -- watching --------------------------------------------------------------------------
    def watch(self, tensor) -> None:
        """Watch a tensor (or a nested list/tuple/dict of them). Enclosing tapes that are
        recording watch it too, so gradients of gradients work."""
        leaves, _ = pytree.flatten(tensor)
        _require_values(
            leaves,
            ValueError,
            "GradientTape.watch: expects tensors or Variables",
            "; convert it with jitgrad.constant first",
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
            self._note_read(t, t._read())

    def _note_read(self, var, read) -> None:
        """Track `read` (a VariableRead or a jit tracer) as a value of Variable `var`."""
        self._variables[id(var)] = var
        reads = self._reads.setdefault(id(var), [])
        if id(read) not in self._tracked:
            self._tracked.add(id(read))
            reads.append(read)

    def watched_variables(self) -> tuple:
        """The Variables this tape watches, in the order they were first watched."""
        return tuple(self._variables.values())

    def _maybe_record(self, op, args, params, out) -> None:
        """Called by `bind` for every op while this tape is on the stack.

        A Variable input is recorded as its current read (a snapshot), never as the Variable:
        the VJP rules run later, and an `assign` in between must not change the values they
        see (TensorFlow records a read op for the same reason)."""
        if not self._recording or op.vjp is NOT_DIFFERENTIABLE:
            return
        tracked = self._tracked
        hit = False
        inputs = args
        for k, a in enumerate(args):
            if isinstance(a, Variable):
                if inputs is args:
                    inputs = list(args)
                var, a = a, a._read()
                inputs[k] = a
                if id(a) in tracked:
                    hit = True
                    continue
            elif id(a) in tracked:
                hit = True
                continue
            else:
                var = a.variable  # set for a VariableRead, or a jit tracer of a Variable
            if var is not None and (id(var) in tracked or (self._watch_accessed and var.trainable)):
                self._note_read(var, a)
                hit = True
        if hit:
            inputs = tuple(inputs)
            self._recorded.add(op, inputs, params, out)
            tracked.add(id(out))

    @property
    def _eqns(self) -> list[Eqn]:
        """The recorded ops, in order (for the op-by-op backward)."""
        return self._recorded.eqns()

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

    def _begin(self) -> None:
        """Mark the tape used, once the arguments are known to be valid (a call that raised
        a TypeError leaves a non-persistent tape usable, as in TensorFlow). A non-persistent
        tape stops recording for good, as TensorFlow pops it: its gradient computed inside
        the `with` block is recorded only by the enclosing tapes."""
        self._used = True
        if not self._persistent:
            self._recording = False

    def _recorded_values(self, source) -> list:
        """The values of the recorded graph that stand for `source`: a Variable's reads, the
        source itself if it is tracked, nothing for a tensor the tape never watched (whose
        gradient is None even if it fed a recorded op, as in TensorFlow)."""
        if isinstance(source, Variable):
            return self._reads.get(id(source), [])
        return [source] if id(source) in self._tracked else []

    def _as_target(self, target):
        """A Variable target stands for its current read, credited to it if the tape watches
        it or would watch its reads: `gradient(v, v)` is ones, as in TensorFlow."""
        if isinstance(target, Variable):
            read = target._read()
            if id(target) in self._tracked or (self._watch_accessed and target.trainable):
                self._note_read(target, read)
            return read
        return target

    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none"):
        """d(sum of targets)/d(sources), with `sources`' structure; None where unconnected.

        `output_gradients` has the structure of `target` (one cotangent per target tensor,
        None meaning ones) and weights each target instead of summing it."""
        self._check_usable("gradient")
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(
                f"unconnected_gradients must be 'none' or 'zero', got {unconnected_gradients!r}"
            )
        if target is None:
            raise TypeError(
                with_location(
                    "GradientTape.gradient: the target is None (did the function return nothing?)"
                )
            )
        targets = [target] if isinstance(target, _VALUES) else pytree.flatten(target)[0]
        for t in targets:
            _check_target(t, floats_only=False)
            if t.dtype.kind != "f":
                # TensorFlow's rule: a warning, and no gradient from this target.
                warnings.warn(
                    f"GradientTape.gradient: the target has dtype {t.dtype.name} (shape "
                    f"{t.shape}); the dtype of a target must be floating, so it contributes no "
                    "gradient (cast it first)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        leaves, treedef = _flatten_sources(sources)
        cts = (
            [None] * len(targets)
            if output_gradients is None
            else _cotangents(target, output_gradients)
        )
        self._begin()
        seeds = [
            (self._as_target(t), ones_like_value(t) if c is None else c)
            for t, c in zip(targets, cts)
            if t.dtype.kind == "f"
        ]
        grads = self._backprop(seeds, leaves)
        if unconnected_gradients == "zero":
            grads = [zeros_like_value(s) if g is None else g for s, g in zip(leaves, grads)]
        if not self._persistent:
            self._release()
        return _unflatten_sources(treedef, grads)

    def _backprop(self, seeds, sources) -> list:
        """Cotangents of `sources` (None where unconnected or not tracked). A persistent tape
        called inside its `with` block records this backward pass itself, as TensorFlow's
        does, so one tape can give a derivative of a derivative."""
        groups = [self._recorded_values(s) for s in sources]
        flat = [v for g in groups for v in g]
        cts = None
        if not self._recording and _compiled_backprop is not None:
            # (a recording tape must see its own backward ops)
            cts = _compiled_backprop(seeds, flat, self)
        if cts is None:
            cts = backprop(self._eqns, seeds, flat)
        if all(len(group) == 1 for group in groups):  # one value per source: nothing to sum
            return list(cts)
        cts = iter(cts)
        out = []
        for group in groups:
            parts = [c for c in [next(cts) for _ in group] if c is not None]
            out.append(functools.reduce(add, parts) if parts else None)
        return out

    def _release(self) -> None:
        self._held, self._reads = [], {}
        self._recorded = Recording()
        self._tracked = set()

    def jacobian(
        self,
        target,
        sources,
        unconnected_gradients="none",
        parallel_iterations=None,
        experimental_use_pfor=True,
    ):
        """d target / d source for every element: shape target.shape + source.shape."""
        self._check_usable("jacobian")
        _check_target(target)
        leaves, treedef = pytree.flatten(sources)
        self._begin()
        target = self._as_target(target)
        flat_size = int(np.prod(target.shape, dtype=np.int64))
        if flat_size:
            seeds = np.eye(flat_size, dtype=target.dtype).reshape((flat_size,) + target.shape)
            stacked = self._stacked_backprop(target, seeds, leaves)
        else:  # an empty target has an empty (not a missing) Jacobian if it depends on s
            stacked = [_jac_zeros(target, s) if self._recorded_values(s) else None for s in leaves]
        out = []
        for s, rows in zip(leaves, stacked):
            if rows is None:
                unconnected = unconnected_gradients == "zero"
                out.append(zeros_like_value(_jac_zeros(target, s)) if unconnected else None)
            else:
                out.append(reshape(rows, target.shape + s.shape))
        if not self._persistent:
            self._release()
        return pytree.unflatten(treedef, out)

    def _stacked_backprop(self, target, seeds: np.ndarray, sources: list) -> list:
        """For each source, the gradients of `target` weighted by every seed (seeds[k] has the
        target's shape), stacked: (len(seeds), *source.shape), or None where the target does
        not depend on the source. ONE batched backward pass over the seeds (vmap), not one
        pass per seed: under jit it is one set of batched ops, not len(seeds) copies."""
        unconnected: list[bool] = []

        def weighted(seed):
            grads = self._backprop([(target, seed)], sources)
            unconnected[:] = [g is None for g in grads]
            return [zeros_like_value(s) if g is None else g for g, s in zip(grads, sources)]

        rows = _vmap(weighted)(Tensor(seeds))
        return [None if u else r for r, u in zip(rows, unconnected)]

    def batch_jacobian(
        self,
        target,
        source,
        unconnected_gradients="none",
        parallel_iterations=None,
        experimental_use_pfor=True,
    ):
        """Per-example Jacobian: target [B, ...], source [B, ...] -> [B, target..., source...],
        assuming example b of the target depends only on example b of the source."""
        self._check_usable("batch_jacobian")
        _check_target(target)
        if target.ndim == 0 or target.shape[:1] != source.shape[:1]:
            raise ValueError(
                with_location(
                    f"batch_jacobian: target {target.shape} and source {source.shape} need the "
                    "same first (batch) dimension"
                )
            )
        self._begin()
        target = self._as_target(target)
        inner = int(np.prod(target.shape[1:], dtype=np.int64))
        batch = target.shape[0]
        if inner:
            # Seed k is one at position k of every example's target.
            eye = np.eye(inner, dtype=target.dtype)[:, None, :]
            seeds = np.broadcast_to(eye, (inner, batch, inner)).reshape((inner,) + target.shape)
            (stacked,) = self._stacked_backprop(target, seeds, [source])
        else:
            stacked = _jac_zeros(target[0], source) if self._recorded_values(source) else None
        if not self._persistent:
            self._release()
        if stacked is None:
            if unconnected_gradients == "none":
                return None
            stacked = _jac_zeros(target[0], source)
        elif inner:  # (inner, B, *source[1:]) -> (B, inner, *source[1:])
            stacked = transpose(stacked, (1, 0) + tuple(range(2, stacked.ndim)))
        return reshape(stacked, target.shape + source.shape[1:])


def _jac_zeros(target, source):
    return Tensor(np.zeros(target.shape + source.shape, source.dtype))


def _index(stack: tuple, tape) -> int:
    for i, t in enumerate(stack):
        if t is tape:
            return i
    return len(stack)


def _cotangents(target, output_gradients) -> list:
    """One cotangent (or None: ones) per leaf of `target`, from `output_gradients` of the same
    structure. A single-tensor target takes any array-like as its cotangent."""
    from jitgrad.ops.base import as_value

    if isinstance(target, _VALUES):
        if output_gradients is None:
            return [None]
        ct = as_value(output_gradients, dtype=target.dtype, op="GradientTape.gradient")
        if (
            ct.shape != target.shape
            and isinstance(output_gradients, (list, tuple))
            and len(output_gradients) == 1
        ):
            # TensorFlow flattens output_gradients, so `[dy]` for one target is common.
            ct = as_value(output_gradients[0], dtype=target.dtype, op="GradientTape.gradient")
        if ct.shape != target.shape:
            raise ValueError(
                with_location(
                    f"GradientTape.gradient: output_gradients of shape {ct.shape} for a target of "
                    f"shape {target.shape}; they must have the same shape"
                )
            )
        return [ct]
    if isinstance(target, dict):
        if not isinstance(output_gradients, dict) or set(output_gradients) != set(target):
            raise ValueError(
                with_location(
                    "GradientTape.gradient: output_gradients must be a dict with the target's "
                    f"keys {sorted(target)}"
                )
            )
        return [c for k in sorted(target) for c in _cotangents(target[k], output_gradients[k])]
    if isinstance(target, (list, tuple)):
        if not isinstance(output_gradients, (list, tuple)) or len(output_gradients) != len(target):
            raise ValueError(
                with_location(
                    f"GradientTape.gradient: output_gradients must be a list of {len(target)} "
                    "cotangents (or None), one per target"
                )
            )
        return [c for t, g in zip(target, output_gradients) for c in _cotangents(t, g)]
    return []  # None in the target's structure: no tensor, no cotangent


def _check_target(t, floats_only: bool = True) -> None:
    if not isinstance(t, _VALUES):
        raise TypeError(
            with_location(
                f"GradientTape.gradient: the target must be a tensor, got {type(t).__name__}"
            )
        )
    if floats_only and t.dtype.kind != "f":
        raise TypeError(
            with_location(
                f"GradientTape.gradient: the target has dtype {t.dtype.name} (shape {t.shape}); "
                "only float targets can be differentiated (cast it first)"
            )
        )


_FLAT_LIST, _FLAT_TUPLE = object(), object()  # treedefs of a flat list or tuple of sources


def _flatten_sources(sources) -> tuple[list, object]:
    """(leaves, treedef) of `gradient`'s sources, each a tensor or a Variable. A tensor, or a
    flat list or tuple of them (what most calls pass), skips the pytree walk."""
    if isinstance(sources, _VALUES):
        return [sources], pytree.LEAF
    kind = type(sources)
    if kind is list or kind is tuple:
        leaves = list(sources)
        for s in leaves:
            if not isinstance(s, _VALUES):
                break
        else:
            return leaves, (_FLAT_LIST if kind is list else _FLAT_TUPLE)
    leaves, treedef = pytree.flatten(sources)
    _require_values(
        leaves, TypeError, "GradientTape.gradient: sources must be tensors or Variables"
    )
    return leaves, treedef


def _require_values(leaves, error: type, what: str, hint: str = "") -> None:
    """Raise `error` naming the first leaf that is not a tensor or a Variable."""
    for leaf in leaves:
        if not isinstance(leaf, _VALUES):
            raise error(with_location(f"{what}, got {type(leaf).__name__} {leaf!r:.60}{hint}"))


def _unflatten_sources(treedef, grads: list):
    """The gradients in the structure `_flatten_sources` took the sources from."""
    if treedef is _FLAT_LIST:
        return grads
    if treedef is _FLAT_TUPLE:
        return tuple(grads)
    return pytree.unflatten(treedef, grads)


def custom_gradient(f):
    """Decorate `f(*xs) -> (y, grad_fn)`; the tape then uses `grad_fn(dy) -> dxs` instead of
    differentiating `f`'s body.

    >>> @jitgrad.custom_gradient
    ... def clip_grad(x):
    ...     return x, lambda dy: jitgrad.clip_by_value(dy, -1.0, 1.0)

    `y` is a single tensor (a node of the graph has one output). As in TensorFlow, if `f`
    reads trainable Variables, `grad_fn` must take a keyword argument `variables` (the list
    of them) and return `(dxs, dvariables)`: without it their gradients would silently be None.
    """
    from jitgrad.core.opdef import OpDef
    from jitgrad.ops.base import as_value
    from jitgrad.ops.elementwise import stop_gradient

    def wrapper(*args):
        xs = [as_value(a) if not isinstance(a, _VALUES) else a for a in args]
        tapes = tape_stack.get()
        token = tape_stack.set(())
        try:
            # The only tape on the stack while f runs: it finds the Variables f reads.
            with GradientTape() as reads:
                y, grad_fn = f(*xs)
            if isinstance(y, (list, tuple, dict)):
                # A node has one output; converting a tuple would silently stack it.
                raise TypeError(
                    with_location(
                        f"custom_gradient of {f.__name__}: the function must return (y, grad_fn) "
                        f"with y a single tensor, got a {type(y).__name__}"
                    )
                )
            y = stop_gradient(y)  # a fresh value: the tapes see only the custom node
        finally:
            tape_stack.reset(token)
        variables = [v for v in reads.watched_variables() if not any(v is x for x in xs)]
        if variables and not _takes_variables(grad_fn):
            raise TypeError(
                with_location(
                    f"custom_gradient of {f.__name__}: the function reads the Variables "
                    f"{[v.name for v in variables]}, so its grad_fn must accept a keyword argument "
                    "'variables' and return (input gradients, variable gradients)"
                )
            )

        def vjp(g, out, *inputs):
            if variables:
                grads, var_grads = grad_fn(g, variables=variables)
                var_grads = list(var_grads)
            else:
                grads, var_grads = grad_fn(g), []
            grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
            grads += var_grads
            if len(grads) != len(inputs):
                raise ValueError(
                    f"custom_gradient of {f.__name__}: grad_fn returned "
                    f"{len(grads)} gradients for {len(inputs) - len(variables)} "
                    f"inputs and {len(variables)} variables"
                )
            return tuple(
                None if gr is None else as_value(gr, dtype=x.dtype) for gr, x in zip(grads, inputs)
            )

        op = OpDef(f"custom_gradient[{f.__name__}]", _no_eval, _no_eval, vjp, "other")
        for tape in tapes:
            tape._maybe_record(op, tuple(xs + variables), {}, y)
        trace = current_trace.get()
        if trace is not None:  # for the graph transform (autodiff.vjp)
            trace.note_custom_vjp(op, xs + variables, y)
        return y

    wrapper.__name__ = getattr(f, "__name__", "custom_gradient")
    wrapper.__doc__ = f.__doc__
    return wrapper


def _takes_variables(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "variables" or p.kind is p.VAR_KEYWORD for p in params)


def _no_eval(*_args, **_params):
    raise AssertionError("a custom_gradient node is never re-evaluated")
