"""jit and jit_grad: trace once per signature, optimise, fuse, emit ONE Numba kernel, cache.

This is the one module that ties tracing, autodiff, the passes and the backend together.
The hot path (`JitFunction.__call__`) is: signature key, dict lookup, kernel call, wrap.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from jitgrad.autodiff.transforms import value_and_grad, value_and_variable_grads
from jitgrad.compiler import background
from jitgrad.compiler.call_path import make_caller, make_entry
from jitgrad.compiler.fallback import make_fallback
from jitgrad.compiler.numpy_random import watch_numpy_random
from jitgrad.compiler.signature import (
    call_key,
    entry_key,
    flatten_argument,
    leaf_array,
    leaf_tracer,
    traced_outputs,
)
from jitgrad.compiler.stateful import Traced, output_leaves, write_back
from jitgrad.core import pytree
from jitgrad.core.aval import TupleAVal
from jitgrad.core.config import config, usable_threads
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.errors import JitgradError, VariableCreationError, with_location
from jitgrad.core.tensor import Tensor, Tracer
from jitgrad.ir.graph import Graph
from jitgrad.ir.interpret import locate_nan, replay
from jitgrad.ir.subgraphs import collective_ops, subgraphs
from jitgrad.ir.trace import Trace, tracing

if TYPE_CHECKING:
    from jitgrad.backend.numba.emit import KernelSource
    from jitgrad.ir.schedule import Schedule

log = logging.getLogger("jitgrad")


@dataclass(eq=False)
class Compiled:
    """One compiled version: the graph, its kernel, and how to call it. Made by
    `compile_graph` (lowered at once) or by a JitFunction's miss (`lower` runs later, in
    the background: the numpy fallback runs the traced graph meanwhile); `load` fills the
    kernel fields, which stay None until then."""

    name: str
    traced: Graph  # as traced: the fallback runs it, debug_nans replays it op by op
    variables: list  # Variables read at each call, after the explicit inputs
    out_tree: object
    fastmath: bool = False
    prune_inputs: bool = False  # see `lower`
    # Variables the kernel advances (random Generators' states): their new values lead the
    # outputs, and each call assigns them (compiler/stateful.py).
    states: list = field(default_factory=list)
    # Set by `lower`:
    graph: Graph | None = None  # optimised
    schedule: Schedule | None = None  # fused loops and calls (train_step plans donations)
    kernel_source: KernelSource | None = None
    input_indices: list | None = None  # the traced inputs the kernel takes
    serialize: bool = False  # run parallel kernels one at a time (set by `load`)
    kernel: object = None  # the Numba dispatcher
    path: str | None = None  # its generated module
    had_disk_index: bool = False  # whether Numba's disk cache had an index for it when loaded
    # `run(arrays, aliases=None) -> outputs`: the kernel's caller (call_path.make_caller) once
    # `state` is "compiled", the numpy fallback before (background.py has the states).
    run: Callable | None = None
    state: str = "fallback"
    started: float = 0.0  # when its background compile started (time.perf_counter)
    on_done: Callable | None = None  # background.start's callback
    courteous: bool = False  # its background jobs give the GIL away (background.start)
    failure: Exception | None = None  # why its background compile failed
    pools: threading.local = field(default_factory=threading.local)  # buffers (call_path)
    entries: dict = field(default_factory=dict)  # signature.entry_key -> fast entry

    def lower(self, seconds: list | None = None) -> None:
        """Optimise, fuse and emit the traced graph (once; adds its time to `seconds[1]`).
        With `prune_inputs`, inputs the optimised graph no longer reads are dropped from the
        kernel and `input_indices` lists the ones kept (the tape passes only those)."""
        from jitgrad.backend.numba.kernels import kernel_source
        from jitgrad.backend.numba.threads import launch_numba_threads
        from jitgrad.passes import optimize
        from jitgrad.passes.fuse import fuse
        from jitgrad.passes.shard import shard_batch

        if self.kernel_source is not None:
            return
        start = time.perf_counter()
        # Before anything loads a parallel function: its thread (often the compile thread)
        # must start Numba's pool the safe way (threads.launch_numba_threads).
        launch_numba_threads()
        optimized = optimize(self.traced)
        indices = list(range(len(self.traced.inputs)))
        if self.prune_inputs:
            read = {v for e in optimized.eqns for v in e.inputs} | set(optimized.outputs)
            indices = [k for k, v in enumerate(optimized.inputs) if v in read]
            optimized = Graph(
                tuple(optimized.inputs[k] for k in indices),
                optimized.eqns,
                optimized.outputs,
                optimized.consts,
            )
        if config.shard_batch:
            optimized = shard_batch(optimized, usable_threads())
        self.graph, self.input_indices = optimized, indices
        self.schedule = fuse(optimized)
        self.kernel_source = kernel_source(self.schedule, self.name, self.fastmath)
        if seconds is not None:
            seconds[1] += time.perf_counter() - start

    def load(self, in_memory: bool = False) -> None:
        from jitgrad.backend.numba.cache import has_disk_index
        from jitgrad.backend.numba.compile import load_kernel
        from jitgrad.backend.numba.threads import threading_layer_is_safe

        # Numba's workqueue threading layer aborts when two threads run parallel kernels.
        self.serialize = self.kernel_source.parallel and not threading_layer_is_safe()
        self.kernel, self.path = load_kernel(self.kernel_source.source, self.name, in_memory)
        # A dispatcher that already has machine code is shared with an earlier version in this
        # process (same source and signature): nothing to load, nothing to warn about.
        self.had_disk_index = (
            not in_memory and not self.kernel.signatures and has_disk_index(self.path)
        )

    def serve_kernel(self) -> None:
        """From now on calls run the kernel (a generated straight-line wrapper)."""
        self.run = make_caller(self, _kernel_error, _PARALLEL_LOCK)
        self.state = "compiled"

    def compile_kernel(self) -> None:
        """Compile (or load from Numba's cache) the kernel's one signature, then stop Numba
        from compiling others: it converts arguments instead (Python floats to float32 at
        dispatch). Array inputs are typed read-only, which also accepts writeable arrays."""
        from jitgrad.backend.numba.compile import disk_cache_lock
        from jitgrad.backend.numba.signature import numba_signature, signature_spec

        with _compile_lock(self.kernel):
            if self.kernel.signatures:  # shared with another version (same source): compiled
                self.had_disk_index = False  # nothing was loaded for this one
                return
            try:
                signature = numba_signature(signature_spec(self.kernel_source, self.graph))
                with disk_cache_lock(self.kernel, self.path):
                    self.kernel.compile(signature)
            except Exception as exc:
                raise _kernel_error(self, exc) from exc
            self.kernel.disable_compile()

    def load_and_compile(self, stacklevel: int = 2) -> None:
        """Load the kernel and compile it (or load Numba's machine code from the disk cache).
        A cache entry that fails to load (truncated, corrupted) is removed and the kernel
        compiled in memory, with one warning; an entry Numba rejects as stale (another
        version) is recompiled by Numba and replaced, with one warning."""
        from jitgrad.backend.numba.compile import forget_entry
        from jitgrad.backend.numba.worker import start_warmer_here

        start_warmer_here()  # a new installation's helpers, for this process's later kernels
        self.load()
        try:
            self.compile_kernel()
        except JitgradError as exc:
            if not self.had_disk_index:
                raise
            warnings.warn(
                f"jitgrad: the cache entry {self.path} could not be loaded "
                f"({exc.__cause__!r:.80}); rebuilding it in memory",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
            forget_entry(self.path)
            self.load(in_memory=True)
            self.compile_kernel()
            return
        if self.had_disk_index and not self.loaded_from_disk():
            warnings.warn(
                f"jitgrad: the cache entry {self.path} held no machine code for this CPU and "
                "Numba version; it has been recompiled",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )

    def loaded_from_disk(self) -> bool:
        """Whether Numba loaded this kernel's machine code from its cache (no compilation)."""
        if self.kernel is None:
            return False
        stats = self.kernel.stats
        return sum(stats.cache_hits.values()) > 0 and not sum(stats.cache_misses.values())


_PARALLEL_LOCK = threading.Lock()
# One lock per kernel dispatcher. load_kernel gives every function whose generated source is the
# same the same dispatcher; compiling its signature and disabling compilation must be one step
# for all of them: a thread that calls it in between would compile a second signature (a
# float64 one for a Python float), and one that compiles after it would find compilation
# disabled.
_COMPILE_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COMPILE_LOCKS_LOCK = threading.Lock()


def _compile_lock(kernel) -> threading.Lock:
    """The lock that serialises `Compiled.compile_kernel` for `kernel`, whoever shares it."""
    with _COMPILE_LOCKS_LOCK:
        lock = _COMPILE_LOCKS.get(kernel)
        if lock is None:
            lock = _COMPILE_LOCKS[kernel] = threading.Lock()
        return lock


def _kernel_error(compiled: Compiled, exc: Exception) -> Exception:
    if isinstance(exc, IndexError) and len(exc.args) > 1 and isinstance(exc.args[0], str):
        # A generated bounds check: (template naming the op and the user's line, values).
        return IndexError(exc.args[0].format(*exc.args[1:]))
    if isinstance(exc, (IndexError, ZeroDivisionError)):
        return type(exc)(with_location(f"{compiled.name}: {exc}"))
    return JitgradError(
        f"internal error: the compiled kernel for {compiled.name} failed ({type(exc).__name__}: "
        f"{exc}). This is a jitgrad bug; please report it with the generated source "
        f"{compiled.path}"
    )


class Lowered:
    """What `fn.lower(*args)` returns: the optimised graph, fusion groups and source."""

    def __init__(self, compiled: Compiled, traced: Graph):
        self._compiled = compiled
        self.traced = traced

    @property
    def graph(self) -> str:
        return str(self._compiled.graph)

    @property
    def source(self) -> str:
        return self._compiled.kernel_source.source

    @property
    def kernels(self) -> list:
        """The fused loop groups: (iteration space, op names) each."""
        return list(self._compiled.kernel_source.groups)

    def compile(self) -> Compiled:
        if self._compiled.kernel is None:
            self._compiled.load_and_compile()
            self._compiled.serve_kernel()
        return self._compiled

    def as_dot(self) -> str:
        from jitgrad.ir.dot import schedule_to_dot

        return schedule_to_dot(self._compiled.schedule)


class CacheInfo(
    collections.namedtuple(
        "CacheInfo",
        "hits misses versions disk_loads trace_seconds optimize_seconds compile_seconds states",
    )
):
    """Counters of a jitted function's signature cache. `disk_loads` counts the versions whose
    machine code came from the on-disk cache instead of a Numba compilation; `states` holds
    each version's state, least recently used first: "fallback" (its calls run on the numpy
    fallback, its compile is queued), "compiling" (on the fallback too), "compiled" or
    "failed" (the compile failed: it stays on the fallback). See compiler/background.py."""


class JitFunction:
    """A function compiled per input signature (see `jit`)."""

    def __init__(self, fn, static_argnums=(), static_argnames=(), fastmath=False, name=None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")
        self._signature = _signature_or_none(fn)
        self._static_argnums = frozenset(
            (static_argnums,) if isinstance(static_argnums, int) else static_argnums
        )
        names = (static_argnames,) if isinstance(static_argnames, str) else static_argnames
        self._static_argnames = frozenset(names)
        if self._signature is not None:
            params = list(self._signature.parameters)
            for n in self._static_argnames:
                if n in params:
                    self._static_argnums |= {params.index(n)}
        self.fastmath = fastmath
        # Keyword-only arguments (and **kwargs) select a compiled variant by value, like static
        # arguments (`_keyword_variant`); the names that are not, bind positionally.
        self._positional_names = frozenset(
            name
            for name, p in (self._signature.parameters.items() if self._signature else ())
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )
        self._keyword_variants: collections.OrderedDict = collections.OrderedDict()
        self._versions: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        self._fast_hits = [0]  # counted by the fast entries
        self._seconds = [0.0, 0.0, 0.0]
        self._warned_retrace = False
        # `(args) -> args` run before the signature key on the general path: `jitgrad.function`'s
        # input_signature check (a call the fast entry's guard accepts already conforms).
        self.convert_args = None
        # TensorFlow's rule (set by `jitgrad.function`): a call whose trace creates a Variable
        # from traced values (a model built on its first call) runs eagerly.
        self.variables_on_first_call = False
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # see __get__
        functools.update_wrapper(self, fn)
        self.__class__ = type(type(self).__name__, (type(self),), {"__module__": __name__})
        if config.compile == "background":
            background.prepare()

    # -- hot path ----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        # Replaced, per instance, by the fast entry of the last signature called (see
        # `_use_entry`), which falls back to `_call`.
        return self._call(args, kwargs)

    def _use_entry(self, entry) -> None:
        """Make `entry` (call_path.make_entry) this function's `__call__`. Each JitFunction has
        its own class for this: one Python frame less per call than delegating to it."""
        if entry is None:
            entry = JitFunction.__call__
        if type(self).__call__ is not entry:
            type(self).__call__ = entry

    def _call(self, args, kwargs):
        """The general path: signature key, version lookup (or a miss), tapes, traces."""
        if kwargs:
            variant, kwargs = self._keyword_variant(kwargs)
            if variant is not None:
                return variant(*args, **kwargs)
            args = self._positional(args, kwargs)
        if self.convert_args is not None:
            args = self.convert_args(args)
        if current_trace.get() is not None:
            return self.fn(*args)  # inside another trace: inline
        key, arrays = call_key(args, self._static_argnums, self.name)
        compiled = self._versions.get(key)
        if compiled is None:
            return self._miss(key, args, arrays)
        self._hits += 1
        self._versions.move_to_end(key)  # LRU
        if tape_stack.get():
            if self._watched_by_tape(args, compiled):
                return self._eager(compiled, args)
        elif not config.debug_nans and compiled.state == "compiled":
            self._use_entry(self._entry_for(compiled, args))
        return self._run(compiled, arrays)

    def _entry_for(self, compiled: Compiled, args):
        """The fast entry for calls shaped like `args` (built once per leaf types)."""
        leaf_types = entry_key(args, self._static_argnums)
        if leaf_types in compiled.entries:
            entry = compiled.entries[leaf_types]
        else:
            entry = compiled.entries[leaf_types] = make_entry(
                compiled,
                args,
                self._static_argnums,
                _kernel_error,
                _PARALLEL_LOCK,
                self._fast_hits,
                self._in_place(compiled),
            )
        return entry

    def _in_place(self, compiled: Compiled):
        """How a call writes into its arguments (see TrainStep); plain functions do not."""
        return None

    def _compiles_now(self) -> bool:
        """Whether a miss compiles before it runs (`config.compile`, see `_miss`)."""
        return config.compile == "blocking"

    def _first_run(self, compiled: Compiled, arrays: list):
        """A blocking first call: compile (or load machine code from Numba's disk cache),
        then run the kernel."""
        compiled.load_and_compile(stacklevel=4)
        compiled.serve_kernel()
        return self._run(compiled, arrays)

    def _run(self, compiled: Compiled, arrays: list):
        result = compiled.run(arrays)
        if config.debug_nans:  # before the states advance: a replay draws the same numbers
            self._check_nans(compiled, arrays, result)
        if compiled.states:
            result = write_back(compiled.states, result)
        return result

    def _check_nans(self, compiled: Compiled, arrays: list, result) -> None:
        """Re-run the traced graph op by op (as JAX does) to find where a NaN appeared."""
        if any(np.isnan(t._value).any() for t in pytree.flatten(result)[0] if t.dtype.kind == "f"):
            values = arrays + [v._value for v in compiled.variables]
            locate_nan(compiled.traced, *values)

    def _keyword_variant(self, kwargs) -> tuple[JitFunction | None, dict]:
        """(the variant compiled for the call's keyword-only values, the other keywords), or
        (None, kwargs) when the call passes none.

        Why variants: the kernel's arguments are positional; a keyword-only value was once
        dropped (the trace used the default: silently wrong numbers). Each distinct set of
        keyword-only values gets a JitFunction of `functools.partial(fn, **values)`: the
        values are fixed in its trace, as static arguments' are (selected by value; arrays and
        tensors are refused)."""
        if self._signature is None:
            return None, kwargs
        fixed = {k: v for k, v in kwargs.items() if k not in self._positional_names}
        if not fixed:
            return None, kwargs
        if not _hashable_by_value(fixed.values()):
            kinds = ", ".join(f"{k}: {type(v).__name__}" for k, v in sorted(fixed.items()))
            raise TypeError(
                with_location(
                    f"{self.name}: keyword-only arguments select a compiled version by value "
                    f"and must be hashable, got {kinds}; pass arrays as positional arguments"
                )
            )
        key = tuple(sorted((k, type(v).__name__, v) for k, v in fixed.items()))
        with self._lock:
            variant = self._keyword_variants.get(key)
            if variant is None:
                self._signature.bind_partial(**fixed)  # an unknown keyword: Python's TypeError
                variant = JitFunction(
                    functools.partial(self.fn, **fixed),
                    tuple(self._static_argnums),
                    (),
                    self.fastmath,
                    name=self.name,
                )
                variant.convert_args = self.convert_args
                variant.variables_on_first_call = self.variables_on_first_call
                self._keyword_variants[key] = variant
                while len(self._keyword_variants) > config.max_versions_per_function:
                    self._keyword_variants.popitem(last=False)  # LRU, as the versions
                if len(self._keyword_variants) == config.retrace_warning_after:
                    warnings.warn(
                        f"{self.name} has compiled {len(self._keyword_variants)} variants for "
                        "the values of its keyword-only arguments (each value compiles its "
                        "own): pass values that keep changing as positional arguments",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            self._keyword_variants.move_to_end(key)
        return variant, {k: v for k, v in kwargs.items() if k in self._positional_names}

    def _positional(self, args, kwargs):
        if self._signature is None:
            raise TypeError(f"{self.name}: keyword arguments need an inspectable signature")
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.args

    # -- misses ------------------------------------------------------------------------------
    def _miss(self, key, args, arrays):
        """Trace a new version. With `config.compile == "background"` it is lowered and its
        kernel compiled elsewhere while this call and the next ones run on the numpy fallback
        (compiler/background.py); "blocking" lowers and compiles it now (or loads Numba's
        machine code from the disk cache). One thread traces; others wait for it."""
        with self._lock:
            compiled = self._versions.get(key)
            if compiled is None:
                self._misses += 1
                blocking = self._compiles_now()
                try:
                    compiled, _ = self._build(args, lower=blocking)
                except VariableCreationError:
                    if not self.variables_on_first_call:
                        raise
                    # The initial values are traced, not concrete, and TensorFlow runs the
                    # initialisers outside the graph: this call runs eagerly, creating the
                    # Variables, and the next call traces the function that reads them.
                    self._misses -= 1
                    return self.fn(*args)
                if not blocking and _calls_collectives(compiled.traced):
                    blocking = True
                    compiled.lower(self._seconds)
                if tape_stack.get() and self._watched_by_tape(args, compiled):
                    return self._eager(compiled, args)  # not kept: the next call compiles
                if blocking:
                    start = time.perf_counter()
                    result = self._first_run(compiled, arrays)
                    self._compiled(compiled, time.perf_counter() - start)
                else:
                    # The first result first, then the compile: its lowering shares this
                    # process's GIL.
                    compiled.run = make_fallback(compiled)
                    result = self._run(compiled, arrays)
                    background.start(compiled, self._compiled, self._seconds)
                self._versions[key] = compiled
                while len(self._versions) > config.max_versions_per_function:
                    self._versions.popitem(last=False)
                self._check_retracing()
                if compiled.state == "compiled" and not tape_stack.get() and not config.debug_nans:
                    self._use_entry(self._entry_for(compiled, args))
                return result
        return self(*args)

    def _compiled(self, compiled: Compiled, seconds: float) -> None:
        """A version's kernel serves (or its background compile failed): count and log it."""
        self._seconds[2] += seconds
        if compiled.state == "compiled":
            self._log(f"compiled {self.name} in {seconds:.3f} s ({compiled.path})")
        else:
            self._log(f"compiling {self.name} failed after {seconds:.3f} s: {compiled.failure}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every version of this function has its kernel serving (or its compile
        failed: see `cache_info().states`); False if `timeout` (seconds) ran out first."""
        return background.wait(list(self._versions.values()), timeout)

    def _build(self, args, lower: bool = True):
        """A new version for `args`: traced, and lowered unless the background will."""
        start = time.perf_counter()
        found = self._trace(args)
        traced, variables, out_tree = found
        self._seconds[0] += time.perf_counter() - start
        _check_backend_dtypes(traced, self.name)
        compiled = Compiled(self.name, traced, variables, out_tree, self.fastmath)
        compiled.states = found.states
        message = f"traced {self.name}{_describe_args(args, self._static_argnums)}: "
        message += f"{len(traced.eqns)} ops in {time.perf_counter() - start:.3f} s"
        if lower:
            compiled.lower(self._seconds)
            message += f" -> {len(compiled.graph.eqns)} ops in {len(compiled.schedule.steps)} steps"
        self._log(message)
        return compiled, traced

    def _trace(self, args) -> Traced:
        trace = Trace(self.name)
        trace.states = {}  # random Generators advance (compiler/stateful.py)
        with tracing(trace), watch_numpy_random(self.name):
            traced_args = []
            for i, a in enumerate(args):
                if i in self._static_argnums:
                    traced_args.append(a)
                    continue
                leaves, tree = flatten_argument(a)
                tracers = []
                for leaf in leaves:
                    tracers.append(leaf_tracer(trace, leaf, leaf_array(leaf)))
                traced_args.append(pytree.unflatten(tree, tracers))
            out = self.fn(*traced_args)
            leaves, out_tree, states = output_leaves(trace, out)
            graph = trace.to_graph(traced_outputs(leaves))
        variables = [v for v, _ in trace.captured]
        return Traced(graph, variables, out_tree, states)

    def _log(self, message: str) -> None:
        if config.log_compiles:
            if not log.handlers and not logging.getLogger().handlers:
                handler = logging.StreamHandler()
                handler.setFormatter(logging.Formatter("jitgrad: %(message)s"))
                log.addHandler(handler)
                log.setLevel(logging.INFO)
            log.info(message)

    def _check_retracing(self) -> None:
        """Warn once when the versions keep needing kernels of their own. New shapes alone do
        not: from the second one on they share one shape-polymorphic kernel and cost only a
        trace (backend/numba/kernels.py)."""
        kernels = {id(c.kernel) for c in self._versions.values()}
        if len(kernels) < config.retrace_warning_after or self._warned_retrace:
            return
        keys = list(self._versions)
        changing = [
            i for i in range(len(keys[0])) if len({k[i] if i < len(k) else None for k in keys}) > 1
        ]
        names = list(self._signature.parameters) if self._signature else []
        which = ", ".join(names[i] if i < len(names) else f"#{i}" for i in changing)
        warnings.warn(
            f"{self.name} has compiled {len(kernels)} kernels; argument(s) {which or '?'} keep "
            "changing dtype, structure or a static value that changes the computation. Each "
            "such signature traces and compiles again: pass changing Python values as arrays "
            "(or non-static arguments)",
            RuntimeWarning,
            stacklevel=4,
        )
        self._warned_retrace = True

    # -- tapes -------------------------------------------------------------------------------
    def _watched_by_tape(self, args, compiled) -> bool:
        leaves = [leaf for a in args for leaf in pytree.flatten(a)[0]]
        for tape in tape_stack.get():
            if tape._recording and (
                any(id(x) in tape._tracked for x in leaves)
                or (tape._watch_accessed and any(v.trainable for v in compiled.variables))
            ):
                return True
        return False

    def _eager(self, compiled: Compiled, args):
        """Run the graph op by op so that the recording tapes see every op."""
        values = []
        for i, a in enumerate(args):
            if i in self._static_argnums:
                continue
            values += [
                leaf if isinstance(leaf, (Tensor, Tracer)) else Tensor(leaf_array(leaf))
                for leaf in flatten_argument(a)[0]
            ]
        values += compiled.variables
        traced, _, _ = self._trace(args)
        outs = replay(traced, *values)
        result = pytree.unflatten(compiled.out_tree, outs)
        return write_back(compiled.states, result) if compiled.states else result

    # -- introspection -----------------------------------------------------------------------
    def lower(self, *args, **kwargs) -> Lowered:
        """The optimised graph, fusion groups and generated source for these arguments."""
        if kwargs:
            variant, kwargs = self._keyword_variant(kwargs)
            if variant is not None:
                return variant.lower(*args, **kwargs)
            args = self._positional(args, kwargs)
        compiled, traced = self._build(args)
        return Lowered(compiled, traced)

    def cache_info(self) -> CacheInfo:
        versions = list(self._versions.values())
        disk = sum(1 for c in versions if c.loaded_from_disk())
        return CacheInfo(
            self._hits + self._fast_hits[0],
            self._misses,
            len(versions),
            disk,
            *self._seconds,
            tuple(c.state for c in versions),
        )

    def clear_cache(self) -> None:
        self._versions.clear()
        self._use_entry(None)

    def __get__(self, obj, objtype=None):
        """A jitted method: one JitFunction per instance, holding it weakly, whose function
        calls the method on it. The instance is not an argument: the Variables the method
        reads through it are inputs read at each call, as for a closure, and its other
        attributes are constants of the trace (as in TensorFlow, which traces per instance)."""
        if obj is None:
            return self
        try:
            bound = self._bound.get(obj)
        except TypeError:
            raise TypeError(
                with_location(
                    f"{self.name}: a jitted method needs an instance that can be hashed and "
                    f"weakly referenced; {type(obj).__name__} cannot"
                )
            ) from None
        if bound is None:
            bound = self._bound[obj] = self._bind(obj)
        return bound

    def _bind(self, obj) -> JitFunction:
        instance = weakref.ref(obj)
        fn = self.fn

        def method(*args, **kwargs):
            return fn(instance(), *args, **kwargs)

        functools.update_wrapper(method, fn)
        if self._signature is not None:
            params = list(self._signature.parameters.values())[1:]
            method.__signature__ = self._signature.replace(parameters=params)
        bound = JitFunction(
            method,
            tuple(i - 1 for i in self._static_argnums if i > 0),
            tuple(self._static_argnames),
            self.fastmath,
            name=f"{type(obj).__name__}.{self.name}",
        )
        bound.convert_args = self.convert_args
        bound.variables_on_first_call = self.variables_on_first_call
        return bound


def compile_graph(
    graph: Graph,
    name: str,
    out_tree,
    variables=(),
    fastmath=False,
    seconds=None,
    prune_inputs=False,
) -> Compiled:
    """A lowered version of `graph` (see `Compiled.lower`); the kernel is loaded by
    `Compiled.load`."""
    compiled = Compiled(name, graph, list(variables), out_tree, fastmath, prune_inputs)
    _check_backend_dtypes(graph, name)
    compiled.lower(seconds)
    return compiled


def _calls_collectives(graph: Graph) -> bool:
    """Whether `graph` calls MPI collectives (the allreduce of a DistributedOptimizer, say):
    such a version compiles in this process before its first call, as a distributed train step
    does (compiler/train_step.py): every rank must make the same MPI calls in the same order,
    which a numpy fallback serving calls meanwhile would not, and a compile worker process
    must not join the MPI job. Loop bodies and branches count too."""
    return bool(collective_ops(graph))


def _hashable_by_value(values) -> bool:
    """Whether `values` can select a compiled version by value (tensors hash by identity)."""
    if any(isinstance(v, (Tensor, Tracer)) for v in values):
        return False
    try:
        hash(tuple(values))
    except TypeError:
        return False
    return True


def _signature_or_none(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _describe_args(args, static) -> str:
    parts = []
    for i, a in enumerate(args):
        if i in static:
            parts.append(repr(a))
            continue
        leaves, _ = pytree.flatten(a)
        parts.append(
            " ".join(f"{np.asarray(x).dtype.name}{list(np.shape(x))}" for x in leaves)
            if len(leaves) <= 4
            else f"<{len(leaves)} arrays>"
        )
    return "(" + ", ".join(parts) + ")"


_BACKEND_DTYPES = frozenset(
    np.dtype(d)
    for d in ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "bool")
)


def _check_backend_dtypes(graph: Graph, name: str) -> None:
    """Refuse at trace time what the Numba backend cannot compile (e.g. float16)."""
    for e in graph.eqns:
        for graph_inside in subgraphs(e):  # loop bodies and branches
            _check_backend_dtypes(graph_inside, name)
        for v in (*e.inputs, e.out):
            if isinstance(v.aval, TupleAVal):  # a control-flow result: its parts are checked
                continue
            if v.aval.dtype not in _BACKEND_DTYPES:
                where = f" ({e.source})" if e.source else ""
                raise TypeError(
                    f"{name}: op {e.op.name} on {v.aval.dtype.name} is not supported "
                    f"under jit (the Numba backend has no {v.aval.dtype.name} "
                    f"arithmetic){where}; cast to float32 first"
                )


def jit(fn=None, *, static_argnums=(), static_argnames=(), fastmath=False):
    """Compile `fn` per input signature into one Numba kernel.

    >>> @jitgrad.jit
    ... def f(x):
    ...     return jitgrad.tanh(x) * 2.0
    >>> f(np.ones(3, np.float32))
    <jitgrad.Tensor: shape=(3,), dtype=float32, numpy=array([1.5231884, ...], dtype=float32)>

    Shapes, dtypes and the pytree structure of the arguments (and the values of static
    arguments) select the compiled version. Variables read inside `fn` are inputs read at
    every call; numpy arrays captured by closure are constants frozen at trace time.

    Arguments are pytrees: dicts (in sorted-key order), lists, tuples and namedtuples (rebuilt
    as the same type) of arrays, tensors and Python numbers. A list whose leaves are all Python
    numbers (nested, rectangular) is data, not structure: one array, converted as
    `jitgrad.constant` would (float -> float32, int -> int32), so `f([1.0, 2.0])` works like
    `f(np.float32([1, 2]))` and its gradient is one array. A tuple always stays a structure (as
    in JAX and TensorFlow): `jit_grad(f)((w, b))` returns a tuple of gradients, and a tuple of
    scalars passes each as its own scalar input.
    """
    if fn is None:
        return functools.partial(
            jit, static_argnums=static_argnums, static_argnames=static_argnames, fastmath=fastmath
        )
    return JitFunction(fn, static_argnums, static_argnames, fastmath)


def _wrt_argnums(fn, wrt):
    if isinstance(wrt, int):
        return wrt
    if isinstance(wrt, str):
        return _wrt_argnums(fn, (wrt,))[0]
    names = list(inspect.signature(fn).parameters)
    nums = []
    for w in wrt:
        if isinstance(w, str):
            if w not in names:
                raise ValueError(
                    with_location(
                        f"jit_grad: wrt names {w!r}, but {fn.__name__} has arguments {names}"
                    )
                )
            nums.append(names.index(w))
        else:
            nums.append(int(w))
    return tuple(nums)


def jit_grad(
    fn=None, *, wrt=0, has_aux=False, static_argnums=(), static_argnames=(), fastmath=False
):
    """Compile `fn` and its gradient into ONE kernel: returns `(value, grads)`.

    >>> @jitgrad.jit_grad(wrt=(0, 1))
    ... def f(w1, w2):
    ...     return 3 * w1 ** 2 + 2 * w1 * w2
    >>> value, (g1, g2) = f(5.0, 3.0)   # 105, (36, 10)

    `wrt` is an argument index, a tuple of indices or names, or 'variables' (the trainable
    Variables `fn` reads). Each differentiated argument may be a nested dict/list/tuple of
    arrays; `grads` mirrors it (a tuple when `wrt` is a tuple).
    """
    if fn is None:
        return functools.partial(
            jit_grad,
            wrt=wrt,
            has_aux=has_aux,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            fastmath=fastmath,
        )
    if wrt == "variables":
        target = value_and_variable_grads(fn, has_aux)
    else:
        target = value_and_grad(fn, _wrt_argnums(fn, wrt), has_aux)
    target.__signature__ = _signature_or_none(fn)
    jf = JitFunction(
        target,
        static_argnums,
        static_argnames,
        fastmath,
        name=f"jit_grad({getattr(fn, '__name__', 'fn')})",
    )
    return jf


def make_graph(fn, static_argnums=()):
    """`make_graph(fn)(*args)` prints and returns the graph `fn` traces to (unoptimised)."""

    def build(*args):
        jf = JitFunction(fn, static_argnums)
        graph, _, _ = jf._trace(args)
        print(graph)
        return graph

    return build
