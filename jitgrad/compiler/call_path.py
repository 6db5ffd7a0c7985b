"""The per-version Python code around a kernel, generated as straight-line functions.

A jitted call must cost little more than the Numba dispatch itself (W1 is ~0.2 us of kernel),
so instead of interpreting a plan of parameters and outputs on every call, each compiled
version gets small generated functions:

- `call(arrays, aliases=None)`: the general wrapper: take the leaf arrays, convert 0-d inputs
  to scalars, take buffers, call the kernel, wrap the outputs in the function's structure.
- `__call__(self, *args, **kwargs)`: the fast path for one argument signature (types, shapes,
  dtypes, structure, static values) seen before, installed as the JitFunction's `__call__`: a
  guard that checks exactly that signature, then the same body reading the leaves straight out
  of `args`. When anything differs (or a tape or trace is active) it takes the general path,
  `self._call(args, kwargs)`.
"""

from __future__ import annotations

import sys

import numpy as np

from jitgrad.compiler.signature import Guard
from jitgrad.core.config import config
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.tensor import Tensor, compiled_scalar_type
from jitgrad.distributed.watchdog import WAITS
from jitgrad.ir.subgraphs import collective_ops

_FALLBACK = "return self._call(args, kwargs)"  # what the entry does when its guard fails


# Buffer reuse. Last call's output buffer for a kernel parameter is reused only when
# `getrefcount` reports no reference beyond those a buffer nobody else holds has: the pool's
# dict entry, the generated local, and whatever the interpreter counts for the call itself.
# That last part is an implementation detail (CPython 3.14 stopped counting some stack
# references), so `_FREE_REFS` is measured, not assumed: `_free_buffer_refs` runs the very two
# generated lines (`_TAKE_BUFFER`, `_COUNT_REFS`) on a buffer only a pool holds. Everything a
# caller can keep of an output adds a reference the count sees: the returned Tensor holds the
# array, `.numpy()` is that array, any numpy view holds it (or its base chain) through `.base`,
# and a memoryview or buffer export holds it too; so a held output makes the count exceed
# `_FREE_REFS` and the call allocates a new buffer. Fresh arrays are never immortal nor use
# deferred counting, so the count can only over-report, and over-reporting only costs a reuse.
# tests/test_call_path.py checks that held outputs survive later calls and that a dropped one
# is reused.
_TAKE_BUFFER = "{name} = pool.get({j})"
_COUNT_REFS = "getrefcount({name})"
# An aligned buffer (aligned_empty) is a view of the bytes it was cut from, and numpy gives a
# view of a view that memory's owner as its base: a caller's `out[1:]` references those bytes,
# not the buffer. Its pool then also checks the bytes' count.
_COUNT_BASE_REFS = "getrefcount({name}.base)"
# Buffers of at least this many bytes start on a cache line (see aligned_empty); smaller ones
# are np.empty's, whose reuse check is one count cheaper (W6c's step has a dozen tiny ones).
ALIGNED_MIN_BYTES = 4096
CACHE_LINE = 64


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """np.empty(shape, dtype) starting on a 64-byte boundary. numpy's own allocations are
    16-byte aligned (16 or 48 bytes past a cache line here, large ones too), so every 64-byte
    vector a kernel loads from or stores to such a buffer spans two cache lines: W10's kernel,
    alternated call by call, 0.772 ms with numpy's buffers, 0.717 ms with these."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:  # nothing to align (and numpy places an empty view anywhere)
        return np.empty(shape, dtype)
    raw = np.empty(size + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + size].view(dtype).reshape(shape)


def _free_buffer_refs() -> tuple[int, int]:
    """What `_COUNT_REFS` and `_COUNT_BASE_REFS` report, in generated code, for a buffer (an
    aligned one) held only by its pool."""
    source = "\n    ".join(
        (
            "def probe(pool):",
            _TAKE_BUFFER.format(name="p0", j=0),
            f"return {_COUNT_REFS.format(name='p0')}, {_COUNT_BASE_REFS.format(name='p0')}",
        )
    )
    env = {"getrefcount": sys.getrefcount}
    exec(compile(source, "<jitgrad buffer probe>", "exec"), env)  # noqa: S102 - our own code
    return env["probe"]({0: aligned_empty((ALIGNED_MIN_BYTES,), np.uint8)})


_FREE_REFS, _FREE_BASE_REFS = _free_buffer_refs()


class _Body:
    """Lines of one generated function: parameter setup, the kernel call, output wrapping."""

    def __init__(self, compiled, kernel_error, lock):
        self.compiled = compiled
        self.env = {
            "Tensor": Tensor,
            "asarray": np.asarray,
            "ndarray": np.ndarray,
            "kernel": compiled.kernel,
            "pools": compiled.pools,
            "getrefcount": sys.getrefcount,
            "empty": np.empty,
            "aligned_empty": aligned_empty,
            "variables": compiled.variables,
            "kernel_error": kernel_error,
            "compiled": compiled,
            "lock": lock,
        }
        self.lines: list[str] = []

    def add(self, line: str, depth: int = 1) -> None:
        self.lines.append("    " * depth + line)

    def params(self, source_of_input, alias_of_buffer) -> list[str]:
        """Set up p0, p1, ...: `source_of_input(k)` gives (expression, is a scalar) for
        explicit input k; `alias_of_buffer(j)` an expression for the array that buffer param j
        writes into, None for a pooled buffer, "optional" to look it up in `aliases`."""
        ks = self.compiled.kernel_source
        graph = self.compiled.graph
        n_explicit = len(graph.inputs) - len(self.compiled.variables)
        names = []
        self.pool_line, self.has_pool = len(self.lines), False
        for j, plan in enumerate(ks.params):
            name = f"p{j}"
            names.append(name)
            kind = plan[0]
            if kind == "input":
                k = plan[1]
                if k < n_explicit:
                    source, scalar = source_of_input(k)
                else:
                    source, scalar = f"variables[{k - n_explicit}]._value", False
                self.add(f"{name} = {source}")
                if graph.inputs[k].aval.ndim == 0 and not scalar:
                    # 0-d values are scalars in the kernel; Numba converts Python scalars to
                    # the compiled scalar type itself (its dispatcher compiles no new types).
                    self.add(f"if type({name}) is ndarray:")
                    self.add(f"    {name} = {name}[()]")
            elif kind == "const" or kind == "scalar":
                # A scalar constant is a parameter of shape-polymorphic kernels only.
                self.env[f"const{j}"] = plan[1] if kind == "const" else plan[1][()]
                self.add(f"{name} = const{j}")
            else:
                alias = alias_of_buffer(j)
                if alias is None:
                    self.pooled_buffer(name, j, plan)
                elif alias == "optional":
                    self.add(f"{name} = aliases.get({j}) if aliases else None")
                    self.add(f"if {name} is None:")
                    self.pooled_buffer(name, j, plan, depth=2)
                else:
                    self.add(f"{name} = {alias}")
        return names

    def pooled_buffer(self, name: str, j: int, plan, depth: int = 1) -> None:
        """`name` = last call's buffer for param j if nobody else holds it any more (a fresh
        page-faulting allocation costs as much as the loop that fills it), else a new one.
        Pools are per thread, so concurrent calls never share a buffer (see `_FREE_REFS` for
        why a held buffer is never reused)."""
        if not self.has_pool:
            self.has_pool = True
            self.lines[self.pool_line : self.pool_line] = [
                "    try:",
                "        pool = pools.buffers",
                "    except AttributeError:",
                "        pool = pools.buffers = {}",
            ]
        shape, dtype = plan[1], np.dtype(plan[2])
        self.env[f"shape{j}"], self.env[f"dtype{j}"] = shape, dtype
        self.add(_TAKE_BUFFER.format(name=name, j=j), depth)
        held = f"{name} is None or {_COUNT_REFS.format(name=name)} > {_FREE_REFS}"
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize < ALIGNED_MIN_BYTES:
            self.add(f"if {held}:", depth)
            self.add(f"    {name} = pool[{j}] = empty(shape{j}, dtype{j})", depth)
            return
        base_held = f"{_COUNT_BASE_REFS.format(name=name)} > {_FREE_BASE_REFS}"
        self.add(f"if {held} or {base_held}:", depth)
        self.add(f"    {name} = pool[{j}] = aligned_empty(shape{j}, dtype{j})", depth)

    def call_kernel(self, names, retry_on_type_error=False) -> None:
        ks = self.compiled.kernel_source
        call = f"kernel({', '.join(names)})"
        if ks.returns:
            call = "r = " + call
        if ks.parallel:
            # Numba's thread count is per calling thread: apply jitgrad.config.num_threads.
            from jitgrad.backend.numba.threads import set_num_threads

            self.env.update(config=config, set_num_threads=set_num_threads)
            self.add("if config.num_threads:")
            self.add("    set_num_threads(config.num_threads)")
        self.add("try:")
        depth = 2
        collectives = collective_ops(self.compiled.traced)
        if collectives:
            # It waits for the other ranks: bounded by the job's timeout (distributed/watchdog).
            # A sharded step's exchange points say each minute themselves whom they wait for.
            self.env["waits"] = WAITS
            self.env["waiting_in"] = self.compiled.name
            says = "allreduce" not in collectives
            self.add(f"waits.enter(waiting_in, {says})", depth)
            self.add("try:", depth)
            depth += 1
        if self.compiled.serialize:
            self.add("with lock:", depth)
            self.add(call, depth + 1)
        else:
            self.add(call, depth)
        if collectives:
            self.add("finally:", depth - 1)
            self.add("waits.leave()", depth)
        if retry_on_type_error:
            # The dispatcher refused an argument (a non-contiguous or read-only array where
            # the kernel writes): the general path converts it, or explains.
            self.add("except TypeError:")
            self.add(f"    {_FALLBACK}")
        self.add("except Exception as exc:")
        self.add("    raise kernel_error(compiled, exc) from exc")

    def output_values(self) -> list[tuple[str, str]]:
        """(expression, wrapper class) for each output leaf: arrays become Tensors; 0-d
        results stay the Python numbers Numba returns, in a CompiledScalar of their dtype."""
        ks = self.compiled.kernel_source
        graph = self.compiled.graph
        values = []
        for k, (kind, j) in enumerate(ks.outputs):
            if kind == "ret":
                if graph.outputs[k].aval.ndim == 0:
                    self.env[f"S{j}"] = compiled_scalar_type(ks.returns[j])
                    values.append((f"r[{j}]", f"S{j}"))
                else:
                    values.append((f"r[{j}]", "Tensor"))
            elif kind == "param":
                values.append((f"p{j}", "Tensor"))
            elif kind == "input":
                values.append((f"asarray(p{j})", "Tensor"))
            else:
                self.env[f"out{k}"] = j
                values.append((f"out{k}", "Tensor"))
        return values

    def leaves(self, values):
        """Expressions for the output leaves `values` ((expression, wrapper) pairs), as they
        are taken (a train step returns only its first): a Tensor around each array; a
        compiled scalar made by `new` and its slot set, in lines added here, instead of
        calling its class: W1's three scalars took 0.38 us that way, 0.30 this way, of a 0.89
        us call (CPython runs a class's Python __init__ in a frame of its own)."""
        for k, (value, wrap) in enumerate(values):
            if wrap == "Tensor":
                yield f"Tensor({value})"
                continue
            self.env.setdefault("new", object.__new__)
            self.add(f"o{k} = new({wrap})")
            self.add(f"o{k}._number = {value}")
            yield f"o{k}"

    def build(self, header: str, name: str):
        source = header + "\n" + "\n".join(self.lines)
        # A file name that error locations skip (core.errors.user_frame): the user's line is
        # the one that called the jitted function, not a line of this wrapper.
        code = compile(source, f"<jitgrad call path of {self.compiled.name}>", "exec")
        exec(code, self.env)  # noqa: S102 - our own generated wrapper
        fn = self.env[name]
        fn.source = source
        return fn


def make_caller(compiled, kernel_error, lock):
    """`call(arrays, aliases=None) -> output tree` for `compiled` (an api.Compiled)."""
    body = _Body(compiled, kernel_error, lock)
    names = body.params(lambda k: (f"arrays[{k}]", False), lambda j: "optional")
    body.call_kernel(names)
    leaves = list(body.leaves(body.output_values()))
    body.add(f"return {_structure(compiled.out_tree, iter(leaves), body.env)}")
    return body.build("def call(arrays, aliases=None):", "call")


def make_entry(compiled, args, static_argnums, kernel_error, lock, hits, in_place=None):
    """The fast `__call__` for calls shaped exactly like `args`, or None when `args`
    holds something a guard cannot check cheaply (an unhashable static value, an exotic leaf).

    `in_place` (TrainStep, a train_step.InPlace): `aliases` {kernel buffer param j: explicit
    leaf k} for update loops that write straight into the caller's array k, `copies`
    [(output leaf, input leaf)] to copy back; the entry then returns only the first output
    (the loss). Before the kernel runs, the entry checks that the first `updated` leaves are
    the objects it last passed to `check(self, params, opt_state)` (which raises for arrays
    that share memory), and calls `check` again when they are not: an `is` per leaf (an array
    object never moves its memory) instead of comparing memory ranges at every call. It
    keeps the last checked arrays alive.

    A version that advances random states (`compiled.states`) assigns their new values, the
    leading outputs, after the kernel ran (and after a train step's copies)."""
    body = _Body(compiled, kernel_error, lock)
    body.env.update(tape_stack=tape_stack, current_trace=current_trace, config=config, hits=hits)
    guard = Guard(body.env, _FALLBACK)
    if not guard.arguments(args, static_argnums):
        return None
    aliases, copies = (in_place.aliases, in_place.copies) if in_place else ({}, [])
    for _, k in copies:
        guard.check(f"l{k}.flags.writeable")
    n = len(args)
    guarded = [
        "    try:",
        *["    " + line for line in guard.lines],
        "    except (KeyError, IndexError, TypeError, AttributeError):",
        f"        {_FALLBACK}",
    ]
    body.lines = [
        f"    if kwargs or len(args) != {n}:",
        f"        {_FALLBACK}",
        f"    {', '.join(f'a{i}' for i in range(n))}{',' if n == 1 else ''} = args" if n else "",
        *(guarded if guard.lines else []),  # a function without arguments has nothing to check
        "    if tape_stack.get() or current_trace.get() is not None or config.debug_nans:",
        f"        {_FALLBACK}",
    ]
    if in_place and in_place.updated:
        seen = [f"seen{k}" for k in range(in_place.updated)]
        leaves = [f"l{k}" for k in range(in_place.updated)]
        body.env.update(dict.fromkeys(seen), check_updated=in_place.check)
        body.lines[:0] = [f"    global {', '.join(seen)}"]
        body.add(f"if not ({' and '.join(f'{x} is {y}' for x, y in zip(leaves, seen))}):")
        body.add("    check_updated(self, a0, a1)")
        body.add(f"    {', '.join(seen)} = {', '.join(leaves)},")
    names = body.params(
        lambda k: guard.leaf_sources[k], lambda j: f"l{aliases[j]}" if j in aliases else None
    )
    body.call_kernel(names, retry_on_type_error=True)
    body.add("hits[0] += 1")
    values = body.output_values()
    for out_index, k in copies:
        value = values[out_index][0]
        body.add(f"if {value} is not l{k}:")
        body.add(f"    l{k}[...] = {value}")
    tree = compiled.out_tree
    if compiled.states:  # advanced random states lead the outputs (compiler/stateful.py)
        body.env["states"] = compiled.states
        for i, (value, _) in enumerate(values[: len(compiled.states)]):
            body.add(f"states[{i}].assign({value})")
        values = values[len(compiled.states) :]
        tree = tree[2][1]
    if in_place is not None:
        tree = tree[2][0]  # a train step returns its loss (and aux), the first output
    leaves = body.leaves(values)
    body.add(f"return {_structure(tree, leaves, body.env)}")
    return body.build("def __call__(self, *args, **kwargs):", "__call__")


def _structure(treedef, leaves, env: dict) -> str:
    """An expression that builds `treedef` from the `leaves` expressions (the types of
    namedtuples go into `env`)."""
    if treedef == "*":
        return next(leaves)
    if treedef is None:
        return "None"
    kind, meta, children = treedef
    items = [_structure(c, leaves, env) for c in children]
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(meta, items)) + "}"
    if kind == "namedtuple":
        name = f"namedtuple{len(env)}"
        env[name] = meta
        return f"{name}({', '.join(items)})"
    if kind == "list":
        return "[" + ", ".join(items) + "]"
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
