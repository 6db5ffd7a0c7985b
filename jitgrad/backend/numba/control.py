"""Numba code for the control-flow primitives (jitgrad/control/primitives.py).

A `loop` is a native `for` (static or run-time trip count) or `while` loop inside the kernel.
Each iteration calls the body: a module-level function emitted from the body graph's own
schedule by a child Emitter, so the body is typed and optimised by LLVM once whatever the trip
count. Everything the body writes (fused loops' outputs, matrix products) goes into buffers that
the kernel's caller allocates once per call, as for the kernel's own loops: no allocation per
iteration. The carry lives in arrays of its own, updated in place after each call, and each
iteration's y slices are stored into the stacked outputs. A `cond` is an if/elif chain calling
one branch function. `tuple_get` reads one element of their result tuple.
"""

from __future__ import annotations

import numpy as np

from jitgrad.backend.numba import helper_names
from jitgrad.backend.numba.literals import np_dtype
from jitgrad.ir.graph import Graph
from jitgrad.passes.fuse import fuse

# Op name -> its emitter, called as emitter(self, eqn, *eqn.inputs) with `self` the kernel's
# Emitter; emit.py registers them (this module cannot import it: emit.py imports this one).
EMITTERS = {}

# CPython (3.11-3.13) compiles a call with this many arguments or more as `f(*args)`
# (STACK_USE_GUIDELINE in its compiler).
_CPYTHON_STAR_CALL_ARGS = 30


def emits(op_name: str):
    def register(fn):
        EMITTERS[op_name] = fn
        return fn

    return register


# A while loop stores its ys (a gradient's residuals) in arrays of `maximum_iterations` rows
# when those take at most MAX_PREALLOCATED bytes; otherwise in arrays of FIRST_CAPACITY rows,
# doubled whenever they fill up (a generous bound must not allocate gigabytes up front).
FIRST_CAPACITY = 16
MAX_COPY_RANK = 4  # runtime.copy1 ... copy4
MAX_PREALLOCATED = 1 << 24


def _first_capacity(max_trips, y_avals) -> int:
    row_bytes = sum(int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize for a in y_avals)
    if max_trips is not None and max_trips * row_bytes <= MAX_PREALLOCATED:
        return max_trips
    return FIRST_CAPACITY


def sub_function(
    parent, graph: Graph, kind: str, what: str, shards: int | None = None
) -> tuple[str, list]:
    """Emit `graph` as a module-level function of `parent`'s module: (its name, the parent's
    names for the parameters it takes after its inputs: its constants and buffers, which
    become parameters of the kernel). With `shards` it is one shard's work (shards.py): each
    buffer parameter it adds holds one buffer per shard (shards.py moves most of them into
    its workspace), and the function is not inlined into its caller, a parallel function."""
    sub = type(parent)(fuse(graph), parent.name, parent.fastmath, parent=parent)
    sub.build()
    name = f"{kind}{len(parent.functions)}"
    extra = []
    for spec, param in zip(sub.params, sub.param_names):
        if spec[0] == "input":
            continue
        outer = f"{name}_{param}"
        if shards is not None and spec[0] == "buffer":
            spec = ("buffer", (shards, *spec[1]), spec[2])
        parent.params.append(spec)
        parent.param_names.append(outer)
        extra.append(outer)
    flags = "True" if parent.fastmath else "False"
    # inline='always': Numba splices the body into the kernel's own IR, so that the body is
    # not a second function that Numba types, lowers and LLVM optimises on its own, and then
    # again as part of the kernel (W8b's kernel: 1.77 -> 1.33 s to compile, two bodies).
    # Not for a call of 30 arguments or more: CPython compiles those as f(*args), which
    # Numba's inliner refuses; nor into a parallel function, whose parfor analysis would run
    # over the whole body; nor a body that raises with a runtime value (an index check): the
    # inliner renames the value's variable and Numba (0.65) then fails to lower the raise
    # (KeyError).
    inline = (
        ", inline='always'"
        if len(sub.param_names) < _CPYTHON_STAR_CALL_ARGS
        and shards is None
        and not sub.checked_indices
        else ""
    )
    parent.functions.append(
        f"@numba.njit(nogil=True, error_model='numpy', fastmath={flags}{inline}, "
        f"{helper_names.KERNEL_ONLY})\n"
        f"def {name}({', '.join(sub.param_names)}):\n"
        f'    """{what}"""\n' + "\n".join(sub.legend() + sub.lines) + "\n"
    )
    return name, extra


def argument(self, v, name: str) -> str:
    """A loop-invariant argument of a body: a scalar's value, or a C-contiguous array (a
    strided view is copied once, before the loop: the body's code assumes C order)."""
    if v.aval.ndim == 0:
        return self.value(v)
    if v in self.contiguous:
        return self.name_of(v)
    self.emit(f"{name} = {self.name_of(v)}.copy()")
    return name


@emits("loop")
def op_loop(self, e, *inputs):
    p = e.params
    n_consts, n_carry = p["n_consts"], p["n_carry"]
    body: Graph = p["body"]
    consts, init = inputs[:n_consts], inputs[n_consts : n_consts + n_carry]
    xs = inputs[n_consts + n_carry :]
    out = self.name_of(e.out)
    length, cond, reverse = p["length"], p["cond"], p["reverse"]
    kind = "scan" if length is not None else ("while" if cond is not None else "reverse scan")
    body_name, body_extra = sub_function(self, body, "body", f"The body of {out}'s {kind}.")
    cond_name, cond_extra = (
        sub_function(self, cond, "cond", f"The condition of {out}'s while loop.")
        if cond is not None
        else (None, [])
    )
    args = [argument(self, v, f"{out}_k{k}") for k, v in enumerate(consts)]
    stacked = [argument(self, v, f"{out}_x{k}") for k, v in enumerate(xs)]
    carry = [f"{out}_c{k}" for k in range(n_carry)]
    for name, v in zip(carry, init):
        self.emit(
            f"{name} = {self.name_of(v)}.copy()" if v.aval.ndim else f"{name} = {self.value(v)}"
        )
    y_avals = [v.aval for v in body.outputs[n_carry:]]
    ys = [f"{out}_y{k}" for k in range(len(y_avals))]
    t, i, r = f"{out}_t", f"{out}_i", f"{out}_r"
    capacity = None
    if length is not None:
        for name, a in zip(ys, y_avals):  # caller-allocated, as the kernel's other outputs
            self.params.append(("buffer", (length, *a.shape), a.dtype))
            self.param_names.append(name)
        self.emit(f"for {t} in range({length}):")
        self.emit(f"{i} = np.int32({length - 1} - {t})" if reverse else f"{i} = np.int32({t})", 2)
        trips = f"np.int32({length})"
    elif cond is None:
        n = f"{out}_n"
        self.emit(f"{n} = {stacked[0]}.shape[0]")
        for name, a in zip(ys, y_avals):
            self.emit(f"{name} = np.empty(({n}, {dims(a.shape)}), {np_dtype(a.dtype)})")
        self.emit(f"for {t} in range({n}):")
        self.emit(f"{i} = np.int32({n} - 1 - {t})" if reverse else f"{i} = np.int32({t})", 2)
        trips = f"np.int32({n})"
    else:
        max_trips = p["max_trips"]
        capacity = f"{out}_capacity"
        if ys:
            self.emit(f"{capacity} = {_first_capacity(max_trips, y_avals)}")
            for name, a in zip(ys, y_avals):
                self.emit(f"{name} = np.empty(({capacity}, {dims(a.shape)}), {np_dtype(a.dtype)})")
        self.emit(f"{t} = 0")
        self.emit("while True:")
        if max_trips is not None:
            self.emit(f"if {t} >= {max_trips}:", 2)
            self.emit("break", 3)
        self.emit(f"{i} = np.int32({t})", 2)
        cond_args = ", ".join([i, *args, *carry, *cond_extra])
        self.emit(f"if not {cond_name}({cond_args})[0]:", 2)
        self.emit("break", 3)
        if ys and _first_capacity(max_trips, y_avals) != max_trips:
            self.emit(f"if {t} == {capacity}:", 2)
            self.emit(f"{capacity} *= 2", 3)
            for name, a in zip(ys, y_avals):
                grown = f"{name}_grown"
                self.emit(
                    f"{grown} = np.empty(({capacity}, {dims(a.shape)}), {np_dtype(a.dtype)})", 3
                )
                self.emit(f"for {out}_row in range({t}):", 3)
                if a.ndim:
                    copy(
                        self,
                        f"{grown}[{out}_row, ",
                        f"{name}[{out}_row]",
                        a,
                        f"{name}_row",
                        4,
                    )
                else:
                    self.emit(f"{grown}[{out}_row] = {name}[{out}_row]", 4)
                self.emit(f"{name} = {grown}", 3)
        trips = f"np.int32({t})"
    slices = [f"{x}[{i}]" for x in stacked]
    self.emit(f"{r} = {body_name}({', '.join([i, *args, *carry, *slices, *body_extra])})", 2)
    # The y slices first: one may be a carry array the body passed on (a stored residual).
    for k, (name, a) in enumerate(zip(ys, y_avals)):
        if a.ndim:
            copy(self, f"{name}[{i}, ", f"{r}[{n_carry + k}]", a, f"{name}_new", 2)
        else:
            self.emit(f"{name}[{i}] = {r}[{n_carry + k}]", 2)
    _update_carry(self, body, n_consts, carry, r, init)
    if capacity is not None:
        self.emit(f"{t} += 1", 2)
        ys = [f"{name}[:{t}]" for name in ys]
    self.emit(f"{out} = ({', '.join([trips, *carry, *ys])},)")


def dims(shape) -> str:
    return ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") if shape else ""


def copy(self, target: str, source: str, aval, held: str, depth: int) -> None:
    """`target...] = source` (of `aval`'s shape and dtype): `target` is an indexing expression
    left open (`y0[i, `), `held` a name for `source` (one per copy: Numba gives a name one
    type). Ranks 1-4 call a runtime helper compiled once per installation (`copyN`, through a
    symbol); higher ones are element loops. Never an array assignment: Numba compiles the
    shape check of `a[i] = b` (and its error message's string formatting) in seconds."""
    shape = aval.shape
    self.emit(f"{held} = {source}", depth)
    if 1 <= len(shape) <= MAX_COPY_RANK:
        helper = f"copy{len(shape)}"
        self.call_through_symbol(helper, aval.dtype)
        view = target[:-2] + "]" if target.endswith(", ") else target[:-1]
        self.emit(f"{helper}({view}, {held})", depth)
        return
    index = [f"{held}_j{d}" for d in range(len(shape))]
    for d, n in enumerate(shape):
        self.emit(f"for {index[d]} in range({n}):", depth + d)
    joined = ", ".join(index)
    self.emit(f"{target}{joined}] = {held}[{joined}]", depth + len(shape))


def _update_carry(self, body: Graph, n_consts: int, carry: list, r: str, init) -> None:
    """Store the body's new carry. An array carry is updated in place; one the body passes on
    from another carry position (a swap) is copied first, before any carry changes."""
    carry_inputs = body.inputs[1 + n_consts : 1 + n_consts + len(carry)]
    moved = {
        k
        for k, v in enumerate(body.outputs[: len(carry)])
        if v in carry_inputs and carry_inputs.index(v) != k and v.aval.ndim
    }
    for k in sorted(moved):
        self.emit(f"{carry[k]}_moved = {r}[{k}].copy()", 2)
    for k, (name, v) in enumerate(zip(carry, init)):
        value = f"{name}_moved" if k in moved else f"{r}[{k}]"
        if v.aval.ndim:
            copy(self, f"{name}[", value, v.aval, f"{name}_new", 2)
        else:
            self.emit(f"{name} = {value}", 2)


@emits("cond")
def op_cond(self, e, index, *operands):
    out = self.name_of(e.out)
    branches = e.params["branches"]
    args = [argument(self, v, f"{out}_a{k}") for k, v in enumerate(operands)]
    calls = []
    for k, branch in enumerate(branches):
        name, extra = sub_function(self, branch, "branch", f"Branch {k} of {out}.")
        calls.append(f"{name}({', '.join([*args, *extra])})")
    if len(calls) == 1:
        self.emit(f"{out} = {calls[0]}")
        return
    chosen = self.value(index)  # clamped to the branches by the API
    for k, call in enumerate(calls):
        if k == len(calls) - 1:
            self.emit("else:")
        else:
            self.emit(f"{'if' if k == 0 else 'elif'} {chosen} == {k}:")
        self.emit(f"{out} = {call}", 2)


@emits("tuple_get")
def op_tuple_get(self, e, t):
    self.emit(f"{self.name_of(e.out)} = {self.name_of(t)}[{e.params['index']}]")
    producer = self.producers.get(t)
    if producer is not None and producer.op.name == "shards" and e.out.aval.ndim:
        self.contiguous.add(e.out)  # its own buffer (shards.py)
    if producer is not None and producer.op.name == "loop" and e.out.aval.ndim:
        # A loop's carries are arrays of their own, and a static loop's ys its buffers.
        n_carry = producer.params["n_carry"]
        if e.params["index"] <= n_carry or producer.params["length"] is not None:
            self.contiguous.add(e.out)
