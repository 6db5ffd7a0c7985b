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

from jitgrad.config import config
from jitgrad.core import pytree
from jitgrad.core.convert import to_array
from jitgrad.core.dispatch import current_trace, tape_stack
from jitgrad.core.tensor import Tensor, compiled_scalar_type

_FALLBACK = "return self._call(args, kwargs)"  # what the entry does when its guard fails
_STATIC_TYPES = (int, float, bool, str, type(None))
_INT32 = (-(2**31), 2**31)


class _Body:
    """Lines of one generated function: parameter setup, the kernel call, output wrapping."""

    def __init__(self, compiled, kernel_error, lock):
        self.compiled = compiled
        self.env = {"Tensor": Tensor, "asarray": np.asarray, "ndarray": np.ndarray,
                    "kernel": compiled.kernel, "pools": compiled.pools,
                    "getrefcount": sys.getrefcount, "empty": np.empty,
                    "variables": compiled.variables, "kernel_error": kernel_error,
                    "compiled": compiled, "lock": lock}
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
        Pools are per thread, so concurrent calls never share a buffer."""
        if not self.has_pool:
            self.has_pool = True
            self.lines[self.pool_line:self.pool_line] = [
                "    try:", "        pool = pools.buffers", "    except AttributeError:",
                "        pool = pools.buffers = {}"]
        self.env[f"shape{j}"], self.env[f"dtype{j}"] = plan[1], plan[2]
        self.add(f"{name} = pool.get({j})", depth)
        # References to a free buffer: the pool, `name` and getrefcount's argument.
        self.add(f"if {name} is None or getrefcount({name}) > 3:", depth)
        self.add(f"    {name} = pool[{j}] = empty(shape{j}, dtype{j})", depth)

    def call_kernel(self, names, retry_on_type_error=False) -> None:
        ks = self.compiled.kernel_source
        call = f"kernel({', '.join(names)})"
        if ks.returns:
            call = "r = " + call
        if ks.parallel:
            # Numba's thread count is per calling thread: apply jitgrad.config.num_threads.
            from numba import set_num_threads

            self.env.update(config=config, set_num_threads=set_num_threads)
            self.add("if config.num_threads:")
            self.add("    set_num_threads(config.num_threads)")
        self.add("try:")
        if self.compiled.serialize:
            self.add("with lock:", 2)
            self.add(call, 3)
        else:
            self.add(call, 2)
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
    leaves = [f"{wrap}({v})" for v, wrap in body.output_values()]
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
    keeps the last checked arrays alive."""
    body = _Body(compiled, kernel_error, lock)
    body.env.update(tape_stack=tape_stack, current_trace=current_trace, config=config,
                    hits=hits)
    guard = _Guard(body)
    for i, a in enumerate(args):
        if i in static_argnums:
            if type(a) not in _STATIC_TYPES:
                return None
            body.env[f"static{i}"] = a
            guard.check(f"type(a{i}) is {type(a).__name__} and a{i} == static{i}")
        elif not guard.tree(f"a{i}", a):
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
    names = body.params(lambda k: guard.leaf_sources[k],
                        lambda j: f"l{aliases[j]}" if j in aliases else None)
    body.call_kernel(names, retry_on_type_error=True)
    body.add("hits[0] += 1")
    values = body.output_values()
    for out_index, k in copies:
        value = values[out_index][0]
        body.add(f"if {value} is not l{k}:")
        body.add(f"    l{k}[...] = {value}")
    tree = compiled.out_tree
    if in_place is not None:
        tree = tree[2][0]  # a train step returns its loss (and aux), the first output
    leaves = iter(f"{wrap}({v})" for v, wrap in values)
    body.add(f"return {_structure(tree, leaves, body.env)}")
    return body.build("def __call__(self, *args, **kwargs):", "__call__")


class _Guard:
    """Checks, as generated lines, that a call's arguments match the ones seen."""

    def __init__(self, body: _Body):
        self.body = body
        self.lines: list[str] = []
        self.leaf_sources: list[tuple[str, bool]] = []  # (expression, is already a scalar)
        self.node_types = 0  # namedtuple types named in the environment

    def check(self, condition: str) -> None:
        self.lines += [f"    if not ({condition}):", f"        {_FALLBACK}"]

    def tree(self, expr: str, value) -> bool:
        """Guard lines for argument subtree `value` at `expr`; False if it cannot be guarded.
        The walk mirrors api._flatten_argument, so leaves come in the kernel's order."""
        if isinstance(value, dict):
            keys = pytree.sorted_keys(value)
            self.check(f"type({expr}) is dict and len({expr}) == {len(keys)}")
            return all(self.tree(f"{expr}[{k!r}]", value[k]) for k in keys)
        if pytree.is_number_list(value):
            return self.number_list(expr, value)
        if isinstance(value, tuple) and hasattr(type(value), "_fields"):
            # The exact type: another namedtuple with the same fields is another structure.
            name = f"N{self.node_types}"
            self.node_types += 1
            self.body.env[name] = type(value)
            self.check(f"type({expr}) is {name}")
            return all(self.tree(f"{expr}[{n}]", v) for n, v in enumerate(value))
        if isinstance(value, (list, tuple)):
            kind = type(value).__name__
            if type(value) not in (list, tuple):
                return False
            self.check(f"type({expr}) is {kind} and len({expr}) == {len(value)}")
            return all(self.tree(f"{expr}[{n}]", v) for n, v in enumerate(value))
        if value is None:
            self.check(f"{expr} is None")
            return True
        return self.leaf(expr, value)

    def leaf(self, expr: str, value) -> bool:
        k = len(self.leaf_sources)
        name = f"l{k}"
        env = self.body.env
        self.lines.append(f"    {name} = {expr}")
        kind = type(value)
        if kind is float or kind is bool:
            self.check(f"type({name}) is {kind.__name__}")
            self.leaf_sources.append((name, True))
            return True
        if kind is int:
            if not _INT32[0] <= value < _INT32[1]:
                return False
            self.check(f"type({name}) is int and {_INT32[0]} <= {name} < {_INT32[1]}")
            self.leaf_sources.append((name, True))
            return True
        if isinstance(value, Tensor):
            env[f"T{k}"] = kind
            self.check(f"type({name}) is T{k}")
            self.lines.append(f"    {name} = {name}._value")
            value = value._value
        if type(value) is np.ndarray:
            env[f"d{k}"] = value.dtype
            self.check(f"type({name}) is ndarray and {name}.shape == {value.shape!r} "
                       f"and {name}.dtype is d{k}")
            self.leaf_sources.append((name, False))
            return True
        if isinstance(value, np.generic) and type(value) in _NUMPY_SCALARS:
            env[f"S{k}"] = type(value)
            self.check(f"type({name}) is S{k}")
            self.leaf_sources.append((name, True))
            return True
        return False

    def number_list(self, expr: str, value) -> bool:
        """A list of Python numbers is one array leaf: converted at each call (as eager ops
        convert it), then checked like an array argument."""
        self.body.env["number_list_array"] = _number_list_array
        return self.leaf(f"number_list_array({expr})", _number_list_array(value))


def _number_list_array(value) -> np.ndarray:
    """The array a list of Python numbers stands for (api._flatten_argument); a TypeError,
    which sends the call to the general path, for anything else."""
    if not pytree.is_number_list(value):
        raise TypeError("not a list of Python numbers")
    return to_array(value, op="jit")


_NUMPY_SCALARS = frozenset(np.dtype(c).type for c in "fdbhilqBH?")


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

