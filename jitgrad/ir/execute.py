"""A fast numpy executor for a graph: a register machine built once per graph.

Tiered execution serves calls from a graph while its kernel compiles. The reference
interpreter (`eval_graph`) looks every operand up in a dict, converts every result and keeps
every value alive to the end; the executor turns the graph into a program once instead, one
step per equation over a list of registers:

    r[2] = mul(r[0], r[1])              # an op: its impl, with its params bound
    r[0] = exp(r[2], out=r[0])          # an elementwise ufunc into a dead temporary
    ...

A register is reused once its value is dead, so a value is dropped when its register is
next written (most often by the very equation that read it last); the registers of dead
values from `_KILL_BYTES` on are cleared at once.

How the program runs depends on its length. Up to `MAX_STRAIGHT_LINE` steps it becomes one
generated Python function, a line per step and the registers as local variables: the fastest
per call, but Python's parser and compiler take ~15 us per line to build it. Longer programs
run in a loop over the steps (`_runner`), built in ~3 us per equation and ~0.2 us slower per
step: the source of a 60,000-equation graph took 4-7 s to compile, and a function with that
many locals also ran slower than the loop.

Results are not cast: every impl returns its aval's dtype (tests/test_execute.py checks the
impls against the avals), numpy scalars for most 0-d results included.

Elementwise ufunc results are written into a temporary that dies at that equation when it has
the result's shape and dtype (`np.exp(v3, out=v3)`): on large arrays this saves the allocation
and a pass over fresh memory (13-17% on W2's value-and-grad graph at 2**20-2**22 elements).
Buffers kept from call to call measured slower than that (their working set is the sum of all
temporaries), and would need to be per thread.
"""

from __future__ import annotations

import functools

import numpy as np

from jitgrad.core.aval import DYNAMIC, TupleAVal
from jitgrad.core.errors import user_frame
from jitgrad.ir.gcpause import gc_paused
from jitgrad.ir.graph import Eqn, Graph, value_numbers

# Step kinds: (kind, fn, a, b, o, eqn) with registers a, b, o (or a tuple of them in a).
_BINARY, _UNARY, _CALL, _BINARY_OUT, _UNARY_OUT, _CALL_OUT, _FRESH, _CLEAR = range(8)
_KILL_BYTES = 1 << 15  # dead values from this size on are dropped at once
# Programs up to this many steps run as straight-line Python (`_straight_line`), longer ones
# in `_runner`'s loop.
MAX_STRAIGHT_LINE = 1000


def make_executor(graph: Graph, name: str = "graph"):
    """`run(inputs) -> outputs` computing `graph` with its ops' numpy impls.

    `inputs`: one value per `graph.inputs`, arrays or numpy/Python scalars, converted to the
    input's dtype (no copy for an array of that dtype). They are only read, never written, so
    they may alias each other.

    `outputs`: a list of numpy arrays, one per `graph.outputs`, each of exactly its aval's dtype
    and shape; 0-d outputs are 0-d arrays, never numpy scalars. Each output owns its memory, a
    fresh array no other output, input, constant or later call shares: one that would be an
    input, a constant, a view of anything or a repeat of another output is copied. Callers may
    hand them to users, who may write into them.

    An op that raises (an index out of bounds) raises the error class its eager call raises,
    naming the op and the user's line recorded at trace time (`Eqn.source`).

    `run` keeps no state between calls: threads may call it concurrently. `run.listing()`
    shows its program."""
    with gc_paused():
        return _build(graph, name)


def _build(graph: Graph, name: str):
    eqns = graph.eqns
    consts = graph.consts
    outputs = set(graph.outputs)
    last_use: dict = {}
    for i, e in enumerate(eqns):
        for v in e.inputs:
            last_use[v] = i
    reusable = _reusable_temporaries(graph, last_use)

    slot: dict = {}  # value -> its register
    template: list = []  # the registers' values when a call starts: the constants
    free: list = []  # registers of dead values, reused last freed first
    for v, value in consts.items():
        slot[v] = len(template)
        template.append(np.asarray(value, v.aval.dtype))
    inputs = []  # (register, dtype) per graph input
    for v in graph.inputs:
        if v not in slot:
            slot[v] = len(template)
            template.append(None)
        inputs.append((slot[v], v.aval.dtype))

    def new_register() -> int:
        if free:
            return free.pop()
        template.append(None)
        return len(template) - 1

    def dies(v, i: int) -> bool:
        return last_use.get(v, i) == i and v not in outputs and v not in consts

    program = []
    for i, e in enumerate(eqns):
        fn = functools.partial(e.op.impl, **e.params) if e.params else e.op.impl
        ins = [slot[v] for v in e.inputs]
        dead = [v for v in dict.fromkeys(e.inputs) if dies(v, i)]
        target = reusable.get(e.out)
        if target is not None:
            o = slot[target]
        elif e.out not in outputs and dead:
            o = slot[dead[0]]  # the dead input is dropped as the result replaces it
        else:
            o = new_register()
        out = target is not None
        if len(ins) == 2:
            program.append((_BINARY_OUT if out else _BINARY, fn, ins[0], ins[1], o, e))
        elif len(ins) == 1:
            program.append((_UNARY_OUT if out else _UNARY, fn, ins[0], None, o, e))
        else:
            program.append((_CALL_OUT if out else _CALL, fn, tuple(ins), None, o, e))
        slot[e.out] = o
        if e.out in outputs:
            # The output's own array, made while the eqn's inputs are still in their
            # registers: a numpy scalar, a view, or an input the impl returned as it is,
            # becomes a copy.
            program.append((_FRESH, e.out.aval.dtype, tuple(dict.fromkeys(ins)), None, o, None))
        clear = []
        for v in dead:
            r = slot[v]
            if r != o:
                free.append(r)
                if _big(v):
                    clear.append(r)
        if dies(e.out, i):  # never read
            free.append(o)
            if _big(e.out):
                clear.append(o)
        if clear:
            program.append((_CLEAR, None, tuple(clear), None, None, None))

    # An output an eqn computes is its own array (above) the first time it is listed; an
    # input, a constant or a repeat is a copy.
    owned = {e.out for e in eqns}
    results = []  # (register, dtype to copy to or None)
    for v in graph.outputs:
        if v in owned:
            owned.discard(v)
            results.append((slot[v], None))
        else:
            results.append((slot[v], v.aval.dtype))
    if len(program) <= MAX_STRAIGHT_LINE:
        run = _straight_line(program, template, inputs, results, name)
    else:
        run = _runner(tuple(program), template, tuple(inputs), tuple(results))
    run.listing = functools.partial(_listing, graph, program, slot, name)
    return run


def _big(v) -> bool:
    if isinstance(v.aval, TupleAVal) or DYNAMIC in v.aval.shape:
        return False  # control flow's results and stacks: freed with their register
    return v.aval.size * v.aval.dtype.itemsize >= _KILL_BYTES


def _straight_line(program: list, template: list, inputs: list, results: list, name: str):
    """The program as one Python function, a line per step, registers as local variables
    (constants as globals): ~25% faster per step than `_runner`'s loop, but Python's parser
    and compiler take ~15 us per line to build it."""
    env = {"ndarray": np.ndarray, "array": np.array, "asarray": np.asarray}
    for k, value in enumerate(template):
        if value is not None:
            env[f"r{k}"] = value  # a constant
    lines = [f"if len(values) != {len(inputs)}:"]
    lines.append(f"    raise ValueError(f'expected {len(inputs)} inputs, got {{len(values)}}')")
    for k, (register, dtype) in enumerate(inputs):
        env[f"d{k}"] = dtype
        lines.append(f"r{register} = asarray(values[{k}], d{k})")
    body = []
    eqn_at_line = {}  # source line number -> eqn (the `def` is line 1, then `lines`, `try:`)
    for i, (kind, fn, a, b, o, e) in enumerate(program):
        if kind == _CLEAR:
            body.append(" = ".join(f"r{k}" for k in a) + " = None")
            continue
        if kind == _FRESH:
            env[f"t{i}"] = fn
            fresh = [f"type(r{o}) is ndarray", f"r{o}.base is None"]
            fresh += [f"r{o} is not r{k}" for k in a]
            body.append(f"if not ({' and '.join(fresh)}):")
            body.append(f"    r{o} = array(r{o}, t{i})")
            continue
        env[f"f{i}"] = fn
        args = [f"r{k}" for k in a] if kind in (_CALL, _CALL_OUT) else [f"r{a}"]
        if kind in (_BINARY, _BINARY_OUT):
            args.append(f"r{b}")
        if kind in (_BINARY_OUT, _UNARY_OUT, _CALL_OUT):
            args.append(f"out=r{o}")
        eqn_at_line[len(lines) + 3 + len(body)] = e
        body.append(f"r{o} = f{i}({', '.join(args)})")
    if body:
        lines += ["try:", *("    " + line for line in body)]
        lines += ["except Exception as exc:", "    raise located(exc) from None"]
    for k, (_, dtype) in enumerate(results):
        if dtype is not None:
            env[f"o{k}"] = dtype
    returned = [
        f"r{r}" if dtype is None else f"array(r{r}, o{k})" for k, (r, dtype) in enumerate(results)
    ]
    lines.append(f"return [{', '.join(returned)}]")
    source = "def run(values):\n" + "\n".join("    " + line for line in lines) + "\n"

    def located(exc: Exception) -> Exception:
        e = eqn_at_line.get(exc.__traceback__.tb_lineno)
        return exc if e is None else _relocated(exc, e)

    env["located"] = located
    # A file name that error locations skip (core.errors.user_frame).
    exec(compile(source, f"<jitgrad executor of {name}>", "exec"), env)  # noqa: S102
    return env["run"]


def _runner(program: tuple, template: list, inputs: tuple, results: tuple):
    asarray, array, ndarray = np.asarray, np.array, np.ndarray
    n_inputs = len(inputs)

    def run(values):
        if len(values) != n_inputs:
            raise ValueError(f"expected {n_inputs} inputs, got {len(values)}")
        r = template.copy()
        for (k, dtype), value in zip(inputs, values):
            r[k] = asarray(value, dtype)
        e = None
        try:
            for kind, fn, a, b, o, e in program:  # noqa: B007 - `e` names a failing op
                if kind == _BINARY:
                    r[o] = fn(r[a], r[b])
                elif kind == _UNARY:
                    r[o] = fn(r[a])
                elif kind == _CALL:
                    r[o] = fn(*[r[k] for k in a])
                elif kind == _BINARY_OUT:
                    r[o] = fn(r[a], r[b], out=r[o])
                elif kind == _UNARY_OUT:
                    r[o] = fn(r[a], out=r[o])
                elif kind == _CALL_OUT:
                    r[o] = fn(*[r[k] for k in a], out=r[o])
                elif kind == _FRESH:
                    x = r[o]
                    if not (type(x) is ndarray and x.base is None) or any(x is r[k] for k in a):
                        r[o] = array(x, fn)
                else:  # _CLEAR
                    for k in a:
                        r[k] = None
        except Exception as exc:
            raise (exc if e is None else _relocated(exc, e)) from None
        return [r[k] if dtype is None else array(r[k], dtype) for k, dtype in results]

    return run


def _listing(graph: Graph, program: list, slot: dict, name: str) -> str:
    """The program as text, one step a line (`r3 = mul(r1, r2, out=r1)`), values named as
    the graph printer names them."""
    numbers = value_numbers(graph)
    lines = [f"# executor of {name}: {len(program)} steps"]
    names = {v: f"r{k}" for v, k in slot.items()}
    for kind, _fn, a, _b, o, e in program:
        if kind == _FRESH:
            lines.append(f"r{o} = fresh(r{o})")
        elif kind == _CLEAR:
            lines.append("clear " + ", ".join(f"r{k}" for k in a))
        else:
            args = [names[v] for v in e.inputs]
            if kind in (_BINARY_OUT, _UNARY_OUT, _CALL_OUT):
                args.append(f"out=r{o}")
            lines.append(f"r{o} = {e.op.name}({', '.join(args)})  # v{numbers[e.out]}")
    return "\n".join(lines)


def _is_elementwise_ufunc(e: Eqn) -> bool:
    impl = e.op.impl
    return type(impl) is np.ufunc and impl.nout == 1 and impl.signature is None


def _reusable_temporaries(graph: Graph, last_use: dict) -> dict:
    """{value: a temporary its elementwise ufunc may write into}: an input of the eqn that
    dies there, with the result's shape and dtype, that a ufunc allocated during the call and
    that no value still to be read may share memory with.

    A ufunc result (without `out=`) is a new array; any other op's result may be a view of its
    inputs (reshape, broadcast_to, slice, ...), so it shares the memory of their temporaries.
    An output never does: it is copied when it is a view or an input (see make_executor)."""
    # value -> the temporaries it may share memory with (none: not listed)
    fresh: dict = {}
    for e in graph.eqns:
        if type(e.op.impl) is np.ufunc:
            # A 0-d result is a numpy scalar: no memory to share or to write into.
            if e.out.aval.shape:
                fresh[e.out] = frozenset((e.out,))
        else:
            shared = [fresh[v] for v in e.inputs if v in fresh]
            if shared:
                fresh[e.out] = frozenset().union(*shared)
    if not fresh:
        return {}
    read_until = {}  # temporary -> the last eqn that reads it or a value sharing its memory
    for i, e in enumerate(graph.eqns):
        for v in e.inputs:
            temporaries = fresh.get(v)
            if temporaries:
                for t in temporaries:
                    read_until[t] = i
    outputs = set(graph.outputs)
    reuse = {}
    for i, e in enumerate(graph.eqns):
        if not _is_elementwise_ufunc(e) or e.out in outputs or not e.out.aval.shape:
            continue
        for v in e.inputs:
            temporaries = fresh.get(v)
            if (
                temporaries is not None
                and len(temporaries) == 1
                and v in temporaries
                and v.aval == e.out.aval
                and last_use[v] == i
                and read_until[v] == i
                and v not in outputs
            ):
                reuse[e.out] = v
                break
    return reuse


def _relocated(exc: Exception, e: Eqn) -> Exception:
    """`exc`, raised by `e`'s impl, naming the op and the user's line recorded at trace time
    instead of the line that called the executor (which the impl's `op_error` appended)."""
    message = str(exc)
    where = user_frame()
    suffix = f" ({where})" if where else ""
    if suffix and message.endswith(suffix):
        message = message[: -len(suffix)]
    elif not message.startswith(e.op.name):
        message = f"{e.op.name}: {message}"
    if e.source:
        message = f"{message} ({e.source})"
    try:
        relocated = type(exc)(message)
    except Exception:  # an exception class with another constructor: as it is
        return exc
    return relocated.with_traceback(exc.__traceback__)
